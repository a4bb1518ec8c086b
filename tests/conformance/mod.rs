//! The behavioural conformance suite: the delivery contract (`/work/shared/spec/contract.md`, rules 1–22)
//! written once, as generic scenarios, and instantiated per backend by [`conformance_suite!`].
//!
//! A backend joins the suite with a [`Harness`]: how to get a fresh broker connection, how to express a
//! consumer-group configuration, and which optional [`Capabilities`] it claims. Every scenario is a
//! `pub async fn name<H: Harness>()`; the macro turns each into a `#[tokio::test]` with the same name on
//! every backend, so a missing behaviour shows up as a difference between two lists of test names.
//!
//! Rules of the suite:
//! - Every wait is for a condition and is bounded ([`WAIT`]); a timeout fails with what was recorded.
//! - Timing assertions are lower bounds (a delay was at least the hold delay) plus, where two delays must
//!   be told apart, a generous upper bound well below the other delay.
//! - Queue names come from [`unique`], so the suite can run in parallel against one real broker.
//! - A scenario whose capability the harness does not claim is skipped *visibly* ([`skip`]), never passed
//!   silently.

pub mod connections;
pub mod consumers;
pub mod durability;
pub mod facades;
pub mod faults;
pub mod messages;
pub mod observability;
pub mod ordering;
pub mod outcomes;
pub mod own_broker;
pub mod processes;
pub mod proxy;
pub mod restarts;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shove::backend::capability::HasCoordinatedGroups;
use shove::{
    AutoscalerBackend, Backend, Broker, ConsumerGroup, ConsumerGroupConfig, ConsumerSupervisor, DeadMessageMetadata,
    MessageHandler, MessageMetadata, Outcome, ScalingDecision, SupervisorOutcome, Topic,
};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The upper bound of every wait for a condition.
pub const WAIT: Duration = Duration::from_secs(10);

/// The upper bound of a whole scenario (a hung scenario fails instead of blocking the run).
/// (A scenario whose consumers die in processes of their own waits out the broker's redelivery of their
/// messages, twice: on NATS, a 30 s ack wait each time.)
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(150);

/// How long consumers get to drain when a scenario stops them and does not test draining itself.
pub const DRAIN: Duration = Duration::from_secs(5);

/// What a backend claims beyond the contract every backend must meet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    /// Messages waiting out a retry or defer delay are stored in the broker, so a new connection (a new
    /// process) receives them (contract rule 12). The in-process backend does not claim it.
    pub durable_delays: bool,
    /// The broker counts an attempt lost with its consumer's process (a crash mid-handler) against the
    /// retry budget (rule 9), so a message that kills every consumer ends in the DLQ. Consumers run in
    /// processes of their own that the scenario spawns; the in-process backend does not claim it.
    pub lost_attempts: bool,
    /// The broker writes consumer acknowledgements to disk lazily, so killing it (SIGKILL) forgets the
    /// last ones and the messages they settled are delivered again. The restart scenario then allows
    /// every message handled before the kill to come again, instead of a prefetch's worth.
    pub kill_9_forgets_recent_acks: bool,
    /// Why the broker-kill scenario cannot pass on this backend yet (`None`: it runs). A known gap is
    /// skipped visibly with this reason, never passed silently.
    pub broker_kill_9_gap: Option<&'static str>,
}

/// A consumer-group configuration, backend-neutral. [`Harness::group_config`] maps it to the backend's
/// `*ConsumerGroupConfig`.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Smallest group size.
    pub min: u16,
    /// Largest group size.
    pub max: u16,
    /// Messages each consumer handles concurrently.
    pub prefetch: u16,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Per-call handler timeout (`None`: the backend default).
    pub handler_timeout: Option<Duration>,
    /// Largest accepted payload (`None`: the backend default).
    pub max_message_size: Option<usize>,
    /// Messages buffered per key by a sequenced group (`None`: the backend default).
    pub max_pending_per_key: Option<usize>,
}

