//! Metrics shove emits about publishing, consuming and autoscaling.
//!
//! With the `metrics` cargo feature, shove records through the [`metrics`](https://docs.rs/metrics)
//! facade (0.24): install any recorder/exporter (Prometheus, StatsD, …) in your application and the
//! numbers below appear there. Without the feature every recording call compiles to nothing. The
//! metric names, types, labels and label values are the same on every backend.
//!
//! Every name starts with a prefix, `shove` unless changed once at startup with [`set_prefix`].
//!
//! Each label set is registered with the recorder once and its handle kept, so recording costs a map lookup
//! and an atomic update per message, never an allocation. A handle stays bound to the recorder that was
//! installed when it was registered: install your recorder before the first message is published or
//! consumed.
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `{prefix}_messages_consumed_total` | counter | `topic`, `outcome` | Deliveries a consumer finished, by what became of them. `outcome` is `ack`, `retry`, `reject`, `defer` or `dead_letter`. |
//! | `{prefix}_messages_failed_total` | counter | `topic`, `reason` | Deliveries that failed, by why. `reason` is `timeout` (handler exceeded its timeout), `panic` (handler panicked), `oversize` (payload above the size limit), `deserialize` (payload could not be decoded), `max_retries_exceeded` (retry budget used up), `rejected` (handler returned `Reject`) or `sequence_poisoned` (an earlier message with the same sequence key failed). |
//! | `{prefix}_messages_published_total` | counter | `topic` | Messages the broker accepted from a publisher. |
//! | `{prefix}_message_processing_duration_seconds` | histogram | `topic` | Time a handler spent on one delivery, in seconds. |
//! | `{prefix}_message_publish_duration_seconds` | histogram | `topic` | Time one publish call took until the broker confirmed it, in seconds. |
//! | `{prefix}_message_size_bytes` | histogram | `topic` | Encoded payload size of each consumed message, in bytes. |
//! | `{prefix}_messages_inflight` | gauge | `topic` | Deliveries currently being processed by handlers. |
//! | `{prefix}_autoscaler_decisions_total` | counter | `group`, `decision` | Scaling decisions the autoscaler acted on. `decision` is `scale_up` or `scale_down` (holds are not counted). |
//! | `{prefix}_backend_errors_total` | counter | `backend`, `operation` | Errors a broker returned, by backend (its short name, such as `nats` or `kafka`) and by the operation that failed (such as `publish`, `ack`, `declare`). |

use std::sync::OnceLock;

/// The prefix, fixed for the life of the process by the first of: a [`set_prefix`] call, or the first
/// metric emitted (which fixes the default).
static PREFIX: OnceLock<Prefix> = OnceLock::new();

/// The chosen prefix and how it was chosen, so a late [`set_prefix`] can say what went wrong.
#[derive(Debug)]
struct Prefix {
    value: String,
    /// `true` when set by [`set_prefix`], `false` when fixed to the default by the first emission.
    explicit: bool,
}

/// Sets the prefix of every metric name shove emits (the default is `shove`, giving names such as
/// `shove_messages_consumed_total`).
///
/// Call it once, at startup, before creating any publisher, consumer or autoscaler. The prefix is
/// placed in front of `_messages_consumed_total` and the other names listed in the
/// [module docs](self), so it should be a valid metric name fragment for your exporter (for
/// Prometheus: ASCII letters, digits and `_`, not starting with a digit). It exists with or without
/// the `metrics` cargo feature; without it, nothing is emitted and the prefix has no effect.
///
/// # Panics
///
/// Panics if called a second time, or after shove has already emitted a metric under the default
/// prefix: names must not change while a process runs, or dashboards would see two half-series.
///
/// # Examples
///
/// ```no_run
/// // First thing in main, before any broker is created:
/// shove::metrics::set_prefix("billing");
/// // Metrics are now named `billing_messages_consumed_total`, …
/// ```
pub fn set_prefix(prefix: impl Into<String>) {
    set_prefix_in(&PREFIX, prefix.into());
}

