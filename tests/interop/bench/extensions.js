// The JS side of corenet's extension benchmark (BENCHMARKS.md, "extensions"), measured like
// the Rust criterion bench `crates/extensions/benches/extensions.rs`: what a JS app does for
// an extension, one protomux channel per name with one message, over a
// @hyperswarm/secret-stream pair over an in-memory pipe. 100,000 messages of a 32-byte
// string (c.string) sent with `send` (pausing on back-pressure), counted in `onmessage`;
// and the same with c.json values of about 32 bytes of JSON. Prints one JSON object with
// messages per second.
'use strict'
const Protomux = require('protomux')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const c = require('compact-encoding')

const COUNT = Number(process.argv[2] || 100000)

function run (encoding, value) {
  return new Promise((resolve) => {
    const sa = new NoiseSecretStream(true)
    const sb = new NoiseSecretStream(false)
    sa.rawStream.pipe(sb.rawStream).pipe(sa.rawStream)
    const ma = Protomux.from(sa)
    const mb = Protomux.from(sb)
    let got = 0
    let start = 0
    const a = ma.createChannel({ protocol: 'bench' })
    const send = a.addMessage({ encoding })
    const b = mb.createChannel({ protocol: 'bench' })
    b.addMessage({
      encoding,
      onmessage () {
        if (++got === COUNT) {
          const secs = Number(process.hrtime.bigint() - start) / 1e9
          sa.destroy()
          sb.destroy()
          resolve(COUNT / secs)
        }
      }
    })
    a.open()
    b.open()
    Promise.all([a.fullyOpened(), b.fullyOpened()]).then(() => {
      start = process.hrtime.bigint()
      let sent = 0
      const write = () => {
        while (sent < COUNT) {
          sent++
          if (!send.send(value)) return sa.once('drain', write)
        }
      }
      write()
    })
  })
}

async function main () {
  const out = {
    utf8SmallPerSec: await run(c.string, '0123456789abcdef0123456789abcdef'),
    jsonSmallPerSec: await run(c.json, { n: 1234, s: '0123456789abcdef' })
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

main()
