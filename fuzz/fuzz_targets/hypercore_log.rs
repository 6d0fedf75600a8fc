//! The on-disk log at open (`DiskStorage::open` replaying `hypercore.log`, then
//! `Hypercore::open` loading the core from it): a log left by a crash, a full disk, a bad
//! sector or anyone who can write the file.
//!
//! The first byte picks the mode: even, the rest is the file as is; odd, the rest is the file
//! with every record's `meta_crc` recomputed (records found by walking their header lengths),
//! so the fuzzer reaches the meta decoder and the replay behind the checksum. The file lives
//! in `$CORENET_FUZZ_TMP` if set, else on tmpfs (`/dev/shm`) when there is one.
//!
//! Invariants: no panic, allocation bounded by the file size, open terminates; the file
//! after open is a prefix of what was written (only a torn tail is cut); a reopen of what was
//! kept succeeds the same way and keeps the same length; reads of every block either return
//! bytes or a `Corrupt` error.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use corenet_replication::{DiskStorage, Hypercore, Storage, SyncPolicy};
use libfuzzer_sys::fuzz_target;

const FILE_MAGIC: &[u8; 8] = b"CNHCLOG1";
const RECORD_MAGIC: &[u8; 4] = b"CNR1";
const RECORD_HEADER_LEN: usize = 20;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if let Some(d) = std::env::var_os("CORENET_FUZZ_TMP") {
            PathBuf::from(d)
        } else if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("corenet-fuzz-log-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz directory");
        d
    })
}

/// Recomputes the CRC of every record reachable by walking header lengths.
fn repair_crcs(file: &mut [u8]) {
    let mut pos = FILE_MAGIC.len();
    while file.len().saturating_sub(pos) >= RECORD_HEADER_LEN && &file[pos..pos + 4] == RECORD_MAGIC
    {
        let meta_len = u32::from_le_bytes(file[pos + 4..pos + 8].try_into().unwrap_or_default());
        let data_len = u64::from_le_bytes(file[pos + 8..pos + 16].try_into().unwrap_or_default());
        let meta_start = pos + RECORD_HEADER_LEN;
        let Some(meta_end) = meta_start.checked_add(meta_len as usize) else {
            return;
        };
        if meta_end > file.len() {
            return;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&file[pos..pos + 16]);
        h.update(&file[meta_start..meta_end]);
        let crc = h.finalize().to_le_bytes();
        file[pos + 16..pos + 20].copy_from_slice(&crc);
        let Some(end) = u64::try_from(meta_end)
            .ok()
            .and_then(|e| e.checked_add(data_len))
        else {
            return;
        };
        if end > file.len() as u64 {
            return;
        }
        pos = end as usize;
    }
}

fn open_and_check(dir: &PathBuf) -> Option<u64> {
    let storage = DiskStorage::open_with(dir, SyncPolicy::Never).ok()?;
    let _ = storage.bitfield();
    let _ = storage.head();
    let core = Hypercore::open(storage).ok()?;
    let len = core.len();
    for i in 0..len.min(64) {
        match core.get(i) {
            Ok(_) => {}
            Err(corenet_replication::Error::Storage(_)) => {}
            Err(e) => panic!("reading block {i} failed with {e}"),
        }
    }
    let _ = core.contiguous_len();
    Some(len)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = FILE_MAGIC.to_vec();
    // Keep a raw first 8 bytes possible too: mode bit 2 writes the input unprefixed.
    if mode & 2 != 0 {
        file.clear();
    }
    file.extend_from_slice(rest);
    if mode & 1 != 0 {
        repair_crcs(&mut file);
    }
    let dir = dir();
    let path = dir.join("hypercore.log");
    std::fs::write(&path, &file).expect("write the log");
    let first = open_and_check(dir);
    let kept = std::fs::read(&path).unwrap_or_default();
    if kept.len() >= FILE_MAGIC.len() && file.len() >= FILE_MAGIC.len() {
        assert!(kept.len() <= file.len(), "open grew the log");
        assert_eq!(&kept[..], &file[..kept.len()], "open rewrote kept records");
    }
    // What was kept opens again to the same core.
    let second = open_and_check(dir);
    assert_eq!(first, second, "reopening the kept log gives another core");
    let _ = std::fs::remove_file(&path);
});
