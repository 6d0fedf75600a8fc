// A JS corestore 7 / hypercore 11.37.1 peer replicating over @hyperswarm/secret-stream over
// TCP (`store.replicate(noiseStream)`), driven by corenet's interop tests through commands on
// stdin (one JSON object per line).
//
//   node replicate-peer.js server|client <host> <port> <seedHex>
//
// The server listens on <host>:<port> (port 0 picks one) and prints
//   {"event":"listening","port":N}
// Both roles print {"event":"ready"} once the secret stream is up. The store lives in a
// temporary directory removed on exit.
//
// Block i of a core made here with (size, salt) is `size` bytes, byte j being
// ((i * size + j) * 31 + salt) & 255 (corenet_tests::pattern with offset i * size).
//
// Commands (keys in hex) and their replies:
//   {"cmd":"create","name","blocks","size","salt"}  -> {"event":"created","name","key","discoveryKey","length","sha256"}
//   {"cmd":"append","key","blocks","size","salt"}   -> {"event":"appended","length"} (blocks continue the pattern)
//   {"cmd":"open","key"}                              -> {"event":"opened","key","length"}
//   {"cmd":"download","key","start","end"}           -> {"event":"downloaded","key","ms","sha256","bytes"}
//   {"cmd":"get","key","indexes":[...],"timeout"?}    -> {"event":"blocks","sha256":[...]} (sha256 of each block),
//        or {"event":"get-failed","message","got"} when a get fails (e.g. times out)
//   {"cmd":"has","key","index"}                       -> {"event":"has","value"}
//   {"cmd":"update","key"}                            -> {"event":"updated","result","length"}
//   {"cmd":"truncate","key","length"}                 -> {"event":"truncated","length","fork"}
//   {"cmd":"waitFork","key","fork","length"}          -> {"event":"fork","fork","length"} once at both
//   {"cmd":"waitLength","key","length"}               -> {"event":"length","length"}
//   {"cmd":"tamper","key"}                            -> {"event":"tampering"}: from now on every block this
//        peer uploads for the core has its first byte flipped (a malicious peer)
//   {"cmd":"info","key"}                              -> {"event":"info","length","contiguousLength","fork","peers"}
//   {"cmd":"ping","token"}                            -> {"event":"pong","token"}
// Events: {"event":"verification-error","key","message"} when a remote's proof fails,
// {"event":"stream-closed"}, {"event":"error","message"}.
'use strict'
const os = require('os')
const fs = require('fs')
const path = require('path')
const net = require('net')
const crypto = require('crypto')
const readline = require('readline')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const Corestore = require('corestore')
const b4a = require('b4a')

const [role, host, port, seedHex] = process.argv.slice(2)
const keyPair = NoiseSecretStream.keyPair(b4a.from(seedHex, 'hex'))

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-repl-peer-'))
const store = new Corestore(dir)
const cores = new Map() // key hex -> core

function print (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }
const hex = (b) => b4a.toString(b, 'hex')

function block (i, size, salt) {
  const b = b4a.allocUnsafe(size)
  const base = i * size
  for (let j = 0; j < size; j++) b[j] = ((base + j) * 31 + salt) & 255
  return b
}

function track (core) {
  const key = hex(core.key)
  if (cores.has(key)) return core
  cores.set(key, core)
  core.on('verification-error', (err) => print({ event: 'verification-error', key, message: err.message }))
  return core
}

async function coreOf (key) {
  if (cores.has(key)) return cores.get(key)
  const core = store.get({ key: b4a.from(key, 'hex') })
  await core.ready()
  return track(core)
}

async function sha256Of (core, start, end) {
  const h = crypto.createHash('sha256')
  let bytes = 0
  for (let i = start; i < end; i++) {
    const b = await core.get(i)
    h.update(b)
    bytes += b.byteLength
  }
  return { sha256: h.digest('hex'), bytes }
}

function tamperPeer (peer) {
  if (peer._corenetTampered) return
  peer._corenetTampered = true
  const send = peer.wireData.send.bind(peer.wireData)
  peer.wireData.send = (m) => {
    if (m.block) {
      const value = b4a.from(m.block.value)
      value[0] ^= 1
      m = { ...m, block: { ...m.block, value } }
    }
    return send(m)
  }
}

