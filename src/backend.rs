//! The backend abstraction: one sealed trait that bundles a broker's types.
//!
//! Users never implement [`Backend`]; they pick a marker ([`crate::markers`]) and use the generic
//! [`Broker`](crate::Broker) API. The bounds on the associated types are crate-internal traits that
//! connect each backend to the one engine.

use std::future::Future;
use std::time::Duration;

use crate::autoscaler::AutoscalerBackend;
use crate::error::Result;

pub(crate) mod sealed {
    /// Prevents implementations of [`Backend`](super::Backend) outside this crate.
    pub trait Sealed {}
}

/// Crate-internal bounds of the [`Backend`] associated types. Public only so the sealed trait can name
/// them; not reachable from outside the crate.
#[allow(private_interfaces)]
pub(crate) mod internal {
    use std::future::Future;

    use tokio_util::sync::CancellationToken;

    use super::Backend;
    use crate::consumer::ConsumerOptions;
    use crate::error::Result;
    use crate::topology::QueueTopology;
    use crate::transport::{Attachments, Envelope, Transport};

    /// What the generic facades ([`crate::facade`]) need from a backend's connected client: the one
    /// piece of glue, besides its [`Transport`], that every backend writes.
    pub trait ClientImpl: Clone + Send + Sync + 'static {
        /// The transport consumers of this client run on.
        type Transport: Transport;
        /// The `min..=max` group size that `*ConsumerGroupConfig::default()` starts from (shove 0.11's
        /// per-backend default).
        const DEFAULT_GROUP_SIZE: (u16, u16);
        /// The transport, sharing this client's connection.
        fn transport(&self) -> Self::Transport;
        /// Cancelled when the client is closed: every consumer of the client stops.
        fn connection_token(&self) -> CancellationToken;
        /// State the layers above keep per client (the consumer groups `Broker::autoscaler` sees).
        fn attachments(&self) -> &Attachments;
        /// The transport's own settings, read from a consumer's options (the default for a transport
        /// that has none).
        fn transport_options<B: Backend>(options: &ConsumerOptions<B>) -> <Self::Transport as Transport>::Options {
            let _ = options;
            Default::default()
        }
    }

    /// Publishes already-encoded messages.
    pub trait PublisherImpl {
        /// Stores `messages` on the topic; returns how many were accepted and the first error.
        fn publish_envelopes(
            &self,
            topology: &'static QueueTopology,
            messages: Vec<Envelope>,
        ) -> impl Future<Output = (u64, Result<()>)> + Send;
    }

    /// Declares topologies.
    pub trait TopologyImpl {
        /// Creates the topic's queues if they do not exist.
        fn declare_topology(&self, topology: &QueueTopology) -> impl Future<Output = Result<()>> + Send;
    }

    /// The autoscaler type returned by `Broker::autoscaler`.
    pub trait AutoscalerBackendImpl: crate::autoscaler::AutoscalerBackend {}

    pub use crate::engine::registry::RegistryImpl;
}

/// A message broker shove can run on. Sealed: implemented by the markers in [`crate::markers`].
#[allow(private_bounds)]
pub trait Backend: sealed::Sealed + Sized + Send + Sync + 'static {
    /// Connection settings.
    type Config: Send;
    /// The connected client, shared by publishers, consumers and declarers.
    type Client: internal::ClientImpl + Clone + Send + Sync + 'static;
    /// The backend's publisher.
    type PublisherImpl: internal::PublisherImpl + Clone + Send + Sync + 'static;
    /// The backend's consumer.
    type ConsumerImpl: Clone + Send + Sync + 'static;
    /// The backend's topology declarer.
    type TopologyImpl: internal::TopologyImpl + Send + Sync + 'static;
    /// The backend's autoscaler (an [`AutoscalerBackend`]).
    type AutoscalerImpl: internal::AutoscalerBackendImpl + AutoscalerBackend + Send + Sync + 'static;
    /// The backend's queue statistics provider.
    type QueueStatsImpl: Send + Sync + 'static;

    /// Connects to the broker.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
    fn connect(config: Self::Config) -> impl Future<Output = Result<Self::Client>> + Send;
    /// Creates a publisher on `client`.
    ///
    /// # Errors
    ///
    /// When the broker refuses a publishing channel.
    fn make_publisher(client: &Self::Client) -> impl Future<Output = Result<Self::PublisherImpl>> + Send;
    /// Creates a consumer on `client`.
    fn make_consumer(client: &Self::Client) -> Self::ConsumerImpl;
    /// Creates a topology declarer on `client`.
    fn make_declarer(client: &Self::Client) -> Self::TopologyImpl;
    /// Creates the autoscaler backend, which sees every group created through `Broker::consumer_group`.
    fn make_autoscaler(client: &Self::Client) -> Self::AutoscalerImpl;
    /// Creates a queue statistics provider.
    fn make_stats_provider(client: &Self::Client) -> Self::QueueStatsImpl;
    /// Closes the connection; consumers stop.
    fn close(client: &Self::Client) -> impl Future<Output = ()> + Send;
    /// Checks the broker answers within `timeout`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when it does not.
    fn ping(client: &Self::Client, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
}

/// Optional capabilities of a backend.
pub mod capability {
    use super::{Backend, internal};

    /// Backends with a coordinated consumer-group primitive, usable through
    /// [`Broker::consumer_group`](crate::Broker::consumer_group).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` has no coordinated consumer-group primitive; use `broker.consumer_supervisor()` instead.",
        note = "Kafka, RabbitMQ, NATS, InMemory, and Redis (redis-streams) implement `HasCoordinatedGroups`. SQS runs N parallel independent consumers via the supervisor."
    )]
    #[allow(private_bounds)]
    pub trait HasCoordinatedGroups: Backend {
        /// The per-group settings type (e.g. `InMemoryConsumerGroupConfig`).
        type ConsumerGroupConfig: Default + Clone + Send + 'static;
        /// The backend's registry type.
        type RegistryImpl: internal::RegistryImpl<GroupConfig = Self::ConsumerGroupConfig> + Send + 'static;
        /// Creates an empty registry on `client`.
        fn make_registry(client: &Self::Client) -> Self::RegistryImpl;
    }
}
