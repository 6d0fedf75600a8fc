// The JS peer of the NAT lab (tests/natlab). One event per line, a lower-case keyword first,
// keys in lower-case hex: the same contract as the `corenet` CLI, so the lab drives either.
//
//   node natlab-peer.js --bootstrap H:P [--bootstrap H:P ...] [options] ROLE
//
// Roles:
//   listen            announce a server and echo every connection's bytes. Prints
//                     `listening <key>` once announced, then `connection <remote key>` each.
//   connect <key>     connect, send one line, read the echo, exit. Prints
//                     `connected <key> <ms>` (connect() call to the secret stream being open),
//                     `path <kind> <ms>` (how it connected, see below), `echo <ms>` (to the
//                     first echoed byte); on failure `error <CODE> <ms>` and exit code 1.
//   relay             a blind relay (blind-relay Server over DHT connections); prints
//                     `relay <key>`.
//   testnet           DHT infrastructure, not a peer: one non-ephemeral, unfirewalled node
//                     per --host (the first one bootstraps the rest) on --port; prints
//                     `bootstrap <host:port>` per node, then `ready`.
// Options:
//   --bootstrap H:P      repeatable; required (the lab has no way out, and a peer without it
//                        would try the public bootstrap nodes)
//   --seed HEX32         identity seed (default: random); --key-file F reads the seed from F
//   --relay-through KEY  connect/listen through this blind relay (hyperdht relayThrough)
//   --timeout S          connect: give up after S seconds (`error TIMEOUT <ms>`), default 60
//   --host IP, --port P  testnet only: where the nodes bind (defaults 127.0.0.1, 49737)
//   --walk-delay MS      testnet only: answer dht-rpc's FIND_NODE (the bootstrap and refresh
//                        walk) after MS ms (default 0); every other command at once. On the
//                        internet a bootstrap walk takes several round trips, and dht-rpc's
//                        quick PING_NAT to the first node that answered comes back before it
//                        ends; a 5-node DHT with no latency ends the walk in the same
//                        instant, testNat is still false, and a JS peer on an open host stays
//                        firewalled. This restores the order without delaying hyperdht's
//                        own commands (FIND_PEER, ANNOUNCE, PEER_HANDSHAKE, PEER_HOLEPUNCH).
//
// Every role except testnet runs hyperdht with its DEFAULT options apart from `bootstrap`, as
// real applications do: firewalled, ephemeral, adaptive, bound to 0.0.0.0.
//
// Diagnostics (also lines on stdout, ignored by the lab's parser except as records):
//   `node firewalled=<bool> randomized=<bool> address=<host:port|none>` after bootstrap: the
//       dht-rpc view of this node.
//   `nat <stage> local=<FIREWALL> remote=<FIREWALL>` when a holepunch analyses its socket
//       (stage `analyze`, client only) or starts punching (stage `punch`, both sides): the
//       per-connection classification of lib/nat.js.
//   `stats <json>` at exit: dht.stats.punches and dht.stats.relaying.
// `path` kinds (client): open (server OPEN, dialled directly), passive (client OPEN, the server
// dialled us), lan (a private address won: the LAN shortcut), fastopen (a holepunch socket
// won in round 0, before a strategy ran: the server pinged back at once), consistent /
// random (the holepunch strategy that ran, dht.stats.punches), relay (through the blind
// relay), unknown.
// Listen and relay exit on SIGINT/SIGTERM or when stdin ends.
'use strict'
const DHT = require('hyperdht')
const Holepuncher = require('hyperdht/lib/holepuncher')
const { FIREWALL } = require('hyperdht/lib/constants')
const { FIND_NODE } = require('dht-rpc/lib/commands')
const BlindRelay = require('blind-relay')
const { isPrivate } = require('bogon')
const b4a = require('b4a')
const fs = require('fs')

const hex = (b) => b4a.toString(b, 'hex')
const FIREWALL_NAMES = Object.fromEntries(Object.entries(FIREWALL).map(([k, v]) => [v, k]))
const say = (line) => process.stdout.write(line + '\n')

function usage (msg) {
  process.stderr.write('natlab-peer: ' + msg + '\n')
  process.exit(2)
}

