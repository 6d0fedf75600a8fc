// Writes the seed corpus of the corenet fuzz targets from the JS stack's own encoders
// (hyperdht, dht-rpc, blind-relay, protomux, hypercore, noise-handshake, udx-native,
// compact-encoding), so that fuzzing starts from what real JS peers send.
//
//   node fuzz/seeds/gen.js [path/to/tests/interop]
//
// The interop directory (default: ../../tests/interop from this file) holds node_modules with
// the JS packages (`npm ci` there). Each target's seeds go to fuzz/seeds/<target>/; a seed
// starts with the selector or mode byte the target documents. The output is deterministic
// except where noted (UDX packets captured on loopback carry JS-chosen ids and windows).
'use strict'
const fs = require('fs')
const path = require('path')
const { createRequire } = require('module')

const interop = path.resolve(process.argv[2] || path.join(__dirname, '..', '..', 'tests', 'interop'))
const req = createRequire(path.join(interop, 'package.json'))
const c = req('compact-encoding')
const b4a = req('b4a')
const sodium = req('sodium-native')
const hdm = req('hyperdht/lib/messages')
const relay = req('blind-relay')
const hcm = req('hypercore/lib/messages')
const hcc = req('hypercore/node_modules/compact-encoding')

const out = path.join(__dirname)
let count = 0
function seed (target, name, ...parts) {
  const dir = path.join(out, target)
  fs.mkdirSync(dir, { recursive: true })
  const buf = Buffer.concat(parts.map((p) => (typeof p === 'number' ? Buffer.from([p]) : Buffer.from(p))))
  fs.writeFileSync(path.join(dir, name), buf)
  count++
}
const fill = (n, b) => Buffer.alloc(n, b)
const addr = (host, port) => ({ host, port })
const keyPair = (s) => {
  const publicKey = Buffer.alloc(32)
  const secretKey = Buffer.alloc(64)
  sodium.crypto_sign_seed_keypair(publicKey, secretKey, fill(32, s))
  return { publicKey, secretKey }
}

// ---------------------------------------------------------------- dht_rpc
// dht-rpc has no exported encoder: this is `lib/io.js` `_encodeRequest` / `_sendReply`,
// line for line, over dht-rpc's own `peer.ipv4` and compact-encoding.
const peer = req('dht-rpc/lib/peer')
function rpcRequest ({ tid, to, id, token, internal, command, target, value }) {
  const state = { start: 0, end: 1 + 1 + 6 + 2, buffer: null }
  if (id) state.end += 32
  if (token) state.end += 32
  c.uint.preencode(state, command)
  if (target) state.end += 32
  if (value) c.buffer.preencode(state, value)
  state.buffer = b4a.allocUnsafe(state.end)
  state.buffer[state.start++] = 0x03
  state.buffer[state.start++] = (id ? 1 : 0) | (token ? 2 : 0) | (internal ? 4 : 0) | (target ? 8 : 0) | (value ? 16 : 0)
  c.uint16.encode(state, tid)
  peer.ipv4.encode(state, to)
  if (id) c.fixed32.encode(state, id)
  if (token) c.fixed32.encode(state, token)
  c.uint.encode(state, command)
  if (target) c.fixed32.encode(state, target)
  if (value) c.buffer.encode(state, value)
  return state.buffer
}
function rpcReply ({ tid, from, id, token, closerNodes = [], error = 0, value }) {
  const state = { start: 0, end: 1 + 1 + 6 + 2, buffer: null }
  if (id) state.end += 32
  if (token) state.end += 32
  if (closerNodes.length > 0) peer.ipv4Array.preencode(state, closerNodes)
  if (error > 0) c.uint.preencode(state, error)
  if (value) c.buffer.preencode(state, value)
  state.buffer = b4a.allocUnsafe(state.end)
  state.buffer[state.start++] = 0x13
  state.buffer[state.start++] = (id ? 1 : 0) | (token ? 2 : 0) | (closerNodes.length > 0 ? 4 : 0) | (error > 0 ? 8 : 0) | (value ? 16 : 0)
  c.uint16.encode(state, tid)
  peer.ipv4.encode(state, from)
  if (id) c.fixed32.encode(state, id)
  if (token) c.fixed32.encode(state, token)
  if (closerNodes.length > 0) peer.ipv4Array.encode(state, closerNodes)
  if (error > 0) c.uint.encode(state, error)
  if (value) c.buffer.encode(state, value)
  return state.buffer
}
const me = addr('44.0.0.1', 49737)
const closer = [addr('55.0.0.1', 40000), addr('55.0.0.2', 40001), addr('10.1.2.3', 49737)]
const kp = keyPair(21)

