//! Contract rules 19–20: metric names, labels and reason values; audit records for every attempt.
//!
//! Metrics are read from a `metrics_util` `DebuggingRecorder` installed once as the global recorder of
//! the test binary. Scenarios filter samples by their own (unique) topic label, so they can run in
//! parallel with everything else.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shove::{
    AuditHandler, AuditRecord, Audited, ConsumerOptions, MessageMetadata, Outcome, ShoveError, Topic, TopologyBuilder,
    define_topic,
};

use super::{DRAIN, FnHandler, Harness, Msg, Probe, Recorder, Running, headers, ms, unique};

#[cfg(feature = "metrics")]
mod recorded {
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::super::{WAIT, eventually};

    /// The metric names of the contract (rule 19), with shove's default prefix.
    pub const NAMES: [&str; 9] = [
        "shove_messages_consumed_total",
        "shove_messages_failed_total",
        "shove_messages_published_total",
        "shove_message_processing_duration_seconds",
        "shove_message_publish_duration_seconds",
        "shove_message_size_bytes",
        "shove_messages_inflight",
        "shove_autoscaler_decisions_total",
        "shove_backend_errors_total",
    ];

    /// One recorded series.
    #[derive(Debug)]
    pub struct Sample {
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: DebugValue,
    }

    impl Sample {
        pub fn label(&self, key: &str) -> Option<&str> {
            self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
        }

        pub fn label_keys(&self) -> BTreeSet<&str> {
            self.labels.iter().map(|(k, _)| k.as_str()).collect()
        }

        fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
            self.name == name && labels.iter().all(|(k, v)| self.label(k) == Some(*v))
        }
    }

    fn snapshotter() -> &'static Snapshotter {
        static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
        SNAPSHOTTER.get_or_init(|| {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            recorder
                .install()
                .expect("the conformance binary installs the only global metrics recorder");
            snapshotter
        })
    }

    /// Installs the recorder (idempotent). Call before the scenario emits anything.
    pub fn install() {
        snapshotter();
    }

    /// Every series recorded so far (histogram values are drained by each call).
    pub fn samples() -> Vec<Sample> {
        snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                Sample {
                    name: key.name().to_string(),
                    labels: key
                        .labels()
                        .map(|l| (l.key().to_string(), l.value().to_string()))
                        .collect(),
                    value,
                }
            })
            .collect()
    }

    /// The sum of the counters named `name` whose labels include `labels`.
    pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
        samples()
            .iter()
            .filter(|s| s.matches(name, labels))
            .map(|s| match s.value {
                DebugValue::Counter(v) => v,
                _ => panic!("{name} is not a counter: {s:?}"),
            })
            .sum()
    }

    /// Whether a series named `name` with `labels` exists.
    pub fn exists(name: &str, labels: &[(&str, &str)]) -> bool {
        samples().iter().any(|s| s.matches(name, labels))
    }

    /// The value of the gauge named `name` with `labels`.
    pub fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples()
            .iter()
            .find(|s| s.matches(name, labels))
            .map(|s| match &s.value {
                DebugValue::Gauge(v) => v.into_inner(),
                other => panic!("{name} is not a gauge: {other:?}"),
            })
    }

    /// Waits until the counter reaches at least `at_least`.
    pub async fn wait_counter(name: &str, labels: &[(&str, &str)], at_least: u64) {
        eventually(&format!("{name}{labels:?} >= {at_least}"), WAIT, || async {
            counter(name, labels) >= at_least
        })
        .await;
    }
}

