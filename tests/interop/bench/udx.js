// The JS side of corenet's UDX end-to-end benchmark (BENCHMARKS.md), the twin of
// `crates/udx/examples/udx-bench.rs`: one udx-native stream between two processes on
// loopback, raw or under @hyperswarm/secret-stream. Same setup protocol, so any pair works:
// the receiver's stream has id 1 and connects to the source of the first packet (as
// hyperdht's firewall does), the sender's stream has id 2.
//
//   node udx.js recv [--secret]               prints {"event":"listening","port":P}
//   node udx.js send <port> <MiB> [--secret]
//
// Each side prints {"event":"done","role","impl":"js","bytes","seconds","mibps",
// "cpuSeconds","cpuSecondsPerGiB"} (CPU = user + system time from process.cpuUsage()).
'use strict'
const UDX = require('udx-native')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const b4a = require('b4a')

const args = process.argv.slice(2)
const secret = args.includes('--secret')
const RECV_ID = 1
const SEND_ID = 2

function cpu () {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

function report (role, bytes, seconds, cpuSeconds) {
  const mib = bytes / (1 << 20)
  process.stdout.write(JSON.stringify({
    event: 'done', role, impl: 'js', secret, bytes, seconds, mibps: mib / seconds, cpuSeconds, cpuSecondsPerGiB: cpuSeconds / (mib / 1024)
  }) + '\n')
}

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, '127.0.0.1')

if (args[0] === 'recv') {
  const raw = udx.createStream(RECV_ID, {
    firewall (sock, port, host) {
      if (!raw.connected) raw.connect(sock, SEND_ID, port, host)
      return false
    }
  })
  const stream = secret ? new NoiseSecretStream(false, raw) : raw
  const cpu0 = cpu()
  let got = 0
  let start = 0
  stream.on('data', (d) => {
    if (start === 0) start = process.hrtime.bigint()
    got += d.byteLength
  })
  stream.on('end', () => {
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    report('recv', got, secs, cpu() - cpu0)
    stream.end()
  })
  stream.on('error', () => {})
  stream.on('close', () => { socket.close(); setTimeout(() => process.exit(0), 20) })
  process.stdout.write(JSON.stringify({ event: 'listening', port: socket.address().port }) + '\n')
} else if (args[0] === 'send') {
  const port = Number(args[1])
  const total = Number(args[2]) * (1 << 20)
  const raw = udx.createStream(SEND_ID)
  raw.connect(socket, RECV_ID, port, '127.0.0.1')
  const stream = secret ? new NoiseSecretStream(true, raw) : raw
  const chunk = b4a.alloc(65536, 0x5a)
  const cpu0 = cpu()
  let start = 0
  let sent = 0
  const write = () => {
    if (start === 0) start = process.hrtime.bigint()
    while (sent < total) {
      const n = Math.min(chunk.byteLength, total - sent)
      sent += n
      if (!stream.write(n === chunk.byteLength ? chunk : chunk.subarray(0, n))) return stream.once('drain', write)
    }
    stream.end()
  }
  stream.on('data', () => {})
  stream.on('error', () => {})
  stream.on('end', () => {
    // The receiver ends after it got everything: all our data is delivered.
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    report('send', total, secs, cpu() - cpu0)
  })
  stream.on('close', () => { socket.close(); setTimeout(() => process.exit(0), 20) })
  if (secret) stream.once('connect', write)
  else write()
} else {
  process.stderr.write('usage: node udx.js recv [--secret] | node udx.js send <port> <MiB> [--secret]\n')
  process.exit(2)
}
setTimeout(() => process.exit(3), 120000).unref()
