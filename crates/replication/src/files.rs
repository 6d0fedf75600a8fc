//! Files as hypercores: the building blocks of `corenet share <path>` and
//! `corenet get <key> <out>`.
//!
//! A shared file is a core whose blocks are consecutive [`FILE_BLOCK_SIZE`] (64 KiB) slices
//! of the file (the last one shorter): the file is the concatenation of the blocks. Any
//! hypercore peer can fetch it; a JS peer reads it with `core.get(i)` or
//! `core.createReadStream()`.
//!
//! - [`share_file`] puts a file into a named core of a [`Corestore`]. Sharing the same file
//!   again changes nothing; sharing a file that grew since (an append-only log) appends the
//!   new part; a file whose existing part changed is refused (a hypercore cannot rewrite
//!   history).
//! - [`download_to_file`] downloads a whole core from the peers replicating it and writes the
//!   file, reporting [`FileProgress`] (blocks, bytes, rate, ETA) along the way. The downloaded
//!   blocks are kept in the core's storage, so a second run into the same store (after an
//!   interruption) fetches only the blocks still missing.
//!
//! Both are independent of how peers are found: replicate the store over connections
//! ([`Corestore::replicate`]) from the swarm, TCP, or anything else.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use corenet_replication::files::{download_to_file, share_file};
//! use corenet_replication::Corestore;
//!
//! let dir = tempfile::tempdir()?;
//! let input = dir.path().join("input.bin");
//! std::fs::write(&input, vec![7u8; 200_000])?;
//!
//! // The sharer: a named core holding the file (4 blocks: 3 x 64 KiB and the rest).
//! let sharer = Corestore::in_memory();
//! let shared = share_file(&sharer, "input.bin", &input)?;
//! assert_eq!((shared.blocks, shared.bytes), (4, 200_000));
//!
//! // Here the getter uses the same store; over a network it opens the core by key in its
//! // own store (`store.get_by_key(key)`) and replicates it with the sharer.
//! let out = dir.path().join("output.bin");
//! let got = download_to_file(&shared.core, &out, |_progress| {}).await?;
//! assert_eq!(got.bytes, 200_000);
//! assert_eq!(std::fs::read(&out)?, std::fs::read(&input)?);
//! # Ok(()) }
//! ```

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::core::{Event, Hypercore};
use crate::corestore::Corestore;
use crate::error::Error;

/// Block size of shared files: 64 KiB.
pub const FILE_BLOCK_SIZE: usize = 64 * 1024;
/// Blocks appended (and signed) per batch while sharing: 4 MiB.
const SHARE_BATCH_BLOCKS: usize = 64;
/// Least time between two progress reports (the last one always comes).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// What [`share_file`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SharedFile {
    /// The core holding the file (its key is what a getter needs).
    pub core: Hypercore,
    /// Blocks in the core.
    pub blocks: u64,
    /// Bytes in the core (the file size).
    pub bytes: u64,
    /// Blocks appended by this call (0 when the core already held the file).
    pub appended_blocks: u64,
}

/// Puts the file at `path` into the named core `name` of `store` (64 KiB blocks, one
/// signature per 4 MiB batch) and returns it. The same name in the same store always gives
/// the same core (and key): a CLI would use, say, the file's canonical path as the name, so
/// that sharing a file again serves the same key. Idempotent: a core that already holds the
/// file is returned as is; one that holds a prefix of it (the file grew) gets the rest
/// appended. Fails with [`Error::InvalidArgument`] when the core holds content that is not
/// a prefix of the file.
///
/// This reads, hashes and writes synchronously: from async code, run it in
/// `tokio::task::spawn_blocking`.
pub fn share_file(
    store: &Corestore,
    name: &str,
    path: impl AsRef<Path>,
) -> Result<SharedFile, Error> {
    let core = store.get(name)?;
    let mut file = File::open(path.as_ref())?;
    let size = file.metadata()?.len();
    let have_bytes = core.byte_len();
    let have_blocks = core.len();
    if have_bytes > size {
        return Err(Error::InvalidArgument(
            "the core holds more than the file: it was shared from other content",
        ));
    }
    // The blocks already shared must be the file's first blocks.
    let mut buf = vec![0u8; FILE_BLOCK_SIZE];
    for i in 0..have_blocks {
        let stored = core
            .get(i)?
            .ok_or(Error::StorageMismatch("a shared block is missing"))?;
        let n = read_block(&mut file, &mut buf)?;
        if n < stored.len() || stored[..] != buf[..stored.len()] {
            return Err(Error::InvalidArgument(
                "the file differs from what the core holds: it was shared from other content",
            ));
        }
        if stored.len() < n {
            // The stored short last block would have to grow.
            return Err(Error::InvalidArgument(
                "the file grew after a short last block: a hypercore cannot change a block",
            ));
        }
    }
    let mut appended = 0;
    loop {
        let mut batch: Vec<Bytes> = Vec::with_capacity(SHARE_BATCH_BLOCKS);
        let mut last = false;
        while batch.len() < SHARE_BATCH_BLOCKS {
            let n = read_block(&mut file, &mut buf)?;
            if n == 0 {
                last = true;
                break;
            }
            batch.push(Bytes::copy_from_slice(&buf[..n]));
            if n < FILE_BLOCK_SIZE {
                last = true;
                break;
            }
        }
        appended += batch.len() as u64;
        if !batch.is_empty() {
            core.append(batch)?;
        }
        if last {
            break;
        }
    }
    tracing::info!(
        key = %core.key(),
        blocks = core.len(),
        bytes = core.byte_len(),
        appended,
        "file shared"
    );
    Ok(SharedFile {
        blocks: core.len(),
        bytes: core.byte_len(),
        appended_blocks: appended,
        core,
    })
}

