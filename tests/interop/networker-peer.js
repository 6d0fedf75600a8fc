// A JS Hyperswarm + Corestore app with a protomux `chat` channel, as a JS developer would
// write it, for corenet's networker interop tests. Every connection replicates the store
// (`store.replicate(conn)`) and opens a `chat` channel on the same protomux instance
// (`Protomux.from(conn)` returns the mux hypercore put on `conn.userData`, whichever runs
// first), one message of encoding `c.string`: the wire of a corenet `chat` extension
// registered with `ExtensionOptions::utf8()`. Driven by JSON commands on stdin.
//
//   node networker-peer.js <bootstrap host:port> <seedHex> [storageDir]
//
// The DHT bootstraps from the given node (a corenet Testnet). The Hyperswarm key pair comes
// from the seed. The Corestore lives in storageDir (kept on exit, so a restarted app finds
// its cores again), or in a temporary directory removed on exit.
//
// Events (one JSON object per line on stdout, keys in hex):
//   {"event":"ready","publicKey"}
//   {"event":"connection","remotePublicKey","isInitiator","remoteHost","remotePort"}
//   {"event":"chat-open","remotePublicKey"}            the remote opened its chat side
//   {"event":"chat","from","text"}                      a chat line, with its sender's key
//   {"event":"disconnect","remotePublicKey"}
//   {"event":"error","message"}
// Commands (one JSON object per line; every reply carries the command's "id" if it had one;
// commands run concurrently, so a waiting one does not hold up the others):
//   {"cmd":"create","name","data":[string]}      a writable core named `name`, the strings appended
//        -> {"event":"created","name","key","discoveryKey","length"}
//   {"cmd":"append","key","data":[string]}       -> {"event":"appended","key","length"}
//   {"cmd":"open","key"}                          -> {"event":"opened","key","discoveryKey","length","writable"}
//   {"cmd":"get","key","index","timeout"?}        -> {"event":"block","key","index","text"}
//        or {"event":"get-failed","key","index","message"}
//   {"cmd":"waitLength","key","length"}           -> {"event":"length","key","length"}
//   {"cmd":"join","topic","server","client"}      swarm.join + discovery.flushed() -> {"event":"joined","topic"}
//   {"cmd":"leave","topic"}                       -> {"event":"left","topic"}
//   {"cmd":"chat","text","to"?}                   to one peer's key, else to every peer with chat open
//        -> {"event":"sent","count"}
//   {"cmd":"connections"}                         -> {"event":"connections","peers":[{"publicKey","isInitiator","chatOpen"}]}
//   {"cmd":"exit"}                                swarm.destroy(), store.close() -> {"event":"bye"}, exit 0
'use strict'
const os = require('os')
const fs = require('fs')
const path = require('path')
const readline = require('readline')
const Hyperswarm = require('hyperswarm')
const DHT = require('hyperdht')
const Corestore = require('corestore')
const Protomux = require('protomux')
const c = require('compact-encoding')
const b4a = require('b4a')

const hex = (b) => b4a.toString(b, 'hex')
const buf = (h) => b4a.from(h, 'hex')
function print (o) { process.stdout.write(JSON.stringify(o) + '\n') }

const [boot, seedHex, storageDir] = process.argv.slice(2)
const dir = storageDir || fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-networker-peer-'))

const store = new Corestore(dir)
const cores = new Map() // key hex -> core
const peers = new Map() // remote key hex -> { conn, chat, open }
let swarm = null
let dht = null

async function coreOf (key) {
  if (cores.has(key)) return cores.get(key)
  const core = store.get({ key: buf(key) })
  await core.ready()
  cores.set(key, core)
  return core
}

function onconnection (conn) {
  const key = hex(conn.remotePublicKey)
  // Replication and chat share the connection's one mux.
  store.replicate(conn)
  const mux = Protomux.from(conn)
  const peer = { conn, chat: null, open: false }
  peer.chat = mux.createChannel({
    protocol: 'chat',
    onopen () {
      peer.open = true
      print({ event: 'chat-open', remotePublicKey: key })
    },
    onclose () { peer.open = false }
  })
  peer.chat.addMessage({
    encoding: c.string,
    onmessage (text) { print({ event: 'chat', from: key, text }) }
  })
  peer.chat.open()
  peers.set(key, peer)
  const raw = conn.rawStream || {}
  print({
    event: 'connection',
    remotePublicKey: key,
    isInitiator: conn.isInitiator,
    remoteHost: raw.remoteHost,
    remotePort: raw.remotePort
  })
  conn.on('error', () => {})
  conn.on('close', () => {
    if (peers.get(key) === peer) peers.delete(key)
    print({ event: 'disconnect', remotePublicKey: key })
  })
}

