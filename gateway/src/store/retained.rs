//! Retained messages: the last message published with the retain flag on each topic, handed to
//! every new subscription that matches it. Kept sealed and opaque; the live layer decides what a
//! retained message holds and keeps them all in memory for matching.

use super::StoreError;
use async_trait::async_trait;

#[async_trait]
pub trait RetainedStore: Send + Sync + 'static {
    /// Keeps `message` as `topic`'s retained message, or removes it (`None`).
    async fn put_retained(&self, topic: &str, message: Option<&[u8]>) -> Result<(), StoreError>;

    /// Every retained message, by topic.
    async fn retained(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}
