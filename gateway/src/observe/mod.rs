//! What operators see: Prometheus metrics (`/metrics`), the console's recent rates, and the
//! traffic recording.

pub mod metrics;
pub mod recorder;
pub mod throughput;
