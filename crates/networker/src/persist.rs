//! What the networker remembers across restarts: its identity and the discovery keys it was
//! configured with, in a redb database in the corestore's directory (crash-safe: every change
//! is one committed transaction).

use std::path::{Path, PathBuf};

use corenet_codec::DiscoveryKey;
use redb::{Database, ReadableTable, TableDefinition};

use crate::Configure;

/// File name of the database inside the storage directory.
pub const FILE_NAME: &str = "networker.redb";

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const TOPICS: TableDefinition<'_, &[u8; 32], u8> = TableDefinition::new("topics");

const ANNOUNCE: u8 = 1;
const LOOKUP: u8 = 2;

/// Why the configuration store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The database could not be opened, read or written.
    #[error("networker configuration store: {0}")]
    Db(String),
    /// A file operation failed.
    #[error("networker configuration store: {0}")]
    Io(#[from] std::io::Error),
}

fn db<E: std::fmt::Display>(e: E) -> PersistError {
    PersistError::Db(e.to_string())
}

/// The persisted configuration.
#[derive(Debug)]
pub struct Persist {
    db: Database,
    path: PathBuf,
    /// Where a corrupt file was moved to when this store was opened.
    recovered: Option<PathBuf>,
}

impl Persist {
    /// Opens (or creates) the store in `dir`. A file that cannot be opened is moved aside to
    /// `networker.redb.corrupt-<unix seconds>` (reported by [`Persist::recovered_from`]) and a
    /// fresh store is created; nothing is silently discarded.
    pub fn open(dir: &Path) -> Result<Persist, PersistError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut recovered = None;
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(e) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = dir.join(format!("{FILE_NAME}.corrupt-{stamp}"));
                tracing::error!(file = %path.display(), moved_to = %aside.display(), error = %e,
                    "the networker configuration store is unreadable; starting a new one");
                std::fs::rename(&path, &aside)?;
                recovered = Some(aside);
                Database::create(&path).map_err(db)?
            }
        };
        let p = Persist {
            db,
            path,
            recovered,
        };
        p.init()?;
        Ok(p)
    }

    fn init(&self) -> Result<(), PersistError> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            tx.open_table(META).map_err(db)?;
            tx.open_table(TOPICS).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where an unreadable file was moved when the store was opened.
    pub fn recovered_from(&self) -> Option<&Path> {
        self.recovered.as_deref()
    }

    /// The stored identity seed.
    pub fn seed(&self) -> Result<Option<[u8; 32]>, PersistError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(META).map_err(db)?;
        let v = t.get("seed").map_err(db)?;
        Ok(v.and_then(|v| <[u8; 32]>::try_from(v.value()).ok()))
    }

    /// Stores the identity seed.
    pub fn set_seed(&self, seed: &[u8; 32]) -> Result<(), PersistError> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(META).map_err(db)?;
            t.insert("seed", &seed[..]).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Every configured discovery key with its options.
    pub fn topics(&self) -> Result<Vec<(DiscoveryKey, Configure)>, PersistError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(TOPICS).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            let flags = v.value();
            out.push((
                DiscoveryKey(*k.value()),
                Configure {
                    announce: flags & ANNOUNCE != 0,
                    lookup: flags & LOOKUP != 0,
                    flush: false,
                },
            ));
        }
        Ok(out)
    }

    /// Records a discovery key's options (both false removes it).
    pub fn set_topic(&self, dk: &DiscoveryKey, c: &Configure) -> Result<(), PersistError> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(TOPICS).map_err(db)?;
            if c.announce || c.lookup {
                let flags =
                    if c.announce { ANNOUNCE } else { 0 } | if c.lookup { LOOKUP } else { 0 };
                t.insert(dk.as_bytes(), flags).map_err(db)?;
            } else {
                t.remove(dk.as_bytes()).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Persist::open(dir.path()).unwrap();
            assert_eq!(p.seed().unwrap(), None);
            p.set_seed(&[7; 32]).unwrap();
            let dk = DiscoveryKey([1; 32]);
            p.set_topic(
                &dk,
                &Configure {
                    announce: true,
                    lookup: false,
                    flush: true,
                },
            )
            .unwrap();
            p.set_topic(
                &DiscoveryKey([2; 32]),
                &Configure {
                    announce: true,
                    lookup: true,
                    flush: false,
                },
            )
            .unwrap();
            p.set_topic(
                &DiscoveryKey([2; 32]),
                &Configure {
                    announce: false,
                    lookup: false,
                    flush: false,
                },
            )
            .unwrap();
        }
        let p = Persist::open(dir.path()).unwrap();
        assert_eq!(p.seed().unwrap(), Some([7; 32]));
        let t = p.topics().unwrap();
        assert_eq!(t.len(), 1);
        assert!(t[0].1.announce && !t[0].1.lookup);
        drop(p);
        // Corrupt the file: it is moved aside, not discarded.
        std::fs::write(dir.path().join(FILE_NAME), b"not a database at all").unwrap();
        let p = Persist::open(dir.path()).unwrap();
        let moved = p.recovered_from().unwrap().to_path_buf();
        assert_eq!(std::fs::read(&moved).unwrap(), b"not a database at all");
        assert_eq!(p.seed().unwrap(), None);
    }
}
