// Generates tests/vectors/protomux-vectors.json with the real protomux module: two muxes
// ("a" and "b") over in-memory streams that deliver only when a step says so, driven through
// a fixed sequence of steps (pairing hook, opens with handshakes, messages of several types,
// corked batches with control messages inside, a claim of a pending remote open, a reject,
// closes and a re-open). For every step the file records the frames each mux wrote (one
// secret-stream message each) and the callbacks that fired. corenet's golden test replays the
// steps on its own core and must write the same bytes and see the same events.
//
//   node scripts/gen-protomux-vectors.js > ../vectors/protomux-vectors.json
'use strict'
const { EventEmitter } = require('events')
const Protomux = require('protomux')
const c = require('compact-encoding')
const b4a = require('b4a')

const sodium = require('sodium-native')

const hex = (b) => (b ? b4a.toString(b, 'hex') : null)
// Payloads above 1 KiB are written as their length and BLAKE2b-256 hash in steps and events
// (the frames that carry them stay in full).
const BIG = 1024
function blake2b (b) {
  const out = b4a.alloc(32)
  sodium.crypto_generichash(out, b)
  return hex(out)
}
function payload (b) {
  return b.byteLength > BIG ? { len: b.byteLength, blake2b: blake2b(b) } : hex(b)
}
// A step's payload: hex, or { fill, len } for a long run of one byte.
function bytesOf (d) {
  return typeof d === 'string' ? b4a.from(d, 'hex') : b4a.alloc(d.len, d.fill)
}
const tick = () => new Promise((resolve) => setImmediate(resolve))

// A framed stream that records writes and delivers only on request.
class FakeStream extends EventEmitter {
  constructor () {
    super()
    this.userData = null
    this.destroyed = false
    this.written = []
  }

  write (buf) {
    this.written.push(b4a.from(buf))
    return true
  }

  pause () {}
  resume () {}
  end () {}
  destroy () { this.destroyed = true }
}

const sides = {}
for (const name of ['a', 'b']) {
  const stream = new FakeStream()
  sides[name] = { stream, mux: new Protomux(stream), channels: {}, events: [], inbox: [] }
}

function other (side) {
  return side === 'a' ? 'b' : 'a'
}

function makeChannel (side, name, protocol, id) {
  const s = sides[side]
  const messages = [0, 1, 2].map((type) => ({
    encoding: c.raw,
    onmessage (data) {
      s.events.push({ event: 'message', channel: name, type, data: payload(data) })
    }
  }))
  const ch = s.mux.createChannel({
    protocol,
    id,
    handshake: c.raw,
    messages,
    onopen (handshake) {
      s.events.push({ event: 'open', channel: name, handshake: hex(handshake) })
    },
    onclose (isRemote) {
      s.events.push({ event: 'close', channel: name, remote: isRemote })
    }
  })
  s.channels[name] = ch
  return ch
}

