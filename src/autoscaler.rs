//! Autoscaling of consumer groups from queue depth.
//!
//! An [`Autoscaler`] polls an [`AutoscalerBackend`] every `poll_interval`: it lists the consumer groups,
//! fetches [`ScalingMetrics`] (ready and in-flight messages, consumers, prefetch) for each, asks a
//! [`ScalingStrategy`] for a [`ScalingDecision`] and tells the backend to scale. The backend (usually
//! obtained from `Broker::autoscaler`) keeps each group within its configured minimum and maximum.
//!
//! The stock strategy is [`ThresholdStrategy`] wrapped in [`Stabilized`], which keeps a decision from
//! flapping: it must hold for a while before it is acted on, and after acting the group is left alone for a
//! cooldown. [`AutoscalerConfig`] carries the defaults for all of these knobs.
//!
//! # Examples
//!
//! ```no_run
//! use shove::autoscaler::{
//!     Autoscaler, AutoscalerBackend, AutoscalerConfig, Stabilized, ThresholdStrategy,
//! };
//! use tokio_util::sync::CancellationToken;
//!
//! async fn autoscale<B: AutoscalerBackend>(backend: B, shutdown: CancellationToken) {
//!     let config = AutoscalerConfig::default();
//!     let strategy = Stabilized::new(
//!         ThresholdStrategy {
//!             scale_up_multiplier: config.scale_up_multiplier,
//!             scale_down_multiplier: config.scale_down_multiplier,
//!         },
//!         config.hysteresis_duration,
//!         config.cooldown_duration,
//!     );
//!     let mut autoscaler = Autoscaler::new(backend, strategy, config.poll_interval);
//!     autoscaler.run(shutdown).await;
//! }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// Settings for an autoscaler built from [`ThresholdStrategy`] wrapped in [`Stabilized`].
///
/// The [`Default`] values are: poll every 5 s, scale up when the backlog exceeds 2.0× capacity, scale down
/// when the load is below 0.5× capacity, require a decision to hold for 10 s, and wait 30 s after scaling
/// a group before scaling it again.
#[derive(Debug, Clone)]
pub struct AutoscalerConfig {
    /// How often the autoscaler polls the backend for metrics.
    pub poll_interval: Duration,
    /// Scale up when ready messages exceed `capacity × scale_up_multiplier` (see [`ThresholdStrategy`]).
    pub scale_up_multiplier: f64,
    /// Scale down when ready plus in-flight messages are below `capacity × scale_down_multiplier`.
    pub scale_down_multiplier: f64,
    /// How long a decision must keep being made for a group before it is acted on (see [`Stabilized`]).
    pub hysteresis_duration: Duration,
    /// How long a group is left alone after it was scaled (see [`Stabilized`]).
    pub cooldown_duration: Duration,
}

impl AutoscalerConfig {
    /// The threshold strategy with these multipliers, stabilized by these durations.
    pub(crate) fn stabilized_threshold(&self) -> Stabilized<ThresholdStrategy> {
        Stabilized::new(
            ThresholdStrategy {
                scale_up_multiplier: self.scale_up_multiplier,
                scale_down_multiplier: self.scale_down_multiplier,
            },
            self.hysteresis_duration,
            self.cooldown_duration,
        )
    }
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            scale_up_multiplier: 2.0,
            scale_down_multiplier: 0.5,
            hysteresis_duration: Duration::from_secs(10),
            cooldown_duration: Duration::from_secs(30),
        }
    }
}

/// What a backend measured about one consumer group, the input of a [`ScalingStrategy`].
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ScalingMetrics {
    /// Messages waiting to be delivered (the backlog).
    pub messages_ready: u64,
    /// Messages delivered to a consumer and not yet settled.
    pub messages_in_flight: u64,
    /// Consumers currently running in the group.
    pub active_consumers: u16,
    /// How many unsettled messages each consumer may hold at once.
    pub prefetch_count: u16,
}

