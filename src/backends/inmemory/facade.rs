//! The in-process facade types named as in shove: publisher, consumer, declarer, stats, autoscaler.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::broker::InMemoryBroker;
use super::registry::InMemoryConsumerGroupRegistry;
use crate::autoscaler::{Autoscaler, AutoscalerConfig, Stabilized, ThresholdStrategy};
use crate::consumer::ConsumerOptions;
use crate::consumer_supervisor::SupervisorOutcome;
use crate::engine::consume::Mode;
use crate::engine::direct;
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::markers::InMemory;
use crate::publisher;
use crate::topic::{SequencedTopic, Topic};
use crate::topology::{QueueTopology, shard_queue_name};
use crate::transport::{Source, Transport};

/// Publishes to an [`InMemoryBroker`].
#[derive(Clone)]
pub struct InMemoryPublisher {
    broker: InMemoryBroker,
}

impl InMemoryPublisher {
    /// A publisher on `broker`.
    pub fn new(broker: InMemoryBroker) -> Self {
        Self { broker }
    }

    pub(super) fn broker(&self) -> &InMemoryBroker {
        &self.broker
    }

    /// Publishes one message; waits while the queue is at capacity.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`](crate::Publisher::publish).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a message may or may not have been stored.
    pub async fn publish<T: Topic>(&self, message: &T::Message) -> Result<()> {
        publisher::publish_one::<T, _>(self, message, None).await
    }

    /// Publishes one message with user headers.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish_with_headers`](crate::Publisher::publish_with_headers).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe.
    pub async fn publish_with_headers<T: Topic>(
        &self,
        message: &T::Message,
        headers: HashMap<String, String>,
    ) -> Result<()> {
        publisher::publish_one::<T, _>(self, message, Some(headers)).await
    }

    /// Publishes several messages in order; returns how many were stored and the first error.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe.
    pub async fn publish_batch<T: Topic>(&self, messages: &[T::Message]) -> (u64, Result<()>) {
        publisher::publish_many::<T, _>(self, messages).await
    }
}

/// Consumes from an [`InMemoryBroker`] without a supervisor.
#[derive(Clone)]
pub struct InMemoryConsumer {
    broker: InMemoryBroker,
}

impl InMemoryConsumer {
    /// A consumer on `broker`.
    pub fn new(broker: InMemoryBroker) -> Self {
        Self { broker }
    }

    pub(super) fn broker(&self) -> &InMemoryBroker {
        &self.broker
    }

    fn run_source<T, H>(
        &self,
        source: Source,
        mode: Mode,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<InMemory>,
    ) -> impl Future<Output = Result<()>> + Send + use<T, H>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        direct::run::<InMemory, T, H, _>(
            self.broker.clone(),
            self.broker.shutdown_token(),
            source,
            mode,
            handler,
            ctx,
            &options,
        )
    }

    /// Consumes topic `T` until the broker shuts down or the options' shutdown token is cancelled
    /// (in-flight handlers finish first).
    ///
    /// # Errors
    ///
    /// When the broker is already shut down.
    pub fn run<T, H>(
        &self,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<InMemory>,
    ) -> impl Future<Output = Result<()>> + Send + use<T, H>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        self.run_source::<T, H>(Source::Main(T::topology()), Mode::Live, handler, ctx, options)
    }

    /// Consumes the sequenced topic `T` in per-key order.
    ///
    /// # Errors
    ///
    /// When the broker is already shut down.
    pub fn run_fifo<T, H>(
        &self,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<InMemory>,
    ) -> impl Future<Output = Result<()>> + Send + use<T, H>
    where
        T: SequencedTopic,
        H: MessageHandler<T>,
    {
        self.run_source::<T, H>(Source::Shards(T::topology()), Mode::Live, handler, ctx, options)
    }

    /// Runs [`InMemoryConsumer::run_fifo`] until `signal`, then drains within `drain_timeout`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves the consumer running until the runtime stops.
    pub async fn run_fifo_until_timeout<T, H, S>(
        &self,
        handler: H,
        ctx: H::Context,
        options: ConsumerOptions<InMemory>,
        signal: S,
        drain_timeout: Duration,
    ) -> SupervisorOutcome
    where
        T: SequencedTopic,
        H: MessageHandler<T>,
        S: Future<Output = ()> + Send + 'static,
    {
        let source = Source::Shards(T::topology());
        let connection = self.broker.shutdown_token().clone();
        direct::run_until_timeout::<InMemory, T, H, _, S>(
            self.broker.clone(),
            &connection,
            source,
            handler,
            ctx,
            &options,
            signal,
            drain_timeout,
        )
        .await
    }

    /// Consumes `T`'s DLQ, calling [`MessageHandler::handle_dead`] for each message.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T` has no DLQ.
    pub fn run_dlq<T, H>(&self, handler: H, ctx: H::Context) -> impl Future<Output = Result<()>> + Send + use<T, H>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        let options = ConsumerOptions::<InMemory>::new();
        self.run_source::<T, H>(
            Source::DeadLetters(T::topology()),
            Mode::DeadLetters,
            handler,
            ctx,
            options,
        )
    }
}

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

autoscaler_facade! {
    /// Scales in-process consumer groups by their queue depth.
    InMemoryAutoscalerBackend<S: InMemoryQueueStatsProvider = BrokerStatsProvider> {
        registry: InMemoryConsumerGroupRegistry,
        with_stats_provider: "Scales the groups of `registry`, reading depth from `stats_provider`.",
        depth: |stats| (stats.messages_ready, stats.messages_in_flight),
    }
}

impl InMemoryAutoscalerBackend<BrokerStatsProvider> {
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
        Self::over_directory(BrokerStatsProvider::new(broker.clone()), broker.directory())
    }
}
