//! Consumer groups: `min..=max` consumers of one queue, scaled up and down (idle consumers only), and the
//! registries and directory that let the autoscaler find them (contract rule 16).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::consume::{self, Mode};
use super::settings::{ConsumerSettings, EngineSettings, RunControl, RunStats};
use crate::autoscaler::ScalingDecision;
use crate::defaults::DEFAULT_HANDLER_TIMEOUT;
use crate::error::{Result, ShoveError};
use crate::handler::MessageHandler;
use crate::outcome::SupervisorOutcome;
use crate::topic::Topic;
use crate::transport::{Source, SubscribeOptions, Transport};

/// The settings every backend's `*ConsumerGroupConfig` wraps.
#[derive(Debug, Clone)]
pub(crate) struct GroupSettings {
    pub min: u16,
    pub max: u16,
    pub prefetch: u16,
    pub max_retries: u32,
    /// `None`: the registry's default handler timeout.
    pub handler_timeout: Option<Duration>,
    pub max_message_size: Option<usize>,
    pub max_pending_per_key: Option<usize>,
    pub max_reconnect_attempts: Option<u32>,
    /// When false, each consumer handles one message at a time whatever the prefetch.
    pub concurrent_processing: bool,
}

impl GroupSettings {
    #[cfg(any_backend)]
    /// Settings for `range` consumers with the crate defaults.
    ///
    /// # Panics
    ///
    /// When the range is empty (min > max) or its upper end is zero (contract rule 21).
    pub fn new(range: std::ops::RangeInclusive<u16>) -> Self {
        let (min, max) = (*range.start(), *range.end());
        assert!(
            min <= max,
            "consumer group range {min}..={max} is empty: min_consumers must not exceed max_consumers"
        );
        assert!(
            max >= 1,
            "consumer group max_consumers must be at least 1 (got {min}..={max})"
        );
        Self {
            min,
            max,
            prefetch: 10,
            max_retries: 10,
            handler_timeout: None,
            max_message_size: Some(crate::defaults::DEFAULT_MAX_MESSAGE_SIZE),
            max_pending_per_key: Some(crate::defaults::DEFAULT_MAX_PENDING_PER_KEY),
            max_reconnect_attempts: None,
            concurrent_processing: true,
        }
    }

    /// A group consumer's settings; groups use the transport's default options.
    fn consumer_settings<O: Default>(
        &self,
        default_timeout: Option<Duration>,
        processing: Arc<AtomicBool>,
    ) -> ConsumerSettings<O> {
        let subscribe = SubscribeOptions {
            prefetch: self.prefetch.max(1),
            handler_timeout: self.handler_timeout.or(default_timeout),
            backend: O::default(),
        };
        ConsumerSettings {
            engine: EngineSettings {
                max_retries: self.max_retries,
                capacity: if self.concurrent_processing {
                    usize::from(self.prefetch.max(1))
                } else {
                    1
                },
                handler_timeout: self.handler_timeout.or(default_timeout),
                max_pending_per_key: self.max_pending_per_key,
                max_message_size: self.max_message_size,
                max_reconnect_attempts: self.max_reconnect_attempts,
                processing,
            },
            subscribe,
        }
    }
}

type ConsumerFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
type Starter = Arc<dyn Fn(RunControl, Arc<RunStats>, Arc<AtomicBool>) -> ConsumerFuture + Send + Sync>;

struct Slot {
    ctl: RunControl,
    busy: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// A backend's consumer-group registry: a named facade over the engine's group set.
#[allow(private_interfaces)]
pub trait RegistryImpl: Send + Sized + 'static {
    /// The backend's group configuration type.
    type GroupConfig;
    /// The transport its groups consume from.
    type Transport: Transport;
    /// The transport for new groups.
    fn transport(&self) -> Self::Transport;
    /// The engine settings a group configuration stands for.
    fn group_settings(config: &Self::GroupConfig) -> GroupSettings;
    /// The handler timeout for groups whose config sets none.
    fn default_handler_timeout(&self) -> Option<Duration>;
    /// Sets [`RegistryImpl::default_handler_timeout`].
    fn set_default_handler_timeout(&mut self, timeout: Duration);
    /// The token of the broker connection; group tokens are its children.
    fn broker_token(&self) -> CancellationToken;
    /// The registry's groups.
    fn engine(&mut self) -> &mut dyn GroupSet;
    /// Where a registry created by `Broker::consumer_group` is made visible to `Broker::autoscaler`.
    fn directory(&self) -> Arc<GroupDirectory<Self>>;
}

