//! Coordinated consumer groups through the generic API: `broker.consumer_group()`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::autoscaler::{Autoscaler, AutoscalerConfig};
use crate::backend::capability::HasCoordinatedGroups;
use crate::backend::internal::RegistryImpl;
use crate::consumer_supervisor::SupervisorOutcome;
use crate::engine::autoscale::{GroupsAutoscaler, TransportDepth};
use crate::engine::registry::{self, Registries};
use crate::engine::tasks::TaskSet;
use crate::error::Result;
use crate::handler::MessageHandler;
use crate::topic::{SequencedTopic, Topic};

/// A backend's group configuration, wrapped for the generic API.
pub struct ConsumerGroupConfig<B: HasCoordinatedGroups> {
    inner: B::ConsumerGroupConfig,
}

impl<B: HasCoordinatedGroups> ConsumerGroupConfig<B> {
    /// Wraps a backend configuration such as `InMemoryConsumerGroupConfig::new(1..=4)`.
    pub fn new(inner: B::ConsumerGroupConfig) -> Self {
        Self { inner }
    }
}

/// Consumer groups of several topics that start, scale and stop together.
///
/// Obtained from [`Broker::consumer_group`](crate::Broker::consumer_group). Its groups are visible to
/// [`Broker::autoscaler`](crate::Broker::autoscaler); [`ConsumerGroup::enable_autoscaling`] runs an
/// autoscaler for them during [`ConsumerGroup::run_until_timeout`].
pub struct ConsumerGroup<B: HasCoordinatedGroups, Ctx: Clone + Send + Sync + 'static = ()> {
    registry: Arc<Mutex<B::RegistryImpl>>,
    ctx: Ctx,
    token: CancellationToken,
    autoscaling: Option<AutoscalerConfig>,
}

impl<B: HasCoordinatedGroups> ConsumerGroup<B, ()> {
    pub(crate) fn new(registry: B::RegistryImpl) -> Self {
        let token = registry.broker_token().child_token();
        let directory = registry.directory();
        let registry = Arc::new(Mutex::new(registry));
        directory.add(&registry);
        Self {
            registry,
            ctx: (),
            token,
            autoscaling: None,
        }
    }

    /// Sets the context passed to every handler registered afterwards.
    pub fn with_context<Ctx: Clone + Send + Sync + 'static>(self, ctx: Ctx) -> ConsumerGroup<B, Ctx> {
        ConsumerGroup {
            registry: self.registry,
            ctx,
            token: self.token,
            autoscaling: self.autoscaling,
        }
    }
}

impl<B: HasCoordinatedGroups, Ctx: Clone + Send + Sync + 'static> ConsumerGroup<B, Ctx> {
    /// Registers a group for the unsequenced topic `T`; each consumer gets a handler from `factory`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T` is sequenced or already registered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn register<T, H>(
        &mut self,
        config: ConsumerGroupConfig<B>,
        factory: impl Fn() -> H + Send + Sync + 'static,
    ) -> Result<()>
    where
        T: Topic,
        H: MessageHandler<T, Context = Ctx>,
    {
        self.add::<T, H>(false, config, factory).await
    }

    /// Registers a per-key ordered group for the sequenced topic `T`.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`](crate::ShoveError::Topology) when `T` is not sequenced or already registered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn register_fifo<T, H>(
        &mut self,
        config: ConsumerGroupConfig<B>,
        factory: impl Fn() -> H + Send + Sync + 'static,
    ) -> Result<()>
    where
        T: SequencedTopic,
        H: MessageHandler<T, Context = Ctx>,
    {
        self.add::<T, H>(true, config, factory).await
    }

    async fn add<T, H>(
        &mut self,
        fifo: bool,
        config: ConsumerGroupConfig<B>,
        factory: impl Fn() -> H + Send + Sync + 'static,
    ) -> Result<()>
    where
        T: Topic,
        H: MessageHandler<T, Context = Ctx>,
    {
        let mut registry = self.registry.lock().await;
        let settings = B::RegistryImpl::group_settings(&config.inner);
        let token = self.token.child_token();
        registry::add_group::<_, T, H>(&mut *registry, fifo, settings, token, factory, self.ctx.clone()).await
    }

    /// Sets the handler timeout for groups whose configuration sets none.
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: `"default_handler_timeout must be positive"`.
    pub fn with_default_handler_timeout(self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "default_handler_timeout must be positive");
        match self.registry.try_lock() {
            Ok(mut r) => r.set_default_handler_timeout(timeout),
            Err(_) => unreachable!("the registry is not shared before run_until_timeout"),
        }
        self
    }

    /// Runs an autoscaler (threshold strategy, stabilized by `config`'s hysteresis and cooldown) over
    /// these groups while [`ConsumerGroup::run_until_timeout`] runs. Added in shove 0.16.
    pub fn enable_autoscaling(mut self, config: AutoscalerConfig) -> Self {
        self.autoscaling = Some(config);
        self
    }

    /// Cancelling this token starts the same drain as the signal of [`ConsumerGroup::run_until_timeout`].
    /// It stops only these groups, never the broker or other groups.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts every group at its minimum size, waits for `signal`, then drains every group within
    /// `drain_timeout` (see [`ConsumerSupervisor::run_until_timeout`](crate::ConsumerSupervisor::run_until_timeout)).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future leaves consumers running until the runtime stops.
    pub async fn run_until_timeout<S>(self, signal: S, drain_timeout: Duration) -> SupervisorOutcome
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let stats = registry::start_all_counted(self.registry.lock().await.engine());
        let scaler_stop = CancellationToken::new();
        let mut scaler_task = TaskSet::new(&scaler_stop);
        if let Some(cfg) = self.autoscaling.clone() {
            let transport = self.registry.lock().await.transport();
            let backend = GroupsAutoscaler::new(Registries::One(self.registry.clone()), TransportDepth(transport));
            let strategy = cfg.stabilized_threshold();
            let stop = scaler_task.stop_token();
            scaler_task.spawn(async move {
                Autoscaler::new(backend, strategy, cfg.poll_interval).run(stop).await;
                Ok(())
            });
        }
        tokio::select! {
            _ = signal => {}
            _ = self.token.cancelled() => {}
        }
        scaler_stop.cancel();
        let _ = scaler_task.drain(Duration::from_secs(5)).await;

        self.token.cancel();
        let timed_out = registry::drain_all(self.registry.lock().await.engine(), drain_timeout).await;
        registry::outcome(&stats, timed_out)
    }
}
