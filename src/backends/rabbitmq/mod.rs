//! The RabbitMQ backend. See [`crate::rabbitmq`] for the public facade and the mapping.

mod client;
mod config;
mod facade;
mod headers;
mod management;
mod management_tls;
mod publish;
mod publisher;
mod registry;
mod topology;
mod transport;

use std::time::Duration;

pub use client::RabbitMqClient;
pub use config::{ManagementConfig, RabbitMqConfig};
pub use facade::{
    LazyRabbitMqTopologyDeclarer, QueueStats, QueueStatsProvider, RabbitMqAutoscalerBackend, RabbitMqConsumer,
    RabbitMqStatsBridge, RabbitMqTopologyDeclarer,
};
pub use headers::MESSAGE_ID_KEY;
pub use publisher::RabbitMqPublisher;
pub use registry::{ConsumerGroupRegistry, RabbitMqConsumerGroup, RabbitMqConsumerGroupConfig};

use crate::backend::capability::HasCoordinatedGroups;
use crate::backend::internal::TopologyImpl;
use crate::backend::{Backend, sealed};
use crate::error::Result;
use crate::markers::RabbitMq;
use crate::topology::QueueTopology;

impl sealed::Sealed for RabbitMq {}

impl Backend for RabbitMq {
    type Config = RabbitMqConfig;
    type Client = RabbitMqClient;
    type PublisherImpl = RabbitMqPublisher;
    type ConsumerImpl = RabbitMqConsumer;
    type TopologyImpl = LazyRabbitMqTopologyDeclarer;
    type AutoscalerImpl = RabbitMqAutoscalerBackend<RabbitMqStatsBridge>;
    type QueueStatsImpl = RabbitMqStatsBridge;

    async fn connect(config: RabbitMqConfig) -> Result<RabbitMqClient> {
        RabbitMqClient::connect(&config).await
    }

    async fn make_publisher(client: &RabbitMqClient) -> Result<RabbitMqPublisher> {
        RabbitMqPublisher::new(client.clone()).await
    }

    fn make_consumer(client: &RabbitMqClient) -> RabbitMqConsumer {
        RabbitMqConsumer::new(client.clone())
    }

    fn make_declarer(client: &RabbitMqClient) -> LazyRabbitMqTopologyDeclarer {
        LazyRabbitMqTopologyDeclarer::new(client.clone())
    }

    fn make_autoscaler(client: &RabbitMqClient) -> RabbitMqAutoscalerBackend<RabbitMqStatsBridge> {
        RabbitMqAutoscalerBackend::for_client(client)
    }

    fn make_stats_provider(client: &RabbitMqClient) -> RabbitMqStatsBridge {
        RabbitMqStatsBridge::new(client.clone())
    }

    async fn close(client: &RabbitMqClient) {
        client.shutdown().await;
    }

    async fn ping(client: &RabbitMqClient, timeout: Duration) -> Result<()> {
        client.ping(timeout).await
    }
}

impl HasCoordinatedGroups for RabbitMq {
    type ConsumerGroupConfig = RabbitMqConsumerGroupConfig;
    type RegistryImpl = ConsumerGroupRegistry;

    fn make_registry(client: &RabbitMqClient) -> ConsumerGroupRegistry {
        ConsumerGroupRegistry::new(client.clone())
    }
}

impl TopologyImpl for LazyRabbitMqTopologyDeclarer {
    async fn declare_topology(&self, topology: &QueueTopology) -> Result<()> {
        self.declare(topology).await
    }
}