/// One consumer group: up to `max` consumers of one queue, each with its own handler from the factory.
pub(crate) struct Group {
    queue: String,
    settings: GroupSettings,
    starter: Starter,
    token: CancellationToken,
    abort: CancellationToken,
    stats: Arc<RunStats>,
    slots: Vec<Slot>,
}

impl Group {
    /// A stopped group of topic `T` on `transport`; `fifo` selects the sequenced (shard) source.
    #[allow(clippy::too_many_arguments)]
    pub fn new<T, H, Tr>(
        name: String,
        transport: Tr,
        fifo: bool,
        settings: GroupSettings,
        default_timeout: Option<Duration>,
        group_token: CancellationToken,
        factory: impl Fn() -> H + Send + Sync + 'static,
        ctx: H::Context,
    ) -> Self
    where
        T: Topic,
        H: MessageHandler<T>,
        Tr: Transport,
    {
        let topology = T::topology();
        let source = if fifo {
            Source::Shards(topology)
        } else {
            Source::Main(topology)
        };
        let factory = Arc::new(factory);
        let group_settings = settings.clone();
        let timeout = default_timeout.or(Some(DEFAULT_HANDLER_TIMEOUT));
        let starter: Starter = Arc::new(move |ctl, stats, busy| {
            let transport = transport.clone();
            let handler = factory();
            let ctx = ctx.clone();
            let settings = group_settings.consumer_settings(timeout, busy);
            Box::pin(async move {
                consume::run::<T, H, Tr>(&transport, source, Mode::Live, &handler, &ctx, &settings, &ctl, &stats).await
            })
        });
        Self {
            queue: name,
            settings,
            starter,
            token: group_token,
            abort: CancellationToken::new(),
            stats: Arc::new(RunStats::default()),
            slots: Vec::new(),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    pub fn stats(&self) -> Arc<RunStats> {
        self.stats.clone()
    }

    /// Starts consumers up to `min` (at least one).
    pub fn start(&mut self) {
        self.reap();
        let target = usize::from(self.settings.min.max(1));
        while self.slots.len() < target {
            self.spawn_one();
        }
    }

    /// Adds a consumer unless the group is at `max`.
    pub fn scale_up(&mut self) -> bool {
        self.reap();
        if self.slots.len() >= usize::from(self.settings.max) || self.token.is_cancelled() {
            return false;
        }
        self.spawn_one();
        true
    }

    /// Stops one idle consumer unless the group is at `min`. A consumer that is running a handler is
    /// never stopped by scaling.
    pub fn scale_down(&mut self) -> bool {
        self.reap();
        if self.slots.len() <= usize::from(self.settings.min) {
            return false;
        }
        let Some(i) = self.slots.iter().rposition(|s| !s.busy.load(Ordering::Relaxed)) else {
            return false;
        };
        let slot = self.slots.swap_remove(i);
        slot.ctl.stop.cancel();
        true
    }

    /// Consumers currently running.
    pub fn active_consumers(&self) -> usize {
        self.slots.iter().filter(|s| !s.handle.is_finished()).count()
    }

    /// Tells every consumer to stop taking messages (in-flight handlers go on).
    pub fn stop(&self) {
        for s in &self.slots {
            s.ctl.stop.cancel();
        }
    }

    #[cfg(any_backend)]
    /// Stops every consumer and waits for in-flight handlers to finish.
    pub async fn shutdown(&mut self) {
        self.drain(None).await;
    }

    /// Stops every consumer; waits up to `timeout` (forever when `None`) for in-flight handlers, then
    /// aborts them. Returns whether the timeout was hit.
    pub async fn drain(&mut self, timeout: Option<Duration>) -> bool {
        self.stop();
        let mut handles: Vec<_> = self.slots.drain(..).map(|s| s.handle).collect();
        let join = async {
            for h in handles.iter_mut() {
                if let Err(e) = h.await
                    && e.is_panic()
                {
                    self.stats.panic();
                }
            }
        };
        let timed_out = match timeout {
            Some(t) => tokio::time::timeout(t, join).await.is_err(),
            None => {
                join.await;
                false
            }
        };
        if timed_out {
            self.abort.cancel();
            let grace = async {
                for h in handles.iter_mut() {
                    let _ = h.await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(1), grace).await.is_err() {
                for h in &handles {
                    h.abort();
                }
            }
        }
        timed_out
    }

    fn spawn_one(&mut self) {
        let ctl = RunControl {
            stop: self.token.child_token(),
            abort: self.abort.clone(),
        };
        let busy = Arc::new(AtomicBool::new(false));
        let fut = (self.starter)(ctl.clone(), self.stats.clone(), busy.clone());
        let stats = self.stats.clone();
        let queue = self.queue.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::error!(queue = %queue, error = %e, "group consumer stopped with an error");
                stats.error();
            }
        });
        self.slots.push(Slot { ctl, busy, handle });
    }

