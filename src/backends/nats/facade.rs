//! The NATS facade types named as in shove: consumer, declarer, queue statistics, autoscaler. Each is a
//! thin name over the engine (consumers, groups, autoscaling) or over the transport (declaring, depth).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::client::NatsClient;
use super::registry::NatsConsumerGroupRegistry;
use super::transport;
use crate::autoscaler::{Autoscaler, AutoscalerConfig, Stabilized, ThresholdStrategy};
use crate::error::Result;
use crate::facade::{BackendAutoscaler, BackendConsumer, QueueDepthProvider};
use crate::markers::Nats;
use crate::topology::QueueTopology;

/// Consumes from JetStream without a supervisor: one client of the topic's durable pull consumer. A
/// message abandoned by a dropped `run` future is delivered again once its ack wait runs out.
pub type NatsConsumer = BackendConsumer<Nats>;

/// Creates a topology's JetStream streams and consumers.
pub struct NatsTopologyDeclarer {
    client: NatsClient,
}

impl NatsTopologyDeclarer {
    /// A declarer on `client`.
    pub fn new(client: NatsClient) -> Self {
        Self { client }
    }

    /// Creates the topology's streams (topic and DLQ) and durable consumers if they do not exist
    /// (idempotent).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when the server refuses a declaration (e.g. a
    /// stream of that name exists with other settings);
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the server cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: declarations are idempotent, so a cancelled call can simply be repeated.
    pub async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.client.check_open()?;
        transport::declare(&self.client, topology).await
    }
}

/// Pending and acknowledgement-pending counts of a topic's JetStream consumer.
#[derive(Debug, Clone, Default)]
pub struct NatsQueueStats {
    /// Messages in the stream not yet delivered to the consumer.
    pub messages_pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub messages_ack_pending: u64,
}

/// Where [`NatsAutoscalerBackend`] reads queue depth.
pub trait NatsQueueStatsProvider: Send + Sync {
    /// The stats of `queue` (for a sequenced topic, its main queue name covers all shards).
    fn get_queue_stats(&self, queue: &str) -> impl Future<Output = Result<NatsQueueStats>> + Send;
}

/// Reads a queue's depth from the server: its JetStream consumer's pending and ack-pending counts.
#[derive(Clone)]
pub struct JetStreamStatsProvider {
    client: NatsClient,
}

impl JetStreamStatsProvider {
    /// A provider for `client`'s streams.
    pub fn new(client: NatsClient) -> Self {
        Self { client }
    }
}

impl NatsQueueStatsProvider for JetStreamStatsProvider {
    async fn get_queue_stats(&self, queue: &str) -> Result<NatsQueueStats> {
        self.client.check_open()?;
        let (pending, ack_pending) = transport::queue_stats(&self.client, queue).await?;
        Ok(NatsQueueStats {
            messages_pending: pending,
            messages_ack_pending: ack_pending,
        })
    }
}

/// Scales NATS consumer groups by their JetStream consumers' depth, read from `S`.
pub type NatsAutoscalerBackend<S = JetStreamStatsProvider> = BackendAutoscaler<Nats, S>;

/// The backlog is the consumer's pending count, the messages in flight its ack-pending count.
impl<S: NatsQueueStatsProvider> QueueDepthProvider<Nats> for S {
    async fn queue_depth(&self, queue: &str) -> Result<(u64, u64)> {
        let stats = self.get_queue_stats(queue).await?;
        Ok((stats.messages_pending, stats.messages_ack_pending))
    }
}

impl BackendAutoscaler<Nats, JetStreamStatsProvider> {
    /// Scales the groups of `registry`, reading depth through `client`.
    pub fn new(client: NatsClient, registry: Arc<Mutex<NatsConsumerGroupRegistry>>) -> Self {
        Self::with_stats_provider(JetStreamStatsProvider::new(client), registry)
    }

    /// An [`Autoscaler`] over `registry` with the threshold strategy stabilized by `config`.
    pub fn autoscaler(
        client: NatsClient,
        registry: Arc<Mutex<NatsConsumerGroupRegistry>>,
        config: AutoscalerConfig,
    ) -> Autoscaler<Self, Stabilized<ThresholdStrategy>> {
        Autoscaler::new(
            Self::new(client, registry),
            config.stabilized_threshold(),
            config.poll_interval,
        )
    }

    /// Scales every group created through `Broker::consumer_group` on `client`.
    pub(crate) fn for_client(client: &NatsClient) -> Self {
        Self::over_client(JetStreamStatsProvider::new(client.clone()), client)
    }
}
