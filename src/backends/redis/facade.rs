//! The Redis facade types named as in shove: consumer, declarer, queue statistics, autoscaler. Each is a
//! thin name over the engine (consumers, groups, autoscaling) or over the client (declaring, depth).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::client::RedisClient;
use super::registry::RedisConsumerGroupRegistry;
use super::transport;
use crate::autoscaler::{Autoscaler, AutoscalerConfig, Stabilized, ThresholdStrategy};
use crate::error::Result;
use crate::facade::{BackendAutoscaler, BackendConsumer, QueueDepthProvider};
use crate::markers::Redis;
use crate::topology::QueueTopology;

/// Consumes from Redis Streams without a supervisor. A message abandoned by a dropped `run` future
/// stays pending and is claimed again later.
pub type RedisConsumer = BackendConsumer<Redis>;

/// Creates a topology's streams and consumer groups.
pub struct RedisTopologyDeclarer {
    client: RedisClient,
}

impl RedisTopologyDeclarer {
    /// A declarer on `client`.
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }

    /// The stream of shard `shard` of a sequenced topic: `"{main_queue}-seq-{shard}"`.
    pub fn shard_stream_name(main_queue: &str, shard: u16) -> String {
        transport::shard_stream_name(main_queue, shard)
    }

    /// The sorted set that holds the messages waiting out the delay of the hold queue `hold_queue_name`.
    pub fn hold_set_name(hold_queue_name: &str) -> String {
        transport::hold_set_name(hold_queue_name)
    }

    /// Creates the topology's streams (main or shards, DLQ) and the client's consumer group on each, if
    /// they do not exist (idempotent).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when the server refuses a declaration (e.g. a
    /// key of another type has a stream's name);
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the server cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: declarations are idempotent, so a cancelled call can simply be repeated.
    pub async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.client.declare(topology).await
    }
}

/// Ready and in-flight counts of a topic's stream (for a sequenced topic, summed over its shard streams).
#[derive(Debug, Clone, Default)]
pub struct RedisQueueStats {
    /// Entries not yet delivered to the consumer group.
    pub messages_ready: u64,
    /// Entries delivered and not yet acknowledged (the group's pending entries).
    pub messages_in_flight: u64,
}

/// Where [`RedisAutoscalerBackend`] reads queue depth.
pub trait RedisQueueStatsProvider: Send + Sync {
    /// The stats of `queue` (for a sequenced topic, its main queue name covers all shard streams).
    fn get_queue_stats(&self, queue: &str) -> impl Future<Output = Result<RedisQueueStats>> + Send;
}

/// Reads a stream's depth from the server: the consumer group's lag and pending count.
#[derive(Clone)]
pub struct XlenStatsProvider {
    client: RedisClient,
}

impl XlenStatsProvider {
    /// A provider for `client`'s streams.
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }
}

impl RedisQueueStatsProvider for XlenStatsProvider {
    async fn get_queue_stats(&self, queue: &str) -> Result<RedisQueueStats> {
        let depth = self.client.queue_depth(queue).await?;
        Ok(RedisQueueStats {
            messages_ready: depth.ready,
            messages_in_flight: depth.in_flight,
        })
    }
}

/// Scales Redis consumer groups by their streams' depth, read from `S`.
pub type RedisAutoscalerBackend<S = XlenStatsProvider> = BackendAutoscaler<Redis, S>;

/// The backlog is the ready count, the messages in flight the pending (delivered, unacknowledged) count.
impl<S: RedisQueueStatsProvider> QueueDepthProvider<Redis> for S {
    async fn queue_depth(&self, queue: &str) -> Result<(u64, u64)> {
        let stats = self.get_queue_stats(queue).await?;
        Ok((stats.messages_ready, stats.messages_in_flight))
    }
}

impl BackendAutoscaler<Redis, XlenStatsProvider> {
    /// Scales the groups of `registry`, reading depth through `client`.
    pub fn new(client: RedisClient, registry: Arc<Mutex<RedisConsumerGroupRegistry>>) -> Self {
        Self::with_stats_provider(XlenStatsProvider::new(client), registry)
    }

    /// An [`Autoscaler`] over `registry` with the threshold strategy stabilized by `config`.
    pub fn autoscaler(
        client: RedisClient,
        registry: Arc<Mutex<RedisConsumerGroupRegistry>>,
        config: AutoscalerConfig,
    ) -> Autoscaler<Self, Stabilized<ThresholdStrategy>> {
        Autoscaler::new(
            Self::new(client, registry),
            config.stabilized_threshold(),
            config.poll_interval,
        )
    }

    /// Scales every group created through `Broker::consumer_group` on `client`.
    pub(crate) fn for_client(client: &RedisClient) -> Self {
        Self::over_client(XlenStatsProvider::new(client.clone()), client)
    }
}
