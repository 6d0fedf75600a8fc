//! Crash-safe on-disk storage: one append-only log of checksummed records per core.
//!
//! # Format
//!
//! The file `hypercore.log` starts with the 8-byte magic `CNHCLOG1`, then holds one record
//! per committed [`WriteBatch`]:
//!
//! ```text
//! offset  size  field
//!      0     4  record magic "CNR1"
//!      4     4  meta_len (u32 LE)
//!      8     8  data_len (u64 LE)
//!     16     4  meta_crc: CRC-32 of bytes 0..16 and of the meta bytes
//!     20     -  meta: the batch (auth, head, deletions, nodes, and per block: index,
//!               length, CRC-32 of its bytes), compact-encoded
//!      -     -  data: the block bytes, concatenated in meta order
//! ```
//!
//! On open the log is replayed: every record's header and meta are checked against
//! `meta_crc`, and its data must lie within the file. Replay stops at the first record that
//! fails; the blocks of the last record that passes are checked against their CRCs as well
//! (a torn write leaves its garbage at the tail). Anything after the last good record is
//! cut off, so a core killed in the middle of an append reopens at the state of its last
//! complete commit. Block data of earlier records is checked lazily: every read verifies
//! the block's CRC, and a mismatch is reported as [`StorageError::Corrupt`].
//!
//! The log is indexed in memory: every tree node (48 bytes plus map overhead) and the
//! location of every block (24 bytes plus overhead), about 150 bytes per block in all.
//! Truncations and reorgs append deletions; the space of deleted blocks is not reclaimed.
//!
//! # Durability (fsync policy)
//!
//! With [`SyncPolicy::Always`] (the default) every commit is written with one vectored write
//! and then `fdatasync`ed before `commit` returns: a commit that returned survives a power
//! loss, and a crash at any point loses at most the commit in progress. With
//! [`SyncPolicy::Never`] the operating system decides when data reaches the disk: a killed
//! process loses nothing that was committed (the page cache survives it), but a power loss
//! may lose recent commits, and, because the kernel may write pages out of order, may
//! corrupt blocks of older records (reads then report [`StorageError::Corrupt`] instead of
//! returning wrong bytes). Creating the log also syncs its directory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes};
use corenet_codec::{encode, DecodeError, Decoder, Encode};
use zeroize::Zeroizing;

use super::memory::remove_range;
use super::{Auth, Head, Storage, WriteBatch};
use crate::bitfield::Bitfield;
use crate::error::StorageError;
use crate::manifest::Manifest;
use crate::tree::Node;

/// Name of the log file inside a core's directory.
pub const LOG_FILE: &str = "hypercore.log";
const FILE_MAGIC: &[u8; 8] = b"CNHCLOG1";
const RECORD_MAGIC: &[u8; 4] = b"CNR1";
const RECORD_HEADER_LEN: usize = 20;
/// Largest meta section a record may have.
const MAX_META_LEN: u64 = u32::MAX as u64;

/// When the log is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// `fdatasync` after every commit (the default).
    #[default]
    Always,
    /// Never sync explicitly; survives process crashes, not power loss.
    Never,
}

/// Where a block's bytes are in the log.
#[derive(Debug, Clone, Copy)]
struct BlockLoc {
    offset: u64,
    len: u32,
    crc: u32,
}

/// Crash-safe storage in one append-only log file (see the module docs for the format and
/// the fsync policy).
#[derive(Debug)]
pub struct DiskStorage {
    /// Path of the log file.
    path: PathBuf,
    /// The log, positioned at its end.
    file: File,
    /// Length of the valid log.
    len: u64,
    /// The sync policy.
    sync: SyncPolicy,
    /// Set when a failed write could not be rolled back; further commits are refused.
    poisoned: bool,
    /// The auth record.
    auth: Option<Auth>,
    /// The head.
    head: Option<Head>,
    /// Tree nodes by flat index.
    nodes: BTreeMap<u64, Node>,
    /// Block locations by block index.
    blocks: BTreeMap<u64, BlockLoc>,
}

/// The decoded meta of one record: a batch whose blocks are locations.
struct RecordMeta {
    auth: Option<Auth>,
    head: Option<Head>,
    delete_nodes: Vec<std::ops::Range<u64>>,
    delete_blocks: Vec<std::ops::Range<u64>>,
    nodes: Vec<Node>,
    /// `(index, len, crc)` in data order.
    blocks: Vec<(u64, u32, u32)>,
}