/// Rule 19: the metric names, label keys and reason/outcome values of a consumer that sees every kind
/// of delivery: ack, retry, reject, defer, timeout, panic, oversize, undecodable, budget exhausted.
#[cfg(feature = "metrics")]
pub async fn metric_names_labels_and_reasons<H: Harness>() {
    use recorded::{NAMES, counter, exists, gauge, samples, wait_counter};
    use std::sync::atomic::AtomicBool;

    recorded::install();
    fn queue() -> &'static str {
        static QUEUE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        QUEUE.get_or_init(|| unique("metrics"))
    }
    define_topic!(
        Measured,
        Msg,
        TopologyBuilder::new(queue()).hold_queue(ms(20)).dlq().build()
    );
    define_topic!(
        MeasuredRaw,
        Vec<u8>,
        TopologyBuilder::new(queue()).hold_queue(ms(20)).dlq().build(),
        codec = shove::RawBytesCodec
    );
    let broker = H::broker().await;
    broker.topology().declare::<Measured>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let acked = Recorder::<String>::new();
    let deferred = Arc::new(AtomicBool::new(false));
    let (a, d) = (acked.clone(), deferred.clone());
    let handler = FnHandler::new(move |m: Msg, meta: MessageMetadata| {
        let (a, d) = (a.clone(), d.clone());
        async move {
            let outcome = match (m.key.as_str(), meta.retry_count) {
                ("retry", _) => Outcome::Retry,
                ("reject", _) => Outcome::Reject,
                ("defer", _) if !d.swap(true, Ordering::SeqCst) => Outcome::Defer,
                ("panic", 0) => panic!("conformance: deliberate handler panic"),
                ("slow", 0) => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Outcome::Ack
                }
                _ => Outcome::Ack,
            };
            if matches!(outcome, Outcome::Ack) {
                a.push(m.key);
            }
            outcome
        }
    });
    let dead = Probe::<Vec<u8>>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Measured, _>(
        handler,
        ConsumerOptions::new()
            .with_max_retries(1)
            .with_handler_timeout(ms(100))
            .with_max_message_size(64),
    )
    .expect("register");
    sup.register_dlq::<MeasuredRaw, _>(dead.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    for key in ["ack", "retry", "reject", "defer", "panic", "slow"] {
        publisher.publish::<Measured>(&Msg::new(key, 0)).await.expect("publish");
    }
    publisher
        .publish::<Measured>(&Msg::new("x".repeat(100), 0))
        .await
        .expect("publish oversize");
    publisher
        .publish::<MeasuredRaw>(&b"\xffnot json".to_vec())
        .await
        .expect("publish undecodable");
    acked.wait_for("4 acknowledged messages", |a| a.len() >= 4).await;
    dead.dead.wait_for("4 dead-lettered messages", |d| d.len() >= 4).await;

    let q = queue();
    let consumed = "shove_messages_consumed_total";
    let failed = "shove_messages_failed_total";
    wait_counter(consumed, &[("topic", q), ("outcome", "ack")], 4).await;
    for reason in [
        "timeout",
        "panic",
        "oversize",
        "deserialize",
        "max_retries_exceeded",
        "rejected",
    ] {
        wait_counter(failed, &[("topic", q), ("reason", reason)], 1).await;
    }
    let _ = running.stop().await;

    assert_eq!(counter("shove_messages_published_total", &[("topic", q)]), 8);
    assert_eq!(counter(consumed, &[("topic", q), ("outcome", "ack")]), 4);
    for outcome in ["retry", "reject", "defer", "dead_letter"] {
        assert!(
            counter(consumed, &[("topic", q), ("outcome", outcome)]) >= 1,
            "{consumed} with outcome={outcome} for topic {q}"
        );
    }
    for reason in [
        "timeout",
        "panic",
        "oversize",
        "deserialize",
        "max_retries_exceeded",
        "rejected",
    ] {
        assert_eq!(
            counter(failed, &[("topic", q), ("reason", reason)]),
            1,
            "{failed} with reason={reason}: one such failure happened"
        );
    }
    for histogram in [
        "shove_message_processing_duration_seconds",
        "shove_message_publish_duration_seconds",
        "shove_message_size_bytes",
    ] {
        assert!(exists(histogram, &[("topic", q)]), "{histogram} for topic {q}");
    }
    assert_eq!(
        gauge("shove_messages_inflight", &[("topic", q)]),
        Some(0.0),
        "no delivery is in flight after the drain"
    );

    let ours: Vec<_> = samples().into_iter().filter(|s| s.label("topic") == Some(q)).collect();
    for s in &ours {
        assert!(NAMES.contains(&s.name.as_str()), "undocumented metric name: {s:?}");
        let keys = s.label_keys();
        let expected: &[&str] = match s.name.as_str() {
            "shove_messages_consumed_total" => &["outcome", "topic"],
            "shove_messages_failed_total" => &["reason", "topic"],
            _ => &["topic"],
        };
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), expected, "label keys of {s:?}");
        if let Some(outcome) = s.label("outcome") {
            assert!(
                ["ack", "retry", "reject", "defer", "dead_letter"].contains(&outcome),
                "undocumented outcome label: {s:?}"
            );
        }
        if let Some(reason) = s.label("reason") {
            assert!(
                [
                    "timeout",
                    "panic",
                    "oversize",
                    "deserialize",
                    "max_retries_exceeded",
                    "rejected",
                    "sequence_poisoned"
                ]
                .contains(&reason),
                "undocumented reason label: {s:?}"
            );
        }
    }
}