impl ScalingMetrics {
    /// Bundles the measurements of one group.
    pub fn new(messages_ready: u64, messages_in_flight: u64, active_consumers: u16, prefetch_count: u16) -> Self {
        Self {
            messages_ready,
            messages_in_flight,
            active_consumers,
            prefetch_count,
        }
    }

    /// How many messages the group can hold in flight at once: `active_consumers × prefetch_count`.
    pub fn capacity(&self) -> u64 {
        u64::from(self.active_consumers) * u64::from(self.prefetch_count)
    }
}

/// What to do with a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScalingDecision {
    /// Add this many consumers (the group stops at its maximum).
    ScaleUp(u16),
    /// Remove this many consumers (the group stops at its minimum).
    ScaleDown(u16),
    /// Leave the group as it is.
    Hold,
}

/// Turns a group's metrics into a scaling decision.
///
/// Strategies may keep per-group state (as [`Stabilized`] does); `group` identifies the group.
pub trait ScalingStrategy: Send + Sync {
    /// Decides what to do with `group` given its latest `metrics`.
    fn evaluate(&mut self, group: &str, metrics: &ScalingMetrics) -> ScalingDecision;

    /// Forgets state kept for groups not in `active`. The [`Autoscaler`] calls it after every poll with the
    /// groups the backend listed. The default does nothing.
    fn gc(&mut self, _active: &[impl AsRef<str>]) {}
}

/// A stateless strategy that compares the load with the group's capacity
/// ([`ScalingMetrics::capacity`], consumers × prefetch).
///
/// Rules, in order:
///
/// 1. Capacity 0 (no consumers, or a prefetch of 0): [`ScaleUp(1)`](ScalingDecision::ScaleUp) if any
///    message is ready, otherwise [`Hold`](ScalingDecision::Hold).
/// 2. Ready messages `> capacity × scale_up_multiplier`: [`ScaleUp(1)`](ScalingDecision::ScaleUp).
/// 3. Ready plus in-flight messages `< capacity × scale_down_multiplier`:
///    [`ScaleDown(1)`](ScalingDecision::ScaleDown). The group itself refuses to go below its minimum.
/// 4. Otherwise [`Hold`](ScalingDecision::Hold).
///
/// Scale-up looks only at the backlog (messages nobody is working on), scale-down at the whole load, so
/// a group that is busy with in-flight work is not shrunk just because nothing is waiting.
///
/// Decisions change by one consumer at a time; wrap it in [`Stabilized`] to avoid flapping.
#[derive(Debug, Clone)]
pub struct ThresholdStrategy {
    /// Scale up when ready messages exceed `capacity × scale_up_multiplier`.
    pub scale_up_multiplier: f64,
    /// Scale down when ready plus in-flight messages are below `capacity × scale_down_multiplier`.
    pub scale_down_multiplier: f64,
}

impl Default for ThresholdStrategy {
    fn default() -> Self {
        Self {
            scale_up_multiplier: 2.0,
            scale_down_multiplier: 0.5,
        }
    }
}

impl ScalingStrategy for ThresholdStrategy {
    fn evaluate(&mut self, _group: &str, metrics: &ScalingMetrics) -> ScalingDecision {
        let backlog = metrics.messages_ready;
        let capacity = metrics.capacity();
        if capacity == 0 {
            return if backlog > 0 {
                ScalingDecision::ScaleUp(1)
            } else {
                ScalingDecision::Hold
            };
        }
        // Counts far beyond 2^53 lose precision as f64, which does not matter for a threshold.
        let capacity = capacity as f64;
        let load = metrics.messages_ready.saturating_add(metrics.messages_in_flight);
        if backlog as f64 > capacity * self.scale_up_multiplier {
            ScalingDecision::ScaleUp(1)
        } else if (load as f64) < capacity * self.scale_down_multiplier {
            ScalingDecision::ScaleDown(1)
        } else {
            ScalingDecision::Hold
        }
    }
}