function parseArgs (argv) {
  const o = { bootstrap: [], hosts: [], port: 49737, walkDelay: 0, timeout: 60, seed: null, relayThrough: null, role: null, key: null }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) usage(a + ' needs a value')
      return argv[++i]
    }
    if (a === '--bootstrap') {
      const [host, port] = next().split(':')
      if (!host || !(Number(port) > 0)) usage('bad --bootstrap')
      o.bootstrap.push({ host, port: Number(port) })
    } else if (a === '--seed') o.seed = next()
    else if (a === '--key-file') o.seed = fs.readFileSync(next(), 'utf8').trim()
    else if (a === '--relay-through') o.relayThrough = b4a.from(next(), 'hex')
    else if (a === '--timeout') o.timeout = Number(next())
    else if (a === '--host') o.hosts.push(next())
    else if (a === '--port') o.port = Number(next())
    else if (a === '--walk-delay') o.walkDelay = Number(next())
    else if (a.startsWith('--')) usage('unknown option ' + a)
    else if (!o.role) o.role = a
    else if (!o.key) o.key = a
    else usage('unexpected argument ' + a)
  }
  if (!['listen', 'connect', 'relay', 'testnet'].includes(o.role)) usage('role: listen | connect <key> | relay | testnet')
  if (o.role !== 'testnet' && o.bootstrap.length === 0) usage('--bootstrap is required')
  if (o.role === 'connect' && !/^[0-9a-f]{64}$/.test(o.key || '')) usage('connect needs a 64-hex public key')
  if (o.seed !== null && !/^[0-9a-f]{64}$/.test(o.seed)) usage('seed must be 64 hex characters')
  if (o.relayThrough !== null && o.relayThrough.length !== 32) usage('--relay-through needs a 64-hex key')
  return o
}

// Instrumentation, not behaviour: report each Holepuncher's classification of its own socket
// and of the remote, once per distinct line.
function instrumentHolepuncher () {
  const seen = new Set()
  const report = (stage, p) => {
    const line = `nat ${stage} local=${FIREWALL_NAMES[p.nat.firewall]} remote=${FIREWALL_NAMES[p.remoteFirewall]}`
    if (seen.has(line)) return
    seen.add(line)
    say(line)
  }
  const analyze = Holepuncher.prototype.analyze
  Holepuncher.prototype.analyze = async function (allowReopen) {
    const stable = await analyze.call(this, allowReopen)
    if (this.isInitiator) report('analyze', this)
    return stable
  }
  const punch = Holepuncher.prototype.punch
  Holepuncher.prototype.punch = function () {
    if (!this._punching) report('punch', this)
    return punch.call(this)
  }
}

function nodeLine (dht) {
  const addr = dht.host ? `${dht.host}:${dht.port}` : 'none'
  return `node firewalled=${dht.firewalled} randomized=${dht.randomized} address=${addr}`
}

function statsLine (dht) {
  return 'stats ' + JSON.stringify({ punches: dht.stats.punches, relaying: dht.stats.relaying })
}

// Ends a long-running role on SIGINT, SIGTERM or stdin closing, printing the stats first.
function untilStopped (dht, extra = () => {}) {
  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    say(statsLine(dht))
    extra()
    const force = setTimeout(() => process.exit(0), 2000)
    force.unref()
    try { await dht.destroy({ force: true }) } catch {}
    process.exit(0)
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  process.stdin.on('end', stop)
  process.stdin.on('error', stop)
  process.stdin.resume()
}

async function listen (o) {
  const dht = new DHT({ bootstrap: o.bootstrap })
  await dht.fullyBootstrapped()
  say(nodeLine(dht))
  const keyPair = DHT.keyPair(o.seed ? b4a.from(o.seed, 'hex') : undefined)
  const server = dht.createServer({ relayThrough: o.relayThrough }, (conn) => {
    say(`connection ${hex(conn.remotePublicKey)}`)
    conn.on('data', (d) => conn.write(d))
    conn.on('error', () => {})
    conn.on('end', () => conn.end())
  })
  untilStopped(dht)
  await server.listen(keyPair)
  say(`listening ${hex(keyPair.publicKey)}`)
}

async function relay (o) {
  const dht = new DHT({ bootstrap: o.bootstrap })
  await dht.fullyBootstrapped()
  say(nodeLine(dht))
  const keyPair = DHT.keyPair(o.seed ? b4a.from(o.seed, 'hex') : undefined)
  const relayServer = new BlindRelay.Server({
    createStream: (opts) => dht.createRawStream({ ...opts, framed: true })
  })
  const server = dht.createServer((socket) => {
    say(`connection ${hex(socket.remotePublicKey)}`)
    socket.on('error', () => {})
    const session = relayServer.accept(socket, { id: socket.remotePublicKey })
    session.on('error', () => {})
  })
  untilStopped(dht, () => say('relay-stats ' + JSON.stringify(relayServer.stats)))
  await server.listen(keyPair)
  say(`relay ${hex(keyPair.publicKey)}`)
}