// ---------------------------------------------------------------- hyperdht values
const peerRecord = { publicKey: kp.publicKey, relayAddresses: closer }
const noisePayloads = {
  client: { version: 1, error: 0, firewall: 1, holepunch: null, addresses4: [addr('44.0.0.9', 4000)], addresses6: [], udx: { reusableSocket: false, id: 7, seq: 0 }, secretStream: {}, relayThrough: null, relayAddresses: null },
  server: { version: 1, error: 0, firewall: 2, holepunch: { id: 3, relays: [{ relayAddress: closer[0], peerAddress: addr('44.0.0.9', 4000) }] }, addresses4: [addr('192.168.1.5', 4000)], addresses6: [addr('::1', 4000)], udx: { reusableSocket: true, id: 9, seq: 0 }, secretStream: {}, relayThrough: { publicKey: keyPair(22).publicKey, token: fill(32, 5) }, relayAddresses: closer },
  error: { version: 1, error: 3, firewall: 3, holepunch: null, addresses4: [], addresses6: [], udx: null, secretStream: null, relayThrough: null, relayAddresses: null }
}
const holepunchPayloads = {
  probe: { error: 0, firewall: 2, round: 0, connected: false, punching: false, addresses: [addr('44.0.0.9', 4000)], remoteAddress: null, token: fill(32, 8), remoteToken: null },
  punch: { error: 0, firewall: 3, round: 1, connected: false, punching: true, addresses: closer, remoteAddress: addr('55.0.0.1', 40000), token: fill(32, 8), remoteToken: fill(32, 9) },
  abort: { error: 1, firewall: 0, round: 2, connected: true, punching: false, addresses: null, remoteAddress: null, token: null, remoteToken: null }
}
const values = {
  peer: c.encode(hdm.peer, peerRecord),
  lookup: c.encode(hdm.lookupRawReply, { peers: [c.encode(hdm.peer, peerRecord), c.encode(hdm.peer, { publicKey: fill(32, 3), relayAddresses: [] })], bump: 7 }),
  announce: c.encode(hdm.announce, { peer: peerRecord, refresh: fill(32, 1), signature: fill(64, 2), bump: 3 }),
  unannounce: c.encode(hdm.announce, { peer: peerRecord, refresh: null, signature: fill(64, 2), bump: 0 }),
  mutablePut: c.encode(hdm.mutablePutRequest, { publicKey: kp.publicKey, seq: 300, value: Buffer.from('hello'), signature: fill(64, 4) }),
  mutableGet: c.encode(hdm.mutableGetResponse, { seq: 70000, value: Buffer.from('world'), signature: fill(64, 4) }),
  handshake: c.encode(hdm.handshake, { mode: 2, noise: fill(96, 6), peerAddress: closer[1], relayAddress: null }),
  handshake2: c.encode(hdm.handshake, { mode: 3, noise: fill(48, 6), peerAddress: closer[1], relayAddress: closer[2] }),
  holepunch: c.encode(hdm.holepunch, { mode: 0, id: 3, payload: fill(80, 7), peerAddress: closer[0] })
}
for (const [k, v] of Object.entries(noisePayloads)) values['noise-' + k] = c.encode(hdm.noisePayload, v)
for (const [k, v] of Object.entries(holepunchPayloads)) values['hp-' + k] = c.encode(hdm.holepunchPayload, v)
const selectors = { peer: 0, lookup: 1, announce: 2, unannounce: 2, mutablePut: 3, mutableGet: 4, handshake: 5, handshake2: 5, holepunch: 6 }
for (const [k, v] of Object.entries(values)) {
  const sel = selectors[k] ?? (k.startsWith('noise-') ? 7 : 8)
  seed('dht_payloads', k, sel, v)
}
const rm = relay.messages
seed('dht_payloads', 'relay-pair', 9, c.encode(rm.pair, { isInitiator: true, token: fill(32, 9), id: 77, seq: 0 }))
seed('dht_payloads', 'relay-pair-resp', 9, c.encode(rm.pair, { isInitiator: false, token: fill(32, 9), id: 4294967295, seq: 0 }))
seed('dht_payloads', 'relay-unpair', 10, c.encode(rm.unpair, { token: fill(32, 9) }))

