// JS counterpart of `cargo run --release -p corenet-swarm --example swarm-bench`.
//   node swarm.js latency [rounds]    median join-to-connection time on a 10-node testnet
//   node swarm.js memory [n]          server process memory per connection (clients in a child)
//   node swarm.js clients <host:port> <topicHex> <n>   (used by memory)
'use strict'
const createTestnet = require('@hyperswarm/testnet')
const Hyperswarm = require('hyperswarm')
const DHT = require('hyperdht')
const crypto = require('hypercore-crypto')
const b4a = require('b4a')
const { spawn } = require('child_process')

function median (v) { v.sort((a, b) => a - b); return v[Math.floor(v.length / 2)] }
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function makeSwarm (bootstrap) {
  // firewalled: false on purpose: this bench measures join-to-connection over a direct path;
  // connecting through NATs is measured by the NAT lab (BENCHMARKS.md, scripts/natlab).
  const dht = new DHT({ bootstrap, host: '127.0.0.1', ephemeral: true, firewalled: false })
  return new Hyperswarm({ dht })
}

async function latency (rounds) {
  const testnet = await createTestnet(10, { host: '127.0.0.1' })
  const topic = crypto.data(b4a.from('swarm bench latency'))
  const server = makeSwarm(testnet.bootstrap)
  const serverConns = []
  server.on('connection', (c) => { c.on('error', () => {}); serverConns.push(c) })
  await server.join(topic, { server: true, client: false }).flushed()
  const clientMs = []; const serverMs = []
  for (let i = 0; i < rounds; i++) {
    const client = makeSwarm(testnet.bootstrap)
    await client.dht.fullyBootstrapped()
    const before = serverConns.length
    const t = performance.now()
    const gotClient = new Promise((resolve) => client.once('connection', (c) => { c.on('error', () => {}); resolve(performance.now() - t) }))
    client.join(topic, { server: false, client: true })
    clientMs.push(await gotClient)
    while (serverConns.length === before) await sleep(0)
    serverMs.push(performance.now() - t)
    await client.destroy()
  }
  console.log(JSON.stringify({ implementation: 'js', bench: 'latency', nodes: 10, rounds, joinToConnectionClientMs: median(clientMs), joinToConnectionServerMs: median(serverMs) }))
  await server.destroy(); await testnet.destroy()
}

async function memory (n) {
  const testnet = await createTestnet(10, { host: '127.0.0.1' })
  const topic = crypto.data(b4a.from('swarm bench memory'))
  const server = makeSwarm(testnet.bootstrap)
  server.maxPeers = n * 2
  const conns = []
  server.on('connection', (c) => { c.on('error', () => {}); conns.push(c) })
  await server.join(topic, { server: true, client: false }).flushed()
  await sleep(500)
  global.gc && global.gc()
  const before = process.memoryUsage().rss
  const child = spawn(process.execPath, [__filename, 'clients', testnet.bootstrap[0].host + ':' + testnet.bootstrap[0].port, b4a.toString(topic, 'hex'), String(n)], { stdio: 'inherit' })
  const deadline = Date.now() + 120000
  while (conns.length < n && Date.now() < deadline) await sleep(50)
  await sleep(1000)
  global.gc && global.gc()
  const after = process.memoryUsage().rss
  console.log(JSON.stringify({ implementation: 'js', bench: 'memory', connections: conns.length, kibPerConnection: (after - before) / 1024 / Math.max(1, conns.length) }))
  child.kill()
  await server.destroy({ force: true }); await testnet.destroy()
  process.exit(0)
}

async function clients (boot, topicHex, n) {
  const [host, port] = boot.split(':')
  const topic = b4a.from(topicHex, 'hex')
  for (let i = 0; i < n; i++) {
    const s = makeSwarm([{ host, port: Number(port) }])
    s.on('connection', (c) => c.on('error', () => {}))
    s.join(topic, { server: false, client: true })
  }
}

const [mode, a, b, c] = process.argv.slice(2)
if (mode === 'memory') memory(Number(a || 100))
else if (mode === 'clients') clients(a, b, Number(c))
else latency(Number(a || 20))