// JS protomux corks itself while it processes a batch of several frames and until the
// promises of the handlers it called settle (pair notifications included), so a reply sent in
// that window goes out as a batch. corenet does not copy that (replies are written together
// anyway); the steps below keep pairing and rejects out of multi-frame batches, so that both
// sides write the same frames.
const steps = [
  { op: 'pair', side: 'a', protocol: 'golden/remote' },
  { op: 'open', side: 'a', name: 'alpha', protocol: 'golden/alpha', id: '01'.repeat(32), handshake: hex(b4a.from('a-hs')) },
  { op: 'open', side: 'b', name: 'alpha', protocol: 'golden/alpha', id: '01'.repeat(32), handshake: hex(b4a.from('b-handshake')) },
  { op: 'deliver', to: 'b' },
  { op: 'deliver', to: 'a' },
  { op: 'send', side: 'a', name: 'alpha', type: 0, data: hex(b4a.from('hello')) },
  { op: 'send', side: 'a', name: 'alpha', type: 1, data: { fill: 0xab, len: 300 } },
  { op: 'send', side: 'a', name: 'alpha', type: 2, data: '' },
  { op: 'send', side: 'b', name: 'alpha', type: 1, data: hex(b4a.from('from b')) },
  { op: 'deliver', to: 'b' },
  { op: 'deliver', to: 'a' },
  // b opens first; a's hook hears of it and holds b's early message.
  { op: 'open', side: 'b', name: 'remote', protocol: 'golden/remote', id: hex(b4a.from('r')), handshake: hex(b4a.from([1, 2, 3])) },
  { op: 'send', side: 'b', name: 'remote', type: 1, data: hex(b4a.from('held')) },
  { op: 'deliver', to: 'a' },
  // A corked batch: messages on two channels and an open (that claims b's) inside.
  { op: 'cork', side: 'a' },
  { op: 'send', side: 'a', name: 'alpha', type: 0, data: hex(b4a.from('x')) },
  { op: 'open', side: 'a', name: 'remote', protocol: 'golden/remote', id: hex(b4a.from('r')), handshake: '' },
  { op: 'send', side: 'a', name: 'remote', type: 1, data: hex(b4a.from('y')) },
  { op: 'send', side: 'a', name: 'alpha', type: 2, data: { fill: 7, len: 70000 } },
  { op: 'uncork', side: 'a' },
  { op: 'deliver', to: 'b' },
  // A corked batch with a close inside.
  { op: 'cork', side: 'b' },
  { op: 'send', side: 'b', name: 'remote', type: 0, data: hex(b4a.from('r0')) },
  { op: 'send', side: 'b', name: 'alpha', type: 0, data: hex(b4a.from('a0')) },
  { op: 'close', side: 'b', name: 'remote' },
  { op: 'uncork', side: 'b' },
  { op: 'deliver', to: 'a' },
  // Nobody answers: rejected.
  { op: 'open', side: 'a', name: 'nobody', protocol: 'golden/nobody', id: null, handshake: '' },
  { op: 'deliver', to: 'b' },
  { op: 'deliver', to: 'a' },
  // Close, then open again with the freed local id; b has no channel any more: rejected.
  { op: 'close', side: 'a', name: 'alpha' },
  { op: 'deliver', to: 'b' },
  { op: 'open', side: 'a', name: 'again', protocol: 'golden/alpha', id: '01'.repeat(32), handshake: '' },
  { op: 'deliver', to: 'b' },
  { op: 'deliver', to: 'a' }
]

async function run () {
  const out = []
  for (const step of steps) {
    for (const s of Object.values(sides)) s.stream.written = []
    const side = step.side || step.to
    const s = sides[side]
    switch (step.op) {
      case 'pair':
        s.mux.pair({ protocol: step.protocol }, (id) => {
          s.events.push({ event: 'pair', protocol: step.protocol, id: hex(id) })
          return new Promise(() => {}) // answered later by opening a channel
        })
        break
      case 'open': {
        const id = step.id === null ? null : b4a.from(step.id, 'hex')
        const ch = makeChannel(side, step.name, step.protocol, id)
        ch.open(b4a.from(step.handshake, 'hex'))
        break
      }
      case 'send':
        s.channels[step.name].messages[step.type].send(bytesOf(step.data))
        break
      case 'cork':
        s.mux.cork()
        break
      case 'uncork':
        s.mux.uncork()
        break
      case 'close':
        s.channels[step.name].close()
        break
      case 'deliver': {
        // Everything the other side wrote so far, in order.
        for (const f of s.inbox.splice(0)) s.stream.emit('data', f)
        break
      }
    }
    await tick()
    const frames = {}
    const events = {}
    for (const [name, x] of Object.entries(sides)) {
      frames[name] = x.stream.written.map(hex)
      sides[other(name)].inbox.push(...x.stream.written)
      events[name] = x.events.splice(0)
    }
    out.push({ ...step, frames, events })
  }
  return out
}

run().then((steps) => {
  const doc = {
    note: 'generated by tests/interop/scripts/gen-protomux-vectors.js with the packages in package-lock.json (protomux ' + require('protomux/package.json').version + ')',
    steps
  }
  process.stdout.write(JSON.stringify(doc, null, 2) + '\n')
})