impl DiskStorage {
    /// Opens (or creates) the core log in directory `dir`, with [`SyncPolicy::Always`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, SyncPolicy::default())
    }

    /// Opens (or creates) the core log in directory `dir` with a sync policy.
    pub fn open_with(dir: impl AsRef<Path>, sync: SyncPolicy) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let file_len = file.metadata()?.len();
        let mut magic = [0u8; 8];
        if file_len < 8 || file.read_exact_at(&mut magic, 0).is_err() || &magic != FILE_MAGIC {
            if file_len >= 8 {
                return Err(StorageError::Corrupt(format!(
                    "{} is not a corenet hypercore log",
                    path.display()
                )));
            }
            // New (or torn at creation): start the log.
            file.set_len(0)?;
            file.write_all_at(FILE_MAGIC, 0)?;
            file.sync_all()?;
            sync_dir(dir)?;
        }
        let mut s = DiskStorage {
            path,
            file,
            len: FILE_MAGIC.len() as u64,
            sync,
            poisoned: false,
            auth: None,
            head: None,
            nodes: BTreeMap::new(),
            blocks: BTreeMap::new(),
        };
        s.replay()?;
        s.file.seek(SeekFrom::Start(s.len))?;
        Ok(s)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replays the log into the in-memory index and cuts off a torn tail.
    ///
    /// A record's meta is covered by its CRC; its block bytes are checked only at the tail
    /// (reading every block of a large log at each open would cost its whole size): the last
    /// record is trusted only if its blocks are all there, and when it is cut, the record
    /// before it becomes the last and is checked the same way. So what an open keeps is
    /// exactly what the next open of the cut file keeps.
    fn replay(&mut self) -> Result<(), StorageError> {
        let file_len = self.file.metadata()?.len();
        let mut pos = FILE_MAGIC.len() as u64;
        let mut records: Vec<(u64, u64, RecordMeta)> = Vec::new(); // (start, data start, meta)
        let mut buf = Vec::new();
        while let Some((meta, data_start, end)) = self.read_record(pos, file_len, &mut buf) {
            records.push((pos, data_start, meta));
            pos = end;
        }
        while let Some((start, ds, m)) = records.last() {
            if self.blocks_intact(m, *ds) {
                break;
            }
            tracing::debug!(path = %self.path.display(), offset = start, "dropping torn last record");
            pos = *start;
            records.pop();
        }
        for (_, ds, m) in records {
            self.apply(m, ds);
        }
        if pos < file_len {
            tracing::info!(
                path = %self.path.display(),
                kept = pos,
                dropped = file_len - pos,
                "truncating the log after its last complete record"
            );
            self.file.set_len(pos)?;
            self.file.sync_all()?;
        }
        self.len = pos;
        Ok(())
    }

    /// Reads the record at `pos`: its meta, the offset of its data and its end. `None` when
    /// there is no complete, valid record there.
    fn read_record(
        &self,
        pos: u64,
        file_len: u64,
        buf: &mut Vec<u8>,
    ) -> Option<(RecordMeta, u64, u64)> {
        let mut header = [0u8; RECORD_HEADER_LEN];
        if file_len.saturating_sub(pos) < RECORD_HEADER_LEN as u64 {
            return None;
        }
        self.file.read_exact_at(&mut header, pos).ok()?;
        if &header[..4] != RECORD_MAGIC {
            return None;
        }
        let meta_len = u64::from(u32::from_le_bytes(header[4..8].try_into().ok()?));
        let data_len = u64::from_le_bytes(header[8..16].try_into().ok()?);
        let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
        let meta_start = pos + RECORD_HEADER_LEN as u64;
        let data_start = meta_start.checked_add(meta_len)?;
        let end = data_start.checked_add(data_len)?;
        if end > file_len {
            return None;
        }
        buf.clear();
        buf.resize(usize::try_from(meta_len).ok()?, 0);
        self.file.read_exact_at(buf, meta_start).ok()?;
        let mut h = crc32fast::Hasher::new();
        h.update(&header[..16]);
        h.update(buf);
        if h.finalize() != crc {
            return None;
        }
        let meta = decode_meta(buf).ok()?;
        let total: u64 = meta.blocks.iter().map(|b| u64::from(b.1)).sum();
        if total != data_len {
            return None;
        }
        Some((meta, data_start, end))
    }

    fn blocks_intact(&self, m: &RecordMeta, data_start: u64) -> bool {
        let mut off = data_start;
        let mut buf = Vec::new();
        for &(_, len, crc) in &m.blocks {
            buf.resize(len as usize, 0);
            if self.file.read_exact_at(&mut buf, off).is_err() || crc32fast::hash(&buf) != crc {
                return false;
            }
            off += u64::from(len);
        }
        true
    }

    fn apply(&mut self, m: RecordMeta, data_start: u64) {
        for r in m.delete_nodes {
            remove_range(&mut self.nodes, r);
        }
        for r in m.delete_blocks {
            remove_range(&mut self.blocks, r);
        }
        for n in m.nodes {
            self.nodes.insert(n.index, n);
        }
        let mut off = data_start;
        for (index, len, crc) in m.blocks {
            self.blocks.insert(
                index,
                BlockLoc {
                    offset: off,
                    len,
                    crc,
                },
            );
            off += u64::from(len);
        }
        if m.auth.is_some() {
            self.auth = m.auth;
        }
        if m.head.is_some() {
            self.head = m.head;
        }
    }

    /// Writes all of `slices` at the end of the log.
    fn write_all(&mut self, slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
        let mut slices = slices;
        while !slices.is_empty() {
            let n = self.file.write_vectored(slices)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage for DiskStorage {
    fn auth(&self) -> Option<Auth> {
        self.auth.clone()
    }

    fn head(&self) -> Option<Head> {
        self.head.clone()
    }

    fn node(&self, index: u64) -> Result<Option<Node>, StorageError> {
        Ok(self.nodes.get(&index).copied())
    }

    fn block(&self, index: u64) -> Result<Option<Bytes>, StorageError> {
        let Some(loc) = self.blocks.get(&index) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; loc.len as usize];
        self.file.read_exact_at(&mut buf, loc.offset)?;
        if crc32fast::hash(&buf) != loc.crc {
            return Err(StorageError::Corrupt(format!(
                "block {index} at offset {} fails its checksum",
                loc.offset
            )));
        }
        Ok(Some(Bytes::from(buf)))
    }

    fn bitfield(&self) -> Bitfield {
        let mut b = Bitfield::new();
        let mut run: Option<std::ops::Range<u64>> = None;
        for &i in self.blocks.keys() {
            run = match run {
                Some(r) if r.end == i => Some(r.start..i + 1),
                Some(r) => {
                    b.set_range(r, true);
                    Some(i..i + 1)
                }
                None => Some(i..i + 1),
            };
        }
        if let Some(r) = run {
            b.set_range(r, true);
        }
        b
    }

    fn commit(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Corrupt(
                "an earlier write failed and could not be rolled back".into(),
            ));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut blocks = Vec::with_capacity(batch.blocks.len());
        let mut data_len = 0u64;
        for (index, data) in &batch.blocks {
            let len = u32::try_from(data.len()).map_err(|_| StorageError::TooLarge("block"))?;
            blocks.push((*index, len, crc32fast::hash(data)));
            data_len += u64::from(len);
        }
        let meta = RecordMeta {
            auth: batch.auth,
            head: batch.head,
            delete_nodes: batch.delete_nodes,
            delete_blocks: batch.delete_blocks,
            nodes: batch.nodes,
            blocks,
        };
        let mut meta_bytes = Vec::with_capacity(meta_len_hint(&meta));
        encode_meta(&meta, &mut meta_bytes);
        let meta_len = u32::try_from(meta_bytes.len())
            .ok()
            .filter(|l| u64::from(*l) <= MAX_META_LEN)
            .ok_or(StorageError::TooLarge("record meta"))?;
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[..4].copy_from_slice(RECORD_MAGIC);
        header[4..8].copy_from_slice(&meta_len.to_le_bytes());
        header[8..16].copy_from_slice(&data_len.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&header[..16]);
        h.update(&meta_bytes);
        header[16..].copy_from_slice(&h.finalize().to_le_bytes());

        let mut slices = Vec::with_capacity(2 + batch.blocks.len());
        slices.push(IoSlice::new(&header));
        slices.push(IoSlice::new(&meta_bytes));
        for (_, data) in &batch.blocks {
            if !data.is_empty() {
                slices.push(IoSlice::new(data));
            }
        }
        let start = self.len;
        let written = self.write_all(&mut slices).and_then(|()| match self.sync {
            SyncPolicy::Always => self.file.sync_data(),
            SyncPolicy::Never => Ok(()),
        });
        if let Err(e) = written {
            // Roll the tail back so that later records do not follow garbage.
            let rolled = self
                .file
                .set_len(start)
                .and_then(|()| self.file.seek(SeekFrom::Start(start)).map(|_| ()));
            if rolled.is_err() {
                self.poisoned = true;
            }
            return Err(StorageError::Io(e));
        }
        let data_start = start + RECORD_HEADER_LEN as u64 + u64::from(meta_len);
        self.len = data_start + data_len;
        self.apply(meta, data_start);
        Ok(())
    }
}

