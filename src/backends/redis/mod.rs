//! The Redis Streams backend. See [`crate::redis`] for the public facade and the mapping.

mod client;
mod config;
mod facade;
mod publisher;
mod registry;
mod scripts;
mod transport;

use std::time::Duration;

pub use client::RedisClient;
pub use config::{RedisConfig, RedisMode};
pub use facade::{
    RedisAutoscalerBackend, RedisConsumer, RedisQueueStats, RedisQueueStatsProvider, RedisTopologyDeclarer,
    XlenStatsProvider,
};
pub use publisher::RedisPublisher;
pub use registry::{RedisConsumerGroup, RedisConsumerGroupConfig, RedisConsumerGroupRegistry};
pub use transport::spawn_reaper;

use crate::backend::capability::HasCoordinatedGroups;
use crate::backend::internal::TopologyImpl;
use crate::backend::{Backend, sealed};
use crate::error::Result;
use crate::markers::Redis;
use crate::topology::QueueTopology;

impl sealed::Sealed for Redis {}

impl Backend for Redis {
    type Config = RedisConfig;
    type Client = RedisClient;
    type PublisherImpl = RedisPublisher;
    type ConsumerImpl = RedisConsumer;
    type TopologyImpl = RedisTopologyDeclarer;
    type AutoscalerImpl = RedisAutoscalerBackend<XlenStatsProvider>;
    type QueueStatsImpl = XlenStatsProvider;

    async fn connect(config: RedisConfig) -> Result<RedisClient> {
        RedisClient::connect(config).await
    }

    async fn make_publisher(client: &RedisClient) -> Result<RedisPublisher> {
        Ok(RedisPublisher::new(client.clone()))
    }

    fn make_consumer(client: &RedisClient) -> RedisConsumer {
        RedisConsumer::new(client.clone())
    }

    fn make_declarer(client: &RedisClient) -> RedisTopologyDeclarer {
        RedisTopologyDeclarer::new(client.clone())
    }

    fn make_autoscaler(client: &RedisClient) -> RedisAutoscalerBackend<XlenStatsProvider> {
        RedisAutoscalerBackend::for_client(client)
    }

    fn make_stats_provider(client: &RedisClient) -> XlenStatsProvider {
        XlenStatsProvider::new(client.clone())
    }

    async fn close(client: &RedisClient) {
        client.shutdown();
    }

    async fn ping(client: &RedisClient, timeout: Duration) -> Result<()> {
        client.ping(timeout).await
    }
}

impl HasCoordinatedGroups for Redis {
    type ConsumerGroupConfig = RedisConsumerGroupConfig;
    type RegistryImpl = RedisConsumerGroupRegistry;

    fn make_registry(client: &RedisClient) -> RedisConsumerGroupRegistry {
        RedisConsumerGroupRegistry::new(client.clone())
    }
}

impl TopologyImpl for RedisTopologyDeclarer {
    async fn declare_topology(&self, topology: &QueueTopology) -> Result<()> {
        self.declare(topology).await
    }
}
