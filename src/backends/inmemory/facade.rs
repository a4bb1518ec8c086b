//! The in-process facade types named as in shove: publisher, consumer, declarer, stats, autoscaler.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::broker::InMemoryBroker;
use super::registry::InMemoryConsumerGroupRegistry;
use crate::autoscaler::{Autoscaler, AutoscalerConfig, Stabilized, ThresholdStrategy};
use crate::error::Result;
use crate::facade::{BackendAutoscaler, BackendConsumer, BackendPublisher, QueueDepthProvider};
use crate::markers::InMemory;
use crate::topology::{QueueTopology, shard_queue_name};
use crate::transport::Transport;

/// Publishes to an [`InMemoryBroker`]; a publish waits while the queue is at capacity.
pub type InMemoryPublisher = BackendPublisher<InMemory>;

impl BackendPublisher<InMemory> {
    /// A publisher on `broker`.
    pub fn new(broker: InMemoryBroker) -> Self {
        Self::on(broker)
    }
}

/// Consumes from the in-process broker without a supervisor. A message abandoned by a dropped `run`
/// future is delivered again at once.
pub type InMemoryConsumer = BackendConsumer<InMemory>;

/// Declares topologies on an [`InMemoryBroker`].
pub struct InMemoryTopologyDeclarer {
    broker: InMemoryBroker,
}

impl InMemoryTopologyDeclarer {
    /// A declarer on `broker`.
    pub fn new(broker: InMemoryBroker) -> Self {
        Self { broker }
    }

    /// `"{main_queue}-seq-{shard}"`.
    pub fn shard_queue_name(main_queue: &str, shard: u16) -> String {
        shard_queue_name(main_queue, shard)
    }

    /// Creates the topology's queues (idempotent).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) after the broker shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.broker.declare(topology).await
    }
}

/// Ready and in-flight counts of an in-process queue.
#[derive(Debug, Clone, Default)]
pub struct InMemoryQueueStats {
    /// Messages waiting to be delivered.
    pub messages_ready: u64,
    /// Messages delivered and not yet settled.
    pub messages_in_flight: u64,
}

/// Where [`InMemoryAutoscalerBackend`] reads queue depth.
pub trait InMemoryQueueStatsProvider: Send + Sync {
    /// The stats of `queue` (for a sequenced topic, its main queue name covers all shards).
    fn get_queue_stats(&self, queue: &str) -> impl Future<Output = Result<InMemoryQueueStats>> + Send;
}

/// Reads queue depth straight from the broker.
pub struct BrokerStatsProvider {
    broker: InMemoryBroker,
}

impl BrokerStatsProvider {
    /// A provider for `broker`'s queues.
    pub fn new(broker: InMemoryBroker) -> Self {
        Self { broker }
    }
}

impl InMemoryQueueStatsProvider for BrokerStatsProvider {
    async fn get_queue_stats(&self, queue: &str) -> Result<InMemoryQueueStats> {
        let d = self.broker.depth_of(queue)?;
        Ok(InMemoryQueueStats {
            messages_ready: d.ready,
            messages_in_flight: d.in_flight,
        })
    }
}

/// Scales in-process consumer groups by their queue depth, read from `S`.
pub type InMemoryAutoscalerBackend<S = BrokerStatsProvider> = BackendAutoscaler<InMemory, S>;

/// The backlog is the ready count, the messages in flight the delivered-and-unsettled count.
impl<S: InMemoryQueueStatsProvider> QueueDepthProvider<InMemory> for S {
    async fn queue_depth(&self, queue: &str) -> Result<(u64, u64)> {
        let stats = self.get_queue_stats(queue).await?;
        Ok((stats.messages_ready, stats.messages_in_flight))
    }
}

impl BackendAutoscaler<InMemory, BrokerStatsProvider> {
    /// Scales the groups of `registry`, reading depth from `broker`.
    pub fn new(broker: InMemoryBroker, registry: Arc<Mutex<InMemoryConsumerGroupRegistry>>) -> Self {
        Self::with_stats_provider(BrokerStatsProvider::new(broker), registry)
    }

    /// An [`Autoscaler`] over `registry` with the threshold strategy stabilized by `config`.
    pub fn autoscaler(
        broker: InMemoryBroker,
        registry: Arc<Mutex<InMemoryConsumerGroupRegistry>>,
        config: AutoscalerConfig,
    ) -> Autoscaler<Self, Stabilized<ThresholdStrategy>> {
        Autoscaler::new(
            Self::new(broker, registry),
            config.stabilized_threshold(),
            config.poll_interval,
        )
    }

    /// Scales every group created through `Broker::consumer_group` on `broker`.
    pub(super) fn for_broker(broker: &InMemoryBroker) -> Self {
        Self::over_client(BrokerStatsProvider::new(broker.clone()), broker)
    }
}
