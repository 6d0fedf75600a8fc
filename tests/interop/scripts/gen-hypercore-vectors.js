// Generates tests/vectors/hypercore-vectors.json with the real JS packages (hypercore 11.37.1,
// corestore, flat-tree): cores of several lengths with varied block sizes, v1 (corestore named
// cores from a fixed primary key) and compat (a fixed key pair), with their keys, manifests,
// roots, tree hashes, signables and signatures, and the proofs hypercore generates for a set
// of requests (block, hash, seek, upgrade, additional nodes, and invalid ones), both as JSON
// and as the `data` wire message. The Rust test crates/replication/tests/js_proofs.rs rebuilds
// the same cores, checks it produces byte-identical proofs, and verifies the JS proofs.
//
//   node scripts/gen-hypercore-vectors.js > ../vectors/hypercore-vectors.json
'use strict'
const os = require('os')
const fs = require('fs')
const path = require('path')
const Corestore = require('corestore')
const Hypercore = require('hypercore')
const crypto = require('hypercore-crypto')
const flat = require('flat-tree')
const b4a = require('b4a')
const c = require('hypercore/node_modules/compact-encoding')
const messages = require('hypercore/lib/messages')
const { wire } = messages
const { MerkleTree } = require('hypercore/lib/merkle-tree')

const hex = (b) => (b ? b4a.toString(b, 'hex') : null)
const LENGTHS = [1, 2, 3, 5, 8, 100, 1000]
const PRIMARY_KEY = b4a.alloc(32, 3)

// Block i of a core of length L: its size and bytes (same rule in the Rust test).
function blockSize (i, L) {
  if (i % 17 === 5) return 0
  if (i % 50 === 7) return 2000 + i
  return ((i * 37 + L) % 251) + 1
}
function block (i, L) {
  const len = blockSize(i, L)
  const b = b4a.alloc(len)
  for (let j = 0; j < len; j++) b[j] = ((j & 255) * 31 + (i & 255)) & 255
  return b
}

const node = (n) => ({ index: n.index, size: n.size, hash: hex(n.hash) })
const nodes = (ns) => ns.map(node)

function proofJson (p) {
  return {
    fork: p.fork,
    block: p.block && { index: p.block.index, value: hex(p.block.value), nodes: nodes(p.block.nodes) },
    hash: p.hash && { index: p.hash.index, nodes: nodes(p.hash.nodes) },
    seek: p.seek && { bytes: p.seek.bytes, nodes: nodes(p.seek.nodes) },
    upgrade: p.upgrade && {
      start: p.upgrade.start,
      length: p.upgrade.length,
      nodes: nodes(p.upgrade.nodes),
      additionalNodes: nodes(p.upgrade.additionalNodes),
      signature: hex(p.upgrade.signature)
    },
    manifest: p.manifest ? hex(c.encode(messages.manifest, p.manifest)) : null
  }
}

function uniq (xs) { return [...new Set(xs)] }

function requests (L, byteLength, sizes) {
  const reqs = []
  const maxMissing = (i, len) => MerkleTree.maxMissingNodes(2 * i, len)
  const idx = uniq([0, 1, Math.floor(L / 3), Math.floor(L / 2), L - 2, L - 1]).filter((i) => i >= 0 && i < L)
  for (const i of idx) {
    for (const n of uniq([0, 1, maxMissing(i, L)])) reqs.push({ block: { index: i, nodes: n } })
    reqs.push({ block: { index: i, nodes: 0 }, upgrade: { start: 0, length: L }, manifest: true })
    for (const s of uniq([1, Math.floor(L / 2), L - 1])) {
      if (s <= 0 || s >= L) continue
      reqs.push({ block: { index: i, nodes: i < s ? maxMissing(i, s) : 0 }, upgrade: { start: s, length: L - s } })
    }
  }
  for (const s of uniq([0, 1, Math.floor(L / 2), L - 1])) {
    for (const len of uniq([1, L - s, Math.floor((L - s) / 2)])) {
      if (len > 0 && s + len <= L) reqs.push({ upgrade: { start: s, length: len }, manifest: s === 0 })
    }
  }
  const roots = flat.fullRoots(2 * L)
  for (const h of uniq([0, 1, 3, 2 * (L - 1), roots[0], roots[roots.length - 1]])) {
    if (flat.rightSpan(h) >= 2 * L) continue
    reqs.push({ hash: { index: h, nodes: 0 } })
    reqs.push({ hash: { index: h, nodes: 1 } })
  }
  // The block holding byte b (for seeks).
  const blockAt = (b) => {
    let off = 0
    for (let i = 0; i < sizes.length; i++) {
      if (b < off + sizes[i]) return i
      off += sizes[i]
    }
    return sizes.length - 1
  }
  for (const bytes of uniq([0, 1, Math.floor(byteLength / 2), byteLength - 1, byteLength])) {
    if (bytes < 0) continue
    reqs.push({ seek: { bytes, padding: 0 }, upgrade: { start: 0, length: L } })
    const i = blockAt(bytes)
    reqs.push({ block: { index: i, nodes: maxMissing(i, L) }, seek: { bytes, padding: 0 } })
  }
  // Requests JS refuses.
  reqs.push({ upgrade: { start: L, length: 1 } })
  reqs.push({ upgrade: { start: 0, length: L + 1 } })
  reqs.push({ block: { index: 0, nodes: 64 } })
  if (L > 1) reqs.push({ block: { index: L - 1, nodes: 0 }, seek: { bytes: 0, padding: 0 }, upgrade: { start: 0, length: L } })
  return reqs
}

