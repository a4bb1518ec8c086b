//! The RabbitMQ facade types named as in shove: consumer, declarers, queue statistics, autoscaler. Each
//! is a thin name over the engine (consumers, groups, autoscaling) or over the client (declaring, depth).

use std::future::Future;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Mutex;

use super::client::RabbitMqClient;
use super::config::ManagementConfig;
use super::management::ManagementClient;
use super::registry::ConsumerGroupRegistry;
use super::topology;
use crate::autoscaler::{Autoscaler, AutoscalerConfig, Stabilized, ThresholdStrategy};
use crate::error::Result;
use crate::facade::{BackendAutoscaler, BackendConsumer, QueueDepthProvider};
use crate::markers::RabbitMq;
use crate::topology::QueueTopology;

/// Consumes from RabbitMQ without a supervisor. A message abandoned by a dropped `run` future is
/// delivered again by the broker.
pub type RabbitMqConsumer = BackendConsumer<RabbitMq>;

/// Declares topologies on one AMQP channel.
pub struct RabbitMqTopologyDeclarer {
    channel: lapin::Channel,
}

impl RabbitMqTopologyDeclarer {
    /// A declarer on `channel`.
    pub fn new(channel: lapin::Channel) -> Self {
        Self { channel }
    }

    /// Declares the topology's exchanges, queues and bindings (idempotent).
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when the broker refuses a declaration (e.g.
    /// a queue exists with other arguments; the channel is then closed by the broker). Hold queues are
    /// quorum queues (RabbitMQ 3.10+): a hold queue that exists as a classic queue (declared by shove
    /// 0.11) is refused here, where the closed channel leaves no way to keep it; `Broker::topology()` and
    /// the consumers keep such a queue, with a warning;
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the channel or connection is down.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: declarations are idempotent, so a cancelled call can simply be repeated.
    pub async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        topology::declare(&self.channel, topology).await
    }
}

/// The declarer behind `Broker::topology()`: opens a channel per declaration through the client, so it
/// survives reconnects.
pub struct LazyRabbitMqTopologyDeclarer {
    client: RabbitMqClient,
}

impl LazyRabbitMqTopologyDeclarer {
    /// A declarer on `client`.
    pub(crate) fn new(client: RabbitMqClient) -> Self {
        Self { client }
    }

    /// Declares the topology's exchanges, queues and bindings (idempotent).
    pub(crate) async fn declare(&self, topology: &QueueTopology) -> Result<()> {
        self.client.declare(topology).await
    }
}

/// A queue's counts, as the management API reports them. Fields missing from the answer (a queue whose
/// statistics have not been collected yet) read as 0.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueueStats {
    /// Messages waiting to be delivered.
    #[serde(default)]
    pub messages_ready: u64,
    /// Messages delivered and not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: u64,
    /// Consumers subscribed to the queue.
    #[serde(default)]
    pub consumers: u64,
}

/// Where [`RabbitMqAutoscalerBackend`] reads queue statistics.
pub trait QueueStatsProvider: Send + Sync {
    /// The statistics of `queue`.
    fn get_queue_stats(&self, queue: &str) -> impl Future<Output = Result<QueueStats>> + Send;
}

/// Queue statistics over AMQP alone (passive declares), for `Broker::queue_stats_provider` and
/// `Broker::autoscaler`: no management API needed. AMQP reports no unacknowledged count, so
/// `messages_unacknowledged` is always 0.
pub struct RabbitMqStatsBridge {
    client: RabbitMqClient,
}

impl RabbitMqStatsBridge {
    /// A provider for `client`'s queues.
    pub(crate) fn new(client: RabbitMqClient) -> Self {
        Self { client }
    }
}

impl QueueStatsProvider for RabbitMqStatsBridge {
    async fn get_queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let depth = self.client.queue_depth(queue).await?;
        let consumers = self.client.consumer_count(queue).await?;
        Ok(QueueStats {
            messages_ready: depth.ready,
            messages_unacknowledged: 0,
            consumers,
        })
    }
}

/// Scales RabbitMQ consumer groups by their queue depth, read from `S`.
pub type RabbitMqAutoscalerBackend<S = ManagementClient> = BackendAutoscaler<RabbitMq, S>;

/// The backlog is the ready count, the messages in flight the unacknowledged count.
impl<S: QueueStatsProvider> QueueDepthProvider<RabbitMq> for S {
    async fn queue_depth(&self, queue: &str) -> Result<(u64, u64)> {
        let stats = self.get_queue_stats(queue).await?;
        Ok((stats.messages_ready, stats.messages_unacknowledged))
    }
}

impl BackendAutoscaler<RabbitMq, ManagementClient> {
    /// Scales the groups of `registry`, reading queue statistics from the management API.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Validation`](crate::ShoveError::Validation) for a URL that is not
    /// `http(s)://host[:port][/path]`; [`ShoveError::Connection`](crate::ShoveError::Connection) for a
    /// `tls_*` setting with an `http://` URL, or an `https://` URL whose CA file
    /// ([`ManagementConfig::tls_ca_cert`]) cannot be read or holds no certificate (without one: whose
    /// platform trust store is empty). A certificate the
    /// client does not trust is reported by the first call that fetches statistics.
    pub fn new(mgmt_config: &ManagementConfig, registry: Arc<Mutex<ConsumerGroupRegistry>>) -> Result<Self> {
        Ok(Self::with_stats_provider(ManagementClient::new(mgmt_config)?, registry))
    }

    /// An [`Autoscaler`] over `registry` with the threshold strategy stabilized by `config`.
    ///
    /// # Errors
    ///
    /// As [`RabbitMqAutoscalerBackend::new`].
    pub fn autoscaler(
        mgmt_config: &ManagementConfig,
        registry: Arc<Mutex<ConsumerGroupRegistry>>,
        config: AutoscalerConfig,
    ) -> Result<Autoscaler<Self, Stabilized<ThresholdStrategy>>> {
        Ok(Autoscaler::new(
            Self::new(mgmt_config, registry)?,
            config.stabilized_threshold(),
            config.poll_interval,
        ))
    }
}

impl BackendAutoscaler<RabbitMq, RabbitMqStatsBridge> {
    /// Scales every group created through `Broker::consumer_group` on `client`, reading depth over AMQP.
    pub(crate) fn for_client(client: &RabbitMqClient) -> Self {
        Self::over_client(RabbitMqStatsBridge::new(client.clone()), client)
    }
}