impl GroupSpec {
    /// `min..=max` consumers, prefetch 10, 10 retries, every other setting the backend's default.
    pub fn new(min: u16, max: u16) -> Self {
        Self {
            min,
            max,
            prefetch: 10,
            max_retries: 10,
            handler_timeout: None,
            max_message_size: None,
            max_pending_per_key: None,
        }
    }

    /// Sets [`GroupSpec::prefetch`].
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets [`GroupSpec::max_retries`].
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }
}

/// How the suite drives one backend. One implementation per backend test binary.
pub trait Harness: Send + Sync + 'static {
    /// The backend marker.
    type B: Backend + HasCoordinatedGroups;

    /// The backend's short name, used in skip messages.
    fn name() -> &'static str;

    /// What the backend claims beyond the contract.
    fn capabilities() -> Capabilities;

    /// A fresh connection to the broker. For a real broker every call connects to the same broker (the
    /// scenarios isolate themselves by queue name); for the in-process backend it is a new broker.
    fn broker() -> impl Future<Output = Broker<Self::B>> + Send;

    /// The backend's consumer-group configuration for `spec`. May panic for an invalid spec (min > max),
    /// as a configuration error at build time is allowed by contract rule 21.
    fn group_config(spec: &GroupSpec) -> ConsumerGroupConfig<Self::B>;

    /// The broker's loopback address, for the scenarios that put a [`proxy::Proxy`] in front of it
    /// (`None`: no network connection, the in-process backend).
    fn address() -> Option<std::net::SocketAddr> {
        None
    }

    /// A fresh connection to the broker at `addr` (a proxy in front of it). Called only when
    /// [`Harness::address`] is `Some`.
    fn broker_at(addr: std::net::SocketAddr) -> impl Future<Output = Broker<Self::B>> + Send {
        async move { panic!("this harness has an address but does not implement broker_at({addr})") }
    }

    /// How to start a broker process of the scenario's own, which the restart scenarios kill and start
    /// again (`None`: the harness cannot, and those scenarios are skipped visibly). Clients connect to it
    /// with [`Harness::broker_at`].
    fn own_broker() -> Option<own_broker::OwnBrokerSpec> {
        None
    }
}

/// Runs one scenario with an overall time limit.
pub async fn run_scenario(name: &str, scenario: impl Future<Output = ()>) {
    if tokio::time::timeout(SCENARIO_LIMIT, scenario).await.is_err() {
        panic!("scenario `{name}` did not finish within {SCENARIO_LIMIT:?}");
    }
}

/// Reports a scenario as skipped because the backend does not claim what it needs. Written straight to
/// the process's stderr, past the test harness's output capture, so a skip is always visible.
pub fn skip<H: Harness>(scenario: &str, reason: &str) {
    let line = format!("skipped: {scenario} on {}: {reason}", H::name());
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    println!("{line}");
}

/// A queue name unique to this process and call: `"{name}-{10 hex digits}"`. Short and made of
/// letters, digits and `-`, so every broker accepts it with any suffix shove adds.
pub fn unique(name: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("conf-{name}-{}", &id[..10])
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A header map from pairs.
pub fn headers<const N: usize>(pairs: [(&str, &str); N]) -> HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The message type most scenarios publish: a key (also the sequence key of sequenced topics) and a
/// number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Msg {
    /// Which stream of messages it belongs to.
    pub key: String,
    /// Its position in that stream.
    pub n: u32,
}

impl Msg {
    /// `Msg { key, n }`.
    pub fn new(key: impl Into<String>, n: u32) -> Self {
        Self { key: key.into(), n }
    }