/// Reads up to one block; short only at the end of the file.
fn read_block(file: &mut File, buf: &mut [u8]) -> Result<usize, Error> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Progress of [`download_to_file`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FileProgress {
    /// Blocks stored locally.
    pub blocks: u64,
    /// Blocks in the core.
    pub total_blocks: u64,
    /// Bytes stored locally.
    pub bytes: u64,
    /// Bytes in the core (the file size).
    pub total_bytes: u64,
    /// Bytes downloaded in this run (not counting blocks a previous run left).
    pub fetched_bytes: u64,
    /// Download rate of this run, in bytes per second.
    pub rate: f64,
    /// Estimated time left at that rate; `None` before anything arrived.
    pub eta: Option<Duration>,
}

/// What [`download_to_file`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct DownloadedFile {
    /// Blocks in the file.
    pub blocks: u64,
    /// Bytes in the file.
    pub bytes: u64,
    /// Blocks fetched from peers in this run (the rest were in storage already).
    pub fetched_blocks: u64,
    /// Bytes fetched from peers in this run.
    pub fetched_bytes: u64,
    /// How long the download took (not counting writing the file).
    pub elapsed: Duration,
}

/// Downloads every block of `core` from its peers and writes them, in order, to the file at
/// `out` (through `<out>.part`, renamed when complete and synced, so `out` never holds a
/// partial file). `progress` is called at most every [`PROGRESS_INTERVAL`] and once at the
/// end.
///
/// The core's length is taken when the download starts: first, if the core is empty, this
/// waits until a peer gives it a tree (forever if none ever does: bound it with
/// `tokio::time::timeout`), then asks the peers once for a newer one ([`Hypercore::update`],
/// which waits for the channels being opened, so call this after replicating the core over
/// the connections found so far). Blocks appended later are not included.
///
/// Fails with [`Error::Storage`] when storing a downloaded block fails (a full disk is
/// [`std::io::ErrorKind::StorageFull`]): the blocks stored so far stay.
///
/// Resumable: blocks already in the core's storage are not fetched again, so after an
/// interruption, a second run on the same core (the same on-disk [`Corestore`]) fetches only
/// what is missing.
pub async fn download_to_file(
    core: &Hypercore,
    out: impl AsRef<Path>,
    mut progress: impl FnMut(&FileProgress),
) -> Result<DownloadedFile, Error> {
    let out = out.as_ref().to_path_buf();
    if core.is_empty() {
        core.wait_for_length(1).await?;
    }
    core.update().await?;
    let total_blocks = core.len();
    let total_bytes = core.byte_len();

    let start = Instant::now();
    let had_bytes = stored_bytes(core, total_blocks)?;
    let had_blocks = core.bitfield().count(0..total_blocks);
    // Subscribed after counting: a block arriving in between is missed until the exact
    // count at the end, never counted twice.
    let mut events = core.events();
    let mut bytes = had_bytes;
    let mut download = core.download(0..total_blocks);
    let mut state = download.progress();
    let mut last_report: Option<Instant> = None;
    let report = |blocks: u64, bytes: u64, now: Instant| {
        let bytes = bytes.min(total_bytes);
        let fetched = bytes - had_bytes;
        let secs = now.duration_since(start).as_secs_f64();
        let rate = if secs > 0.0 {
            fetched as f64 / secs
        } else {
            0.0
        };
        let eta = (rate > 0.0)
            .then(|| Duration::from_secs_f64(total_bytes.saturating_sub(bytes) as f64 / rate));
        FileProgress {
            blocks,
            total_blocks,
            bytes,
            total_bytes,
            fetched_bytes: fetched,
            rate,
            eta,
        }
    };
    loop {
        let p = *state.borrow_and_update();
        if p.complete {
            // Exact, whatever events are still queued.
            bytes = stored_bytes(core, total_blocks)?;
        } else {
            // Count what arrived so far.
            loop {
                match events.try_recv() {
                    Ok(e) => on_event(core, &e, total_blocks, &mut bytes)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(_)) => bytes = stored_bytes(core, total_blocks)?,
                    Err(TryRecvError::Closed) => return Err(Error::Closed),
                }
            }
        }
        let now = Instant::now();
        if p.complete || last_report.is_none_or(|t| now.duration_since(t) >= PROGRESS_INTERVAL) {
            progress(&report(p.blocks, bytes, now));
            last_report = Some(now);
        }
        if p.complete {
            break;
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(Error::Closed);
                }
            }
            e = events.recv() => match e {
                Ok(e) => on_event(core, &e, total_blocks, &mut bytes)?,
                Err(RecvError::Lagged(_)) => bytes = stored_bytes(core, total_blocks)?,
                Err(RecvError::Closed) => return Err(Error::Closed),
            },
            // Complete (seen above next time round), or storing a block failed.
            done = download.done() => done?,
        }
    }
    let elapsed = start.elapsed();
    drop(download);
    let core2 = core.clone();
    let out2 = out.clone();
    tokio::task::spawn_blocking(move || write_file(&core2, total_blocks, &out2))
        .await
        .map_err(|_| Error::Closed)??;
    let fetched_blocks = total_blocks - had_blocks;
    tracing::info!(
        key = %core.key(),
        blocks = total_blocks,
        bytes = total_bytes,
        fetched_blocks,
        path = %out.display(),
        "file downloaded"
    );
    Ok(DownloadedFile {
        blocks: total_blocks,
        bytes: total_bytes,
        fetched_blocks,
        fetched_bytes: total_bytes - had_bytes,
        elapsed,
    })
}

