// JS counterpart of `cargo run --release -p corenet-dht --example dht-bench`: median latency of
// announce, lookup and connect on a local @hyperswarm/testnet. Prints one JSON line.
'use strict'
const createTestnet = require('@hyperswarm/testnet')
const DHT = require('hyperdht')
const crypto = require('hypercore-crypto')
const b4a = require('b4a')

function median (v) { v.sort((a, b) => a - b); return v[Math.floor(v.length / 2)] }

async function main () {
  const nodes = Number(process.argv[2] || 100)
  const rounds = Number(process.argv[3] || 20)
  const testnet = await createTestnet(nodes, { host: '127.0.0.1' })
  // ephemeral: false, firewalled: false on purpose: this bench measures announce, lookup and
  // connect latency between two reachable nodes (connect over a direct path, no punch), the
  // same options as its Rust counterpart (crates/dht/examples/dht-bench.rs); the firewalled
  // default path is what the NAT lab and the holepunch interop tests measure.
  const a = testnet.createNode({ ephemeral: false, firewalled: false })
  const b = testnet.createNode({ ephemeral: false, firewalled: false })
  await a.fullyBootstrapped(); await b.fullyBootstrapped()
  await new Promise((resolve) => setTimeout(resolve, 500))
  const serverKp = DHT.keyPair()
  const server = a.createServer((c) => c.on('error', () => {}))
  await server.listen(serverKp)
  const announce = []; const lookup = []; const connect = []
  for (let i = 0; i < rounds; i++) {
    const topic = crypto.data(b4a.from('bench ' + i))
    const kp = DHT.keyPair()
    let t = performance.now()
    await a.announce(topic, kp).finished()
    announce.push(performance.now() - t)
    t = performance.now()
    for await (const _ of b.lookup(topic)) {} // eslint-disable-line no-unused-vars
    lookup.push(performance.now() - t)
    t = performance.now()
    const conn = b.connect(serverKp.publicKey, { keyPair: DHT.keyPair() })
    await new Promise((resolve, reject) => { conn.on('open', resolve); conn.on('error', reject) })
    connect.push(performance.now() - t)
    conn.on('error', () => {})
    conn.destroy()
  }
  console.log(JSON.stringify({ implementation: 'js', nodes, rounds, announceMs: median(announce), lookupMs: median(lookup), connectMs: median(connect) }))
  await server.close(); await a.destroy(); await b.destroy(); await testnet.destroy()
}
main()
