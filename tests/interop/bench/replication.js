// The JS side of corenet's replication benchmark (BENCHMARKS.md): a corestore 7.12.5 /
// hypercore 11.37.1 core of N blocks replicated over @hyperswarm/secret-stream over TCP on
// 127.0.0.1, between two processes. The same modes are implemented by the Rust example
// `cargo run --release -p corenet-replication --example replicate-bench`, so any pair of
// implementations can be measured against each other.
//
//   node bench/replication.js serve <port> <blocks> <size>
//        makes the core (block i: `size` bytes of (i * 31 + 7) & 255), listens on <port>
//        (0 picks one), prints {"event":"listening","port","key"}, serves every connection
//   node bench/replication.js fetch <port> <key> <blocks>
//        connects, downloads the whole core into a fresh store, checks every block, prints
//        {"event":"fetched","blocks","bytes","secs","mibps"}
//   node bench/replication.js
//        JS -> JS for 64 KiB and 4 KiB blocks (TOTAL_MIB, default 64), one JSON line
//
// Both stores live in temporary directories (RocksDB, as hypercore 11 stores everything).
'use strict'
const os = require('os')
const fs = require('fs')
const path = require('path')
const net = require('net')
const { spawn } = require('child_process')
const readline = require('readline')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const Corestore = require('corestore')
const b4a = require('b4a')

const print = (o) => process.stdout.write(JSON.stringify(o) + '\n')

function blockOf (i, size) {
  return b4a.alloc(size, (i * 31 + 7) & 255)
}

function tmpStore (tag) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-repl-bench-' + tag + '-'))
  return { dir, store: new Corestore(dir) }
}

async function serve (port, blocks, size) {
  const { dir, store } = tmpStore('serve')
  const core = store.get({ name: 'bench' })
  await core.ready()
  for (let i = 0; i < blocks; i += 256) {
    const batch = []
    for (let j = i; j < Math.min(blocks, i + 256); j++) batch.push(blockOf(j, size))
    await core.append(batch)
  }
  const server = net.createServer((socket) => {
    socket.setNoDelay(true)
    const s = new NoiseSecretStream(false, socket)
    store.replicate(s)
    s.on('error', () => {})
  })
  server.listen(port, '127.0.0.1', () => {
    print({ event: 'listening', port: server.address().port, key: b4a.toString(core.key, 'hex') })
  })
  const stop = async () => {
    server.close()
    await store.close()
    fs.rmSync(dir, { recursive: true, force: true })
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.stdin.on('end', stop)
  process.stdin.resume()
}

async function fetch (port, key, blocks) {
  const { dir, store } = tmpStore('fetch')
  const core = store.get({ key: b4a.from(key, 'hex') })
  await core.ready()
  const socket = net.connect(port, '127.0.0.1')
  socket.setNoDelay(true)
  const s = new NoiseSecretStream(true, socket)
  store.replicate(s)
  s.on('error', () => {})
  const t = process.hrtime.bigint()
  await core.download({ start: 0, end: blocks }).done()
  const secs = Number(process.hrtime.bigint() - t) / 1e9
  let bytes = 0
  for (let i = 0; i < blocks; i++) {
    const b = await core.get(i)
    if (!b4a.equals(b, blockOf(i, b.byteLength))) throw new Error('block ' + i + ' differs')
    bytes += b.byteLength
  }
  print({ event: 'fetched', blocks, bytes, secs, mibps: bytes / secs / (1 << 20) })
  s.destroy()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

async function jsToJs (size, totalMiB) {
  const blocks = (totalMiB << 20) / size
  const child = spawn(process.execPath, [__filename, 'serve', '0', String(blocks), String(size)], {
    stdio: ['pipe', 'pipe', 'inherit']
  })
  const rl = readline.createInterface({ input: child.stdout })
  const listening = await new Promise((resolve) => rl.once('line', (l) => resolve(JSON.parse(l))))
  const out = await new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [__filename, 'fetch', String(listening.port), listening.key, String(blocks)], {
      stdio: ['ignore', 'pipe', 'inherit']
    })
    const r = readline.createInterface({ input: c.stdout })
    r.once('line', (l) => resolve(JSON.parse(l)))
    c.on('exit', (code) => { if (code) reject(new Error('fetch failed')) })
  })
  child.stdin.end()
  return Math.round(out.mibps)
}

async function main () {
  const [mode, ...args] = process.argv.slice(2)
  if (mode === 'serve') return serve(Number(args[0]), Number(args[1]), Number(args[2]))
  if (mode === 'fetch') return fetch(Number(args[0]), args[1], Number(args[2]))
  const totalMiB = Number(process.env.TOTAL_MIB || 64)
  const out = { hypercore: require('hypercore/package.json').version, totalMiB }
  out.jsToJs64KiB = await jsToJs(65536, totalMiB)
  out.jsToJs4KiB = await jsToJs(4096, totalMiB)
  print(out)
}

main().catch((err) => { console.error(err); process.exit(1) })
