//! A backend-neutral snapshot of how busy a queue is, for scaling decisions and dashboards.
//!
//! Brokers expose different numbers: some report ready and unacknowledged counts, some only a consumer
//! lag, few report throughput or latency. [`AutoscaleMetrics`] holds whichever of them a backend can
//! measure; a field is `None` when the backend cannot measure it, never a made-up zero.

use std::time::Duration;

/// How busy one queue (or consumer group) is at a point in time.
///
/// Every field is optional: `None` means "this backend cannot measure it", which is different from
/// `Some(0)`, "measured, and nothing is there". The [`Default`] value knows nothing.
#[must_use]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AutoscaleMetrics {
    /// Messages waiting in the queue that no consumer has received yet (ready messages, or consumer
    /// lag on log-based brokers).
    pub backlog: Option<u64>,
    /// Messages delivered to a consumer and not yet settled (acknowledged, retried or dead-lettered).
    pub inflight: Option<u64>,
    /// Messages settled per second, averaged over the backend's most recent measurement window.
    pub throughput_per_sec: Option<f64>,
    /// Typical time a handler takes to process one message, over the most recent measurement window.
    pub processing_latency: Option<Duration>,
}