const FLAG_AUTH: u64 = 1;
const FLAG_HEAD: u64 = 2;

fn meta_len_hint(m: &RecordMeta) -> usize {
    256 + m.nodes.len() * 44
        + m.blocks.len() * 18
        + (m.delete_nodes.len() + m.delete_blocks.len()) * 18
}

fn encode_ranges(ranges: &[std::ops::Range<u64>], out: &mut Vec<u8>) {
    encode::uint(out, ranges.len() as u64);
    for r in ranges {
        encode::uint(out, r.start);
        encode::uint(out, r.end);
    }
}

fn encode_meta(m: &RecordMeta, out: &mut Vec<u8>) {
    let mut flags = 0;
    if m.auth.is_some() {
        flags |= FLAG_AUTH;
    }
    if m.head.is_some() {
        flags |= FLAG_HEAD;
    }
    encode::uint(out, flags);
    if let Some(a) = &m.auth {
        out.put_slice(&a.key);
        match &a.manifest {
            Some(man) => {
                encode::uint(out, 1);
                man.encode(out);
            }
            None => encode::uint(out, 0),
        }
        match &a.seed {
            Some(seed) => {
                encode::uint(out, 1);
                out.put_slice(&seed[..]);
            }
            None => encode::uint(out, 0),
        }
    }
    if let Some(h) = &m.head {
        encode::uint(out, h.fork);
        encode::uint(out, h.length);
        out.put_slice(&h.tree_hash);
        encode::buffer(out, h.signature.as_deref().unwrap_or_default());
    }
    encode_ranges(&m.delete_nodes, out);
    encode_ranges(&m.delete_blocks, out);
    m.nodes.encode(out);
    encode::uint(out, m.blocks.len() as u64);
    for &(index, len, crc) in &m.blocks {
        encode::uint(out, index);
        encode::uint(out, u64::from(len));
        out.put_u32_le(crc);
    }
}