/// Which way a decision goes, for comparing decisions over time regardless of their step size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// What [`Stabilized`] remembers about one group.
#[derive(Debug, Default)]
struct GroupState {
    /// The direction the inner strategy has been asking for, and since when.
    pending: Option<(Direction, Instant)>,
    /// No scaling for this group before this instant.
    cooldown_until: Option<Instant>,
}

/// Wraps a strategy so that its decisions only take effect once they are stable.
///
/// For each group:
///
/// - **Hysteresis**: a scale decision from the inner strategy is passed on only after the inner strategy has
///   asked for the same direction (up or down) continuously for `hysteresis_duration`. A
///   [`Hold`](ScalingDecision::Hold) or a change of direction restarts the clock. Until then the result is
///   `Hold`. A zero duration passes decisions on immediately.
/// - **Cooldown**: after a scale decision is passed on, the group gets `Hold` for `cooldown_duration`. The
///   inner strategy is still consulted during the cooldown, so a direction it keeps asking for throughout
///   the cooldown is acted on at the first evaluation after the cooldown ends.
///
/// Time is measured with [`tokio::time::Instant`], so it follows a paused tokio test clock.
#[derive(Debug)]
pub struct Stabilized<S: ScalingStrategy> {
    inner: S,
    hysteresis_duration: Duration,
    cooldown_duration: Duration,
    groups: HashMap<String, GroupState>,
}

impl<S: ScalingStrategy> Stabilized<S> {
    /// Wraps `inner`: decisions must persist for `hysteresis_duration` before they are passed on, and a
    /// group is held for `cooldown_duration` after each scale decision.
    pub fn new(inner: S, hysteresis_duration: Duration, cooldown_duration: Duration) -> Self {
        Self {
            inner,
            hysteresis_duration,
            cooldown_duration,
            groups: HashMap::new(),
        }
    }
}

impl<S: ScalingStrategy> ScalingStrategy for Stabilized<S> {
    fn evaluate(&mut self, group: &str, metrics: &ScalingMetrics) -> ScalingDecision {
        let decision = self.inner.evaluate(group, metrics);
        let now = Instant::now();
        let state = match self.groups.get_mut(group) {
            Some(state) => state,
            None => self.groups.entry(group.to_owned()).or_default(),
        };

        let direction = match decision {
            ScalingDecision::ScaleUp(_) => Direction::Up,
            ScalingDecision::ScaleDown(_) => Direction::Down,
            ScalingDecision::Hold => {
                state.pending = None;
                return ScalingDecision::Hold;
            }
        };
        let since = match state.pending {
            Some((pending, since)) if pending == direction => since,
            _ => {
                state.pending = Some((direction, now));
                now
            }
        };

        let cooling_down = state.cooldown_until.is_some_and(|until| now < until);
        if cooling_down || now.duration_since(since) < self.hysteresis_duration {
            return ScalingDecision::Hold;
        }
        state.pending = None;
        state.cooldown_until = Some(now + self.cooldown_duration);
        decision
    }

    fn gc(&mut self, active: &[impl AsRef<str>]) {
        let keep: HashSet<&str> = active.iter().map(AsRef::as_ref).collect();
        self.groups.retain(|group, _| keep.contains(group.as_str()));
        self.inner.gc(active);
    }
}

/// Where an [`Autoscaler`] reads metrics from and applies decisions to: a broker's consumer groups.
///
/// Each broker's `Broker::autoscaler` returns an implementation. Methods can be implemented with
/// `async fn`.
pub trait AutoscalerBackend: Send + Sync {
    /// Identifies a consumer group; its [`Display`] form is the group name passed to the strategy and
    /// used in logs and metrics.
    type GroupId: Clone + Eq + Hash + Display + Send + Sync;

    /// The groups to consider on this poll.
    ///
    /// # Errors
    ///
    /// Any error from the broker or registry; the autoscaler logs it and skips this poll.
    fn list_groups(&self) -> impl Future<Output = Result<Vec<Self::GroupId>>> + Send;

