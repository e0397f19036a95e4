//! The devices each user has logged in from: what tells "a device the user never used before"
//! (which waits for approval when `sessions.new_device_approval` is on) from a known one, kept
//! in the store so that every node sharing it decides the same, and the user's first device is
//! decided once, whichever node it comes to.

use super::StoreError;
use anyhow::Context;
use async_trait::async_trait;
use futures_util::{stream, StreamExt, TryStreamExt};
use std::path::Path;

/// What a device logging in is to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The user had no device: this one is now the first, and known.
    First,
    /// The user has logged in from it before.
    Known,
    /// The user has other devices, and not this one.
    New,
}

#[async_trait]
pub trait KnownDeviceStore: Send + Sync + 'static {
    /// What `device` is to `user`, deciding at once and once only whether it is the first: two
    /// devices of a user without any, logging in together on two nodes, are one `First` and one
    /// `New`.
    async fn standing(&self, user: &str, device: &str) -> Result<Standing, StoreError>;

    /// Remembers `device` as one of `user`'s (once approved).
    async fn remember_device(&self, user: &str, device: &str) -> Result<(), StoreError>;
}

/// How many devices [`import_file`] has the store remember at once.
const IMPORTED_AT_ONCE: usize = 256;

/// Moves the devices of `path`, where a node kept them before the store did (one
/// `user<TAB>device` line each, the data dir's `known_devices.tsv`), into the store, then
/// renames the file with `.imported` added: done once, at the first start after an upgrade.
pub async fn import_file(store: &dyn KnownDeviceStore, path: &Path) -> anyhow::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // Many at once, so that they share the store's group commits: each is answered only when
    // durable.
    let remembered: Vec<()> = stream::iter(text.lines().filter_map(|line| line.split_once('\t')))
        .map(|(user, device)| store.remember_device(user, device))
        .buffer_unordered(IMPORTED_AT_ONCE)
        .try_collect()
        .await?;
    let imported = remembered.len();
    let done = path.with_extension("tsv.imported");
    std::fs::rename(path, &done)
        .with_context(|| format!("cannot rename {} to {}", path.display(), done.display()))?;
    tracing::info!(
        imported,
        "known devices moved from {} into the store",
        path.display()
    );
    Ok(imported)
}
