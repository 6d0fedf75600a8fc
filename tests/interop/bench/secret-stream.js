// The JS side of corenet's secret-stream benchmarks (BENCHMARKS.md), measured like the Rust
// criterion bench `crates/noise/benches/secret_stream.rs`:
//   raw:        sodium secretstream push + pull of one 64 KiB message (the crypto ceiling)
//   stream:     @hyperswarm/secret-stream pair over an in-memory pipe, 64 KiB writes
//   handshakes: complete XX handshakes over an in-memory pipe, per second
// Prints one JSON object.
'use strict'
const sodium = require('sodium-native')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const b4a = require('b4a')

const MSG = 64 * 1024

function raw (seconds) {
  const key = b4a.alloc(32, 1)
  const header = b4a.alloc(24)
  const ps = b4a.alloc(sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES)
  const pl = b4a.alloc(sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES)
  sodium.crypto_secretstream_xchacha20poly1305_init_push(ps, header, key)
  sodium.crypto_secretstream_xchacha20poly1305_init_pull(pl, header, key)
  const m = b4a.alloc(MSG, 7)
  const c = b4a.alloc(MSG + 17)
  const tag = b4a.alloc(1)
  let n = 0
  const start = process.hrtime.bigint()
  const end = start + BigInt(seconds * 1e9)
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < 16; i++) {
      sodium.crypto_secretstream_xchacha20poly1305_push(ps, c, m, null, 0)
      sodium.crypto_secretstream_xchacha20poly1305_pull(pl, m, tag, c, null)
      n++
    }
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9
  return (n * MSG) / secs / (1 << 20)
}

function pair () {
  const a = new NoiseSecretStream(true)
  const b = new NoiseSecretStream(false)
  a.rawStream.pipe(b.rawStream).pipe(a.rawStream)
  return [a, b]
}

function stream (totalMiB) {
  return new Promise((resolve) => {
    const [a, b] = pair()
    const total = totalMiB * (1 << 20)
    const buf = b4a.alloc(MSG, 9)
    let got = 0
    let start = 0
    b.on('data', (d) => {
      got += d.byteLength
      if (got >= total) {
        const secs = Number(process.hrtime.bigint() - start) / 1e9
        a.destroy(); b.destroy()
        resolve(totalMiB / secs)
      }
    })
    a.on('connect', () => {
      start = process.hrtime.bigint()
      let sent = 0
      const write = () => {
        while (sent < total) {
          sent += MSG
          if (!a.write(buf)) return a.once('drain', write)
        }
      }
      write()
    })
  })
}

async function handshakes (count) {
  const start = process.hrtime.bigint()
  for (let i = 0; i < count; i++) {
    const [a, b] = pair()
    await Promise.all([a.opened, b.opened])
    a.destroy(); b.destroy()
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9
  return count / secs
}

async function main () {
  stream(64) // warm up
  await stream(64)
  const result = {
    implementation: 'js',
    node: process.version,
    secretStream: require('@hyperswarm/secret-stream/package.json').version,
    rawPushPullMiBps: raw(3),
    streamMiBps: await stream(1024),
    handshakesPerSec: await handshakes(2000)
  }
  process.stdout.write(JSON.stringify(result) + '\n')
}
main()