const target = fill(32, 0x77)
const rpc = {
  ping: rpcRequest({ tid: 1, to: me, internal: true, command: 0 }),
  pingNat: rpcRequest({ tid: 2, to: me, internal: true, command: 1, value: c.encode(c.uint16, 4000) }),
  findNode: rpcRequest({ tid: 3, to: me, id: fill(32, 1), internal: true, command: 2, target }),
  downHint: rpcRequest({ tid: 4, to: me, internal: true, command: 3, value: c.encode(peer.ipv4, closer[0]) }),
  delayedPing: rpcRequest({ tid: 5, to: me, internal: true, command: 4, value: c.encode(c.uint32, 500) }),
  lookup: rpcRequest({ tid: 6, to: me, command: 3, target }),
  announce: rpcRequest({ tid: 7, to: me, token: fill(32, 2), command: 4, target, value: values.announce }),
  mutablePut: rpcRequest({ tid: 8, to: me, token: fill(32, 2), command: 6, target, value: values.mutablePut }),
  immutablePut: rpcRequest({ tid: 9, to: me, token: fill(32, 2), command: 8, target, value: Buffer.from('immutable') }),
  handshake: rpcRequest({ tid: 10, to: me, command: 0, target, value: values.handshake }),
  holepunch: rpcRequest({ tid: 11, to: me, command: 1, target, value: values.holepunch }),
  replyEmpty: rpcReply({ tid: 1, from: me }),
  replyCloser: rpcReply({ tid: 3, from: me, id: fill(32, 1), token: fill(32, 2), closerNodes: closer }),
  replyError: rpcReply({ tid: 4, from: me, error: 2, token: fill(32, 3) }),
  replyLookup: rpcReply({ tid: 6, from: me, id: fill(32, 1), token: fill(32, 2), closerNodes: closer, value: values.lookup }),
  replyMutable: rpcReply({ tid: 8, from: me, value: values.mutableGet })
}
for (const [k, v] of Object.entries(rpc)) seed('dht_rpc', k, v)

// ---------------------------------------------------------------- holepunch_payload
// Sealed with the JS SecurePayload under the secret the target opens with ([7; 32]).
const SecurePayload = req('hyperdht/lib/secure-payload')
const sp = new SecurePayload(fill(32, 7))
for (const [k, v] of Object.entries(holepunchPayloads)) {
  seed('holepunch_payload', 'sealed-' + k, 0, sp.encrypt(v))
  seed('holepunch_payload', 'plain-' + k, 1, fill(24, 1), c.encode(hdm.holepunchPayload, v))
}

// ---------------------------------------------------------------- noise_handshake
// noise-handshake with noise-curve-ed, keys and prologue as the target has them (initiator
// seed 1, responder seed 2, prologue "corenet fuzz").
const Noise = req('noise-handshake')
const curve = req('noise-curve-ed')
const prologue = Buffer.from('corenet fuzz')
const a = keyPair(1)
const b = keyPair(2)
{
  const i = new Noise('XX', true, a, { curve })
  i.initialise(prologue)
  const m1 = i.send(Buffer.from('hello'))
  seed('noise_handshake', 'xx-m1', 0, m1)
  const r = new Noise('XX', false, b, { curve })
  r.initialise(prologue)
  r.recv(m1)
  seed('noise_handshake', 'xx-m2', 1, r.send(Buffer.from('reply')))
  const ik = new Noise('IK', true, a, { curve })
  ik.initialise(prologue, b.publicKey)
  seed('noise_handshake', 'ik-m1', 2, ik.send(c.encode(hdm.noisePayload, noisePayloads.client)))
  const ik2 = new Noise('IK', true, a, { curve })
  ik2.initialise(prologue, b.publicKey)
  seed('noise_handshake', 'ik-m1-empty', 2, ik2.send(Buffer.alloc(0)))
}

