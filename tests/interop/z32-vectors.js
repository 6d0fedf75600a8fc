// z32 key vectors from hypercore-id-encoding (what JS apps print and parse), for corenet's
// codec golden test:  node tests/interop/z32-vectors.js > tests/vectors/z32-vectors.json
'use strict'
const id = require('hypercore-id-encoding')
const crypto = require('crypto')

const keys = [Buffer.alloc(32, 0), Buffer.alloc(32, 0xff), Buffer.from([...Array(32).keys()])]
for (let i = 0; i < 5; i++) keys.push(crypto.createHash('sha256').update('z32 vector ' + i).digest())
const encode = keys.map((k) => ({ key: k.toString('hex'), z32: id.encode(k) }))

// Strings JS decodes (pear:// links, hex, the last character's unused bits set) and ones it refuses.
const k = keys[3]
const z = id.encode(k)
const last = 'ybndrfg8ejkmcpqxot1uwisza345h769'
const bumped = z.slice(0, 51) + last[last.indexOf(z[51]) | 1]
const accept = [z, 'pear://' + z, 'pear://' + z + '/some/path', k.toString('hex'), k.toString('hex').toUpperCase(), bumped]
  .map((s) => ({ text: s, key: Buffer.from(id.decode(s)).toString('hex') }))
const reject = [z.slice(0, 51), z + 'y', z.slice(0, 51) + '0', z.slice(0, 51) + 'l', k.toString('hex').slice(1), 'pear://', '']
  .filter((s) => !id.isValid(s))
process.stdout.write(JSON.stringify({ encode, accept, reject }, null, 2) + '\n')