/// [`set_prefix`] against a given cell, so the rules can be tested without touching process state.
fn set_prefix_in(cell: &OnceLock<Prefix>, prefix: String) {
    let mut proposed = Some(prefix);
    let current = cell.get_or_init(|| Prefix {
        value: proposed.take().unwrap_or_default(),
        explicit: true,
    });
    let Some(rejected) = proposed else {
        return;
    };
    if current.explicit {
        panic!(
            "shove::metrics::set_prefix({rejected:?}) called twice: the prefix is already {:?}. \
             Call set_prefix exactly once, at startup, before creating any publisher or consumer.",
            current.value
        );
    } else {
        panic!(
            "shove::metrics::set_prefix({rejected:?}) called after shove already emitted metrics \
             under the default prefix {:?}; metric names cannot change while the process runs. \
             Call set_prefix once at the start of main, before creating any publisher or consumer.",
            current.value
        );
    }
}

/// Whether metrics are recorded (the `metrics` cargo feature), so callers can skip work such as reading
/// the clock whose only purpose is a metric.
pub(crate) const ENABLED: bool = cfg!(feature = "metrics");

#[cfg(feature = "metrics")]
pub(crate) use emit::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use noop::*;

/// Real emission through the `metrics` facade.
#[cfg(feature = "metrics")]
mod emit {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use super::{PREFIX, Prefix};

    /// The prefix every metric name starts with unless [`super::set_prefix`] chose another one.
    const DEFAULT_PREFIX: &str = "shove";

    const CONSUMED: &str = "messages_consumed_total";
    const FAILED: &str = "messages_failed_total";
    const PUBLISHED: &str = "messages_published_total";
    const PROCESSING_DURATION: &str = "message_processing_duration_seconds";
    const PUBLISH_DURATION: &str = "message_publish_duration_seconds";
    const MESSAGE_SIZE: &str = "message_size_bytes";
    const INFLIGHT: &str = "messages_inflight";
    const AUTOSCALER_DECISIONS: &str = "autoscaler_decisions_total";
    const BACKEND_ERRORS: &str = "backend_errors_total";

    /// Every metric name with the prefix applied, built once so the hot path never formats strings.
    #[derive(Debug)]
    pub(super) struct Names {
        pub(super) consumed: String,
        pub(super) failed: String,
        pub(super) published: String,
        pub(super) processing_duration: String,
        pub(super) publish_duration: String,
        pub(super) message_size: String,
        pub(super) inflight: String,
        pub(super) autoscaler_decisions: String,
        pub(super) backend_errors: String,
    }

    impl Names {
        pub(super) fn new(prefix: &str) -> Self {
            let name = |suffix: &str| format!("{prefix}_{suffix}");
            Self {
                consumed: name(CONSUMED),
                failed: name(FAILED),
                published: name(PUBLISHED),
                processing_duration: name(PROCESSING_DURATION),
                publish_duration: name(PUBLISH_DURATION),
                message_size: name(MESSAGE_SIZE),
                inflight: name(INFLIGHT),
                autoscaler_decisions: name(AUTOSCALER_DECISIONS),
                backend_errors: name(BACKEND_ERRORS),
            }
        }
    }

    /// The prefix to emit under; fixes it to the default if [`super::set_prefix`] has not run yet.
    pub(super) fn emission_prefix(cell: &OnceLock<Prefix>) -> &str {
        &cell
            .get_or_init(|| Prefix {
                value: DEFAULT_PREFIX.to_owned(),
                explicit: false,
            })
            .value
    }

