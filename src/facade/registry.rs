//! Named consumer groups on one client: registered, started and stopped through the engine, and visible
//! to `Broker::autoscaler` through the client's directory. Written once for every backend.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::group::{BackendGroup, BackendGroupConfig};
use crate::backend::Backend;
use crate::backend::internal::{ClientImpl, RegistryImpl};
use crate::consumer_supervisor::SupervisorOutcome;
use crate::engine::registry::{self, GroupDirectory, GroupSet, GroupSettings};
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};

/// Named consumer groups on one client, one per queue: `NatsConsumerGroupRegistry` is
/// `BackendGroupRegistry<Nats>`, RabbitMQ's `ConsumerGroupRegistry` is `BackendGroupRegistry<RabbitMq>`,
/// and so on (see [the module](crate::facade)).
pub struct BackendGroupRegistry<B: Backend> {
    client: B::Client,
    default_handler_timeout: Option<Duration>,
    groups: HashMap<String, BackendGroup<B>>,
}

impl<B: Backend> BackendGroupRegistry<B> {
    /// An empty registry on `client`.
    pub fn new(client: B::Client) -> Self {
        Self {
            client,
            default_handler_timeout: None,
            groups: HashMap::new(),
        }
    }

    /// The handler timeout for groups whose config sets none.
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: `"default_handler_timeout must be positive"`.
    pub fn with_default_handler_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "default_handler_timeout must be positive");
        self.default_handler_timeout = Some(timeout);
        self
    }

    /// Declares topic `T`'s queues on the broker (idempotent) and registers a group for it, not started:
    /// see [`BackendGroupRegistry::start_all`].
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T`'s queue already has a group, `T` is
    /// sequenced, or the broker refuses the declaration;
    /// [`ShoveError::Connection`](crate::ShoveError::Connection) when the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: nothing is registered until the declaration has completed.
    pub async fn register<T, H>(
        &mut self,
        config: BackendGroupConfig<B>,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: Topic + 'static,
        H: MessageHandler<T> + 'static,
    {
        self.add::<T, H>(false, config, handler_factory, ctx).await
    }

    /// Declares the sequenced topic `T`'s queues and registers a per-key ordered group for it.
    ///
    /// # Errors
    ///
    /// As [`BackendGroupRegistry::register`], and when `T` is not sequenced.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: nothing is registered until the declaration has completed.
    pub async fn register_fifo<T, H>(
        &mut self,
        config: BackendGroupConfig<B>,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: SequencedTopic + 'static,
        H: MessageHandler<T> + 'static,
    {
        self.add::<T, H>(true, config, handler_factory, ctx).await
    }

    async fn add<T, H>(
        &mut self,
        fifo: bool,
        config: BackendGroupConfig<B>,
        handler_factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Result<()>
    where
        T: Topic,
        H: MessageHandler<T>,
    {
        let token = self.client.connection_token().child_token();
        registry::add_group::<_, T, H>(self, fifo, config.settings, token, handler_factory, ctx).await
    }

    /// Starts every group at its minimum size.
    pub fn start_all(&mut self) {
        registry::start_all(&mut self.groups);
    }

    /// The groups, by queue name.
    pub fn groups(&self) -> &HashMap<String, BackendGroup<B>> {
        &self.groups
    }

    /// The groups, by queue name, for scaling by hand.
    pub fn groups_mut(&mut self) -> &mut HashMap<String, BackendGroup<B>> {
        &mut self.groups
    }

    /// Stops every group after in-flight handlers finish.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: consumers already told to stop keep draining.
    pub async fn shutdown_all(&mut self) {
        registry::shutdown_all(&mut self.groups).await;
    }

    /// Starts every group at its minimum size, waits for `signal` (or for the client to be closed), then
    /// stops every group and lets in-flight handlers finish within `drain_timeout` in all. Handlers still
    /// running at the deadline are abandoned, and the broker delivers their messages again.
    ///
    /// The outcome counts consumers that ended with an error and handler calls that panicked, and says
    /// whether the deadline was hit (see [`SupervisorOutcome::exit_code`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves consumers running until the runtime stops.
    pub async fn run_until_timeout<S>(mut self, signal: S, drain_timeout: Duration) -> SupervisorOutcome
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let stats = registry::start_all_counted(&mut self.groups);
        let connection = self.client.connection_token();
        tokio::select! {
            _ = signal => {}
            _ = connection.cancelled() => {}
        }
        let timed_out = registry::drain_all(&mut self.groups, drain_timeout).await;
        registry::outcome(&stats, timed_out)
    }
}

#[allow(private_interfaces)]
impl<B: Backend> RegistryImpl for BackendGroupRegistry<B> {
    type GroupConfig = BackendGroupConfig<B>;
    type Transport = <B::Client as ClientImpl>::Transport;

    fn transport(&self) -> Self::Transport {
        self.client.transport()
    }

    fn group_settings(config: &BackendGroupConfig<B>) -> GroupSettings {
        config.settings.clone()
    }

    fn default_handler_timeout(&self) -> Option<Duration> {
        self.default_handler_timeout
    }

    fn set_default_handler_timeout(&mut self, timeout: Duration) {
        self.default_handler_timeout = Some(timeout);
    }

    fn broker_token(&self) -> CancellationToken {
        self.client.connection_token()
    }

    fn engine(&mut self) -> &mut dyn GroupSet {
        &mut self.groups
    }

    fn directory(&self) -> Arc<GroupDirectory<Self>> {
        self.client.attachments().get_or_default::<GroupDirectory<Self>>()
    }
}
