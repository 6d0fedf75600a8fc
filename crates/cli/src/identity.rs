//! Where the CLI's identity comes from: `--seed`, or a seed file kept in the storage directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use corenet_noise::KeyPair;

use crate::CliError;

/// File name of the identity seed (64 hex characters) inside the storage directory.
const IDENTITY_FILE: &str = "identity";

/// The default storage directory: `$XDG_DATA_HOME/corenet`, else `~/.local/share/corenet`.
pub(crate) fn default_storage() -> Result<PathBuf, CliError> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("corenet"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| CliError::Usage("no HOME; pass --storage DIR".into()))?;
    Ok(PathBuf::from(home).join(".local/share/corenet"))
}

/// The key pair for this run.
pub(crate) fn load(seed: Option<&str>, storage: Option<&Path>) -> Result<KeyPair, CliError> {
    if let Some(hex_seed) = seed {
        return parse_seed(hex_seed).map(KeyPair::from_seed);
    }
    let dir = match storage {
        Some(d) => d.to_path_buf(),
        None => default_storage()?,
    };
    let path = dir.join(IDENTITY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => parse_seed(text.trim())
            .map(KeyPair::from_seed)
            .map_err(|_| {
                CliError::Runtime(format!("{} is not a 64-hex-character seed", path.display()))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = KeyPair::generate();
            write_seed(&dir, &path, &kp).map_err(|e| {
                CliError::Runtime(format!(
                    "cannot store the identity in {}: {e}",
                    path.display()
                ))
            })?;
            eprintln!("created a new identity in {}", path.display());
            Ok(kp)
        }
        Err(e) => Err(CliError::Runtime(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn parse_seed(s: &str) -> Result<[u8; 32], CliError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| CliError::Usage("--seed takes 64 hex characters".into()))?;
    Ok(out)
}

fn write_seed(dir: &Path, path: &Path, kp: &KeyPair) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(hex::encode(&kp.seed()[..]).as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