// ---------------------------------------------------------------- mux_wire
// Frames exactly as JS protomux writes them, captured from a Protomux over a fake stream.
const Protomux = req('protomux')
const { EventEmitter } = require('events')
function captureMux (fn) {
  const frames = []
  const stream = new EventEmitter()
  stream.userData = null
  stream.write = (buf) => { frames.push(Buffer.from(buf)); return true }
  stream.destroyed = false
  const mux = new Protomux(stream)
  fn(mux)
  return frames
}
const frames = captureMux((mux) => {
  const ch = mux.createChannel({ protocol: 'hypercore/alpha', id: fill(32, 1), handshake: c.raw })
  const m = ch.addMessage({ encoding: c.buffer })
  ch.open(Buffer.from('hs'))
  m.send(Buffer.from('hello'))
  const ch2 = mux.createChannel({ protocol: 'blind-relay', id: null })
  const m2 = ch2.addMessage({ encoding: c.string })
  ch2.open()
  mux.cork()
  m.send(Buffer.from('one'))
  m2.send('two')
  m.send(Buffer.from('three'))
  mux.uncork()
  ch2.close()
})
frames.forEach((f, i) => seed('mux_wire', 'frame-' + i, f))
seed('mux_wire', 'reject', c.encode(c.uint, 0), c.encode(c.uint, 2), c.encode(c.uint, 1))

// ---------------------------------------------------------------- hypercore_messages
const w = hcm.wire
const nodes = [{ index: 0, size: 5, hash: fill(32, 1) }, { index: 2, size: 5, hash: fill(32, 2) }, { index: 5, size: 300, hash: fill(32, 3) }]
const manifest = { version: 1, hash: 'blake2b', allowPatch: false, quorum: 1, signers: [{ signature: 'ed25519', namespace: fill(32, 4), publicKey: kp.publicKey }], prologue: null, linked: null, userData: null }
const wireMessages = [
  [0, 'sync', w.sync, { fork: 0, length: 10, remoteLength: 3, canUpgrade: true, uploading: true, downloading: true, hasManifest: true }],
  [1, 'request', w.request, { id: 7, fork: 0, block: { index: 3, nodes: 2 }, hash: null, seek: null, upgrade: { start: 0, length: 10 }, manifest: true, priority: 1 }],
  [1, 'request-seek', w.request, { id: 8, fork: 1, block: null, hash: { index: 5, nodes: 1 }, seek: { bytes: 1000, padding: 0 }, upgrade: null, manifest: false, priority: 0 }],
  [2, 'cancel', w.cancel, { request: 7 }],
  [3, 'data', w.data, { request: 7, fork: 0, block: { index: 3, value: Buffer.from('hello'), nodes }, hash: null, seek: null, upgrade: { start: 0, length: 10, nodes, additionalNodes: [], signature: fill(64, 5) }, manifest }],
  [3, 'data-hash', w.data, { request: 8, fork: 0, block: null, hash: { index: 5, nodes }, seek: { bytes: 1000, nodes }, upgrade: null, manifest: null }],
  [4, 'noData', w.noData, { request: 7, reason: 1 }],
  [5, 'want', w.want, { start: 0, length: 65536, any: false }],
  [6, 'unwant', w.unwant, { start: 0, length: 65536 }],
  [7, 'bitfield', w.bitfield, { start: 0, bitfield: new Uint32Array([0xffffffff, 0x0f]) }],
  [8, 'range', w.range, { drop: false, start: 0, length: 10 }],
  [8, 'range-drop', w.range, { drop: true, start: 5, length: 1 }],
  [9, 'extension', w.extension, { name: 'corenet/test', message: Buffer.from('hi') }]
]
for (const [t, name, enc, v] of wireMessages) {
  try {
    seed('hypercore_messages', name, t, hcc.encode(enc, v))
  } catch (e) {
    console.error('skipped', name, e.message)
  }
}
seed('hypercore_messages', 'handshake', 10, hcc.encode(w.handshake, { capability: fill(32, 6), seeks: true }))
seed('hypercore_messages', 'manifest', 11, hcc.encode(hcm.manifest, manifest))
seed('hypercore_messages', 'manifest-v2', 11, hcc.encode(hcm.manifest, { ...manifest, version: 2, quorum: 2, allowPatch: true, signers: [manifest.signers[0], { ...manifest.signers[0], publicKey: fill(32, 9) }], prologue: { hash: fill(32, 8), length: 4 }, linked: [fill(32, 3)], userData: Buffer.from('user') }))
seed('hypercore_messages', 'multisig', 12, hcc.encode(hcm.multiSignature, { proofs: [{ signer: 0, signature: fill(64, 1), patch: 0 }, { signer: 1, signature: fill(64, 2), patch: 0 }], patch: nodes }))
seed('hypercore_messages', 'multisig-v0', 13, hcc.encode(hcm.multiSignaturev0, { proofs: [{ signer: 0, signature: fill(64, 1), patch: 0 }], patch: nodes }))