fn decode_ranges(dec: &mut Decoder<'_>) -> Result<Vec<std::ops::Range<u64>>, DecodeError> {
    dec.array(2, |d| {
        let s = d.uint()?;
        let e = d.uint()?;
        Ok(s..e)
    })
}

fn decode_meta(bytes: &[u8]) -> Result<RecordMeta, DecodeError> {
    let mut dec = Decoder::new(bytes);
    let flags = dec.uint()?;
    let auth = if flags & FLAG_AUTH != 0 {
        let key = dec.fixed()?;
        let manifest = match dec.uint()? {
            0 => None,
            _ => Some(<Manifest as corenet_codec::Decode>::decode(&mut dec)?),
        };
        let seed = match dec.uint()? {
            0 => None,
            _ => Some(Zeroizing::new(dec.fixed::<32>()?)),
        };
        Some(Auth {
            key,
            manifest,
            seed,
        })
    } else {
        None
    };
    let head = if flags & FLAG_HEAD != 0 {
        Some(Head {
            fork: dec.uint()?,
            length: dec.uint()?,
            tree_hash: dec.fixed()?,
            signature: Some(Bytes::copy_from_slice(dec.buffer()?)).filter(|s| !s.is_empty()),
        })
    } else {
        None
    };
    let delete_nodes = decode_ranges(&mut dec)?;
    let delete_blocks = decode_ranges(&mut dec)?;
    let nodes = dec.array(
        crate::tree::NODE_MIN_LEN,
        <Node as corenet_codec::Decode>::decode,
    )?;
    let blocks = dec.array(6, |d| {
        let index = d.uint()?;
        let len = d.uint32()?;
        let crc = d.u32()?;
        Ok((index, len, crc))
    })?;
    dec.finish()?;
    Ok(RecordMeta {
        auth,
        head,
        delete_nodes,
        delete_blocks,
        nodes,
        blocks,
    })
}
