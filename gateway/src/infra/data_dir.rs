//! The gateway's data directory: secrets generated once and kept, so that `gateway token`,
//! `gateway api-key` and `gateway serve` with the same data dir agree without any setup.

use anyhow::{Context, Result};
use rand::RngCore;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating when missing) the data directory.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create data dir {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The secret kept in `name`, generated (32 random bytes, hex) on first use. Creation is
    /// exclusive, so two processes starting at once end up with the same secret.
    pub fn secret(&self, name: &str) -> Result<String> {
        let path = self.path(name);
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let fresh = hex::encode(bytes);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(fresh.as_bytes())?;
                file.sync_all()?;
                Ok(fresh)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let kept = fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let kept = kept.trim().to_string();
                anyhow::ensure!(
                    kept.len() >= 32,
                    "{} is damaged (shorter than 32 characters); delete it to generate a new one",
                    path.display()
                );
                Ok(kept)
            }
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let first = data.secret("token_secret").unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(data.secret("token_secret").unwrap(), first);
        assert_ne!(data.secret("api_key").unwrap(), first);
    }
}