/// Counts the bytes of blocks that arrived.
fn on_event(core: &Hypercore, e: &Event, total_blocks: u64, bytes: &mut u64) -> Result<(), Error> {
    match e {
        Event::Have { start, length } => {
            for i in *start..start.saturating_add(*length).min(total_blocks) {
                *bytes += leaf_size(core, i)?;
            }
            Ok(())
        }
        Event::Truncated { .. } => Err(Error::InvalidArgument(
            "the core was truncated during the download",
        )),
        _ => Ok(()),
    }
}

/// The size of block `i` (its leaf node's size).
fn leaf_size(core: &Hypercore, i: u64) -> Result<u64, Error> {
    Ok(core.tree_node(2 * i)?.map_or(0, |n| n.size))
}

/// Bytes of the blocks stored below `length`.
fn stored_bytes(core: &Hypercore, length: u64) -> Result<u64, Error> {
    let mut total = 0;
    for r in core.bitfield().ranges(0..length) {
        for i in r {
            total += leaf_size(core, i)?;
        }
    }
    Ok(total)
}

/// Writes blocks `0..length` to `<out>.part`, syncs it and renames it to `out`. On failure
/// the `.part` file is removed (on a full disk it would hold the space).
fn write_file(core: &Hypercore, length: u64, out: &Path) -> Result<(), Error> {
    let mut part: PathBuf = out.to_path_buf();
    let mut name = part
        .file_name()
        .ok_or(Error::InvalidArgument("the output path has no file name"))?
        .to_os_string();
    name.push(".part");
    part.set_file_name(name);
    let r = write_part(core, length, &part).and_then(|()| Ok(fs::rename(&part, out)?));
    if r.is_err() {
        let _ = fs::remove_file(&part);
    }
    r
}

fn write_part(core: &Hypercore, length: u64, part: &Path) -> Result<(), Error> {
    let file = File::create(part)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    for i in 0..length {
        let block = core
            .get(i)?
            .ok_or(Error::StorageMismatch("a downloaded block is missing"))?;
        w.write_all(&block)?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}