    fn names() -> &'static Names {
        static NAMES: OnceLock<Names> = OnceLock::new();
        NAMES.get_or_init(|| Names::new(emission_prefix(&PREFIX)))
    }

    /// A registered metric handle. Handles are registered once per label set and kept, so recording on
    /// the hot path costs a map lookup and an atomic update, not a label allocation per message. They
    /// bind to the recorder installed when first used: install the recorder before the first message.
    #[derive(Clone)]
    enum Handle {
        Counter(::metrics::Counter),
        Gauge(::metrics::Gauge),
        Histogram(::metrics::Histogram),
    }

    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Metric {
        Consumed,
        Failed,
        Published,
        ProcessingDuration,
        PublishDuration,
        MessageSize,
        Inflight,
        AutoscalerDecisions,
        BackendErrors,
    }

    type Cache = std::sync::RwLock<HashMap<String, HashMap<(Metric, &'static str), Handle>>>;

    /// The handle for `metric` with first label value `first` and second `second`, registered by
    /// `register` on first use.
    fn handle(metric: Metric, first: &str, second: &'static str, register: impl FnOnce() -> Handle) -> Handle {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Cache::default);
        if let Some(h) = cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(first)
            .and_then(|m| m.get(&(metric, second)))
        {
            return h.clone();
        }
        let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(first.to_owned())
            .or_default()
            .entry((metric, second))
            .or_insert_with(register)
            .clone()
    }

    fn counter(
        metric: Metric,
        first: &str,
        second: &'static str,
        register: impl FnOnce() -> ::metrics::Counter,
    ) -> ::metrics::Counter {
        match handle(metric, first, second, || Handle::Counter(register())) {
            Handle::Counter(c) => c,
            _ => unreachable!("each metric is registered with one kind"),
        }
    }

    fn histogram(metric: Metric, first: &str, register: impl FnOnce() -> ::metrics::Histogram) -> ::metrics::Histogram {
        match handle(metric, first, "", || Handle::Histogram(register())) {
            Handle::Histogram(h) => h,
            _ => unreachable!("each metric is registered with one kind"),
        }
    }

    /// One delivery failed; `reason` is one of the values listed in the module docs.
    #[inline]
    pub(crate) fn failed(topic: &str, reason: &'static str) {
        counter(
            Metric::Failed,
            topic,
            reason,
            || ::metrics::counter!(names().failed.as_str(), "topic" => topic.to_owned(), "reason" => reason),
        )
        .increment(1);
    }

    /// `count` messages were accepted by the broker.
    #[inline]
    pub(crate) fn published(topic: &str, count: u64) {
        counter(
            Metric::Published,
            topic,
            "",
            || ::metrics::counter!(names().published.as_str(), "topic" => topic.to_owned()),
        )
        .increment(count);
    }

    /// A publish call took `seconds` until confirmed.
    #[inline]
    pub(crate) fn publish_duration(topic: &str, seconds: f64) {
        histogram(
            Metric::PublishDuration,
            topic,
            || ::metrics::histogram!(names().publish_duration.as_str(), "topic" => topic.to_owned()),
        )
        .record(seconds);
    }

    /// The autoscaler acted on a decision (`scale_up` or `scale_down`) for `group`.
    #[inline]
    pub(crate) fn autoscaler_decision(group: &str, decision: &'static str) {
        counter(Metric::AutoscalerDecisions, group, decision, || {
            ::metrics::counter!(
                names().autoscaler_decisions.as_str(),
                "group" => group.to_owned(),
                "decision" => decision
            )
        })
        .increment(1);
    }

    /// A broker operation failed.
    #[inline]
    pub(crate) fn backend_error(backend: &'static str, operation: &'static str) {
        counter(Metric::BackendErrors, backend, operation, || {
            ::metrics::counter!(
                names().backend_errors.as_str(),
                "backend" => backend,
                "operation" => operation
            )
        })
        .increment(1);
    }

    /// The per-message metrics of one topic, registered once when a consumer starts, so recording a
    /// delivery costs atomic updates only (no map lookup).
    pub(crate) struct TopicMetrics {
        /// By outcome: ack, retry, reject, defer, dead_letter.
        consumed: [::metrics::Counter; 5],
        processing: ::metrics::Histogram,
        size: ::metrics::Histogram,
        inflight: ::metrics::Gauge,
    }

    const OUTCOMES: [&str; 5] = ["ack", "retry", "reject", "defer", "dead_letter"];

    impl TopicMetrics {
        pub(crate) fn new(topic: &str) -> Self {
            let consumed = OUTCOMES.map(|outcome| {
                counter(Metric::Consumed, topic, outcome, || {
                    ::metrics::counter!(names().consumed.as_str(), "topic" => topic.to_owned(), "outcome" => outcome)
                })
            });
            let inflight = match handle(Metric::Inflight, topic, "", || {
                Handle::Gauge(::metrics::gauge!(names().inflight.as_str(), "topic" => topic.to_owned()))
            }) {
                Handle::Gauge(g) => g,
                _ => unreachable!("each metric is registered with one kind"),
            };
            Self {
                consumed,
                processing: histogram(
                    Metric::ProcessingDuration,
                    topic,
                    || ::metrics::histogram!(names().processing_duration.as_str(), "topic" => topic.to_owned()),
                ),
                size: histogram(
                    Metric::MessageSize,
                    topic,
                    || ::metrics::histogram!(names().message_size.as_str(), "topic" => topic.to_owned()),
                ),
                inflight,
            }
        }

        /// One delivery finished with `outcome` (one of the consumed-counter outcomes).
        #[inline]
        pub(crate) fn consumed(&self, outcome: &'static str) {
            if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
                self.consumed[i].increment(1);
            }
        }

        /// A handler took `seconds`.
        #[inline]
        pub(crate) fn processing_duration(&self, seconds: f64) {
            self.processing.record(seconds);
        }

        /// A consumed payload was `bytes` long.
        #[inline]
        pub(crate) fn message_size(&self, bytes: usize) {
            self.size.record(bytes as f64);
        }

        /// Deliveries in progress changed by `delta`.
        #[inline]
        pub(crate) fn inflight_add(&self, delta: f64) {
            self.inflight.increment(delta);
        }
    }
}