    /// The current metrics of `group`.
    ///
    /// # Errors
    ///
    /// Any error from the broker; the autoscaler logs it and skips this group for this poll.
    fn fetch_metrics(&self, group: &Self::GroupId) -> impl Future<Output = Result<ScalingMetrics>> + Send;

    /// Applies `decision` to `group`, keeping the group within its own minimum and maximum.
    ///
    /// # Errors
    ///
    /// Any error starting or stopping consumers; the autoscaler logs it and continues.
    fn scale(&self, group: &Self::GroupId, decision: ScalingDecision) -> impl Future<Output = Result<()>> + Send;
}

/// Periodically scales the consumer groups of a backend according to a strategy.
///
/// See the [module docs](self) for an example.
pub struct Autoscaler<B: AutoscalerBackend, S: ScalingStrategy> {
    backend: B,
    strategy: S,
    poll_interval: Duration,
}

impl<B: AutoscalerBackend, S: ScalingStrategy> Autoscaler<B, S> {
    /// Creates an autoscaler that evaluates `strategy` against `backend` every `poll_interval`.
    pub fn new(backend: B, strategy: S, poll_interval: Duration) -> Self {
        Self {
            backend,
            strategy,
            poll_interval,
        }
    }

    /// Polls and scales immediately, then again every `poll_interval`, until `shutdown` is cancelled.
    ///
    /// Errors from the backend are logged and never end the loop.
    ///
    /// # Cancel safety
    ///
    /// Returns promptly once `shutdown` is cancelled, even in the middle of a poll: the poll in progress
    /// is dropped at its current await point, so a [`AutoscalerBackend::scale`] call may be cut short
    /// (whether it took effect is up to the backend). Dropping the returned future has the same effect.
    /// The autoscaler stays usable afterwards; a later `run` starts with a fresh poll.
    pub async fn run(&mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.poll_and_scale() => {}
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Runs one poll: lists the groups, and for each one fetches its metrics, evaluates the strategy and,
    /// unless the decision is [`Hold`](ScalingDecision::Hold), asks the backend to scale. Afterwards the
    /// strategy forgets groups that were not listed ([`ScalingStrategy::gc`]).
    ///
    /// Every scale decision is counted in the `{prefix}_autoscaler_decisions_total` metric. Backend errors
    /// are logged with `tracing::warn!`: a failed listing skips the poll, a failed fetch or scale skips
    /// that group.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe. Dropping the future stops the poll at its current await point: groups not reached
    /// yet are skipped until the next poll, an in-progress [`AutoscalerBackend::scale`] call is cut short,
    /// and a decision the strategy already made counts as acted on (a [`Stabilized`] strategy starts its
    /// cooldown for that group).
    pub async fn poll_and_scale(&mut self) {
        let groups = match self.backend.list_groups().await {
            Ok(groups) => groups,
            Err(error) => {
                tracing::warn!(%error, "autoscaler: listing consumer groups failed; skipping this poll");
                return;
            }
        };
        let names: Vec<String> = groups.iter().map(ToString::to_string).collect();

        for (group, name) in groups.iter().zip(&names) {
            let metrics = match self.backend.fetch_metrics(group).await {
                Ok(metrics) => metrics,
                Err(error) => {
                    tracing::warn!(
                        group = %name,
                        %error,
                        "autoscaler: fetching metrics failed; skipping this group for this poll"
                    );
                    continue;
                }
            };

            let decision = self.strategy.evaluate(name, &metrics);
            let label = match decision {
                ScalingDecision::ScaleUp(_) => "scale_up",
                ScalingDecision::ScaleDown(_) => "scale_down",
                ScalingDecision::Hold => continue,
            };
            crate::metrics::autoscaler_decision(name, label);
            tracing::info!(
                group = %name,
                ?decision,
                messages_ready = metrics.messages_ready,
                messages_in_flight = metrics.messages_in_flight,
                active_consumers = metrics.active_consumers,
                prefetch_count = metrics.prefetch_count,
                "autoscaler: scaling consumer group"
            );
            if let Err(error) = self.backend.scale(group, decision).await {
                tracing::warn!(group = %name, %error, "autoscaler: scaling consumer group failed");
            }
        }

        self.strategy.gc(&names);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::error::ShoveError;

    fn metrics(ready: u64, in_flight: u64, consumers: u16, prefetch: u16) -> ScalingMetrics {
        ScalingMetrics::new(ready, in_flight, consumers, prefetch)
    }

    #[test]
    fn config_defaults() {
        let config = AutoscalerConfig::default();
        assert_eq!(config.poll_interval, Duration::from_secs(5));
        assert_eq!(config.scale_up_multiplier, 2.0);
        assert_eq!(config.scale_down_multiplier, 0.5);
        assert_eq!(config.hysteresis_duration, Duration::from_secs(10));
        assert_eq!(config.cooldown_duration, Duration::from_secs(30));
    }

    #[test]
    fn capacity_is_consumers_times_prefetch() {
        assert_eq!(metrics(0, 0, 3, 10).capacity(), 30);
        assert_eq!(metrics(0, 0, 0, 10).capacity(), 0);
        assert_eq!(
            metrics(0, 0, u16::MAX, u16::MAX).capacity(),
            u64::from(u16::MAX) * u64::from(u16::MAX)
        );
    }

    #[test]
    fn threshold_strategy_decisions() {
        use ScalingDecision::{Hold, ScaleDown, ScaleUp};
        // (ready, in flight, consumers, prefetch, expected); defaults 2.0 / 0.5, capacity = consumers × prefetch
        let cases: &[(u64, u64, u16, u16, ScalingDecision)] = &[
            // No capacity: scale up only if something is waiting.
            (0, 0, 0, 10, Hold),
            (1, 0, 0, 10, ScaleUp(1)),
            (5, 0, 2, 0, ScaleUp(1)),
            (0, 3, 0, 10, Hold),
            // Capacity 20: up above 40 ready, down below 10 total load.
            (41, 0, 2, 10, ScaleUp(1)),
            (40, 0, 2, 10, Hold),
            (10, 0, 2, 10, Hold),
            (9, 0, 2, 10, ScaleDown(1)),
            (0, 0, 2, 10, ScaleDown(1)),
            (5, 5, 2, 10, Hold),
            (4, 5, 2, 10, ScaleDown(1)),
            // In-flight work keeps a busy group from shrinking, but does not make it grow.
            (0, 20, 2, 10, Hold),
            (0, 1000, 2, 10, Hold),
            // A single consumer with nothing to do still asks to go down; the group enforces its minimum.
            (0, 0, 1, 10, ScaleDown(1)),
            (21, 0, 1, 10, ScaleUp(1)),
        ];
        let mut strategy = ThresholdStrategy::default();
        for &(ready, in_flight, consumers, prefetch, ref expected) in cases {
            let got = strategy.evaluate("g", &metrics(ready, in_flight, consumers, prefetch));
            assert_eq!(
                &got, expected,
                "ready={ready} in_flight={in_flight} consumers={consumers} prefetch={prefetch}"
            );
        }
    }

    #[test]
    fn threshold_strategy_uses_its_multipliers() {
        let mut strategy = ThresholdStrategy {
            scale_up_multiplier: 1.0,
            scale_down_multiplier: 0.1,
        };
        // Capacity 10: up above 10 ready, down below 1.
        assert_eq!(
            strategy.evaluate("g", &metrics(11, 0, 1, 10)),
            ScalingDecision::ScaleUp(1)
        );
        assert_eq!(strategy.evaluate("g", &metrics(1, 0, 1, 10)), ScalingDecision::Hold);
        assert_eq!(
            strategy.evaluate("g", &metrics(0, 0, 1, 10)),
            ScalingDecision::ScaleDown(1)
        );
    }

    /// A strategy that returns whatever the test sets, and records `gc` calls.
    #[derive(Default)]
    struct Scripted {
        next: HashMap<String, ScalingDecision>,
        gc_calls: Vec<Vec<String>>,
    }

    impl Scripted {
        fn set(&mut self, group: &str, decision: ScalingDecision) {
            self.next.insert(group.to_owned(), decision);
        }
    }

    impl ScalingStrategy for Scripted {
        fn evaluate(&mut self, group: &str, _metrics: &ScalingMetrics) -> ScalingDecision {
            self.next.get(group).cloned().unwrap_or(ScalingDecision::Hold)
        }

        fn gc(&mut self, active: &[impl AsRef<str>]) {
            self.gc_calls
                .push(active.iter().map(|g| g.as_ref().to_owned()).collect());
        }
    }

    const HYSTERESIS: Duration = Duration::from_secs(10);
    const COOLDOWN: Duration = Duration::from_secs(30);

    fn stabilized() -> Stabilized<Scripted> {
        Stabilized::new(Scripted::default(), HYSTERESIS, COOLDOWN)
    }

    fn eval(s: &mut Stabilized<Scripted>, group: &str) -> ScalingDecision {
        s.evaluate(group, &metrics(0, 0, 1, 1))
    }

    async fn advance(secs: u64) {
        tokio::time::advance(Duration::from_secs(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn stabilized_waits_for_hysteresis() {
        let mut s = stabilized();
        s.inner.set("g", ScalingDecision::ScaleUp(1));
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(5).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(4).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(1).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::ScaleUp(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stabilized_passes_on_the_current_step_size() {
        let mut s = stabilized();
        s.inner.set("g", ScalingDecision::ScaleUp(1));
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(10).await;
        s.inner.set("g", ScalingDecision::ScaleUp(3));
        assert_eq!(eval(&mut s, "g"), ScalingDecision::ScaleUp(3));
    }

    #[tokio::test(start_paused = true)]
    async fn stabilized_restarts_hysteresis_on_hold_or_direction_change() {
        let mut s = stabilized();
        s.inner.set("g", ScalingDecision::ScaleUp(1));
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(8).await;
        s.inner.set("g", ScalingDecision::Hold);
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        s.inner.set("g", ScalingDecision::ScaleUp(1));
        advance(1).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold, "clock restarted");
        advance(8).await;
        s.inner.set("g", ScalingDecision::ScaleDown(1));
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold, "direction changed");
        advance(9).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(1).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::ScaleDown(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stabilized_holds_during_cooldown() {
        let mut s = Stabilized::new(Scripted::default(), Duration::ZERO, COOLDOWN);
        s.inner.set("g", ScalingDecision::ScaleUp(1));
        assert_eq!(
            eval(&mut s, "g"),
            ScalingDecision::ScaleUp(1),
            "zero hysteresis acts at once"
        );
        for _ in 0..5 {
            advance(5).await;
            assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold, "cooling down");
        }
        advance(4).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold, "29 s after scaling");
        advance(1).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::ScaleUp(1), "cooldown over");
    }

    #[tokio::test(start_paused = true)]
    async fn stabilized_hysteresis_after_cooldown() {
        let mut s = stabilized();
        s.inner.set("g", ScalingDecision::ScaleDown(1));
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(10).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::ScaleDown(1));

        // Inner holds for most of the cooldown, then asks again: the request must still persist for the
        // hysteresis duration, and cannot be acted on before the cooldown ends.
        s.inner.set("g", ScalingDecision::Hold);
        advance(25).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        s.inner.set("g", ScalingDecision::ScaleDown(1));
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(5).await; // cooldown over, but only 5 s of hysteresis
        assert_eq!(eval(&mut s, "g"), ScalingDecision::Hold);
        advance(5).await;
        assert_eq!(eval(&mut s, "g"), ScalingDecision::ScaleDown(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stabilized_keeps_groups_apart() {
        let mut s = stabilized();
        s.inner.set("a", ScalingDecision::ScaleUp(1));
        assert_eq!(eval(&mut s, "a"), ScalingDecision::Hold);
        advance(10).await;
        s.inner.set("b", ScalingDecision::ScaleUp(1));
        assert_eq!(eval(&mut s, "b"), ScalingDecision::Hold, "b just started");
        assert_eq!(eval(&mut s, "a"), ScalingDecision::ScaleUp(1));
        advance(10).await;
        assert_eq!(
            eval(&mut s, "b"),
            ScalingDecision::ScaleUp(1),
            "a's cooldown is not b's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stabilized_gc_forgets_inactive_groups_and_forwards() {
        let mut s = stabilized();
        s.inner.set("a", ScalingDecision::ScaleUp(1));
        s.inner.set("b", ScalingDecision::ScaleUp(1));
        eval(&mut s, "a");
        eval(&mut s, "b");
        assert_eq!(s.groups.len(), 2);

        s.gc(&["b"]);
        assert_eq!(s.groups.len(), 1);
        assert!(s.groups.contains_key("b"));
        assert_eq!(s.inner.gc_calls, vec![vec!["b".to_owned()]]);

        // "a" starts over: its earlier pending decision is gone.
        advance(10).await;
        assert_eq!(eval(&mut s, "a"), ScalingDecision::Hold);
        assert_eq!(eval(&mut s, "b"), ScalingDecision::ScaleUp(1));
    }

    /// What the in-test backend was asked to do.
    #[derive(Default)]
    struct Calls {
        fetched: Vec<String>,
        scaled: Vec<(String, ScalingDecision)>,
    }

    /// A backend serving fixed metrics per group, failing where told to, and recording calls.
    #[derive(Clone, Default)]
    struct FakeBackend {
        groups: Vec<String>,
        metrics: HashMap<String, ScalingMetrics>,
        fail_list: bool,
        fail_scale: HashSet<String>,
        /// `list_groups` never completes, to test cancellation.
        hang: bool,
        calls: Arc<Mutex<Calls>>,
    }

    impl FakeBackend {
        fn with_group(mut self, group: &str, metrics: ScalingMetrics) -> Self {
            self.groups.push(group.to_owned());
            self.metrics.insert(group.to_owned(), metrics);
            self
        }

        fn scaled(&self) -> Vec<(String, ScalingDecision)> {
            self.calls.lock().unwrap().scaled.clone()
        }

        fn fetched(&self) -> Vec<String> {
            self.calls.lock().unwrap().fetched.clone()
        }
    }

    impl AutoscalerBackend for FakeBackend {
        type GroupId = String;

        async fn list_groups(&self) -> Result<Vec<String>> {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail_list {
                return Err(ShoveError::Connection("registry unavailable".into()));
            }
            Ok(self.groups.clone())
        }

        async fn fetch_metrics(&self, group: &String) -> Result<ScalingMetrics> {
            self.calls.lock().unwrap().fetched.push(group.clone());
            self.metrics
                .get(group)
                .cloned()
                .ok_or_else(|| ShoveError::Topology(format!("no queue for {group}")))
        }

        async fn scale(&self, group: &String, decision: ScalingDecision) -> Result<()> {
            self.calls.lock().unwrap().scaled.push((group.clone(), decision));
            if self.fail_scale.contains(group) {
                return Err(ShoveError::Connection("scale failed".into()));
            }
            Ok(())
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn poll_and_scale_applies_non_hold_decisions() {
        let backend = FakeBackend::default()
            .with_group("busy", metrics(100, 10, 2, 10))
            .with_group("steady", metrics(15, 10, 2, 10))
            .with_group("idle", metrics(0, 1, 2, 10));
        let mut autoscaler = Autoscaler::new(backend.clone(), ThresholdStrategy::default(), Duration::from_secs(5));
        autoscaler.poll_and_scale().await;
        assert_eq!(backend.fetched(), ["busy", "steady", "idle"]);
        assert_eq!(
            backend.scaled(),
            [
                ("busy".to_owned(), ScalingDecision::ScaleUp(1)),
                ("idle".to_owned(), ScalingDecision::ScaleDown(1)),
            ]
        );
    }

    #[tokio::test]
    async fn poll_and_scale_continues_past_errors() {
        let mut backend = FakeBackend::default()
            .with_group("broken-scale", metrics(100, 0, 1, 1))
            .with_group("ok", metrics(100, 0, 1, 1));
        // A group whose metrics cannot be fetched.
        backend.groups.insert(0, "missing".to_owned());
        backend.fail_scale.insert("broken-scale".to_owned());
        let mut autoscaler = Autoscaler::new(backend.clone(), ThresholdStrategy::default(), Duration::from_secs(5));
        autoscaler.poll_and_scale().await;
        assert_eq!(backend.fetched(), ["missing", "broken-scale", "ok"]);
        assert_eq!(
            backend.scaled(),
            [
                ("broken-scale".to_owned(), ScalingDecision::ScaleUp(1)),
                ("ok".to_owned(), ScalingDecision::ScaleUp(1)),
            ]
        );
    }

    #[tokio::test]
    async fn poll_and_scale_skips_the_poll_when_listing_fails() {
        let mut backend = FakeBackend::default().with_group("g", metrics(100, 0, 1, 1));
        backend.fail_list = true;
        let mut autoscaler = Autoscaler::new(backend.clone(), Scripted::default(), Duration::ZERO);
        autoscaler.poll_and_scale().await;
        assert!(backend.fetched().is_empty());
        assert!(autoscaler.strategy.gc_calls.is_empty(), "no gc without a group list");
    }

    #[tokio::test]
    async fn poll_and_scale_gcs_with_listed_groups() {
        let backend = FakeBackend::default()
            .with_group("a", metrics(0, 0, 1, 1))
            .with_group("b", metrics(0, 0, 1, 1));
        let mut strategy = Scripted::default();
        strategy.set("b", ScalingDecision::ScaleDown(2));
        let mut autoscaler = Autoscaler::new(backend.clone(), strategy, Duration::ZERO);
        autoscaler.poll_and_scale().await;
        assert_eq!(autoscaler.strategy.gc_calls, vec![vec!["a".to_owned(), "b".to_owned()]]);
        assert_eq!(backend.scaled(), [("b".to_owned(), ScalingDecision::ScaleDown(2))]);
    }

    #[tokio::test(start_paused = true)]
    async fn run_polls_every_interval_until_cancelled() {
        let backend = FakeBackend::default().with_group("g", metrics(0, 0, 1, 1));
        let mut autoscaler = Autoscaler::new(backend.clone(), ThresholdStrategy::default(), Duration::from_secs(5));
        let shutdown = CancellationToken::new();
        let run = autoscaler.run(shutdown.clone());
        assert_send(&run);
        let stopper = async {
            // Polls at t = 0, 5, 10; cancel at t = 12.
            tokio::time::sleep(Duration::from_secs(12)).await;
            shutdown.cancel();
        };
        tokio::join!(run, stopper);
        assert_eq!(backend.fetched().len(), 3);
    }

    #[tokio::test]
    async fn run_returns_when_already_cancelled() {
        let backend = FakeBackend::default().with_group("g", metrics(100, 0, 1, 1));
        let mut autoscaler = Autoscaler::new(backend.clone(), ThresholdStrategy::default(), Duration::ZERO);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), autoscaler.run(shutdown))
            .await
            .expect("run returns once cancelled");
        assert!(backend.scaled().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn run_returns_when_cancelled_during_a_stuck_poll() {
        let backend = FakeBackend {
            hang: true,
            ..FakeBackend::default()
        };
        let mut autoscaler = Autoscaler::new(backend, ThresholdStrategy::default(), Duration::from_secs(5));
        let shutdown = CancellationToken::new();
        let canceller = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        tokio::time::timeout(Duration::from_secs(60), autoscaler.run(shutdown))
            .await
            .expect("run returns once cancelled");
    }
}
