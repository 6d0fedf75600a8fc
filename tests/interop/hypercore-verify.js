// Verifies proofs made by corenet with the real JS hypercore 11.37.1: for each core in the
// input file, a fresh JS Hypercore that knows only the key applies the `data` messages in order
// with `core.applyProof` (the replicator's `core.verify`), or `core.core.verifyReorg` +
// `core.core.reorg` for higher-fork upgrades, and reports what happened.
//
//   node hypercore-verify.js <cases.json>
//
// Input: {"cores": [{"key": hex, "cases": [{"wire": hex, "reorg": bool, "updates": [hex]}]}]}
// (`updates`: for a reorg, the `data` messages answering the reorg batch's wants, in order)
// Output: one JSON line per case: {"event": "result", "core": i, "case": j, "ok": bool,
//   "error": string|null, "length": n, "fork": n, "treeHash": hex, "block": hex|null}
// then {"event": "done"}.
'use strict'
const os = require('os')
const fs = require('fs')
const path = require('path')
const Hypercore = require('hypercore')
const crypto = require('hypercore-crypto')
const b4a = require('b4a')
const c = require('hypercore/node_modules/compact-encoding')
const { wire } = require('hypercore/lib/messages')

const hex = (b) => (b ? b4a.toString(b, 'hex') : null)
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n')

async function main () {
  const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-hc-verify-'))
  try {
    for (let i = 0; i < input.cores.length; i++) {
      const spec = input.cores[i]
      const core = new Hypercore(path.join(tmp, 'core-' + i), b4a.from(spec.key, 'hex'))
      await core.ready()
      for (let j = 0; j < spec.cases.length; j++) {
        const data = c.decode(wire.data, b4a.from(spec.cases[j].wire, 'hex'))
        const proof = {
          fork: data.fork,
          block: data.block,
          hash: data.hash,
          seek: data.seek,
          upgrade: data.upgrade,
          manifest: data.manifest
        }
        let ok = false
        let error = null
        try {
          if (spec.cases[j].reorg) {
            const batch = await core.core.verifyReorg(proof)
            // The hash proofs answering batch.want, in order (ReorgBatch.update).
            for (const u of spec.cases[j].updates) {
              const d = c.decode(wire.data, b4a.from(u, 'hex'))
              await batch.update({ fork: d.fork, block: d.block, hash: d.hash, seek: d.seek, upgrade: d.upgrade, manifest: d.manifest })
            }
            if (!batch.finished) throw new Error('reorg needs more nodes')
            ok = await core.core.reorg(batch)
          } else {
            ok = await core.applyProof(proof)
          }
        } catch (err) {
          error = err.message
        }
        let block = null
        if (data.block && (await core.has(data.block.index))) {
          block = hex(await core.get(data.block.index, { wait: false }))
        }
        emit({
          event: 'result',
          core: i,
          case: j,
          ok: !!ok,
          error,
          length: core.length,
          fork: core.fork,
          // (core.treeHash() would wait to download the last block)
          treeHash: core.length ? hex(crypto.tree(core.core.state.roots)) : null,
          block
        })
      }
      await core.close()
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  emit({ event: 'done' })
}

main().catch((err) => {
  emit({ event: 'error', message: err.stack })
  process.exit(1)
})