/// Without the `metrics` feature every recording call is empty and inlined away.
#[cfg(not(feature = "metrics"))]
mod noop {

    /// One delivery failed (no-op without the `metrics` feature).
    #[inline(always)]
    pub(crate) fn failed(_topic: &str, _reason: &'static str) {}

    /// Messages were published (no-op without the `metrics` feature).
    #[inline(always)]
    pub(crate) fn published(_topic: &str, _count: u64) {}

    /// A publish call's duration (no-op without the `metrics` feature).
    #[inline(always)]
    pub(crate) fn publish_duration(_topic: &str, _seconds: f64) {}

    /// An autoscaler decision (no-op without the `metrics` feature).
    #[inline(always)]
    pub(crate) fn autoscaler_decision(_group: &str, _decision: &'static str) {}

    /// A broker error (no-op without the `metrics` feature).
    #[inline(always)]
    pub(crate) fn backend_error(_backend: &'static str, _operation: &'static str) {}

    /// The per-message metrics of one topic (no-op without the `metrics` feature).
    pub(crate) struct TopicMetrics;

    impl TopicMetrics {
        #[inline(always)]
        pub(crate) fn new(_topic: &str) -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn consumed(&self, _outcome: &'static str) {}

        #[inline(always)]
        pub(crate) fn processing_duration(&self, _seconds: f64) {}

        #[inline(always)]
        pub(crate) fn message_size(&self, _bytes: usize) {}

        #[inline(always)]
        pub(crate) fn inflight_add(&self, _delta: f64) {}
    }
}

#[cfg(test)]
mod prefix_tests {
    use std::sync::OnceLock;

    use super::*;

    // These tests use a local cell: the process-wide prefix is never touched by unit tests.

    #[test]
    fn set_prefix_once_is_accepted() {
        let cell = OnceLock::new();
        set_prefix_in(&cell, "billing".to_owned());
        let prefix = cell.get().expect("prefix set");
        assert_eq!(prefix.value, "billing");
        assert!(prefix.explicit);
    }

    #[test]
    #[should_panic(expected = "called twice")]
    fn set_prefix_twice_panics() {
        let cell = OnceLock::new();
        set_prefix_in(&cell, "billing".to_owned());
        set_prefix_in(&cell, "billing".to_owned());
    }

    #[test]
    #[should_panic(expected = "after shove already emitted metrics")]
    fn set_prefix_after_default_was_fixed_panics() {
        let cell = OnceLock::new();
        cell.set(Prefix {
            value: "shove".to_owned(),
            explicit: false,
        })
        .expect("empty cell");
        set_prefix_in(&cell, "billing".to_owned());
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::sync::OnceLock;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::{CompositeKey, MetricKind};

    use super::emit::{Names, emission_prefix};
    use super::*;

    // Unit tests never call the global `set_prefix`, so emitted names carry the default prefix.

    /// Runs `f` against a fresh local recorder and returns every metric it recorded.
    fn record(f: impl FnOnce()) -> Vec<(CompositeKey, DebugValue)> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, f);
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key, value))
            .collect()
    }