/// Rule 19: poisoned messages of a `FailAll` key are counted with reason `sequence_poisoned`, under the
/// sequenced topic's main queue name.
#[cfg(feature = "metrics")]
pub async fn sequence_poisoned_reason_metric<H: Harness>() {
    use recorded::{counter, wait_counter};
    use shove::{SequenceFailure, define_sequenced_topic};

    recorded::install();
    define_sequenced_topic!(
        PoisonMetrics,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("metrics-poison"))
            .sequenced(SequenceFailure::FailAll)
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let q = PoisonMetrics::topology().queue();
    let broker = H::broker().await;
    broker.topology().declare::<PoisonMetrics>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<PoisonMetrics, _>(
        probe.handler(|m, _| if m.n == 0 { Outcome::Reject } else { Outcome::Ack }),
        ConsumerOptions::new(),
    )
    .await
    .expect("register_fifo");
    sup.register_dlq::<PoisonMetrics, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);
    publisher
        .publish_batch::<PoisonMetrics>(&[Msg::new("k", 0), Msg::new("k", 1), Msg::new("k", 2)])
        .await
        .expect("publish_batch");
    probe.dead.wait_for("3 dead-lettered messages", |d| d.len() >= 3).await;
    let failed = "shove_messages_failed_total";
    wait_counter(failed, &[("topic", q), ("reason", "sequence_poisoned")], 2).await;
    wait_counter(failed, &[("topic", q), ("reason", "rejected")], 1).await;
    let _ = running.stop().await;
    assert_eq!(counter(failed, &[("topic", q), ("reason", "sequence_poisoned")]), 2);
    assert_eq!(counter(failed, &[("topic", q), ("reason", "rejected")]), 1);
}

