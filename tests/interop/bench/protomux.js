// The JS side of corenet's protomux benchmarks (BENCHMARKS.md), measured like the Rust
// criterion bench `crates/mux/benches/mux.rs`:
//   core:  two protomux instances wired back to back through in-memory framed streams that
//          deliver synchronously (no crypto): 32-byte messages uncorked and corked (messages
//          per second), 64 KiB messages (MiB/s)
//   e2e:   protomux over a @hyperswarm/secret-stream pair over an in-memory pipe: 32-byte
//          messages sent one by one and in corked groups of 64 (messages per second), 64 KiB
//          messages (MiB/s)
// Prints one JSON object.
'use strict'
const { EventEmitter } = require('events')
const Protomux = require('protomux')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const c = require('compact-encoding')
const b4a = require('b4a')

const SECONDS = Number(process.argv[2] || 3)

// A framed stream whose writes arrive at the peer at once (after `release()`: until then
// they wait, so that both sides can open their channel first).
class Direct extends EventEmitter {
  constructor () {
    super()
    this.userData = null
    this.destroyed = false
    this.peer = null
    this.held = []
  }

  write (buf) {
    if (this.held) this.held.push(buf)
    else this.peer.emit('data', buf)
    return true
  }

  release () {
    const held = this.held
    this.held = null
    for (const buf of held) this.peer.emit('data', buf)
  }

  pause () {}
  resume () {}
  end () {}
  destroy () { this.destroyed = true }
}

function channelPair (ma, mb, onmessage) {
  const a = ma.createChannel({ protocol: 'bench', messages: [{ encoding: c.raw }] })
  const b = mb.createChannel({ protocol: 'bench', messages: [{ encoding: c.raw, onmessage }] })
  a.open()
  b.open()
  return [a, b]
}

function core () {
  const sa = new Direct()
  const sb = new Direct()
  sa.peer = sb
  sb.peer = sa
  let received = 0
  const [a] = channelPair(new Protomux(sa), new Protomux(sb), () => { received++ })
  sa.release()
  sb.release()
  if (!a.opened) throw new Error('not paired')
  const msg = a.messages[0]

  function rate (batch, size, corked) {
    const buf = b4a.alloc(size, 7)
    received = 0
    let sent = 0
    const start = process.hrtime.bigint()
    const end = start + BigInt(SECONDS * 1e9)
    while (process.hrtime.bigint() < end) {
      if (corked) a.cork()
      for (let i = 0; i < batch; i++) msg.send(buf)
      if (corked) a.uncork()
      sent += batch
    }
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    if (received !== sent) throw new Error('lost messages')
    return sent / secs
  }

  return {
    smallUncorkedPerSec: rate(1024, 32, false),
    smallCorkedPerSec: rate(1024, 32, true),
    bigMiBps: (rate(16, 64 * 1024, false) * 64 * 1024) / (1 << 20)
  }
}

function e2ePair () {
  const a = new NoiseSecretStream(true)
  const b = new NoiseSecretStream(false)
  a.rawStream.pipe(b.rawStream).pipe(a.rawStream)
  return [a, b]
}

// Sends `count` messages of `size` bytes (in corked groups of `group` when > 1) and resolves
// with messages per second once all arrived.
function e2e (count, size, group) {
  return new Promise((resolve) => {
    const [sa, sb] = e2ePair()
    const ma = new Protomux(sa)
    const mb = new Protomux(sb)
    let got = 0
    let start = 0
    const [a] = channelPair(ma, mb, () => {
      if (++got === count) {
        const secs = Number(process.hrtime.bigint() - start) / 1e9
        sa.destroy()
        sb.destroy()
        resolve(count / secs)
      }
    })
    const msg = a.messages[0]
    const buf = b4a.alloc(size, 9)
    Promise.all([sa.opened, sb.opened]).then(() => {
      start = process.hrtime.bigint()
      let sent = 0
      const write = () => {
        while (sent < count) {
          let drained = true
          if (group > 1) {
            ma.cork()
            for (let i = 0; i < group && sent < count; i++, sent++) msg.send(buf)
            ma.uncork()
            drained = ma.drained
          } else {
            drained = msg.send(buf)
            sent++
          }
          if (!drained) return sa.once('drain', write)
        }
      }
      write()
    })
  })
}

async function main () {
  const out = { core: core() }
  const small = 100000
  out.e2e = {
    smallPerSec: await e2e(small, 32, 1),
    smallCorked64PerSec: await e2e(small, 32, 64),
    bigMiBps: ((await e2e(2048, 64 * 1024, 1)) * 64 * 1024) / (1 << 20)
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

main()