    /// The sequence key function of sequenced test topics.
    pub fn key_of(msg: &Msg) -> String {
        msg.key.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Events pushed by handlers, waited on by the test with a bounded wait.
pub struct Recorder<E> {
    events: Mutex<Vec<E>>,
    changed: Notify,
}

impl<E: Clone + Debug + Send + 'static> Recorder<E> {
    /// An empty recorder.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(Vec::new()),
            changed: Notify::new(),
        })
    }

    /// Records one event and wakes waiters.
    pub fn push(&self, event: E) {
        lock(&self.events).push(event);
        self.changed.notify_waiters();
    }

    /// Every event so far, in recording order.
    pub fn snapshot(&self) -> Vec<E> {
        lock(&self.events).clone()
    }

    /// How many events so far.
    pub fn len(&self) -> usize {
        lock(&self.events).len()
    }

    /// Waits (at most [`WAIT`]) until `done` holds for the events, and returns them.
    ///
    /// # Panics
    ///
    /// On timeout, with `what` and every recorded event.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[E]) -> bool) -> Vec<E> {
        self.wait_for_within(what, WAIT, done).await
    }

    /// [`Recorder::wait_for`] with an explicit bound.
    pub async fn wait_for_within(&self, what: &str, within: Duration, done: impl Fn(&[E]) -> bool) -> Vec<E> {
        let waited = tokio::time::timeout(within, async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let events = lock(&self.events);
                    if done(&events) {
                        return events.clone();
                    }
                }
                notified.await;
            }
        })
        .await;
        match waited {
            Ok(events) => events,
            Err(_) => panic!(
                "timed out after {within:?} waiting for {what}; recorded so far: {:#?}",
                self.snapshot()
            ),
        }
    }
}

/// One call of `handle`.
#[derive(Debug, Clone)]
pub struct Seen<M> {
    /// The message.
    pub msg: M,
    /// Its delivery metadata.
    pub meta: MessageMetadata,
    /// When the call started.
    pub at: Instant,
}

/// One call of `handle_dead`.
#[derive(Debug, Clone)]
pub struct Dead<M> {
    /// The message.
    pub msg: M,
    /// Its dead-letter metadata.
    pub meta: DeadMessageMetadata,
}

type BoxFut<O> = Pin<Box<dyn Future<Output = O> + Send + 'static>>;
type LiveFn<M> = Arc<dyn Fn(M, MessageMetadata) -> BoxFut<Outcome> + Send + Sync>;
type DeadFn<M> = Arc<dyn Fn(M, DeadMessageMetadata) -> BoxFut<()> + Send + Sync>;

/// A handler made of closures; implements [`MessageHandler`] for every topic whose message is `M`.
pub struct FnHandler<M> {
    live: LiveFn<M>,
    dead: Option<DeadFn<M>>,
}

impl<M> Clone for FnHandler<M> {
    fn clone(&self) -> Self {
        Self {
            live: self.live.clone(),
            dead: self.dead.clone(),
        }
    }
}

impl<M: Send + 'static> FnHandler<M> {
    /// A handler whose `handle` is `f`.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(M, MessageMetadata) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Self {
            live: Arc::new(move |m, meta| Box::pin(f(m, meta))),
            dead: None,
        }
    }

    /// A DLQ handler whose `handle_dead` is `f` (its `handle` acknowledges).
    pub fn dead<F, Fut>(f: F) -> Self
    where
        F: Fn(M, DeadMessageMetadata) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            live: Arc::new(|_, _| Box::pin(async { Outcome::Ack })),
            dead: Some(Arc::new(move |m, meta| Box::pin(f(m, meta)))),
        }
    }
}

impl<T: Topic> MessageHandler<T> for FnHandler<T::Message> {
    type Context = ();

    fn handle(&self, message: T::Message, metadata: MessageMetadata, _: &()) -> impl Future<Output = Outcome> + Send {
        (self.live)(message, metadata)
    }

    fn handle_dead(
        &self,
        message: T::Message,
        metadata: DeadMessageMetadata,
        _: &(),
    ) -> impl Future<Output = ()> + Send {
        let call = self.dead.as_ref().map(|f| f(message, metadata));
        async move {
            if let Some(call) = call {
                call.await;
            }
        }
    }
}

/// Records what a topic's handler and DLQ handler receive.
pub struct Probe<M> {
    /// Every `handle` call.
    pub live: Arc<Recorder<Seen<M>>>,
    /// Every `handle_dead` call.
    pub dead: Arc<Recorder<Dead<M>>>,
}