async function handle (cmd) {
  const reply = (o) => print(cmd.id === undefined ? o : { ...o, id: cmd.id })
  switch (cmd.cmd) {
    case 'create': {
      const core = store.get({ name: cmd.name })
      await core.ready()
      cores.set(hex(core.key), core)
      if (cmd.data && cmd.data.length) await core.append(cmd.data.map((s) => b4a.from(s)))
      reply({ event: 'created', name: cmd.name, key: hex(core.key), discoveryKey: hex(core.discoveryKey), length: core.length })
      break
    }
    case 'append': {
      const core = await coreOf(cmd.key)
      await core.append(cmd.data.map((s) => b4a.from(s)))
      reply({ event: 'appended', key: cmd.key, length: core.length })
      break
    }
    case 'open': {
      const core = await coreOf(cmd.key)
      reply({ event: 'opened', key: cmd.key, discoveryKey: hex(core.discoveryKey), length: core.length, writable: core.writable })
      break
    }
    case 'get': {
      const core = await coreOf(cmd.key)
      try {
        const b = await core.get(cmd.index, cmd.timeout ? { timeout: cmd.timeout } : {})
        reply({ event: 'block', key: cmd.key, index: cmd.index, text: b4a.toString(b) })
      } catch (err) {
        reply({ event: 'get-failed', key: cmd.key, index: cmd.index, message: err.message })
      }
      break
    }
    case 'waitLength': {
      const core = await coreOf(cmd.key)
      while (core.length < cmd.length) await new Promise((resolve) => core.once('append', resolve))
      reply({ event: 'length', key: cmd.key, length: core.length })
      break
    }
    case 'join': {
      const discovery = swarm.join(buf(cmd.topic), { server: cmd.server, client: cmd.client })
      await discovery.flushed()
      reply({ event: 'joined', topic: cmd.topic })
      break
    }
    case 'leave':
      await swarm.leave(buf(cmd.topic))
      reply({ event: 'left', topic: cmd.topic })
      break
    case 'chat': {
      let count = 0
      for (const [key, peer] of peers) {
        if (cmd.to !== undefined && cmd.to !== key) continue
        if (!peer.open) continue
        peer.chat.messages[0].send(cmd.text)
        count++
      }
      reply({ event: 'sent', count })
      break
    }
    case 'connections':
      reply({
        event: 'connections',
        peers: [...peers].map(([key, p]) => ({ publicKey: key, isInitiator: p.conn.isInitiator, chatOpen: p.open }))
      })
      break
    case 'exit':
      await shutdown()
      reply({ event: 'bye' })
      process.exit(0)
      break
    default:
      reply({ event: 'error', message: 'unknown command ' + cmd.cmd })
  }
}

let closing = null
function shutdown () {
  if (closing) return closing
  closing = (async () => {
    try { if (swarm) await swarm.destroy() } catch {}
    try { if (dht) await dht.destroy() } catch {}
    try { await store.close() } catch {}
    if (!storageDir) fs.rmSync(dir, { recursive: true, force: true })
  })()
  return closing
}

async function main () {
  const [host, port] = boot.split(':')
  // hyperdht's defaults, as a real app runs it (firewalled until proven otherwise).
  dht = new DHT({ bootstrap: [{ host, port: Number(port) }] })
  await dht.fullyBootstrapped()
  await store.ready()
  swarm = new Hyperswarm({ dht, seed: buf(seedHex) })
  swarm.on('connection', onconnection)
  print({ event: 'ready', publicKey: hex(swarm.keyPair.publicKey) })

  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    if (!line.trim()) return
    let cmd
    try { cmd = JSON.parse(line) } catch (err) { return print({ event: 'error', message: 'bad command: ' + err.message }) }
    handle(cmd).catch((err) => print({ event: 'error', message: cmd.cmd + ' failed: ' + err.message }))
  })
  rl.on('close', async () => { await shutdown(); process.exit(0) })
}

main().catch((err) => { print({ event: 'error', message: err.message }); process.exit(1) })
setTimeout(() => { print({ event: 'error', message: 'timeout' }); shutdown().then(() => process.exit(3)) }, 120000).unref()
