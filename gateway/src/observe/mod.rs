//! What operators see: Prometheus metrics (`/metrics`) and the traffic recording.

pub mod metrics;
pub mod recorder;
