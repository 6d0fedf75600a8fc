// JS DHT peers for corenet's interop tests. One JSON object per line on stdout.
//
//   node dht-peer.js testnet <size>
//       starts @hyperswarm/testnet on 127.0.0.1, prints {"event":"ready","bootstrap":["127.0.0.1:port"]}
//   node dht-peer.js node <bootstrap host:port>
//       starts a hyperdht node on hyperdht's defaults that bootstraps from it, prints {"event":"ready","port":N}
//
// Both then read commands, one JSON object per line on stdin, and answer each with a line:
//   {"cmd":"announce","topic":hex,"seed":hex}            -> {"event":"announced"}
//   {"cmd":"lookup","topic":hex}                         -> {"event":"lookup","peers":[pkHex,...]}
//   {"cmd":"mutablePut","seed":hex,"value":hex,"seq":n}  -> {"event":"mutablePut"}
//   {"cmd":"mutableGet","publicKey":hex}                 -> {"event":"mutableGet","value":hex|null,"seq":n}
//   {"cmd":"immutablePut","value":hex}                   -> {"event":"immutablePut","hash":hex}
//   {"cmd":"immutableGet","hash":hex}                    -> {"event":"immutableGet","value":hex|null}
//   {"cmd":"listen","seed":hex,"refuse":hex?}            -> {"event":"listening","publicKey":hex,"relayAddresses":[...]}
//        then per connection {"event":"connection","remotePublicKey":hex}; it echoes every
//        byte back and ends when the client ends. A client with key `refuse` is firewalled.
//   {"cmd":"connect","publicKey":hex,"seed":hex,"data":hex} -> {"event":"connected","remotePublicKey":hex}
//        then {"event":"echo","data":hex} once as many bytes came back, or {"event":"error"}
// Errors print {"event":"error","message":...}. The process exits when stdin ends.
'use strict'
const DHT = require('hyperdht')
const createTestnet = require('@hyperswarm/testnet')
const b4a = require('b4a')
const readline = require('readline')

const hex = (b) => b4a.toString(b, 'hex')
const buf = (h) => b4a.from(h, 'hex')
function print (o) { process.stdout.write(JSON.stringify(o) + '\n') }

async function main () {
  const [mode, a] = process.argv.slice(2)
  let node
  let teardown
  if (mode === 'testnet') {
    // The testnet's nodes are DHT infrastructure (persistent bootstrap nodes by design);
    // the peer that listens and connects is a separate node on hyperdht's defaults, as a
    // real app runs it (firewalled until proven otherwise, ephemeral, adaptive).
    const testnet = await createTestnet(Number(a || 3), { host: '127.0.0.1' })
    node = new DHT({ bootstrap: testnet.bootstrap })
    await node.fullyBootstrapped()
    teardown = async () => { await node.destroy(); await testnet.destroy() }
    print({ event: 'ready', bootstrap: testnet.bootstrap.map((x) => x.host + ':' + x.port) })
  } else {
    const [host, port] = a.split(':')
    // hyperdht's defaults, as a real app runs it (firewalled until proven otherwise,
    // ephemeral, adaptive).
    node = new DHT({ bootstrap: [{ host, port: Number(port) }] })
    await node.fullyBootstrapped()
    teardown = () => node.destroy()
    print({ event: 'ready', port: node.address().port })
  }

  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', async (line) => {
    let c
    try { c = JSON.parse(line) } catch { return }
    try {
      if (c.cmd === 'announce') {
        const kp = DHT.keyPair(buf(c.seed))
        await node.announce(buf(c.topic), kp, []).finished()
        print({ event: 'announced' })
      } else if (c.cmd === 'lookup') {
        const peers = new Set()
        for await (const data of node.lookup(buf(c.topic))) {
          for (const p of data.peers) peers.add(hex(p.publicKey))
        }
        print({ event: 'lookup', peers: [...peers] })
      } else if (c.cmd === 'mutablePut') {
        const kp = DHT.keyPair(buf(c.seed))
        await node.mutablePut(kp, buf(c.value), { seq: c.seq })
        print({ event: 'mutablePut' })
      } else if (c.cmd === 'mutableGet') {
        const r = await node.mutableGet(buf(c.publicKey))
        print({ event: 'mutableGet', value: r ? hex(r.value) : null, seq: r ? r.seq : -1 })
      } else if (c.cmd === 'immutablePut') {
        const r = await node.immutablePut(buf(c.value))
        print({ event: 'immutablePut', hash: hex(r.hash) })
      } else if (c.cmd === 'listen') {
        const kp = DHT.keyPair(buf(c.seed))
        const server = node.createServer({
          firewall: (remotePublicKey) => !!c.refuse && hex(remotePublicKey) === c.refuse
        }, (conn) => {
          print({ event: 'connection', remotePublicKey: hex(conn.remotePublicKey) })
          conn.on('data', (d) => conn.write(d))
          conn.on('end', () => conn.end())
          conn.on('error', (err) => print({ event: 'connectionError', message: err.message }))
        })
        await server.listen(kp)
        print({ event: 'listening', publicKey: hex(kp.publicKey), relayAddresses: server.relayAddresses.map((a) => a.host + ':' + a.port) })
      } else if (c.cmd === 'connect') {
        const kp = DHT.keyPair(buf(c.seed))
        const conn = node.connect(buf(c.publicKey), { keyPair: kp })
        const want = buf(c.data)
        let got = b4a.alloc(0)
        conn.on('open', () => {
          print({ event: 'connected', remotePublicKey: hex(conn.remotePublicKey), punches: node.stats.punches })
          conn.write(want)
        })
        conn.on('data', (d) => {
          got = b4a.concat([got, d])
          if (got.length >= want.length) {
            print({ event: 'echo', data: hex(got) })
            conn.end()
          }
        })
        conn.on('error', (err) => print({ event: 'error', message: err.message, code: err.code }))
      } else if (c.cmd === 'immutableGet') {
        const r = await node.immutableGet(buf(c.hash))
        print({ event: 'immutableGet', value: r ? hex(r.value) : null })
      }
    } catch (err) {
      print({ event: 'error', message: err.message })
    }
  })
  rl.on('close', async () => { await teardown(); process.exit(0) })
}
main().catch((err) => { print({ event: 'error', message: err.message }); process.exit(1) })
setTimeout(() => process.exit(3), 120000).unref()
