// JS counterpart of `corenet bench`: the same end-to-end figures with hyperswarm 4, corestore 7
// / hypercore 11.37.1 and protomux on a local @hyperswarm/testnet of 10 nodes, in one process.
//   node bench/e2e.js [sizeMiB]
// Prints one JSON line with the keys `corenet bench --json` prints:
//   connect_ms_median   client join -> connection (fresh pair of swarms per round, 5 rounds)
//   replicate_mib_s     a core of sizeMiB (64 KiB blocks) downloaded after the connection
//   ext_rtt_us_median   1000 sequential 64-byte round trips on a protomux channel
//   ext_msgs_per_s      100,000 one-way 64-byte messages on that channel
//   replicating_kib_per_connection   a swarm serving a 1 MiB core to N swarms in a child
//                       process (each downloads it all and stays connected): growth of the
//                       server process's RSS / N (N = argv[3], default 50)
//   node bench/e2e.js clients <host:port> <keyHex> <n>   (the child)
// Stores live in temporary directories (corestore 7 keeps everything in RocksDB).
'use strict'
const os = require('os')
const fs = require('fs')
const path = require('path')
const createTestnet = require('@hyperswarm/testnet')
const Hyperswarm = require('hyperswarm')
const DHT = require('hyperdht')
const Corestore = require('corestore')
const Protomux = require('protomux')
const c = require('compact-encoding')
const crypto = require('hypercore-crypto')
const b4a = require('b4a')

const BLOCK = 64 * 1024
function median (v) { v.sort((a, b) => a - b); return v[Math.floor(v.length / 2)] }
const dirs = []
function tmpStore () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-e2e-js-'))
  dirs.push(dir)
  return new Corestore(dir)
}
function makeSwarm (bootstrap) {
  // firewalled: false on purpose: this bench measures the data path over a direct connection
  // (the Rust side of `corenet bench` connects directly too); connecting through NATs is
  // measured by the NAT lab (BENCHMARKS.md, scripts/natlab).
  return new Hyperswarm({ dht: new DHT({ bootstrap, host: '127.0.0.1', ephemeral: true, firewalled: false }) })
}
const nextConnection = (swarm) => new Promise((resolve) => swarm.once('connection', resolve))

// A 'bench' channel of raw messages on a connection's mux.
function benchChannel (conn, onmessage) {
  const ch = Protomux.from(conn).createChannel({ protocol: 'bench' })
  const msg = ch.addMessage({ encoding: c.raw, onmessage })
  ch.open()
  return { ch, msg, opened: new Promise((resolve) => { ch.fullyOpened().then(resolve) }) }
}