/// Rule 19: the autoscaler's decisions are counted per group with `decision` `scale_up` / `scale_down`.
#[cfg(feature = "metrics")]
pub async fn autoscaler_decision_metric<H: Harness>() {
    use recorded::wait_counter;
    use shove::AutoscalerConfig;
    use tokio_util::sync::CancellationToken;

    use super::{GroupSpec, WAIT};

    recorded::install();
    define_topic!(
        Scaled,
        Msg,
        TopologyBuilder::new(unique("metrics-autoscale")).dlq().build()
    );
    let q = Scaled::topology().queue();
    let broker = H::broker().await;
    broker.topology().declare::<Scaled>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let gate = CancellationToken::new();
    let done = Recorder::<u32>::new();
    let (g, d) = (gate.clone(), done.clone());
    let handler = FnHandler::new(move |m: Msg, _: MessageMetadata| {
        let (g, d) = (g.clone(), d.clone());
        async move {
            g.cancelled().await;
            d.push(m.n);
            Outcome::Ack
        }
    });
    let mut group = broker.consumer_group();
    group
        .register::<Scaled, _>(H::group_config(&GroupSpec::new(1, 3).prefetch(1)), move || {
            handler.clone()
        })
        .await
        .expect("register");
    let group = group.enable_autoscaling(AutoscalerConfig {
        poll_interval: ms(50),
        scale_up_multiplier: 2.0,
        scale_down_multiplier: 0.5,
        hysteresis_duration: Duration::ZERO,
        cooldown_duration: Duration::ZERO,
    });
    let running = Running::group(group, DRAIN);
    for n in 0..20 {
        publisher.publish::<Scaled>(&Msg::new("m", n)).await.expect("publish");
    }
    let decisions = "shove_autoscaler_decisions_total";
    wait_counter(decisions, &[("group", q), ("decision", "scale_up")], 1).await;
    gate.cancel();
    done.wait_for_within("all messages", WAIT, |d| d.len() >= 20).await;
    wait_counter(decisions, &[("group", q), ("decision", "scale_down")], 1).await;
    let _ = running.stop().await;
}

/// Collects audit records; fails the first `fail_first` calls.
struct Collect {
    records: Arc<Recorder<AuditRecord<Msg>>>,
    calls: Arc<std::sync::atomic::AtomicU32>,
    fail_first: u32,
}

impl<T: Topic<Message = Msg>> AuditHandler<T> for Collect {
    async fn audit(&self, record: &AuditRecord<Msg>) -> shove::error::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(ShoveError::Unknown("conformance: audit store unavailable".into()));
        }
        self.records.push(record.clone());
        Ok(())
    }
}

/// Rule 20: an `Audited` handler produces one record per delivery attempt — first attempt, retries,
/// attempts that panic (recorded as `Retry`) — with the topic's queue, the payload, the attempt's
/// metadata and outcome, and the trace id (`x-trace-id` header, else the delivery id).
pub async fn audit_records_every_attempt<H: Harness>() {
    define_topic!(
        AuditedTopic,
        Msg,
        TopologyBuilder::new(unique("audit")).hold_queue(ms(20)).dlq().build()
    );
    let q = AuditedTopic::topology().queue();
    let broker = H::broker().await;
    broker.topology().declare::<AuditedTopic>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let records = Recorder::<AuditRecord<Msg>>::new();
    let inner = FnHandler::new(|m: Msg, meta: MessageMetadata| async move {
        match (m.key.as_str(), meta.retry_count) {
            ("retried", 0 | 1) => Outcome::Retry,
            ("rejected", _) => Outcome::Reject,
            ("panics", 0) => panic!("conformance: deliberate handler panic"),
            _ => Outcome::Ack,
        }
    });
    let handler = Audited::new(
        inner,
        Collect {
            records: records.clone(),
            calls: Arc::default(),
            fail_first: 0,
        },
    );
    let dead = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<AuditedTopic, _>(handler, ConsumerOptions::new().with_max_retries(5))
        .expect("register");
    sup.register_dlq::<AuditedTopic, _>(dead.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let retried = Msg::new("retried", 0);
    let traced = Msg::new("traced", 0);
    let rejected = Msg::new("rejected", 0);
    publisher.publish::<AuditedTopic>(&retried).await.expect("publish");
    publisher
        .publish_with_headers::<AuditedTopic>(&traced, headers([("x-trace-id", "trace-123")]))
        .await
        .expect("publish_with_headers");
    publisher.publish::<AuditedTopic>(&rejected).await.expect("publish");
    let all = records
        .wait_for("records of the retried, traced and rejected messages", |r| {
            r.iter().filter(|r| r.payload == retried).count() >= 3
                && r.iter().any(|r| r.payload == traced)
                && r.iter().any(|r| r.payload == rejected)
        })
        .await;

    let of = |m: &Msg| all.iter().filter(|r| &r.payload == m).cloned().collect::<Vec<_>>();
    let r = of(&retried);
    assert_eq!(
        r.iter().map(|r| r.metadata.retry_count).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "one record per attempt"
    );
    assert!(
        matches!(
            r.iter().map(|r| r.outcome.clone()).collect::<Vec<_>>()[..],
            [Outcome::Retry, Outcome::Retry, Outcome::Ack]
        ),
        "outcomes per attempt: {r:#?}"
    );
    for rec in &r {
        assert_eq!(rec.topic, q);
        assert_eq!(rec.metadata.delivery_id, r[0].metadata.delivery_id);
        assert_eq!(
            rec.trace_id, rec.metadata.delivery_id,
            "trace_id defaults to the delivery id"
        );
    }
    let t = of(&traced);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].trace_id, "trace-123", "trace_id comes from the x-trace-id header");
    let j = of(&rejected);
    assert_eq!(j.len(), 1);
    assert!(matches!(j[0].outcome, Outcome::Reject), "{j:#?}");

    // An attempt that panics is a delivery attempt too: audited as the Retry it amounts to.
    let panics = Msg::new("panics", 0);
    publisher.publish::<AuditedTopic>(&panics).await.expect("publish");
    let all = records
        .wait_for("the acknowledged retry of the panicking message", |r| {
            r.iter().any(|r| r.payload == panics && r.metadata.retry_count == 1)
        })
        .await;
    let attempts: Vec<(u32, Outcome)> = all
        .iter()
        .filter(|r| r.payload == panics)
        .map(|r| (r.metadata.retry_count, r.outcome.clone()))
        .collect();
    assert!(
        matches!(attempts[..], [(0, Outcome::Retry), (1, Outcome::Ack)]),
        "expected a Retry record for the panicking attempt and an Ack record for the retry, got {attempts:?}"
    );

    let _ = running.stop().await;
}

