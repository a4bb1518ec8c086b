//! The entry point: a connection to one broker, from which publishers, consumers and groups are made.

use std::time::Duration;

use crate::backend::Backend;
use crate::backend::capability::HasCoordinatedGroups;
use crate::consumer_group::ConsumerGroup;
use crate::consumer_supervisor::ConsumerSupervisor;
use crate::error::Result;
use crate::publisher::Publisher;
use crate::topology_declarer::TopologyDeclarer;

/// How long [`Broker::ping`] waits for an answer.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a broker of backend `B`.
///
/// # Examples
///
/// ```
/// use shove::{Broker, InMemory};
/// use shove::inmemory::InMemoryConfig;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> shove::error::Result<()> {
/// let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
/// broker.ping().await?;
/// let _publisher = broker.publisher().await?;
/// broker.close().await;
/// # Ok(()) }
/// ```
pub struct Broker<B: Backend> {
    client: B::Client,
}

impl<B: Backend> Broker<B> {
    /// Connects with `config`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future drops the half-made connection.
    pub async fn new(config: B::Config) -> Result<Self> {
        Ok(Self {
            client: B::connect(config).await?,
        })
    }

    /// Wraps an existing client.
    pub fn from_client(client: B::Client) -> Self {
        Self { client }
    }

    /// A publisher for any topic.
    ///
    /// # Errors
    ///
    /// When the broker refuses a publishing channel.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn publisher(&self) -> Result<Publisher<B>> {
        Ok(Publisher::new(B::make_publisher(&self.client).await?))
    }

    /// A supervisor for independent consumers sharing one shutdown.
    pub fn consumer_supervisor(&self) -> ConsumerSupervisor<B> {
        ConsumerSupervisor::new(&self.client)
    }

    /// A topology declarer.
    pub fn topology(&self) -> TopologyDeclarer<B> {
        TopologyDeclarer::new(B::make_declarer(&self.client))
    }

    /// Closes the connection; every consumer on it stops.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn close(&self) {
        B::close(&self.client).await;
    }

    /// Checks the broker answers within [`DEFAULT_PING_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when it does not.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn ping(&self) -> Result<()> {
        self.ping_with_timeout(DEFAULT_PING_TIMEOUT).await
    }

    /// Checks the broker answers within `timeout`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when it does not.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn ping_with_timeout(&self, timeout: Duration) -> Result<()> {
        B::ping(&self.client, timeout).await
    }

    /// The backend's queue statistics provider.
    pub fn queue_stats_provider(&self) -> B::QueueStatsImpl {
        B::make_stats_provider(&self.client)
    }

    /// An [`AutoscalerBackend`](crate::AutoscalerBackend) that sees every group created through
    /// [`Broker::consumer_group`] on this broker.
    pub fn autoscaler(&self) -> B::AutoscalerImpl {
        B::make_autoscaler(&self.client)
    }
}

impl<B: HasCoordinatedGroups> Broker<B> {
    /// A new, empty consumer group registry on this broker. Stopping it never stops the broker, its
    /// publishers or other groups.
    pub fn consumer_group(&self) -> ConsumerGroup<B> {
        ConsumerGroup::new(B::make_registry(&self.client))
    }
}
