// A udx-native stream peer, driven by corenet's UDX interop tests (tests/tests/udx_interop.rs).
//
//   node udx-peer.js listen  <localId> <remoteId> <sendBytes> [options]
//   node udx-peer.js connect <localId> <remoteId> <port> <sendBytes> [options]
//
// `listen` binds 127.0.0.1:0, prints {"event":"listening","port":N}, and connects its stream
// to the source of the first packet that reaches it (as hyperdht's firewall does). `connect`
// connects to 127.0.0.1:<port> at once. Both then send <sendBytes> bytes of the pattern
// byte[i] = (i * 31 + salt) & 255 in 64 KiB writes and end, read everything, and print:
//   {"event":"data","bytes":N,"sha256":hex,"patternOk":bool}   on the remote's END
//   {"event":"finish",stats...} {"event":"message","hex":...} {"event":"error","code":...}
//   {"event":"close",stats...}  (then exit 0), where stats are the stream's mtu, rtt,
//   rtoCount, retransmits and fastRecoveries
// Options: --salt=S (default 7), --no-end (never end the write side),
//          --destroy-after=N (destroy once N bytes were received),
//          --echo-messages (send every MESSAGE back), --message=HEX (send one MESSAGE at
//          connect), --keepalive=MS.
'use strict'
const UDX = require('udx-native')
const crypto = require('crypto')
const b4a = require('b4a')

const args = process.argv.slice(2)
const opts = {}
const pos = []
for (const a of args) {
  if (a.startsWith('--')) {
    const [k, v] = a.slice(2).split('=')
    opts[k] = v === undefined ? true : v
  } else pos.push(a)
}
const [role, localId, remoteId] = [pos[0], Number(pos[1]), Number(pos[2])]
const port = role === 'connect' ? Number(pos[3]) : 0
const sendBytes = Number(role === 'connect' ? pos[4] : pos[3])
const salt = Number(opts.salt || 7)

function print (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }

function pattern (len, salt, offset) {
  const b = b4a.allocUnsafe(len)
  for (let i = 0; i < len; i++) b[i] = ((offset + i) * 31 + salt) & 255
  return b
}

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, '127.0.0.1')

let started = false
const stream = udx.createStream(localId, {
  firewall (sock, p, host) {
    if (!stream.connected) {
      stream.connect(sock, remoteId, p, host)
      start()
    }
    return false
  }
})

let received = 0
let remoteSalt = -1
let ok = true
const hash = crypto.createHash('sha256')
stream.on('data', (data) => {
  if (remoteSalt === -1 && data.length > 0) remoteSalt = data[0]
  for (let i = 0; i < data.length; i++) {
    if (data[i] !== (((received + i) * 31 + remoteSalt) & 255)) { ok = false; break }
  }
  hash.update(data)
  received += data.length
  if (opts['destroy-after'] && received >= Number(opts['destroy-after'])) {
    print({ event: 'destroying', bytes: received })
    stream.destroy()
  }
})
stream.on('end', () => print({ event: 'data', bytes: received, sha256: hash.digest('hex'), patternOk: ok }))
function stats () {
  return { mtu: stream.mtu, rtt: stream.rtt, rtoCount: stream.rtoCount, retransmits: stream.retransmits, fastRecoveries: stream.fastRecoveries }
}
stream.on('finish', () => print({ event: 'finish', ...stats() }))
stream.on('message', (m) => {
  print({ event: 'message', hex: b4a.toString(m, 'hex') })
  if (opts['echo-messages']) stream.trySend(m)
})
stream.on('error', (err) => print({ event: 'error', code: err.code, message: err.message }))
stream.on('close', () => {
  print({ event: 'close', ...stats() })
  socket.close()
  setTimeout(() => process.exit(0), 50)
})

function start () {
  if (started) return
  started = true
  if (opts.keepalive) stream.setKeepalive(Number(opts.keepalive))
  if (opts.message) stream.trySend(b4a.from(opts.message, 'hex'))
  let off = 0
  function writeMore () {
    while (off < sendBytes) {
      const n = Math.min(65536, sendBytes - off)
      const more = stream.write(pattern(n, salt, off))
      off += n
      if (!more) return stream.once('drain', writeMore)
    }
    if (!opts['no-end']) stream.end()
  }
  writeMore()
}

if (role === 'listen') {
  let said = false
  const listening = () => {
    if (said) return
    said = true
    print({ event: 'listening', port: socket.address().port })
  }
  socket.on('listening', listening)
  if (socket.bound) listening()
} else {
  stream.connect(socket, remoteId, port, '127.0.0.1')
  start()
}
setTimeout(() => { print({ event: 'error', code: 'TIMEOUT', message: 'test timeout' }); process.exit(3) }, 120000).unref()
