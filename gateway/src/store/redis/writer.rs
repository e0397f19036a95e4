//! The Redis store's writer: one task per node that sends each batch of appends as one pipeline.

use super::keys::{UserKeys, USERS};
use super::scripts::APPEND;
use super::{Append, Write};
use crate::infra::redis::bounded;
use crate::store::clock::HybridClock;
use crate::store::{new_epoch, record, Appended, CommitFeed, NewMessage, Settings, StoreError};
use redis::aio::ConnectionManager;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The one task per node that writes appends, batch after batch, in the order they were asked.
pub(super) struct Writer {
    pub redis: ConnectionManager,
    pub clock: Arc<HybridClock>,
    pub feed: Arc<dyn CommitFeed>,
    pub settings: Settings,
}

impl Writer {
    pub(super) async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Write>) {
        let mut closing = None;
        while let Some(first) = queue.recv().await {
            let mut batch = Vec::new();
            let mut messages = 0;
            let mut next = Some(first);
            while let Some(write) = next.take() {
                match write {
                    Write::Append(append) => {
                        messages += append.messages.len();
                        batch.push(append);
                    }
                    Write::Close(reply) => {
                        closing = Some(reply);
                        break;
                    }
                }
                if messages < self.settings.max_batch {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(batch).await;
            }
            if let Some(reply) = closing.take() {
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Stores a batch, hands its entries to the commit feed in log order, then answers each call.
    async fn commit(&mut self, batch: Vec<Append>) {
        match self.store(&batch).await {
            Ok(mut appended) => {
                self.feed.committed(&appended);
                for Append { messages, reply } in batch.into_iter().rev() {
                    let mine = appended.split_off(appended.len() - messages.len());
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!("store commit failed: {e}");
                for Append { reply, .. } in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Sends the batch as one pipeline and returns the appended messages in order.
    async fn store(&mut self, batch: &[Append]) -> Result<Vec<Appended>, StoreError> {
        let messages: Vec<&NewMessage> = batch.iter().flat_map(|a| &a.messages).collect();
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // A pipelined script call is not retried on NOSCRIPT (a restarted Redis has forgotten
        // its scripts), so every batch loads the script first: for a known script that is a
        // lookup by its hash.
        pipe.load_script(&APPEND).ignore();
        for message in &messages {
            let keys = UserKeys::of(&message.log);
            pipe.invoke_script(
                APPEND
                    .key(&keys.head)
                    .key(&keys.log)
                    .arg(self.clock.now())
                    .arg(new_epoch())
                    .arg(&message.record)
                    .arg(self.settings.retention_count),
            );
        }
        let logs: HashSet<&str> = messages.iter().map(|m| m.log.as_str()).collect();
        for log in logs {
            pipe.sadd(USERS, log).ignore();
        }
        let committing = std::time::Instant::now();
        let positions: Vec<(u64, u64)> = bounded(pipe.query_async(&mut self.redis)).await?;
        self.settings.commit_took(committing);
        if let Some(latest) = positions.iter().map(|(_, hlc)| *hlc).max() {
            self.clock.observe(latest);
        }
        Ok(messages
            .into_iter()
            .zip(positions)
            .map(|(message, (seq, hlc))| Appended {
                log: message.log.clone(),
                seq,
                hlc,
                payload: record::live_payload(&message.plaintext, seq, hlc),
                origin: message.origin,
                kind: message.kind,
            })
            .collect())
    }
}