function pathKind (dht, socket, before, relaySockets) {
  const raw = socket.rawStream
  if (!raw) return 'unknown'
  for (const r of relaySockets) {
    const rs = r.rawStream
    if (rs && rs.socket === raw.socket && rs.remoteHost === raw.remoteHost && rs.remotePort === raw.remotePort) return 'relay'
  }
  if (raw.remoteHost && isPrivate(raw.remoteHost)) return 'lan'
  const p = dht.stats.punches
  if (p.open > before.open) return 'open'
  if (p.random > before.random) return 'random'
  if (p.consistent > before.consistent) return 'consistent'
  const dhtSocket = raw.socket === dht.io.serverSocket || raw.socket === dht.io.clientSocket
  if (dhtSocket && dht.remoteAddress()) return 'passive'
  // A holepunch socket that won before any strategy ran: the server answered the round-0
  // probe at once (it is consistent and the probe came to one of its own addresses).
  if (!dhtSocket) return 'fastopen'
  return 'unknown'
}

async function connect (o) {
  const dht = new DHT({ bootstrap: o.bootstrap, keyPair: o.seed ? DHT.keyPair(b4a.from(o.seed, 'hex')) : undefined })
  await dht.fullyBootstrapped()
  say(nodeLine(dht))

  // The relay connection hyperdht opens itself goes through dht.connect: remember it so the
  // path can be told apart.
  const relaySockets = []
  if (o.relayThrough) {
    const orig = dht.connect.bind(dht)
    dht.connect = (pk, opts) => {
      const s = orig(pk, opts)
      if (b4a.equals(b4a.isBuffer(pk) ? pk : b4a.from(pk, 'hex'), o.relayThrough)) relaySockets.push(s)
      return s
    }
  }

  const before = { ...dht.stats.punches }
  const t0 = performance.now()
  const ms = () => (performance.now() - t0).toFixed(1)
  let settled = false // a result line was printed
  let finishing = false
  const finish = async (code) => {
    if (finishing) return
    finishing = true
    say(statsLine(dht))
    const force = setTimeout(() => process.exit(code), 2000)
    force.unref()
    try { await dht.destroy({ force: true }) } catch {}
    process.exit(code)
  }
  const fail = (code) => {
    if (settled) return
    settled = true
    say(`error ${code} ${ms()}`)
    finish(1)
  }
  const timer = setTimeout(() => fail('TIMEOUT'), o.timeout * 1000)

  const socket = dht.connect(b4a.from(o.key, 'hex'), { relayThrough: o.relayThrough })
  socket.on('error', (err) => fail((err && err.code) || 'ERROR'))
  socket.on('close', () => fail('CLOSED'))
  socket.once('open', () => {
    const openMs = ms()
    say(`connected ${hex(socket.remotePublicKey)} ${openMs}`)
    say(`path ${pathKind(dht, socket, before, relaySockets)} ${openMs}`)
    socket.write('natlab ping\n')
  })
  socket.once('data', () => {
    clearTimeout(timer)
    if (settled) return
    settled = true
    say(`echo ${ms()}`)
    socket.destroy()
    finish(0)
  })
}

// Answers internal FIND_NODE requests after `ms` (see --walk-delay).
function delayWalk (node, ms) {
  const onrequest = node.io.onrequest
  node.io.onrequest = (req, external) => {
    if (req.internal && req.command === FIND_NODE) setTimeout(() => onrequest(req, external), ms)
    else onrequest(req, external)
  }
}

async function testnet (o) {
  const hosts = o.hosts.length ? o.hosts : ['127.0.0.1']
  const nodes = []
  const bootstrap = [...o.bootstrap]
  for (const host of hosts) {
    // The lab's public DHT infrastructure (bootstrap nodes on the internet side), reachable and
    // persistent on purpose; the peers behind the NATs run on hyperdht's defaults.
    const node = new DHT({ ephemeral: false, firewalled: false, bootstrap, host, port: o.port })
    await node.fullyBootstrapped()
    if (bootstrap.length === 0) bootstrap.push({ host, port: node.address().port })
    nodes.push(node)
    say(`bootstrap ${host}:${node.address().port}`)
  }
  if (o.walkDelay > 0) for (const node of nodes) delayWalk(node, o.walkDelay)
  say('ready')
  const stop = async () => {
    const force = setTimeout(() => process.exit(0), 2000)
    force.unref()
    for (const n of nodes.reverse()) { try { await n.destroy({ force: true }) } catch {} }
    process.exit(0)
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  process.stdin.on('end', stop)
  process.stdin.resume()
}

async function main () {
  const o = parseArgs(process.argv.slice(2))
  if (o.role === 'testnet') return testnet(o)
  instrumentHolepuncher()
  if (o.role === 'listen') return listen(o)
  if (o.role === 'relay') return relay(o)
  return connect(o)
}

main().catch((err) => {
  say(`error ${(err && err.code) || 'FATAL'} 0`)
  process.stderr.write(String((err && err.stack) || err) + '\n')
  process.exit(1)
})
