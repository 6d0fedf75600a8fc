// Generates tests/vectors/replicator-vectors.json with hypercore 11.37.1's own encoders
// (lib/messages.js): the handshake and the non-proof messages of a `hypercore/alpha` channel
// (sync, cancel, noData, want, unwant, range, bitfield, extension) for a set of values, and
// the replication capability for a fixed handshake hash and key in both roles (lib/caps.js).
// crates/replication/tests/wire_vectors.rs checks that corenet encodes the same values to the
// same bytes and decodes the JS bytes back.
//
//   node scripts/gen-replicator-vectors.js > ../vectors/replicator-vectors.json
'use strict'
const b4a = require('b4a')
const c = require('hypercore/node_modules/compact-encoding')
const { wire } = require('hypercore/lib/messages')
const caps = require('hypercore/lib/caps')

const hex = (b) => b4a.toString(b, 'hex')
const enc = (e, v) => hex(c.encode(e, v))

const out = { hypercore: require('hypercore/package.json').version }

out.handshake = [
  { seeks: true, capability: hex(b4a.alloc(32, 7)) },
  { seeks: false, capability: hex(b4a.alloc(32, 0xee)) }
].map((v) => ({ ...v, bytes: enc(wire.handshake, { ...v, capability: b4a.from(v.capability, 'hex') }) }))

const syncs = []
for (const flags of [0, 1, 2, 3, 6, 7, 8, 15, 16, 31]) {
  for (const [fork, length, remoteLength] of [[0, 0, 0], [1, 300, 299], [70000, 2 ** 32, 2 ** 40]]) {
    syncs.push({
      fork,
      length,
      remoteLength,
      canUpgrade: !!(flags & 1),
      uploading: !!(flags & 2),
      downloading: !!(flags & 4),
      hasManifest: !!(flags & 8),
      allowPush: !!(flags & 16)
    })
  }
}
out.sync = syncs.map((v) => ({ ...v, bytes: enc(wire.sync, v) }))

out.cancel = [0, 1, 252, 253, 65536, 2 ** 33].map((request) => ({ request, bytes: enc(wire.cancel, { request }) }))

out.noData = [[1, 0], [7, 1], [300, 2], [2 ** 20, 9]].map(([request, reason]) => ({
  request,
  reason,
  bytes: enc(wire.noData, { request, reason })
}))

const wants = [[0, 2097152, false], [2097152, 2097152, false], [5, 1, true], [1000, 70000, true]]
out.want = wants.map(([start, length, any]) => ({ start, length, any, bytes: enc(wire.want, { start, length, any }) }))
out.unwant = wants.map(([start, length, any]) => ({ start, length, any, bytes: enc(wire.unwant, { start, length, any }) }))

out.range = [[false, 0, 10], [true, 5, 1], [false, 300, 1], [true, 2 ** 32, 2 ** 33], [false, 0, 0]].map(
  ([drop, start, length]) => ({ drop, start, length, bytes: enc(wire.range, { drop, start, length }) })
)

out.bitfield = [
  [0, []],
  [32, [1]],
  [2097152, [0xffffffff, 0, 0x80000001, 0x12345678]]
].map(([start, words]) => ({ start, bitfield: words, bytes: enc(wire.bitfield, { start, bitfield: new Uint32Array(words) }) }))

out.extension = [
  ['', ''],
  ['chat', '68656c6c6f'],
  ['a-much-longer-extension-name', hex(b4a.alloc(300, 3))]
].map(([name, message]) => ({ name, message, bytes: enc(wire.extension, { name, message: b4a.from(message, 'hex') }) }))

const hh = b4a.alloc(64)
for (let i = 0; i < 64; i++) hh[i] = i
const key = b4a.alloc(32, 0x5a)
out.capability = {
  handshakeHash: hex(hh),
  key: hex(key),
  initiator: hex(caps.replicate(true, key, hh)),
  responder: hex(caps.replicate(false, key, hh))
}

process.stdout.write(JSON.stringify(out, null, 1) + '\n')