async function main () {
  const sizeMib = Number(process.argv[2] || 64)
  const testnet = await createTestnet(10, { host: '127.0.0.1' })
  const out = { impl: 'js' }

  const connect = []
  for (let i = 0; i < 5; i++) {
    const a = makeSwarm(testnet.bootstrap)
    const b = makeSwarm(testnet.bootstrap)
    a.on('connection', (conn) => conn.on('error', () => {}))
    await b.dht.fullyBootstrapped()
    const topic = crypto.data(b4a.from('bench-' + i))
    await a.join(topic, { server: true, client: false }).flushed()
    const t = performance.now()
    const got = nextConnection(b)
    b.join(topic, { server: false, client: true })
    const conn = await got
    connect.push(performance.now() - t)
    conn.on('error', () => {})
    await a.destroy(); await b.destroy()
  }
  out.connect_ms_median = median(connect)

  const storeA = tmpStore(); const storeB = tmpStore()
  const core = storeA.get({ name: 'bench' })
  await core.ready()
  let x = 0x7n
  const mask = (1n << 64n) - 1n
  const total = sizeMib * 1024 * 1024
  for (let off = 0; off < total;) {
    const batch = []
    for (let j = 0; j < 64 && off < total; j++) {
      const n = Math.min(BLOCK, total - off)
      const buf = b4a.alloc(n)
      for (let k = 0; k < n; k += 8) {
        x ^= (x << 13n) & mask; x ^= x >> 7n; x ^= (x << 17n) & mask
        buf.writeBigUInt64LE(x, 0 + Math.min(k, n - 8))
      }
      batch.push(buf); off += n
    }
    await core.append(batch)
  }
  const a = makeSwarm(testnet.bootstrap); const b = makeSwarm(testnet.bootstrap)
  let echoSide = null
  a.on('connection', (conn) => {
    conn.on('error', () => {})
    storeA.replicate(conn)
    echoSide = benchChannel(conn, (m) => { if (m[0] === 1) echoSide.msg.send(m) })
  })
  const copy = storeB.get({ key: core.key })
  await copy.ready()
  await a.join(core.discoveryKey, { server: true, client: true }).flushed()
  const got = nextConnection(b)
  b.join(copy.discoveryKey, { server: false, client: true })
  const conn = await got
  conn.on('error', () => {})
  storeB.replicate(conn)
  let onReply = null
  let received = 0; let onAll = null; let want = 0
  const mine = benchChannel(conn, (m) => {
    if (m[0] === 1 && onReply) onReply()
  })
  const t = performance.now()
  while (copy.length < core.length) await copy.update({ wait: true })
  await copy.download({ start: 0, end: core.length }).done()
  const secs = (performance.now() - t) / 1000
  out.replicate_mib = sizeMib
  out.replicate_mib_s = copy.byteLength / (1024 * 1024) / secs

  await mine.opened
  const ping = b4a.alloc(64); ping[0] = 1
  const rtt = []
  for (let i = 0; i < 1000; i++) {
    const t0 = performance.now()
    await new Promise((resolve) => { onReply = resolve; mine.msg.send(ping) })
    rtt.push((performance.now() - t0) * 1000)
  }
  out.ext_rtt_us_median = median(rtt)

  // One way: the echo side counts type-2 messages.
  const n = 100000
  const prev = echoSide.msg.onmessage
  echoSide.msg.onmessage = (m) => { if (m[0] === 2 && ++received === want) onAll() ; else if (prev) prev(m) }
  const one = b4a.alloc(64); one[0] = 2
  const done = new Promise((resolve) => { onAll = resolve; want = n })
  const t1 = performance.now()
  for (let i = 0; i < n; i++) mine.msg.send(one)
  await done
  out.ext_msgs_per_s = n / ((performance.now() - t1) / 1000)

  await a.destroy(); await b.destroy()
  await storeA.close(); await storeB.close()

  const conns = Number(process.argv[3] || 50)
  out.connections = conns
  out.replicating_kib_per_connection = await memory(testnet, conns)
  console.log(JSON.stringify(out))
  await testnet.destroy()
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
  process.exit(0)
}
async function memory (testnet, n) {
  const { spawn } = require('child_process')
  const store = tmpStore()
  const core = store.get({ name: 'memory' })
  await core.ready()
  const blocks = []
  for (let i = 0; i < 16; i++) blocks.push(b4a.alloc(BLOCK, i))
  await core.append(blocks)
  const server = makeSwarm(testnet.bootstrap)
  server.maxPeers = n * 2
  let conns = 0
  server.on('connection', (conn) => { conn.on('error', () => {}); conns++; store.replicate(conn) })
  await server.join(core.discoveryKey, { server: true, client: false }).flushed()
  await new Promise((resolve) => setTimeout(resolve, 500))
  global.gc && global.gc()
  const before = process.memoryUsage().rss
  const boot = testnet.bootstrap[0]
  const child = spawn(process.execPath, [__filename, 'clients', boot.host + ':' + boot.port, b4a.toString(core.key, 'hex'), String(n)], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise((resolve, reject) => {
    let buf = ''
    child.stdout.on('data', (d) => { buf += d; if (buf.includes('ready')) resolve() })
    child.on('exit', () => reject(new Error('clients exited')))
  })
  while (conns < n) await new Promise((resolve) => setTimeout(resolve, 20))
  await new Promise((resolve) => setTimeout(resolve, 1000))
  global.gc && global.gc()
  const after = process.memoryUsage().rss
  child.kill()
  await server.destroy({ force: true })
  await store.close()
  return (after - before) / 1024 / n
}

async function clients (boot, keyHex, n) {
  const [host, port] = boot.split(':')
  const copies = []
  for (let i = 0; i < n; i++) {
    const store = tmpStore()
    const copy = store.get({ key: b4a.from(keyHex, 'hex') })
    await copy.ready()
    const s = makeSwarm([{ host, port: Number(port) }])
    s.on('connection', (conn) => { conn.on('error', () => {}); store.replicate(conn) })
    s.join(copy.discoveryKey, { server: false, client: true })
    copies.push(copy)
  }
  for (const copy of copies) {
    while (copy.length === 0) await copy.update({ wait: true })
    await copy.download({ start: 0, end: copy.length }).done()
  }
  process.stdout.write('ready\n')
  process.on('SIGTERM', () => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
    process.exit(0)
  })
}

if (process.argv[2] === 'clients') clients(process.argv[3], process.argv[4], Number(process.argv[5]))
else main().catch((e) => { console.error(e); process.exit(1) })
