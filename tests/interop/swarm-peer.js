// A JS hyperswarm peer for corenet's interop tests, driven by JSON commands on stdin.
//
//   node swarm-peer.js <bootstrap host:port> <seedHex> [refuseKeyHex]
//
// Prints {"event":"ready","publicKey":hex}. Every connection prints
// {"event":"connection","remotePublicKey":hex,"isInitiator":bool,"handshakeHash":hex} and
// echoes what it receives (so the other side can check data both ways); a closed one prints
// {"event":"disconnected","remotePublicKey":hex}. A peer whose key is refuseKeyHex is
// refused by the firewall. Commands (one JSON object per line):
//   {"cmd":"join","topic":hex,"server":bool,"client":bool}  -> {"event":"joined","topic":hex} after flushed()
//   {"cmd":"refresh","topic":hex,"server":bool,"client":bool} -> {"event":"refreshed"}
//   {"cmd":"leave","topic":hex}                              -> {"event":"left"}
//   {"cmd":"joinPeer","publicKey":hex}                       -> {"event":"joinedPeer"}
//   {"cmd":"dhtConnect","publicKey":hex}                     -> {"event":"dhtConnect","ok":bool,"code":...}
//   {"cmd":"connections"}                                    -> {"event":"connections","keys":[hex]}
//   {"cmd":"send","publicKey":hex,"data":hex}                -> (writes to that connection)
// Received data on a connection also prints {"event":"data","remotePublicKey":hex,"data":hex}
// when it is not an echo of ours (first byte 0x01 marks an echo request).
'use strict'
const Hyperswarm = require('hyperswarm')
const DHT = require('hyperdht')
const b4a = require('b4a')
const readline = require('readline')

const hex = (b) => b4a.toString(b, 'hex')
const buf = (h) => b4a.from(h, 'hex')
function print (o) { process.stdout.write(JSON.stringify(o) + '\n') }

async function main () {
  const [boot, seed, refuse] = process.argv.slice(2)
  const [host, port] = boot.split(':')
  // hyperdht's defaults, as a real app runs it (firewalled until proven otherwise).
  const dht = new DHT({ bootstrap: [{ host, port: Number(port) }] })
  await dht.fullyBootstrapped()
  const swarm = new Hyperswarm({
    dht,
    seed: buf(seed),
    firewall: (remotePublicKey) => !!refuse && hex(remotePublicKey) === refuse
  })
  const discoveries = new Map()
  const conns = new Map()
  swarm.on('connection', (conn, info) => {
    const key = hex(conn.remotePublicKey)
    conns.set(key, conn)
    print({ event: 'connection', remotePublicKey: key, isInitiator: conn.isInitiator, handshakeHash: hex(conn.handshakeHash) })
    conn.on('data', (d) => {
      if (d[0] === 1) conn.write(d) // echo request
      else print({ event: 'data', remotePublicKey: key, data: hex(d) })
    })
    conn.on('error', () => {})
    conn.on('close', () => {
      if (conns.get(key) === conn) conns.delete(key)
      print({ event: 'disconnected', remotePublicKey: key })
    })
  })
  print({ event: 'ready', publicKey: hex(swarm.keyPair.publicKey) })

  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', async (line) => {
    let c
    try { c = JSON.parse(line) } catch { return }
    try {
      if (c.cmd === 'join') {
        const d = swarm.join(buf(c.topic), { server: c.server, client: c.client })
        discoveries.set(c.topic, d)
        await d.flushed()
        print({ event: 'joined', topic: c.topic })
      } else if (c.cmd === 'refresh') {
        await discoveries.get(c.topic).refresh({ server: c.server, client: c.client })
        print({ event: 'refreshed', topic: c.topic })
      } else if (c.cmd === 'leave') {
        await swarm.leave(buf(c.topic))
        print({ event: 'left', topic: c.topic })
      } else if (c.cmd === 'joinPeer') {
        swarm.joinPeer(buf(c.publicKey))
        print({ event: 'joinedPeer' })
      } else if (c.cmd === 'dhtConnect') {
        const s = swarm.dht.connect(buf(c.publicKey), { keyPair: swarm.keyPair })
        s.on('open', () => { print({ event: 'dhtConnect', ok: true }); s.destroy() })
        s.on('error', (err) => print({ event: 'dhtConnect', ok: false, code: err.code || err.message }))
      } else if (c.cmd === 'connections') {
        print({ event: 'connections', keys: [...conns.keys()] })
      } else if (c.cmd === 'send') {
        const conn = conns.get(c.publicKey)
        if (conn) conn.write(buf(c.data))
      }
    } catch (err) {
      print({ event: 'error', message: err.message })
    }
  })
  rl.on('close', async () => { await swarm.destroy(); await dht.destroy(); process.exit(0) })
}
main().catch((err) => { print({ event: 'error', message: err.message }); process.exit(1) })
setTimeout(() => process.exit(3), 300000).unref()
