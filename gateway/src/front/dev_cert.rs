//! `gateway dev-cert`: a self-signed certificate for trying the TLS listeners locally.

use anyhow::{Context, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `cert.pem` and `key.pem` for `hosts` into `dir`; returns their paths.
pub fn write(dir: &Path, hosts: Vec<String>) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let certified =
        rcgen::generate_simple_self_signed(hosts).context("generating the certificate")?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    let mut key = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    key.write_all(certified.key_pair.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}