console.error(`${count} seeds written`)

// ---------------------------------------------------------------- async: real proofs, UDX
async function proofs () {
  // The `hypercore_proof` fixture with the real JS hypercore: the same key pair (seed 5,
  // default v1 manifest) and the same 10 blocks; proofs made by MerkleTree.proof as the JS
  // replicator makes them. Mode bytes 2 (replica knows the manifest) and 6 (it also has
  // the first 5 blocks' upgrade).
  const os = require('os')
  const Hypercore = req('hypercore')
  const { MerkleTree } = req('hypercore/lib/merkle-tree')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-fuzz-seeds-'))
  try {
    const core = new Hypercore(dir, { keyPair: keyPair(5) })
    await core.ready()
    for (let i = 0; i < 10; i++) await core.append(Buffer.alloc(1 + (i * 37) % 300, i))
    const requests = {
      upgrade: { fork: 0, block: null, hash: null, seek: null, upgrade: { start: 0, length: 10 }, manifest: true },
      'upgrade-from-5': { fork: 0, block: null, hash: null, seek: null, upgrade: { start: 5, length: 5 }, manifest: false },
      'block-upgrade': { fork: 0, block: { index: 7, nodes: 0 }, hash: null, seek: null, upgrade: { start: 0, length: 10 }, manifest: true },
      block: { fork: 0, block: { index: 2, nodes: 3 }, hash: null, seek: null, upgrade: null, manifest: false },
      'seek-upgrade': { fork: 0, block: null, hash: null, seek: { bytes: 700, padding: 0 }, upgrade: { start: 0, length: 10 }, manifest: true },
      hash: { fork: 0, block: null, hash: { index: 5, nodes: 2 }, seek: null, upgrade: null, manifest: false }
    }
    for (const [name, msg] of Object.entries(requests)) {
      try {
        const batch = core.core.storage.read()
        const proofP = MerkleTree.proof(core.core.state, batch, msg)
        const blockP = msg.block ? batch.getBlock(msg.block.index) : null
        batch.tryFlush()
        const proof = await (await proofP).settle()
        if (blockP) proof.block.value = await blockP
        if (msg.manifest) proof.manifest = core.core.header.manifest
        const bytes = hcc.encode(w.data, { request: 1, ...proof })
        const mode = name === 'upgrade-from-5' || name === 'block' || name === 'hash' ? 6 : 2
        seed('hypercore_proof', name, mode, bytes)
      } catch (e) {
        console.error('proof', name, 'skipped:', e.message)
      }
    }
    await core.close()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function udxPackets () {
  // Real udx-native packets: two streams talk through a UDP proxy that records every
  // datagram (data, acks with SACKs, MTU probes, END).
  const UDX = req('udx-native')
  const dgram = require('dgram')
  const udx = new UDX()
  const sa = udx.createSocket()
  const sb = udx.createSocket()
  sa.bind(0, '127.0.0.1')
  sb.bind(0, '127.0.0.1')
  const proxy = dgram.createSocket('udp4')
  await new Promise((resolve) => proxy.bind(0, '127.0.0.1', resolve))
  const pport = proxy.address().port
  const got = []
  let n = 0
  proxy.on('message', (msg, rinfo) => {
    if (got.length < 48) got.push(Buffer.from(msg))
    n++
    // Drop every 7th packet so that the receiver SACKs and the sender retransmits.
    if (n % 7 === 0) return
    const to = rinfo.port === sa.address().port ? sb.address().port : sa.address().port
    proxy.send(msg, to, '127.0.0.1')
  })
  const a = udx.createStream(1)
  const b = udx.createStream(2)
  a.connect(sa, 2, pport, '127.0.0.1')
  b.connect(sb, 1, pport, '127.0.0.1')
  b.on('data', () => {})
  const done = new Promise((resolve) => b.on('end', resolve))
  for (let i = 0; i < 40; i++) a.write(Buffer.alloc(1000, i))
  a.end()
  b.end()
  await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 5000))])
  a.destroy()
  b.destroy()
  await sa.close()
  await sb.close()
  proxy.close()
  got.forEach((g, i) => seed('udx_packet', 'js-' + String(i).padStart(2, '0'), g))
}

proofs()
  .then(udxPackets)
  .then(() => console.error(`${count} seeds in all`))
  .catch((e) => {
    console.error(e)
    process.exit(1)
  })