    /// Forgets consumers that have ended.
    fn reap(&mut self) {
        self.slots.retain(|s| !s.handle.is_finished());
    }
}

/// The group operations a backend registry offers the engine, whatever its facade group type.
pub(crate) trait GroupSet: Send {
    fn names(&self) -> Vec<String>;
    fn get(&self, name: &str) -> Option<&Group>;
    fn get_mut(&mut self, name: &str) -> Option<&mut Group>;
    fn all_mut(&mut self) -> Vec<&mut Group>;
    /// Adds a group.
    ///
    /// # Errors
    ///
    /// [`ShoveError::Topology`] when a group for the same queue exists.
    fn insert(&mut self, group: Group) -> Result<()>;
}

impl<G> GroupSet for HashMap<String, G>
where
    G: AsRef<Group> + AsMut<Group> + From<Group> + Send,
{
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }

    fn get(&self, name: &str) -> Option<&Group> {
        HashMap::get(self, name).map(AsRef::as_ref)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Group> {
        HashMap::get_mut(self, name).map(AsMut::as_mut)
    }

    fn all_mut(&mut self) -> Vec<&mut Group> {
        self.values_mut().map(AsMut::as_mut).collect()
    }

    fn insert(&mut self, group: Group) -> Result<()> {
        let queue = group.queue().to_string();
        if self.contains_key(&queue) {
            return Err(ShoveError::Topology(format!(
                "a consumer group for queue '{queue}' is already registered; register each topic once per registry"
            )));
        }
        HashMap::insert(self, queue, G::from(group));
        Ok(())
    }
}

/// The registries created through `Broker::consumer_group` on one client, so that `Broker::autoscaler`
/// sees their groups (contract rule 16). Holds them weakly: a dropped `ConsumerGroup` disappears.
pub(crate) struct GroupDirectory<R> {
    entries: std::sync::Mutex<Vec<Weak<tokio::sync::Mutex<R>>>>,
}

impl<R> Default for GroupDirectory<R> {
    fn default() -> Self {
        Self {
            entries: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<R> GroupDirectory<R> {
    pub fn add(&self, registry: &Arc<tokio::sync::Mutex<R>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|w| w.strong_count() > 0);
        entries.push(Arc::downgrade(registry));
    }

    #[cfg(any_backend)]
    pub fn live(&self) -> Vec<Arc<tokio::sync::Mutex<R>>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().filter_map(Weak::upgrade).collect()
    }
}

/// Where an autoscaler finds its groups: one registry, or every registry of a client.
pub(crate) enum Registries<R> {
    One(Arc<tokio::sync::Mutex<R>>),
    #[cfg(any_backend)]
    Directory(Arc<GroupDirectory<R>>),
}

impl<R> Clone for Registries<R> {
    fn clone(&self) -> Self {
        match self {
            Registries::One(r) => Registries::One(r.clone()),
            #[cfg(any_backend)]
            Registries::Directory(d) => Registries::Directory(d.clone()),
        }
    }
}

/// A group as the autoscaler sees it.
pub(crate) struct GroupView {
    pub queue: String,
    pub active: u16,
    pub prefetch: u16,
}

impl<R: RegistryImpl> Registries<R> {
    fn all(&self) -> Vec<Arc<tokio::sync::Mutex<R>>> {
        match self {
            Registries::One(r) => vec![r.clone()],
            #[cfg(any_backend)]
            Registries::Directory(d) => d.live(),
        }
    }

    pub async fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for r in self.all() {
            names.extend(r.lock().await.engine().names());
        }
        names.sort();
        names.dedup();
        names
    }

