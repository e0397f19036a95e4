//! What this node is doing now, for the console and for scripts: `GET /v1/stats` (its
//! connections per transport, its queues, the rates of the last minutes) and `GET /v1/nodes`
//! (every node of the cluster and whether it is alive).

use super::error::ApiError;
use super::state::Api;
use crate::cluster::NodeHealth;
use crate::observe::throughput::{Sample, SAMPLE_EVERY};
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
pub struct Stats {
    /// Open sessions per transport (`mqtt`, `mqtt_tls`, `mqtt_ws`, `mqtt_wss`, `json_ws`).
    connections: BTreeMap<&'static str, i64>,
    /// Writes waiting for the store's writer; at `store_queue_max` new messages are refused.
    store_queue: usize,
    store_queue_max: usize,
    /// Pushes waiting in the notification ledger (queued, held for quiet hours, parked).
    ledger_queue: u64,
    sample_every_ms: u128,
    /// Rates per second over the last minutes, oldest first.
    samples: Vec<Sample>,
}

pub async fn stats(State(api): State<Api>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(Stats {
        connections: api
            .metrics
            .connections_now()
            .into_iter()
            .map(|(transport, open)| (transport.as_str(), open))
            .collect(),
        store_queue: api.store.queued_writes(),
        store_queue_max: api.config.store.max_queued_writes,
        ledger_queue: api.notifications.ledger.queue_depth().await?,
        sample_every_ms: SAMPLE_EVERY.as_millis(),
        samples: api.throughput.samples(),
    }))
}

#[derive(Serialize)]
pub struct Nodes {
    nodes: Vec<NodeHealth>,
}

pub async fn nodes(State(api): State<Api>) -> Result<Json<Nodes>, ApiError> {
    Ok(Json(Nodes {
        nodes: api.cluster.nodes().await?,
    }))
}