impl<M: Clone + Debug + Send + Sync + 'static> Probe<M> {
    /// Empty recorders.
    pub fn new() -> Self {
        Self {
            live: Recorder::new(),
            dead: Recorder::new(),
        }
    }

    /// A handler that records each call, then returns `decide(message, metadata)`.
    pub fn handler(&self, decide: impl Fn(&M, &MessageMetadata) -> Outcome + Send + Sync + 'static) -> FnHandler<M> {
        let live = self.live.clone();
        let decide = Arc::new(decide);
        FnHandler::new(move |msg: M, meta: MessageMetadata| {
            let outcome = decide(&msg, &meta);
            live.push(Seen {
                msg,
                meta,
                at: Instant::now(),
            });
            async move { outcome }
        })
    }

    /// A DLQ handler that records each dead-lettered message.
    pub fn dead_handler(&self) -> FnHandler<M> {
        let dead = self.dead.clone();
        FnHandler::dead(move |msg: M, meta: DeadMessageMetadata| {
            dead.push(Dead { msg, meta });
            async {}
        })
    }
}

impl<M: PartialEq> Probe<M> {
    /// The `handle` calls that received `msg`, in order.
    pub fn calls_of(&self, msg: &M) -> Vec<Seen<M>>
    where
        M: Clone + Debug + Send + 'static,
    {
        self.live.snapshot().into_iter().filter(|s| &s.msg == msg).collect()
    }

    /// The `handle_dead` calls that received `msg`, in order.
    pub fn deaths_of(&self, msg: &M) -> Vec<Dead<M>>
    where
        M: Clone + Debug + Send + 'static,
    {
        self.dead.snapshot().into_iter().filter(|d| &d.msg == msg).collect()
    }
}

/// How many handler calls run at once, and the most that ever did.
#[derive(Debug, Default)]
pub struct Concurrency {
    current: AtomicUsize,
    max: AtomicUsize,
}

/// Leaves the [`Concurrency`] count when dropped.
pub struct Entered(Arc<Concurrency>);

impl Concurrency {
    /// A new counter.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Counts one more running call until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Entered {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Entered(self.clone())
    }

    /// The most calls that ever ran at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A supervisor or consumer group running in the background until [`Running::stop`].
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<SupervisorOutcome>>,
}

