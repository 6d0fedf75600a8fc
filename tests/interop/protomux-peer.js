// A JS protomux peer over @hyperswarm/secret-stream over TCP, driven by corenet's interop
// tests through commands on stdin (one JSON object per line).
//
//   node protomux-peer.js server|client <host> <port> <seedHex>
//
// The server listens on <host>:<port> (port 0 picks one) and prints
//   {"event":"listening","port":N}
// Both roles print {"event":"ready"} once the secret stream is up and the mux exists.
//
// Commands ("name" names a channel in this script; events carry it):
//   {"cmd":"open","name","protocol","id"?,"handshake"?,"unique"?}  -> {"event":"created","name","ok"}
//   {"cmd":"send","name","type","data"}             data in hex, or {"fill","len"}
//   {"cmd":"cork"} {"cmd":"uncork"}                 on the mux
//   {"cmd":"close","name"}
//   {"cmd":"pair","protocol","id"?,"mode","name"?,"delay"?,"handshake"?}
//        mode "accept": open a channel (named `name`) from the notification, at once;
//        "acceptLater": the same after `delay` ms, unless one is open already;
//        "reject": do nothing (protomux then rejects)
//   {"cmd":"unpair","protocol","id"?}
//   {"cmd":"state","name","protocol","id"?}          -> {"event":"state",...}
//   {"cmd":"end"}                                     end the stream
//   {"cmd":"ping","token"}                            -> {"event":"pong","token"} (ordering)
//
// Events: {"event":"open","name","handshake"}, {"event":"message","name","type","data"}
// (data in hex, or {"len","blake2b"} above 1 KiB), {"event":"close","name","remote"},
// {"event":"pair","protocol","id"}, {"event":"stream-closed"}, {"event":"error","message"}.
'use strict'
const net = require('net')
const readline = require('readline')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const Protomux = require('protomux')
const c = require('compact-encoding')
const b4a = require('b4a')
const sodium = require('sodium-native')

const [role, host, port, seedHex] = process.argv.slice(2)
const keyPair = NoiseSecretStream.keyPair(b4a.from(seedHex, 'hex'))

function print (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }

const hex = (b) => (b ? b4a.toString(b, 'hex') : null)
function payload (b) {
  if (b.byteLength <= 1024) return hex(b)
  const out = b4a.alloc(32)
  sodium.crypto_generichash(out, b)
  return { len: b.byteLength, blake2b: hex(out) }
}
function bytesOf (d) {
  if (d === undefined || d === null) return b4a.alloc(0)
  return typeof d === 'string' ? b4a.from(d, 'hex') : b4a.alloc(d.len, d.fill)
}
function idOf (id) {
  return id ? b4a.from(id, 'hex') : null
}

let mux = null
const channels = new Map()

function createChannel (name, protocol, id, unique) {
  const ch = mux.createChannel({
    protocol,
    id,
    unique: unique !== false,
    handshake: c.raw,
    messages: [0, 1, 2, 3].map((type) => ({
      encoding: c.raw,
      onmessage (data) { print({ event: 'message', name, type, data: payload(data) }) }
    })),
    onopen (handshake) { print({ event: 'open', name, handshake: hex(handshake) }) },
    onclose (remote) { print({ event: 'close', name, remote }) }
  })
  if (ch) channels.set(name, ch)
  return ch
}

function openChannel (name, protocol, id, handshake, unique) {
  const ch = createChannel(name, protocol, id, unique)
  print({ event: 'created', name, ok: ch !== null })
  if (ch) ch.open(bytesOf(handshake))
  return ch
}

function handle (cmd) {
  switch (cmd.cmd) {
    case 'open':
      openChannel(cmd.name, cmd.protocol, idOf(cmd.id), cmd.handshake, cmd.unique)
      break
    case 'send':
      channels.get(cmd.name).messages[cmd.type].send(bytesOf(cmd.data))
      break
    case 'cork':
      mux.cork()
      break
    case 'uncork':
      mux.uncork()
      break
    case 'close':
      channels.get(cmd.name).close()
      break
    case 'pair':
      mux.pair({ protocol: cmd.protocol, id: idOf(cmd.id) }, async (id) => {
        print({ event: 'pair', protocol: cmd.protocol, id: hex(id) })
        const name = cmd.name || cmd.protocol
        if (cmd.mode === 'accept') {
          openChannel(name, cmd.protocol, id, cmd.handshake)
        } else if (cmd.mode === 'acceptLater') {
          await new Promise((resolve) => setTimeout(resolve, cmd.delay || 100))
          if (!mux.opened({ protocol: cmd.protocol, id })) openChannel(name, cmd.protocol, id, cmd.handshake)
          else print({ event: 'created', name, ok: false })
        }
      })
      break
    case 'unpair':
      mux.unpair({ protocol: cmd.protocol, id: idOf(cmd.id) })
      break
    case 'state': {
      const ch = channels.get(cmd.name)
      print({
        event: 'state',
        name: cmd.name,
        opened: ch ? ch.opened : null,
        closed: ch ? ch.closed : null,
        muxOpened: mux.opened({ protocol: cmd.protocol, id: idOf(cmd.id) })
      })
      break
    }
    case 'end':
      mux.stream.end()
      break
    case 'ping':
      print({ event: 'pong', token: cmd.token })
      break
    default:
      print({ event: 'error', message: 'unknown command ' + cmd.cmd })
  }
}

function run (socket, isInitiator) {
  const s = new NoiseSecretStream(isInitiator, socket, { keyPair })
  mux = new Protomux(s)
  s.on('error', (err) => print({ event: 'error', message: err.message }))
  s.on('close', () => { print({ event: 'stream-closed' }); setTimeout(() => process.exit(0), 50) })
  s.opened.then((ok) => {
    if (!ok) return
    print({ event: 'ready' })
    const rl = readline.createInterface({ input: process.stdin })
    rl.on('line', (line) => {
      if (!line.trim()) return
      try {
        handle(JSON.parse(line))
      } catch (err) {
        print({ event: 'error', message: 'command failed: ' + err.message })
      }
    })
    rl.on('close', () => process.exit(0))
  })
}

if (role === 'server') {
  const server = net.createServer((socket) => { server.close(); run(socket, false) })
  server.listen(Number(port), host, () => print({ event: 'listening', port: server.address().port }))
} else {
  const socket = net.connect(Number(port), host)
  socket.on('error', (err) => print({ event: 'error', message: err.message }))
  run(socket, true)
}
setTimeout(() => { print({ event: 'error', message: 'timeout' }); process.exit(3) }, 120000).unref()
