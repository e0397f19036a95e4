//! Devices each user has logged in from before, kept in the data dir so that "a device the user
//! never used before" survives restarts. An append-only file: one `user<TAB>device` line each.

use anyhow::{Context, Result};
use dashmap::DashMap;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct KnownDevices {
    by_user: DashMap<String, HashSet<String>>,
    file: Mutex<File>,
    path: PathBuf,
}

impl KnownDevices {
    pub fn open(path: &Path) -> Result<Self> {
        let by_user: DashMap<String, HashSet<String>> = DashMap::new();
        if path.exists() {
            let reader = BufReader::new(
                File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
            );
            for line in reader.lines() {
                if let Some((user, device)) = line?.split_once('\t') {
                    by_user
                        .entry(user.to_string())
                        .or_default()
                        .insert(device.to_string());
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            by_user,
            file: Mutex::new(file),
            path: path.to_path_buf(),
        })
    }

    pub fn contains(&self, user: &str, device: &str) -> bool {
        self.by_user
            .get(user)
            .is_some_and(|devices| devices.contains(device))
    }

    /// True when the user has logged in from any device before.
    pub fn has_any(&self, user: &str) -> bool {
        self.by_user.get(user).is_some_and(|d| !d.is_empty())
    }

    /// Remembers the device; returns an error only when the file cannot be written.
    pub fn remember(&self, user: &str, device: &str) -> Result<()> {
        let inserted = self
            .by_user
            .entry(user.to_string())
            .or_default()
            .insert(device.to_string());
        if inserted {
            let mut file = self.file.lock().expect("known-devices file lock");
            writeln!(file, "{user}\t{device}")?;
            file.flush()?;
        }
        Ok(())
    }
}

impl KnownDevices {
    /// Forgets every device of the user, rewriting the file without them (written beside it,
    /// then renamed over it, so a crash leaves one file or the other).
    pub fn forget_user(&self, user: &str) -> Result<()> {
        let mut file = self.file.lock().expect("known-devices file lock");
        if self.by_user.remove(user).is_none() {
            return Ok(());
        }
        let fresh_path = self.path.with_extension("tmp");
        let mut fresh = File::create(&fresh_path)
            .with_context(|| format!("cannot write {}", fresh_path.display()))?;
        for entry in self.by_user.iter() {
            for device in entry.value() {
                writeln!(fresh, "{}\t{device}", entry.key())?;
            }
        }
        fresh.sync_all()?;
        std::fs::rename(&fresh_path, &self.path)?;
        *file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_devices_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known");
        let known = KnownDevices::open(&path).unwrap();
        assert!(!known.has_any("alice"));
        known.remember("alice", "phone").unwrap();
        known.remember("alice", "phone").unwrap();
        drop(known);
        let known = KnownDevices::open(&path).unwrap();
        assert!(known.contains("alice", "phone"));
        assert!(!known.contains("alice", "laptop"));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        known.remember("bob", "tablet").unwrap();
        known.forget_user("alice").unwrap();
        known.remember("carol", "web").unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, "bob\ttablet\ncarol\tweb\n");
    }
}