impl Running {
    /// Runs `supervisor` until stopped, draining within `drain`.
    pub fn supervisor<B: Backend, C: Clone + Send + Sync + 'static>(
        supervisor: ConsumerSupervisor<B, C>,
        drain: Duration,
    ) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let signal = async move {
            let _ = rx.await;
        };
        Self {
            stop: Some(tx),
            task: Some(tokio::spawn(supervisor.run_until_timeout(signal, drain))),
        }
    }

    /// Runs `group` until stopped, draining within `drain`.
    pub fn group<B: HasCoordinatedGroups, C: Clone + Send + Sync + 'static>(
        group: ConsumerGroup<B, C>,
        drain: Duration,
    ) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let signal = async move {
            let _ = rx.await;
        };
        Self {
            stop: Some(tx),
            task: Some(tokio::spawn(group.run_until_timeout(signal, drain))),
        }
    }

    /// Signals the stop and waits (bounded) for the run to end.
    pub async fn stop(mut self) -> SupervisorOutcome {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join("after its stop signal").await
    }

    /// Waits (at most `within`) for the run to end without signalling it.
    pub async fn ended_within(mut self, within: Duration, why: &str) -> SupervisorOutcome {
        let task = self.task.take().expect("the run is joined once");
        match tokio::time::timeout(within, task).await {
            Ok(joined) => joined.expect("the run task panicked"),
            Err(_) => panic!("the consumers did not stop within {within:?} {why}"),
        }
    }

    async fn join(&mut self, why: &str) -> SupervisorOutcome {
        let task = self.task.take().expect("the run is joined once");
        match tokio::time::timeout(WAIT + DRAIN, task).await {
            Ok(joined) => joined.expect("the run task panicked"),
            Err(_) => panic!("the consumers did not stop {why}"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Waits (at most `within`, polling) until `check` returns true.
///
/// # Panics
///
/// On timeout, naming `what`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(ms(10)).await;
    }
}

/// The autoscaler's view of the consumer group named `group` (the topic's queue name): its active
/// consumers, or `None` when `broker.autoscaler()` does not list it.
pub async fn active_consumers<B: Backend>(broker: &Broker<B>, group: &str) -> Option<u16> {
    let scaler = broker.autoscaler();
    let groups = scaler.list_groups().await.expect("list_groups");
    let id = groups.into_iter().find(|g| g.to_string() == group)?;
    Some(scaler.fetch_metrics(&id).await.expect("fetch_metrics").active_consumers)
}

/// Applies `decision` to the group named `group` through `broker.autoscaler()`.
pub async fn scale<B: Backend>(broker: &Broker<B>, group: &str, decision: ScalingDecision) {
    let scaler = broker.autoscaler();
    let groups = scaler.list_groups().await.expect("list_groups");
    let Some(id) = groups.iter().find(|g| g.to_string() == group) else {
        let names: Vec<String> = groups.iter().map(ToString::to_string).collect();
        panic!("broker.autoscaler() does not list group {group}; it lists {names:?}");
    };
    scaler.scale(id, decision).await.expect("scale");
}

/// Applies `decision` through `broker.autoscaler()` until the group has `expected` active consumers, as an
/// autoscaler polling again would (a consumer still settling its last message is not idle yet, and
/// scale-down never stops a busy one).
pub async fn scale_until<B: Backend>(
    broker: &Broker<B>,
    group: &str,
    decision: ScalingDecision,
    expected: u16,
    why: &str,
) {
    eventually(
        &format!("group {group} to have {expected} active consumers ({why})"),
        WAIT,
        || async {
            scale(broker, group, decision.clone()).await;
            active_consumers(broker, group).await == Some(expected)
        },
    )
    .await;
}

/// Waits until the autoscaler reports `expected` active consumers in `group`.
pub async fn wait_active<B: Backend>(broker: &Broker<B>, group: &str, expected: u16, why: &str) {
    eventually(
        &format!("group {group} to have {expected} active consumers ({why})"),
        WAIT,
        || async { active_consumers(broker, group).await == Some(expected) },
    )
    .await;
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs `f`, expecting it to panic, and returns the panic message.
pub fn expect_panic<R>(what: &str, f: impl FnOnce() -> R) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(_) => panic!("{what}: expected a panic, but it returned normally"),
        Err(payload) => panic_message(payload.as_ref()),
    }
}