async function handle (cmd) {
  switch (cmd.cmd) {
    case 'create': {
      const core = store.get({ name: cmd.name })
      await core.ready()
      track(core)
      const batch = []
      for (let i = 0; i < cmd.blocks; i++) batch.push(block(i, cmd.size, cmd.salt))
      for (let i = 0; i < batch.length; i += 256) await core.append(batch.slice(i, i + 256))
      const { sha256 } = await sha256Of(core, 0, core.length)
      print({
        event: 'created',
        name: cmd.name,
        key: hex(core.key),
        discoveryKey: hex(core.discoveryKey),
        length: core.length,
        sha256
      })
      break
    }
    case 'append': {
      const core = await coreOf(cmd.key)
      const batch = []
      for (let i = 0; i < cmd.blocks; i++) batch.push(block(core.length + i, cmd.size, cmd.salt))
      await core.append(batch)
      print({ event: 'appended', length: core.length })
      break
    }
    case 'truncate': {
      const core = await coreOf(cmd.key)
      await core.truncate(cmd.length)
      print({ event: 'truncated', length: core.length, fork: core.fork })
      break
    }
    case 'waitFork': {
      const core = await coreOf(cmd.key)
      while (core.fork < cmd.fork || core.length < cmd.length) {
        await new Promise((resolve) => {
          core.once('truncate', resolve)
          core.once('append', resolve)
        })
      }
      print({ event: 'fork', fork: core.fork, length: core.length })
      break
    }
    case 'open': {
      const core = await coreOf(cmd.key)
      print({ event: 'opened', key: cmd.key, length: core.length })
      break
    }
    case 'download': {
      const core = await coreOf(cmd.key)
      const t = process.hrtime.bigint()
      await core.download({ start: cmd.start, end: cmd.end }).done()
      const ms = Number(process.hrtime.bigint() - t) / 1e6
      const { sha256, bytes } = await sha256Of(core, cmd.start, cmd.end)
      print({ event: 'downloaded', key: cmd.key, ms, sha256, bytes })
      break
    }
    case 'get': {
      const core = await coreOf(cmd.key)
      const out = []
      try {
        for (const i of cmd.indexes) {
          const b = await core.get(i, cmd.timeout ? { timeout: cmd.timeout } : {})
          out.push(crypto.createHash('sha256').update(b).digest('hex'))
        }
      } catch (err) {
        print({ event: 'get-failed', message: err.message, got: out.length })
        break
      }
      print({ event: 'blocks', sha256: out })
      break
    }
    case 'has': {
      const core = await coreOf(cmd.key)
      print({ event: 'has', value: await core.has(cmd.index) })
      break
    }
    case 'update': {
      const core = await coreOf(cmd.key)
      const result = await core.update()
      print({ event: 'updated', result, length: core.length })
      break
    }
    case 'waitLength': {
      const core = await coreOf(cmd.key)
      while (core.length < cmd.length) await new Promise((resolve) => core.once('append', resolve))
      print({ event: 'length', length: core.length })
      break
    }
    case 'tamper': {
      const core = await coreOf(cmd.key)
      core.on('peer-add', tamperPeer)
      for (const peer of core.peers) tamperPeer(peer)
      print({ event: 'tampering' })
      break
    }
    case 'info': {
      const core = await coreOf(cmd.key)
      print({
        event: 'info',
        length: core.length,
        contiguousLength: core.contiguousLength,
        fork: core.fork,
        peers: core.peers.length
      })
      break
    }
    case 'ping':
      print({ event: 'pong', token: cmd.token })
      break
    default:
      print({ event: 'error', message: 'unknown command ' + cmd.cmd })
  }
}

function run (socket, isInitiator) {
  socket.setNoDelay(true)
  const s = new NoiseSecretStream(isInitiator, socket, { keyPair })
  store.replicate(s)
  s.on('error', (err) => print({ event: 'error', message: err.message }))
  s.on('close', () => print({ event: 'stream-closed' }))
  s.opened.then((ok) => {
    if (!ok) return
    print({ event: 'ready' })
  })
}

// Commands run one after another, in order.
let queue = Promise.resolve()
const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (!line.trim()) return
  queue = queue.then(() => handle(JSON.parse(line))).catch((err) => {
    print({ event: 'error', message: 'command failed: ' + err.message, stack: err.stack })
  })
})
rl.on('close', () => shutdown(0))

async function shutdown (code) {
  try {
    await store.close()
  } catch {}
  fs.rmSync(dir, { recursive: true, force: true })
  process.exit(code)
}

if (role === 'server') {
  const server = net.createServer((socket) => { server.close(); run(socket, false) })
  server.listen(Number(port), host, () => print({ event: 'listening', port: server.address().port }))
} else {
  const socket = net.connect(Number(port), host)
  socket.on('error', (err) => print({ event: 'error', message: err.message }))
  run(socket, true)
}
setTimeout(() => { print({ event: 'error', message: 'timeout' }); shutdown(3) }, 300000).unref()