    pub async fn view(&self, name: &str) -> Result<GroupView> {
        for r in self.all() {
            let mut reg = r.lock().await;
            if let Some(g) = reg.engine().get(name) {
                return Ok(GroupView {
                    queue: g.queue().to_string(),
                    active: u16::try_from(g.active_consumers()).unwrap_or(u16::MAX),
                    prefetch: g.settings().prefetch,
                });
            }
        }
        Err(unknown_group(name))
    }

    pub async fn scale(&self, name: &str, decision: ScalingDecision) -> Result<()> {
        for r in self.all() {
            let mut reg = r.lock().await;
            if let Some(g) = reg.engine().get_mut(name) {
                match decision {
                    ScalingDecision::ScaleUp(n) => {
                        for _ in 0..n {
                            if !g.scale_up() {
                                break;
                            }
                        }
                    }
                    ScalingDecision::ScaleDown(n) => {
                        for _ in 0..n {
                            if !g.scale_down() {
                                break;
                            }
                        }
                    }
                    ScalingDecision::Hold => {}
                }
                return Ok(());
            }
        }
        Err(unknown_group(name))
    }
}

fn unknown_group(name: &str) -> ShoveError {
    ShoveError::Topology(format!("no consumer group named '{name}' is registered"))
}

/// Registers a (stopped) group of topic `T` in `registry`, the same way for every backend: the sequencing
/// must match the method (`fifo`), the queue must not have a group yet, and the topic is declared on the
/// broker before anything is registered (so errors surface here, at registration).
pub(crate) async fn add_group<R, T, H>(
    registry: &mut R,
    fifo: bool,
    settings: GroupSettings,
    group_token: CancellationToken,
    factory: impl Fn() -> H + Send + Sync + 'static,
    ctx: H::Context,
) -> Result<()>
where
    R: RegistryImpl,
    T: Topic,
    H: MessageHandler<T>,
{
    let topology = T::topology();
    topology.check_sequencing(fifo)?;
    if registry.engine().get(topology.queue()).is_some() {
        return Err(ShoveError::Topology(format!(
            "a consumer group for queue '{}' is already registered; register each topic once per registry",
            topology.queue()
        )));
    }
    let transport = registry.transport();
    transport.declare(topology).await?;
    let group = Group::new::<T, H, _>(
        topology.queue().to_string(),
        transport,
        fifo,
        settings,
        registry.default_handler_timeout(),
        group_token,
        factory,
        ctx,
    );
    registry.engine().insert(group)
}

#[cfg(any_backend)]
/// Starts every group of `set` at its minimum size.
pub(crate) fn start_all(set: &mut dyn GroupSet) {
    for g in set.all_mut() {
        g.start();
    }
}

/// Starts every group of `set` at its minimum size and returns their counters, for
/// [`outcome`].
pub(crate) fn start_all_counted(set: &mut dyn GroupSet) -> Vec<Arc<RunStats>> {
    set.all_mut()
        .into_iter()
        .map(|g| {
            g.start();
            g.stats()
        })
        .collect()
}

#[cfg(any_backend)]
/// Stops every group of `set`, all at once, and waits for their in-flight handlers.
pub(crate) async fn shutdown_all(set: &mut dyn GroupSet) {
    let mut groups = set.all_mut();
    for g in groups.iter() {
        g.stop();
    }
    for g in groups.iter_mut() {
        g.shutdown().await;
    }
}

/// Stops every group of `set` taking messages, then gives each group what is left of `drain_timeout` to
/// finish its in-flight handlers (contract rule 17). Returns whether the deadline was hit.
pub(crate) async fn drain_all(set: &mut dyn GroupSet, drain_timeout: Duration) -> bool {
    for g in set.all_mut() {
        g.stop();
    }
    let deadline = tokio::time::Instant::now() + drain_timeout;
    let mut timed_out = false;
    for g in set.all_mut() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        timed_out |= g.drain(Some(left)).await;
    }
    timed_out
}

/// The outcome of groups that ran with `stats` (contract rule 18).
pub(crate) fn outcome(stats: &[Arc<RunStats>], timed_out: bool) -> SupervisorOutcome {
    let (errors, panics) = stats.iter().fold((0, 0), |(e, p), s| {
        (
            e + s.errors.load(Ordering::Relaxed),
            p + s.panics.load(Ordering::Relaxed),
        )
    });
    SupervisorOutcome {
        errors,
        panics,
        timed_out,
    }
}
