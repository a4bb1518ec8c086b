//! The in-process backend. See [`crate::inmemory`] for the public facade and the mapping.

mod broker;
mod facade;
mod queue;
mod registry;
mod timer;

use std::time::Duration;

use broker::ZERO_CAPACITY;
pub use broker::{DEFAULT_QUEUE_CAPACITY, InMemoryBroker, InMemoryConfig};
pub use facade::{
    BrokerStatsProvider, InMemoryAutoscalerBackend, InMemoryConsumer, InMemoryPublisher, InMemoryQueueStats,
    InMemoryQueueStatsProvider, InMemoryTopologyDeclarer,
};
pub use registry::{InMemoryConsumerGroup, InMemoryConsumerGroupConfig, InMemoryConsumerGroupRegistry};

use crate::backend::capability::HasCoordinatedGroups;
use crate::backend::internal::TopologyImpl;
use crate::backend::{Backend, sealed};
use crate::error::{Result, ShoveError};
use crate::markers::InMemory;
use crate::topology::QueueTopology;

impl sealed::Sealed for InMemory {}

impl Backend for InMemory {
    type Config = InMemoryConfig;
    type Client = InMemoryBroker;
    type PublisherImpl = InMemoryPublisher;
    type ConsumerImpl = InMemoryConsumer;
    type TopologyImpl = InMemoryTopologyDeclarer;
    type AutoscalerImpl = InMemoryAutoscalerBackend<BrokerStatsProvider>;
    type QueueStatsImpl = BrokerStatsProvider;

    async fn connect(config: InMemoryConfig) -> Result<InMemoryBroker> {
        if config.default_capacity == 0 {
            return Err(ShoveError::Validation(ZERO_CAPACITY.into()));
        }
        Ok(InMemoryBroker::with_config(config))
    }

    async fn make_publisher(client: &InMemoryBroker) -> Result<InMemoryPublisher> {
        Ok(InMemoryPublisher::new(client.clone()))
    }

    fn make_consumer(client: &InMemoryBroker) -> InMemoryConsumer {
        InMemoryConsumer::new(client.clone())
    }

    fn make_declarer(client: &InMemoryBroker) -> InMemoryTopologyDeclarer {
        InMemoryTopologyDeclarer::new(client.clone())
    }

    fn make_autoscaler(client: &InMemoryBroker) -> InMemoryAutoscalerBackend<BrokerStatsProvider> {
        InMemoryAutoscalerBackend::for_broker(client)
    }

    fn make_stats_provider(client: &InMemoryBroker) -> BrokerStatsProvider {
        BrokerStatsProvider::new(client.clone())
    }

    async fn close(client: &InMemoryBroker) {
        client.shutdown();
    }

    async fn ping(client: &InMemoryBroker, _timeout: Duration) -> Result<()> {
        if client.shutdown_token().is_cancelled() {
            return Err(ShoveError::Connection("the in-memory broker has been shut down".into()));
        }
        Ok(())
    }
}

impl HasCoordinatedGroups for InMemory {
    type ConsumerGroupConfig = InMemoryConsumerGroupConfig;
    type RegistryImpl = InMemoryConsumerGroupRegistry;

    fn make_registry(client: &InMemoryBroker) -> InMemoryConsumerGroupRegistry {
        InMemoryConsumerGroupRegistry::new(client.clone())
    }
}

impl TopologyImpl for InMemoryTopologyDeclarer {
    async fn declare_topology(&self, topology: &QueueTopology) -> Result<()> {
        self.declare(topology).await
    }
}