    fn labels(key: &CompositeKey) -> Vec<(String, String)> {
        let mut labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        labels
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<_> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        pairs.sort();
        pairs
    }

    /// Asserts `f` recorded exactly one metric with this kind, name, labels and value.
    fn assert_single(
        f: impl FnOnce(),
        kind: MetricKind,
        name: &str,
        expected_labels: &[(&str, &str)],
        expected_value: DebugValue,
    ) {
        let recorded = record(f);
        assert_eq!(recorded.len(), 1, "expected one metric, got {recorded:?}");
        let (key, value) = &recorded[0];
        assert_eq!(key.kind(), kind);
        assert_eq!(key.key().name(), name);
        assert_eq!(labels(key), pairs(expected_labels));
        assert_eq!(value, &expected_value);
    }

    fn histogram(values: &[f64]) -> DebugValue {
        DebugValue::Histogram(values.iter().map(|v| (*v).into()).collect())
    }

    #[test]
    fn names_are_built_from_the_prefix() {
        let names = Names::new("billing");
        assert_eq!(names.consumed, "billing_messages_consumed_total");
        assert_eq!(names.failed, "billing_messages_failed_total");
        assert_eq!(names.published, "billing_messages_published_total");
        assert_eq!(names.processing_duration, "billing_message_processing_duration_seconds");
        assert_eq!(names.publish_duration, "billing_message_publish_duration_seconds");
        assert_eq!(names.message_size, "billing_message_size_bytes");
        assert_eq!(names.inflight, "billing_messages_inflight");
        assert_eq!(names.autoscaler_decisions, "billing_autoscaler_decisions_total");
        assert_eq!(names.backend_errors, "billing_backend_errors_total");
    }

    #[test]
    fn first_emission_fixes_the_default_prefix() {
        let cell = OnceLock::new();
        assert_eq!(emission_prefix(&cell), "shove");
        let prefix = cell.get().expect("fixed by emission");
        assert!(!prefix.explicit);
    }

    #[test]
    fn emission_uses_a_prefix_set_before_it() {
        let cell = OnceLock::new();
        set_prefix_in(&cell, "billing".to_owned());
        assert_eq!(emission_prefix(&cell), "billing");
    }

