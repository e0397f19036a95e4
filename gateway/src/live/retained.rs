//! Retained messages: the last message published with the retain flag on each topic, handed to
//! every new subscription that matches it. All are held in memory for matching (a subscribe
//! checks each against its filter) and kept in the store, so they outlive a restart. Their
//! number is bounded by `limits.max_retained`: past it, a new topic is refused (an existing one
//! may still be replaced or cleared).

use super::link::Qos;
use super::message::Published;
use crate::store::retained::RetainedStore;
use crate::store::StoreError;
use dashmap::DashMap;
use protocol::topics::filter_matches;
use std::sync::Arc;
use std::time::Instant;

pub struct Retained {
    /// Each topic's retained message, with the QoS it was published at.
    messages: DashMap<String, (Arc<Published>, Qos)>,
    store: Arc<dyn RetainedStore>,
    max: usize,
}

/// Why a message could not be retained.
#[derive(Debug, thiserror::Error)]
pub enum RetainError {
    #[error("{0} topics hold a retained message, the most allowed (limits.max_retained)")]
    Full(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Retained {
    /// Takes up the retained messages kept in `store`.
    pub async fn load(store: Arc<dyn RetainedStore>, max: usize) -> Result<Self, StoreError> {
        let messages = DashMap::new();
        for (topic, bytes) in store.retained().await? {
            match Published::decode(&bytes) {
                Some((message, qos)) => {
                    let qos = qos.and_then(Qos::from_level).unwrap_or(Qos::AtMostOnce);
                    messages.insert(topic, (Arc::new(message), qos));
                }
                None => tracing::warn!(%topic, "a retained message cannot be read; skipped"),
            }
        }
        Ok(Self {
            messages,
            store,
            max,
        })
    }

    /// Retains `message`, published at `qos`, on its topic, or clears the topic's retained
    /// message when the payload is empty; kept in the store before it is answered.
    pub async fn set(&self, message: &Published, qos: Qos) -> Result<(), RetainError> {
        let topic = &message.topic;
        if message.payload.is_empty() {
            self.store.put_retained(topic, None).await?;
            self.messages.remove(topic);
            return Ok(());
        }
        if !self.messages.contains_key(topic) && self.messages.len() >= self.max {
            return Err(RetainError::Full(self.max));
        }
        let kept = Published {
            retain: true,
            origin: None,
            seq: None,
            durable_at: None,
            topic: topic.clone(),
            payload: message.payload.clone(),
            properties: message.properties.clone(),
            expires_at: message.expires_at,
        };
        self.store
            .put_retained(topic, Some(&kept.encode(Some(qos.level()))))
            .await?;
        self.messages.insert(topic.clone(), (Arc::new(kept), qos));
        Ok(())
    }

    /// The retained messages on topics `filter` matches that have not expired, with the QoS
    /// each was published at.
    pub fn matching(&self, filter: &str) -> Vec<(Arc<Published>, Qos)> {
        let now = Instant::now();
        self.messages
            .iter()
            .filter(|entry| filter_matches(filter, entry.key()) && !entry.value().0.is_expired(now))
            .map(|entry| entry.value().clone())
            .collect()
    }
}
