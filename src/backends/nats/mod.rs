//! The NATS JetStream backend. See [`crate::nats`] for the public facade and the mapping.

mod client;
mod config;
mod credits;
mod facade;
mod ledger;
mod publisher;
mod puller;
mod registry;
mod transport;

use std::time::Duration;

pub use client::NatsClient;
pub use config::NatsConfig;
pub use facade::{
    JetStreamStatsProvider, NatsAutoscalerBackend, NatsConsumer, NatsQueueStats, NatsQueueStatsProvider,
    NatsTopologyDeclarer,
};
pub use publisher::NatsPublisher;
pub use registry::{NatsConsumerGroup, NatsConsumerGroupConfig, NatsConsumerGroupRegistry};

use crate::backend::capability::HasCoordinatedGroups;
use crate::backend::internal::TopologyImpl;
use crate::backend::{Backend, sealed};
use crate::error::Result;
use crate::markers::Nats;
use crate::topology::QueueTopology;

impl sealed::Sealed for Nats {}

impl Backend for Nats {
    type Config = NatsConfig;
    type Client = NatsClient;
    type PublisherImpl = NatsPublisher;
    type ConsumerImpl = NatsConsumer;
    type TopologyImpl = NatsTopologyDeclarer;
    type AutoscalerImpl = NatsAutoscalerBackend<JetStreamStatsProvider>;
    type QueueStatsImpl = JetStreamStatsProvider;

    async fn connect(config: NatsConfig) -> Result<NatsClient> {
        NatsClient::connect(&config).await
    }

    async fn make_publisher(client: &NatsClient) -> Result<NatsPublisher> {
        NatsPublisher::new(client.clone()).await
    }

    fn make_consumer(client: &NatsClient) -> NatsConsumer {
        NatsConsumer::new(client.clone())
    }

    fn make_declarer(client: &NatsClient) -> NatsTopologyDeclarer {
        NatsTopologyDeclarer::new(client.clone())
    }

    fn make_autoscaler(client: &NatsClient) -> NatsAutoscalerBackend<JetStreamStatsProvider> {
        NatsAutoscalerBackend::for_client(client)
    }

    fn make_stats_provider(client: &NatsClient) -> JetStreamStatsProvider {
        JetStreamStatsProvider::new(client.clone())
    }

    async fn close(client: &NatsClient) {
        client.shutdown().await;
    }

    async fn ping(client: &NatsClient, timeout: Duration) -> Result<()> {
        client.ping(timeout).await
    }
}

impl HasCoordinatedGroups for Nats {
    type ConsumerGroupConfig = NatsConsumerGroupConfig;
    type RegistryImpl = NatsConsumerGroupRegistry;

    fn make_registry(client: &NatsClient) -> NatsConsumerGroupRegistry {
        NatsConsumerGroupRegistry::new(client.clone())
    }
}

impl TopologyImpl for NatsTopologyDeclarer {
    async fn declare_topology(&self, topology: &QueueTopology) -> Result<()> {
        self.declare(topology).await
    }
}
