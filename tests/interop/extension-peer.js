// A JS app that talks to corenet-extensions the way any protomux app would: one channel per
// extension, `mux.createChannel({ protocol: name })` with no id and no handshake, and one
// message type with a compact-encoding codec (c.string, c.json or c.raw). Over
// @hyperswarm/secret-stream over TCP; driven by corenet's interop tests through commands on
// stdin (one JSON object per line).
//
//   node extension-peer.js server|client <host> <port> <seedHex>
//
// The server listens on <host>:<port> (port 0 picks one) and prints
//   {"event":"listening","port":N}
// Both roles print {"event":"ready"} once the secret stream is up and the mux exists.
//
// Commands ("encoding" is "string", "json" or "raw"):
//   {"cmd":"open","protocol","encoding"}       createChannel + open -> {"event":"created","protocol","ok"}
//   {"cmd":"pair","protocol","encoding"}       mux.pair: a remote open creates and opens the channel
//   {"cmd":"send","protocol","data"}           data: a string (string), any JSON value (json), hex (raw)
//   {"cmd":"sendRaw","protocol","hex"}         these bytes as message type 0, whatever the encoding
//   {"cmd":"close","protocol"}
//   {"cmd":"ping","token"}                     -> {"event":"pong","token"} (ordering)
//
// Events: {"event":"open","protocol"}, {"event":"message","protocol","data"} (decoded as
// above), {"event":"close","protocol","remote"}, {"event":"stream-closed"},
// {"event":"error","message"}.
'use strict'
const net = require('net')
const readline = require('readline')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const Protomux = require('protomux')
const c = require('compact-encoding')
const b4a = require('b4a')

const [role, host, port, seedHex] = process.argv.slice(2)
const keyPair = NoiseSecretStream.keyPair(b4a.from(seedHex, 'hex'))

function print (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }

const ENCODINGS = { string: c.string, json: c.json, raw: c.raw }

// Marks a value whose bytes go out as they are (to send what a buggy peer would).
const RAW = Symbol('raw')

// The app's codec, plus a way to bypass it for `sendRaw`.
function withRaw (enc) {
  return {
    preencode (state, m) {
      if (m !== null && typeof m === 'object' && m[RAW]) state.end += m[RAW].byteLength
      else enc.preencode(state, m)
    },
    encode (state, m) {
      if (m !== null && typeof m === 'object' && m[RAW]) {
        state.buffer.set(m[RAW], state.start)
        state.start += m[RAW].byteLength
      } else {
        enc.encode(state, m)
      }
    },
    decode: enc.decode
  }
}

function show (encoding, m) {
  return encoding === 'raw' ? b4a.toString(m, 'hex') : m
}

let mux = null
const channels = new Map()

function create (protocol, encoding) {
  const ch = mux.createChannel({
    protocol,
    onopen () { print({ event: 'open', protocol }) },
    onclose (remote) {
      if (channels.get(protocol) === ch) channels.delete(protocol)
      print({ event: 'close', protocol, remote })
    }
  })
  if (!ch) return null
  ch.addMessage({
    encoding: withRaw(ENCODINGS[encoding]),
    onmessage (m) { print({ event: 'message', protocol, data: show(encoding, m) }) }
  })
  ch.encodingName = encoding
  channels.set(protocol, ch)
  ch.open()
  return ch
}

function handle (cmd) {
  switch (cmd.cmd) {
    case 'open': {
      const ch = create(cmd.protocol, cmd.encoding)
      print({ event: 'created', protocol: cmd.protocol, ok: ch !== null })
      break
    }
    case 'pair':
      mux.pair({ protocol: cmd.protocol }, () => {
        if (!mux.opened({ protocol: cmd.protocol })) create(cmd.protocol, cmd.encoding)
      })
      break
    case 'send': {
      const ch = channels.get(cmd.protocol)
      const data = ch.encodingName === 'raw' ? b4a.from(cmd.data, 'hex') : cmd.data
      ch.messages[0].send(data)
      break
    }
    case 'sendRaw':
      channels.get(cmd.protocol).messages[0].send({ [RAW]: b4a.from(cmd.hex, 'hex') })
      break
    case 'close':
      channels.get(cmd.protocol).close()
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
  mux = Protomux.from(s)
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