/// Rule 20: an attempt that exceeds the handler timeout is a delivery attempt too, and must leave an
/// audit record (as the `Retry` it amounts to) before the retry is audited.
pub async fn audit_records_timed_out_attempts<H: Harness>() {
    define_topic!(
        AuditedSlow,
        Msg,
        TopologyBuilder::new(unique("audit-timeout"))
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<AuditedSlow>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let records = Recorder::<AuditRecord<Msg>>::new();
    let inner = FnHandler::new(|_: Msg, meta: MessageMetadata| async move {
        if meta.retry_count == 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Outcome::Ack
    });
    let handler = Audited::new(
        inner,
        Collect {
            records: records.clone(),
            calls: Arc::default(),
            fail_first: 0,
        },
    );
    let mut sup = broker.consumer_supervisor();
    sup.register::<AuditedSlow, _>(
        handler,
        ConsumerOptions::new().with_max_retries(5).with_handler_timeout(ms(100)),
    )
    .expect("register");
    let running = Running::supervisor(sup, DRAIN);

    let slow = Msg::new("slow", 0);
    publisher.publish::<AuditedSlow>(&slow).await.expect("publish");
    // The timed-out attempt's record is stored by a task of its own: it may land after the retry's.
    let all = records
        .wait_for("the records of both attempts", |r| {
            r.iter().any(|r| r.metadata.retry_count == 0) && r.iter().any(|r| r.metadata.retry_count == 1)
        })
        .await;
    let mut attempts: Vec<(u32, Outcome)> = all
        .iter()
        .map(|r| (r.metadata.retry_count, r.outcome.clone()))
        .collect();
    attempts.sort_by_key(|(retry_count, _)| *retry_count);
    assert!(
        matches!(attempts[..], [(0, Outcome::Retry), (1, Outcome::Ack)]),
        "expected a Retry record for the timed-out attempt and an Ack record for the retry, got {attempts:?}"
    );
    let _ = running.stop().await;
}

/// Rule 20 with a failing audit store: the attempt is not lost without a record — it is redelivered and
/// audited again (as documented on `Audited`), and not dead-lettered.
pub async fn audit_failure_redelivers_and_audits_again<H: Harness>() {
    define_topic!(
        AuditRetry,
        Msg,
        TopologyBuilder::new(unique("audit-fail"))
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<AuditRetry>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let records = Recorder::<AuditRecord<Msg>>::new();
    let probe = Probe::<Msg>::new();
    let handler = Audited::new(
        probe.handler(|_, _| Outcome::Ack),
        Collect {
            records: records.clone(),
            calls: Arc::default(),
            fail_first: 1,
        },
    );
    let mut sup = broker.consumer_supervisor();
    sup.register::<AuditRetry, _>(handler, ConsumerOptions::new().with_max_retries(3))
        .expect("register");
    sup.register_dlq::<AuditRetry, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let m = Msg::new("m", 0);
    publisher.publish::<AuditRetry>(&m).await.expect("publish");
    let stored = records.wait_for("a stored record", |r| !r.is_empty()).await;
    let calls = probe.calls_of(&m);
    assert_eq!(
        calls.iter().map(|c| c.meta.retry_count).collect::<Vec<_>>(),
        vec![0, 1],
        "the attempt whose record could not be stored is redelivered"
    );
    assert_eq!(stored[0].metadata.retry_count, 1);
    assert!(matches!(stored[0].outcome, Outcome::Ack));

    publisher
        .publish::<AuditRetry>(&Msg::new("after", 0))
        .await
        .expect("publish");
    records.wait_for("the next message's record", |r| r.len() >= 2).await;
    assert!(probe.dead.snapshot().is_empty(), "nothing is dead-lettered");
    let _ = running.stop().await;
}

/// Rule 20 with the `audit` feature: `ShoveAuditHandler` publishes one record per attempt to the
/// `AuditLog` topic, where a consumer receives them.
#[cfg(feature = "audit")]
pub async fn shove_audit_handler_publishes_to_audit_log<H: Harness>() {
    use shove::{AuditLog, ShoveAuditHandler};

    define_topic!(
        Logged,
        Msg,
        TopologyBuilder::new(unique("audit-log"))
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let q = Logged::topology().queue();
    let broker = H::broker().await;
    broker.topology().declare::<Logged>().await.expect("declare");
    broker.topology().declare::<AuditLog>().await.expect("declare AuditLog");
    let publisher = broker.publisher().await.expect("publisher");
    let log = Probe::<AuditRecord<serde_json::Value>>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Logged, _>(
        Audited::new(
            FnHandler::new(|_: Msg, meta: MessageMetadata| async move {
                if meta.retry_count == 0 {
                    Outcome::Retry
                } else {
                    Outcome::Ack
                }
            }),
            ShoveAuditHandler::for_publisher(&publisher),
        ),
        ConsumerOptions::new(),
    )
    .expect("register");
    sup.register::<AuditLog, _>(log.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register AuditLog");
    let running = Running::supervisor(sup, DRAIN);

    let m = Msg::new("logged", 7);
    publisher.publish::<Logged>(&m).await.expect("publish");
    let seen = log
        .live
        .wait_for("two audit records for the topic", |s| {
            s.iter().filter(|s| s.msg.topic == q).count() >= 2
        })
        .await;
    let ours: Vec<_> = seen.iter().filter(|s| s.msg.topic == q).map(|s| &s.msg).collect();
    assert_eq!(
        ours.iter().map(|r| r.metadata.retry_count).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(matches!(ours[0].outcome, Outcome::Retry));
    assert!(matches!(ours[1].outcome, Outcome::Ack));
    let payload = serde_json::to_value(&m).expect("json");
    assert!(ours.iter().all(|r| r.payload == payload), "{ours:#?}");
    let _ = running.stop().await;
}
