// The JS side of corenet's hypercore append benchmark (BENCHMARKS.md), measured like the Rust
// criterion bench `crates/replication/benches/hypercore.rs` (`append/*`): batched appends of
// 4 MiB per call (1024 x 4 KiB or 64 x 64 KiB blocks, one signature per batch) into a fresh
// hypercore 11.37.1 on disk (its RocksDB storage in a temporary directory).
// Prints one JSON object: MiB/s per block size.
'use strict'
const os = require('os')
const fs = require('fs')
const path = require('path')
const Hypercore = require('hypercore')
const b4a = require('b4a')

const BATCH_BYTES = 4 << 20
const TOTAL_MIB = Number(process.env.TOTAL_MIB || 256)

async function run (blockSize) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corenet-hc-bench-'))
  try {
    const core = new Hypercore(dir)
    await core.ready()
    const batch = []
    for (let i = 0; i < BATCH_BYTES / blockSize; i++) batch.push(b4a.alloc(blockSize, i % 251))
    await core.append(batch) // warm up
    const batches = (TOTAL_MIB << 20) / BATCH_BYTES
    const start = process.hrtime.bigint()
    for (let i = 0; i < batches; i++) await core.append(batch)
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    await core.close()
    return TOTAL_MIB / secs
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function main () {
  const out = { hypercore: require('hypercore/package.json').version, totalMiB: TOTAL_MIB }
  out.append4KiB = Math.round(await run(4096))
  out.append64KiB = Math.round(await run(65536))
  process.stdout.write(JSON.stringify(out) + '\n')
}

main().catch((err) => { console.error(err); process.exit(1) })