async function describe (core, L, sizes, compat) {
  const roots = await MerkleTree.getRoots(core.state, core.length)
  const out = {
    compat,
    length: core.length,
    byteLength: core.byteLength,
    fork: core.fork,
    key: hex(core.key),
    discoveryKey: hex(core.discoveryKey),
    manifest: hex(c.encode(messages.manifest, core.manifest)),
    treeHash: hex(crypto.tree(roots)),
    roots: nodes(roots),
    signature: hex(core.core.state.signature),
    signable: hex(await core.signable()),
    leafHashes: [0, L - 1].map((i) => hex(crypto.data(block(i, L)))),
    proofs: []
  }
  let id = 1
  for (const req of requests(L, core.byteLength, sizes)) {
    const entry = { request: JSON.parse(JSON.stringify(req)), id }
    entry.requestWire = hex(c.encode(wire.request, {
      id, fork: 0, block: req.block || null, hash: req.hash || null, seek: req.seek || null,
      upgrade: req.upgrade || null, manifest: !!req.manifest, priority: 0
    }))
    try {
      const p = await replicatorProof(core, req)
      if (req.manifest && !core.core.compat) p.manifest = core.manifest
      // The decoded form, for readers and the decoder check, on the small cores only.
      if (L <= 8) entry.proof = proofJson(p)
      entry.wire = hex(c.encode(wire.data, { request: id, ...p }))
    } catch (err) {
      entry.error = err.message
    }
    out.proofs.push(entry)
    id++
  }
  return out
}

// Builds a proof the way the replicator does (`Peer._getProof` + `ProofRequest.fulfill`): one
// read batch for the block and the tree nodes, flushed after the proof is generated.
// (`Hypercore.proof()` flushes its batch too early for seek requests.)
async function replicatorProof (core, req) {
  const msg = JSON.parse(JSON.stringify({ block: req.block || null, hash: req.hash || null, seek: req.seek || null, upgrade: req.upgrade || null }))
  const rx = core.state.storage.read()
  const blockP = msg.block ? rx.getBlock(msg.block.index) : null
  if (blockP) blockP.catch(() => {})
  let proof
  try {
    proof = await MerkleTree.proof(core.state, rx, msg)
  } catch (err) {
    rx.destroy()
    throw err
  }
  rx.tryFlush()
  const [settled, value] = await Promise.all([proof.settle(), blockP])
  if (settled.block) settled.block.value = value
  return settled
}

function flatVectors () {
  const idx = []
  for (let i = 0; i < 140; i++) idx.push(i)
  idx.push(1023, 1024, 1025, 4095, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 5, 2 ** 40 + 7, 2 ** 40 + 8, 2 ** 50 + 1)
  return idx.map((i) => ({
    index: i,
    depth: flat.depth(i),
    offset: flat.offset(i),
    parent: flat.parent(i),
    sibling: flat.sibling(i),
    children: flat.children(i),
    leftSpan: flat.leftSpan(i),
    rightSpan: flat.rightSpan(i),
    count: flat.count(i),
    countLeaves: flat.countLeaves(i),
    fullRoots: i % 2 === 0 && i < 2 ** 32 ? flat.fullRoots(i) : null
  }))
}

async function main () {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-hc-vectors-'))
  const out = {
    note: 'generated by tests/interop/scripts/gen-hypercore-vectors.js (hypercore 11.37.1, corestore 7.12.5)',
    primaryKey: hex(PRIMARY_KEY),
    blockRule: 'size(i, L) = 0 if i % 17 == 5; 2000 + i if i % 50 == 7; else (i*37 + L) % 251 + 1; byte j = ((j & 255) * 31 + (i & 255)) & 255',
    flat: flatVectors(),
    cores: []
  }
  try {
    const store = new Corestore(path.join(tmp, 'store'), { primaryKey: PRIMARY_KEY, unsafe: true })
    for (const L of LENGTHS) {
      const sizes = []
      for (let i = 0; i < L; i++) sizes.push(blockSize(i, L))
      // v1: a corestore named core
      const named = store.get({ name: 'vectors-' + L })
      await named.ready()
      await appendChunked(named, L)
      const v1 = await describe(named, L, sizes, false)
      v1.name = 'vectors-' + L
      out.cores.push(v1)
      await named.close()
      // compat: a bare hypercore with a fixed key pair
      const kp = crypto.keyPair(b4a.alloc(32, L & 255))
      const compat = new Hypercore(path.join(tmp, 'compat-' + L), { keyPair: kp, compat: true })
      await compat.ready()
      await appendChunked(compat, L)
      const cc = await describe(compat, L, sizes, true)
      cc.seed = hex(b4a.alloc(32, L & 255))
      out.cores.push(cc)
      await compat.close()
    }
    await store.close()
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

async function appendChunked (core, L) {
  const chunks = [1, 2, 5, 13]
  let i = 0
  let k = 0
  while (i < L) {
    const n = Math.min(chunks[k++ % chunks.length], L - i)
    const batch = []
    for (let j = 0; j < n; j++) batch.push(block(i + j, L))
    await core.append(batch)
    i += n
  }
}

main().catch((err) => { console.error(err); process.exit(1) })
