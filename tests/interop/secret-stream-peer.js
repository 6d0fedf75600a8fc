// A JS @hyperswarm/secret-stream peer over TCP, driven by corenet's interop tests.
//
//   node secret-stream-peer.js server|client <host> <port> <seedHex> <sendBytes> [salt]
//
// The server listens on <host>:<port> (port 0 picks one) and prints
//   {"event":"listening","port":N,"publicKey":"..."}
// Both roles then run one secret stream: send <sendBytes> bytes of the pattern
// byte[i] = (i * 31 + salt) & 255 in 16 KiB writes, end, read everything the other side sends,
// and print {"event":"handshake",...}, then {"event":"done","received":N,"patternOk":bool,
// "remoteSalt":S} or {"event":"error","message":"..."}. The received pattern's salt is the
// first byte received (the peer uses its own salt).
'use strict'
const net = require('net')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const b4a = require('b4a')

const [role, host, port, seedHex, sendBytes, saltArg] = process.argv.slice(2)
const keyPair = NoiseSecretStream.keyPair(b4a.from(seedHex, 'hex'))
const toSend = Number(sendBytes)
const salt = Number(saltArg || 7)

function print (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }

function pattern (len, salt, offset) {
  const b = b4a.alloc(len)
  for (let i = 0; i < len; i++) b[i] = ((offset + i) * 31 + salt) & 255
  return b
}

function run (socket, isInitiator) {
  const s = new NoiseSecretStream(isInitiator, socket, { keyPair })
  let received = 0
  let remoteSalt = -1
  let ok = true
  s.on('handshake', () => {
    print({
      event: 'handshake',
      publicKey: b4a.toString(s.publicKey, 'hex'),
      remotePublicKey: b4a.toString(s.remotePublicKey, 'hex'),
      handshakeHash: b4a.toString(s.handshakeHash, 'hex'),
      isInitiator: s.isInitiator
    })
  })
  s.on('data', (data) => {
    if (remoteSalt === -1 && data.length > 0) remoteSalt = data[0]
    for (let i = 0; i < data.length; i++) {
      if (data[i] !== (((received + i) * 31 + remoteSalt) & 255)) ok = false
    }
    received += data.length
  })
  s.on('end', () => print({ event: 'done', received, patternOk: ok, remoteSalt }))
  s.on('error', (err) => print({ event: 'error', message: err.message }))
  s.on('close', () => { print({ event: 'close' }); process.exit(0) })
  let off = 0
  function writeMore () {
    while (off < toSend) {
      const n = Math.min(16384, toSend - off)
      const more = s.write(pattern(n, salt, off))
      off += n
      if (!more) return s.once('drain', writeMore)
    }
    s.end()
  }
  writeMore()
}

if (role === 'server') {
  const server = net.createServer((socket) => { server.close(); run(socket, false) })
  server.listen(Number(port), host, () => {
    print({ event: 'listening', port: server.address().port, publicKey: b4a.toString(keyPair.publicKey, 'hex') })
  })
} else {
  const socket = net.connect(Number(port), host)
  socket.on('error', (err) => print({ event: 'error', message: err.message }))
  run(socket, true)
}
setTimeout(() => { print({ event: 'error', message: 'timeout' }); process.exit(3) }, 60000).unref()