    /// Asserts `recorded` holds exactly one metric named `name` with these labels, of this kind and value.
    fn assert_named(
        recorded: &[(CompositeKey, DebugValue)],
        kind: MetricKind,
        name: &str,
        expected_labels: &[(&str, &str)],
        expected_value: DebugValue,
    ) {
        let found: Vec<_> = recorded
            .iter()
            .filter(|(k, _)| k.key().name() == name && labels(k) == pairs(expected_labels))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {name} {expected_labels:?}, got {recorded:?}"
        );
        assert_eq!(found[0].0.kind(), kind);
        assert_eq!(found[0].1, expected_value);
    }

    #[test]
    fn consumed_counts_by_topic_and_outcome() {
        let topic = "orders-consumed_counts_by_topic_and_outcome";
        let recorded = record(|| {
            let m = TopicMetrics::new(topic);
            m.consumed("ack");
            m.consumed("ack");
            m.consumed("dead_letter");
        });
        let counter = |outcome, n| {
            assert_named(
                &recorded,
                MetricKind::Counter,
                "shove_messages_consumed_total",
                &[("topic", topic), ("outcome", outcome)],
                DebugValue::Counter(n),
            )
        };
        counter("ack", 2);
        counter("dead_letter", 1);
        counter("retry", 0);
    }

    #[test]
    fn failed_counts_by_topic_and_reason() {
        assert_single(
            || failed("orders-failed_counts_by_topic_and_reason", "timeout"),
            MetricKind::Counter,
            "shove_messages_failed_total",
            &[
                ("topic", "orders-failed_counts_by_topic_and_reason"),
                ("reason", "timeout"),
            ],
            DebugValue::Counter(1),
        );
    }

    #[test]
    fn published_increments_by_count() {
        assert_single(
            || {
                published("orders-published_increments_by_count", 3);
                published("orders-published_increments_by_count", 4);
            },
            MetricKind::Counter,
            "shove_messages_published_total",
            &[("topic", "orders-published_increments_by_count")],
            DebugValue::Counter(7),
        );
    }

    #[test]
    fn processing_duration_is_a_histogram() {
        let topic = "orders-processing_duration_is_a_histogram";
        let recorded = record(|| TopicMetrics::new(topic).processing_duration(0.25));
        assert_named(
            &recorded,
            MetricKind::Histogram,
            "shove_message_processing_duration_seconds",
            &[("topic", topic)],
            histogram(&[0.25]),
        );
    }

    #[test]
    fn publish_duration_is_a_histogram() {
        assert_single(
            || publish_duration("orders-publish_duration_is_a_histogram", 0.5),
            MetricKind::Histogram,
            "shove_message_publish_duration_seconds",
            &[("topic", "orders-publish_duration_is_a_histogram")],
            histogram(&[0.5]),
        );
    }

    #[test]
    fn message_size_is_a_histogram_of_bytes() {
        let topic = "orders-message_size_is_a_histogram_of_bytes";
        let recorded = record(|| TopicMetrics::new(topic).message_size(1024));
        assert_named(
            &recorded,
            MetricKind::Histogram,
            "shove_message_size_bytes",
            &[("topic", topic)],
            histogram(&[1024.0]),
        );
    }

    #[test]
    fn inflight_is_a_gauge_moved_by_delta() {
        let topic = "orders-inflight_is_a_gauge_moved_by_delta";
        let recorded = record(|| {
            let m = TopicMetrics::new(topic);
            m.inflight_add(1.0);
            m.inflight_add(1.0);
            m.inflight_add(-1.0);
        });
        assert_named(
            &recorded,
            MetricKind::Gauge,
            "shove_messages_inflight",
            &[("topic", topic)],
            DebugValue::Gauge(1.0.into()),
        );
    }

    #[test]
    fn autoscaler_decision_counts_by_group_and_decision() {
        assert_single(
            || autoscaler_decision("orders-group", "scale_up"),
            MetricKind::Counter,
            "shove_autoscaler_decisions_total",
            &[("group", "orders-group"), ("decision", "scale_up")],
            DebugValue::Counter(1),
        );
    }

    #[test]
    fn backend_error_counts_by_backend_and_operation() {
        assert_single(
            || backend_error("nats", "publish"),
            MetricKind::Counter,
            "shove_backend_errors_total",
            &[("backend", "nats"), ("operation", "publish")],
            DebugValue::Counter(1),
        );
    }
}