/// Instantiates one `#[tokio::test]` per scenario of one area for `super::ConformanceHarness`.
macro_rules! scenarios {
    ($area:ident { $( $(#[$attr:meta])* $name:ident ),* $(,)? }) => {
        mod $area {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::conformance::run_scenario(
                        stringify!($name),
                        $crate::conformance::$area::$name::<super::ConformanceHarness>(),
                    )
                    .await
                }
            )*
        }
    };
}
pub(crate) use scenarios;

/// Instantiates the whole suite for a harness type: `conformance::conformance_suite!(InMemoryHarness);`
/// at the root of a test binary that declares `mod conformance;`.
macro_rules! conformance_suite {
    ($harness:ty) => {
        /// The harness every generated test runs against.
        type ConformanceHarness = $harness;

        $crate::conformance::scenarios!(messages {
            every_publish_path_stamps_a_stable_uuid_delivery_id,
            reserved_header_prefixes_are_rejected_case_insensitively,
            metadata_headers_hold_exactly_the_user_headers,
            user_headers_survive_hold_queue_and_dlq,
            raw_bytes_survive_every_hop,
            #[cfg(feature = "protobuf")]
            protobuf_payload_round_trips,
            publish_to_an_undeclared_topic_is_an_error_or_kept,
        });

        $crate::conformance::scenarios!(outcomes {
            ack_removes_the_message,
            retry_budget_is_max_retries_plus_one,
            zero_max_retries_dead_letters_after_one_attempt,
            retry_k_waits_the_kth_hold_delay,
            retry_without_hold_queues_redelivers_at_once,
            defer_waits_first_hold_delay_and_keeps_retry_count,
            reject_dead_letters_at_once,
            reject_without_dlq_discards,
            handler_timeout_counts_as_retry,
            handler_panic_counts_as_retry,
            retry_after_timeout_or_panic_can_succeed,
            oversize_payload_is_dead_lettered_unhandled,
            undecodable_payload_is_dead_lettered_unhandled,
            a_codec_that_panics_dead_letters_and_the_consumer_goes_on,
            dead_letter_metadata_is_complete,
            dead_letters_reach_a_group_consumer_too,
        });

        $crate::conformance::scenarios!(durability {
            delayed_retry_survives_consumer_restart,
            aborted_consumers_lose_no_message,
            delayed_retry_survives_a_new_connection,
            retries_scheduled_before_a_crash_are_not_lost,
        });

        $crate::conformance::scenarios!(ordering {
            per_key_order_over_16_keys,
            per_key_order_in_a_consumer_group,
            retry_blocks_only_its_own_key,
            skip_dead_letters_and_continues_the_key,
            fail_all_poisons_the_rest_of_the_key,
            fail_all_after_exhausted_retries_poisons_the_key,
            defer_on_sequenced_topic_counts_as_retry,
            small_max_pending_per_key_keeps_order,
            a_stopped_consumers_buffered_messages_go_back_in_order,
            defer_without_hold_queue_on_sequenced_topic_requeues,
        });

        $crate::conformance::scenarios!(consumers {
            group_respects_min_and_max,
            scale_down_removes_only_idle_consumers,
            autoscaling_through_consumer_group,
            autoscaling_through_broker_autoscaler,
            concurrent_processing_off_never_overlaps,
            prefetch_zero_is_treated_as_one,
            drain_lets_in_flight_handlers_finish,
            drain_hands_back_unstarted_messages,
            drain_hands_back_buffered_sequenced_messages,
            drain_timeout_gives_exit_code_3_and_redelivers,
            handler_panic_gives_exit_code_2,
            clean_run_gives_exit_code_0,
            drain_timeout_outranks_panics,
            stopping_one_group_leaves_others_running,
            group_drain_timeout_gives_exit_code_3,
        });

        $crate::conformance::scenarios!(observability {
            #[cfg(feature = "metrics")]
            metric_names_labels_and_reasons,
            #[cfg(feature = "metrics")]
            sequence_poisoned_reason_metric,
            #[cfg(feature = "metrics")]
            autoscaler_decision_metric,
            audit_records_every_attempt,
            audit_records_timed_out_attempts,
            audit_failure_redelivers_and_audits_again,
            #[cfg(feature = "audit")]
            shove_audit_handler_publishes_to_audit_log,
        });

        $crate::conformance::scenarios!(faults {
            invalid_topologies_panic_naming_the_fix,
            invalid_group_range_is_refused_at_configuration,
            zero_timeouts_panic_naming_the_fix,
            misregistration_is_refused_with_topology_errors,
            broker_close_stops_consumers_and_refuses_publishes,
            reconnect_attempts_are_bounded_when_set,
        });

        $crate::conformance::scenarios!(restarts {
            broker_kill_9_mid_stream_loses_nothing,
            graceful_broker_restart_mid_stream_loses_nothing,
        });

        $crate::conformance::scenarios!(connections {
            a_connection_cut_mid_stream_loses_nothing,
            a_10s_stall_loses_nothing,
            reconnect_bound_ends_the_consumer_during_a_live_outage,
        });

        $crate::conformance::scenarios!(processes {
            poison_message_that_kills_its_process_is_dead_lettered,
            kill_9_mid_handler_loses_nothing,
            kill_9_during_a_retry_delay_loses_nothing,
        });

        /// The entry point of the consumer processes that the `processes` scenarios spawn: this binary
        /// run again on this test alone, its role in the environment. Without a role it returns at once.
        #[test]
        #[ignore = "the entry point of consumer processes that the processes scenarios spawn"]
        fn conformance_child_process() {
            $crate::conformance::processes::child_main::<ConformanceHarness>();
        }
    };
}
pub(crate) use conformance_suite;
