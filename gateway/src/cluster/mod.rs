//! The other gateway nodes: [`single`] when a node runs alone (nothing elsewhere), [`redis`]
//! when nodes share a Redis. Both implement the live layer's [`OtherNodes`] and are joined,
//! started and left the same way by the composition root.

pub mod redis;
pub mod single;

use crate::infra::cipher::KeyRing;
use crate::live::hub::Hub;
use crate::live::nodes::OtherNodes;
use crate::live::registry::Registry;
use crate::live::sessions::Sessions;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use async_trait::async_trait;
use broker_config::{Store, StoreBackend};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::sync::Arc;

/// This node's membership of the cluster.
#[async_trait]
pub trait Membership: OtherNodes {
    /// Starts what keeps this node in the cluster until shutdown: receiving what the other
    /// nodes send it (handed to `registry`, `hub` and `sessions`), renewing its liveness,
    /// reaping dead nodes.
    fn start(
        self: Arc<Self>,
        registry: Arc<Registry>,
        hub: Arc<Hub>,
        sessions: Arc<Sessions>,
        shutdown: &Shutdown,
    );

    /// Hands on what is still queued for the other nodes (the offline events of the sessions
    /// that just closed) and leaves, so the others reap what is left of this node at once.
    async fn leave(&self);

    /// Every node of the cluster, this one among them, and whether each is alive.
    async fn nodes(&self) -> Result<Vec<NodeHealth>, StoreError>;
}

/// A node as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    pub node: String,
    /// The node answering.
    pub this: bool,
    /// Whether it renewed its liveness within `store.node_timeout`; a node that stopped
    /// answering is listed until another node reaps it.
    pub alive: bool,
}

/// Joins the nodes sharing the configured Redis, or none with the embedded store. `keys` seal
/// what goes between the nodes; `dropped` counts what a full outgoing queue dropped.
pub async fn join(
    config: &Store,
    keys: Arc<KeyRing>,
    dropped: Counter,
) -> anyhow::Result<Arc<dyn Membership>> {
    Ok(match config.backend {
        StoreBackend::Redis => redis::RedisNodes::join(config, keys, dropped).await?,
        StoreBackend::Embedded => Arc::new(single::SingleNode {
            name: config.node_id.clone().unwrap_or_else(|| "local".into()),
        }),
    })
}
