//! Contract rules 5–11: what each handler outcome does, timeouts and panics, payloads that cannot be
//! handled, and the dead-letter metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shove::{ConsumerOptions, MessageMetadata, Outcome, Topic, TopologyBuilder, define_topic};

use super::{DRAIN, FnHandler, GroupSpec, Harness, Msg, Probe, Recorder, Running, Seen, headers, ms, unique};

/// The gaps between consecutive calls.
fn gaps<M>(calls: &[Seen<M>]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1].at.duration_since(w[0].at)).collect()
}

fn retry_counts<M>(calls: &[Seen<M>]) -> Vec<u32> {
    calls.iter().map(|c| c.meta.retry_count).collect()
}

/// Rule 5: an acknowledged message is gone: neither the same consumer nor a new consumer of the queue
/// receives it again (checked with sentinel messages published after it, not with a fixed sleep).
pub async fn ack_removes_the_message<H: Harness>() {
    define_topic!(Acks, Msg, TopologyBuilder::new(unique("ack")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<Acks>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let options = || ConsumerOptions::new().with_prefetch_count(1);

    let mut sup = broker.consumer_supervisor();
    sup.register::<Acks, _>(probe.handler(|_, _| Outcome::Ack), options())
        .expect("register");
    let running = Running::supervisor(sup, DRAIN);

    let acked = Msg::new("acked", 0);
    publisher.publish::<Acks>(&acked).await.expect("publish");
    probe.live.wait_for("the message", |s| !s.is_empty()).await;
    for n in 1..=2 {
        publisher
            .publish::<Acks>(&Msg::new("sentinel", n))
            .await
            .expect("publish");
        probe
            .live
            .wait_for("the sentinel", |s| s.iter().any(|s| s.msg == Msg::new("sentinel", n)))
            .await;
    }
    assert_eq!(probe.calls_of(&acked).len(), 1, "the acked message was delivered again");
    let outcome = running.stop().await;
    assert_eq!(outcome.exit_code(), 0, "clean stop: {outcome:?}");

    // A new consumer of the same queue does not get it either.
    let mut sup = broker.consumer_supervisor();
    sup.register::<Acks, _>(probe.handler(|_, _| Outcome::Ack), options())
        .expect("register again");
    let running = Running::supervisor(sup, DRAIN);
    publisher
        .publish::<Acks>(&Msg::new("sentinel", 3))
        .await
        .expect("publish");
    probe
        .live
        .wait_for("the sentinel on the new consumer", |s| {
            s.iter().any(|s| s.msg == Msg::new("sentinel", 3))
        })
        .await;
    assert_eq!(
        probe.calls_of(&acked).len(),
        1,
        "the acked message was delivered to a new consumer"
    );
    let _ = running.stop().await;
}

/// Rule 6: with `max_retries = 2` a message that always fails is handled exactly 3 times (retry counts
/// 0, 1, 2), then dead-lettered once with reason `max_retries_exceeded`, and never handled again.
pub async fn retry_budget_is_max_retries_plus_one<H: Harness>() {
    define_topic!(
        Budget,
        Msg,
        TopologyBuilder::new(unique("retry-budget"))
            .hold_queue(ms(30))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Budget>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Budget, _>(
        // The sentinel (key "sentinel") is retried once through the same hold queue, then acked.
        probe.handler(|m, meta| match (m.key.as_str(), meta.retry_count) {
            ("sentinel", 0) => Outcome::Retry,
            ("sentinel", _) => Outcome::Ack,
            _ => Outcome::Retry,
        }),
        ConsumerOptions::new().with_max_retries(2),
    )
    .expect("register");
    sup.register_dlq::<Budget, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let failing = Msg::new("failing", 0);
    publisher.publish::<Budget>(&failing).await.expect("publish");
    let dead = probe
        .dead
        .wait_for("the failing message in the DLQ", |d| !d.is_empty())
        .await;
    let calls = probe.calls_of(&failing);
    assert_eq!(
        retry_counts(&calls),
        vec![0, 1, 2],
        "max_retries 2 must give exactly 3 attempts before the DLQ"
    );
    assert_eq!(dead[0].meta.reason.as_deref(), Some("max_retries_exceeded"));

    // A retry scheduled after the DLQ would come back before the sentinel's own retry.
    let sentinel = Msg::new("sentinel", 0);
    publisher.publish::<Budget>(&sentinel).await.expect("publish");
    probe
        .live
        .wait_for("the sentinel's retry", |s| {
            s.iter().filter(|s| s.msg == Msg::new("sentinel", 0)).count() >= 2
        })
        .await;
    assert_eq!(probe.calls_of(&failing).len(), 3, "handled again after the DLQ");
    assert_eq!(probe.deaths_of(&failing).len(), 1, "dead-lettered more than once");
    let _ = running.stop().await;
}

/// Rule 6 at its edge: `max_retries = 0` gives one attempt, then the DLQ with `max_retries_exceeded`.
pub async fn zero_max_retries_dead_letters_after_one_attempt<H: Harness>() {
    define_topic!(
        NoRetries,
        Msg,
        TopologyBuilder::new(unique("zero-retries"))
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<NoRetries>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<NoRetries, _>(
        probe.handler(|_, _| Outcome::Retry),
        ConsumerOptions::new().with_max_retries(0),
    )
    .expect("register");
    sup.register_dlq::<NoRetries, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish::<NoRetries>(&Msg::new("once", 0))
        .await
        .expect("publish");
    let dead = probe.dead.wait_for("the message in the DLQ", |d| !d.is_empty()).await;
    assert_eq!(retry_counts(&probe.live.snapshot()), vec![0], "exactly one attempt");
    assert_eq!(dead[0].meta.reason.as_deref(), Some("max_retries_exceeded"));
    let _ = running.stop().await;
}

/// Rule 6: retry k waits `hold_queues[min(k, len - 1)]`: with holds of 50 ms and 600 ms, the first
/// retry comes at least 50 ms (and well under 600 ms) after the first attempt, every later one at least
/// 600 ms after the previous.
pub async fn retry_k_waits_the_kth_hold_delay<H: Harness>() {
    define_topic!(
        Escalating,
        Msg,
        TopologyBuilder::new(unique("escalating"))
            .hold_queue(ms(50))
            .hold_queue(ms(600))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Escalating>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Escalating, _>(
        probe.handler(|_, _| Outcome::Retry),
        ConsumerOptions::new().with_max_retries(3),
    )
    .expect("register");
    sup.register_dlq::<Escalating, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish::<Escalating>(&Msg::new("m", 0))
        .await
        .expect("publish");
    probe.dead.wait_for("the message in the DLQ", |d| !d.is_empty()).await;
    let calls = probe.live.snapshot();
    assert_eq!(retry_counts(&calls), vec![0, 1, 2, 3]);
    let g = gaps(&calls);
    assert!(g[0] >= ms(50), "retry 0 must wait hold[0] = 50ms, waited {:?}", g[0]);
    assert!(
        g[0] < ms(600),
        "retry 0 must wait hold[0] = 50ms, not hold[1] = 600ms; waited {:?}",
        g[0]
    );
    assert!(g[1] >= ms(600), "retry 1 must wait hold[1] = 600ms, waited {:?}", g[1]);
    assert!(
        g[2] >= ms(600),
        "retry 2 must wait the last hold delay (600ms), waited {:?}",
        g[2]
    );
    let _ = running.stop().await;
}

/// Rule 6: without hold queues a retry redelivers at once, and the budget still applies.
pub async fn retry_without_hold_queues_redelivers_at_once<H: Harness>() {
    define_topic!(Immediate, Msg, TopologyBuilder::new(unique("no-holds")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<Immediate>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Immediate, _>(
        probe.handler(|_, _| Outcome::Retry),
        ConsumerOptions::new().with_max_retries(2),
    )
    .expect("register");
    sup.register_dlq::<Immediate, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish::<Immediate>(&Msg::new("m", 0))
        .await
        .expect("publish");
    let dead = probe.dead.wait_for("the message in the DLQ", |d| !d.is_empty()).await;
    let calls = probe.live.snapshot();
    assert_eq!(retry_counts(&calls), vec![0, 1, 2]);
    for g in gaps(&calls) {
        assert!(g < Duration::from_secs(1), "a retry without hold queues took {g:?}");
    }
    assert_eq!(dead[0].meta.reason.as_deref(), Some("max_retries_exceeded"));
    let _ = running.stop().await;
}

/// Rule 7: `Defer` waits `hold_queues[0]` (never a later hold) and keeps the retry count, so it never
/// exhausts the budget, even with `max_retries = 0`.
pub async fn defer_waits_first_hold_delay_and_keeps_retry_count<H: Harness>() {
    define_topic!(
        Deferred,
        Msg,
        TopologyBuilder::new(unique("defer"))
            .hold_queue(ms(60))
            .hold_queue(ms(900))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Deferred>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let deferred = Arc::new(AtomicU32::new(0));
    let d = deferred.clone();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Deferred, _>(
        probe.handler(move |m, _| match m.key.as_str() {
            "later" if d.fetch_add(1, Ordering::SeqCst) < 3 => Outcome::Defer,
            "later" => Outcome::Ack,
            _ => Outcome::Reject,
        }),
        ConsumerOptions::new().with_max_retries(0),
    )
    .expect("register");
    sup.register_dlq::<Deferred, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let later = Msg::new("later", 0);
    publisher.publish::<Deferred>(&later).await.expect("publish");
    probe.live.wait_for("three defers and the ack", |s| s.len() >= 4).await;
    let calls = probe.calls_of(&later);
    assert_eq!(
        retry_counts(&calls),
        vec![0, 0, 0, 0],
        "Defer must not increase the retry count"
    );
    for (i, g) in gaps(&calls).into_iter().enumerate() {
        assert!(g >= ms(60), "defer {i} must wait hold[0] = 60ms, waited {g:?}");
        assert!(
            g < ms(900),
            "defer {i} must wait hold[0] = 60ms, not a later hold (900ms); waited {g:?}"
        );
    }

    // Sentinel for the DLQ: a rejected message; the deferred one must not be there.
    publisher
        .publish::<Deferred>(&Msg::new("sentinel", 0))
        .await
        .expect("publish");
    let dead = probe.dead.wait_for("the sentinel in the DLQ", |d| !d.is_empty()).await;
    assert!(
        dead.iter().all(|d| d.msg.key == "sentinel"),
        "a deferred message was dead-lettered (max_retries 0 must not apply to defers): {dead:#?}"
    );
    let _ = running.stop().await;
}

/// Rule 8: `Reject` dead-letters at once with reason `rejected`: one handler call, no redelivery before
/// or after, even with retry budget left.
pub async fn reject_dead_letters_at_once<H: Harness>() {
    define_topic!(
        Rejects,
        Msg,
        TopologyBuilder::new(unique("reject")).hold_queue(ms(30)).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Rejects>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Rejects, _>(
        probe.handler(|m, meta| match (m.key.as_str(), meta.retry_count) {
            ("sentinel", 0) => Outcome::Retry,
            ("sentinel", _) => Outcome::Ack,
            _ => Outcome::Reject,
        }),
        ConsumerOptions::new().with_max_retries(5),
    )
    .expect("register");
    sup.register_dlq::<Rejects, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let rejected = Msg::new("rejected", 0);
    publisher.publish::<Rejects>(&rejected).await.expect("publish");
    let dead = probe
        .dead
        .wait_for("the rejected message in the DLQ", |d| !d.is_empty())
        .await;
    assert_eq!(dead[0].meta.reason.as_deref(), Some("rejected"));
    assert_eq!(
        probe.calls_of(&rejected).len(),
        1,
        "a rejected message must not be redelivered before the DLQ"
    );

    let sentinel = Msg::new("sentinel", 0);
    publisher.publish::<Rejects>(&sentinel).await.expect("publish");
    probe
        .live
        .wait_for("the sentinel's retry", |s| {
            s.iter().filter(|s| s.msg == Msg::new("sentinel", 0)).count() >= 2
        })
        .await;
    assert_eq!(probe.calls_of(&rejected).len(), 1, "the rejected message came back");
    assert_eq!(probe.deaths_of(&rejected).len(), 1, "dead-lettered more than once");
    let _ = running.stop().await;
}

/// Rule 8: without a DLQ, `Reject` discards the message: it is never handled again and the consumer
/// goes on.
pub async fn reject_without_dlq_discards<H: Harness>() {
    define_topic!(
        NoDlq,
        Msg,
        TopologyBuilder::new(unique("reject-no-dlq")).hold_queue(ms(30)).build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<NoDlq>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publish");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<NoDlq, _>(
        probe.handler(|m, meta| match (m.key.as_str(), meta.retry_count) {
            ("sentinel", 0) => Outcome::Retry,
            ("sentinel", _) => Outcome::Ack,
            _ => Outcome::Reject,
        }),
        ConsumerOptions::new().with_max_retries(5),
    )
    .expect("register");
    let running = Running::supervisor(sup, DRAIN);

    let rejected = Msg::new("rejected", 0);
    publisher.publish::<NoDlq>(&rejected).await.expect("publish");
    probe.live.wait_for("the rejected message", |s| !s.is_empty()).await;
    publisher
        .publish::<NoDlq>(&Msg::new("sentinel", 0))
        .await
        .expect("publish");
    probe
        .live
        .wait_for("the sentinel and its retry", |s| {
            s.iter().filter(|s| s.msg.key == "sentinel").count() >= 2
        })
        .await;
    assert_eq!(
        probe.calls_of(&rejected).len(),
        1,
        "a message rejected on a topic without DLQ must be discarded"
    );
    let outcome = running.stop().await;
    assert_eq!(outcome.exit_code(), 0, "discarding is not an error: {outcome:?}");
}

/// Rule 9: a handler that exceeds its timeout counts as `Retry`: it consumes the budget and ends in the
/// DLQ with `max_retries_exceeded`.
pub async fn handler_timeout_counts_as_retry<H: Harness>() {
    define_topic!(
        Slow,
        Msg,
        TopologyBuilder::new(unique("timeout")).hold_queue(ms(20)).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Slow>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let calls = Recorder::<u32>::new();
    let dlq = Probe::<Msg>::new();
    let c = calls.clone();
    let handler = FnHandler::new(move |_: Msg, meta: MessageMetadata| {
        c.push(meta.retry_count);
        async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Outcome::Ack
        }
    });
    let mut sup = broker.consumer_supervisor();
    sup.register::<Slow, _>(
        handler,
        ConsumerOptions::new().with_max_retries(2).with_handler_timeout(ms(50)),
    )
    .expect("register");
    sup.register_dlq::<Slow, _>(dlq.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher.publish::<Slow>(&Msg::new("slow", 0)).await.expect("publish");
    let dead = dlq
        .dead
        .wait_for("the slow message in the DLQ", |d| !d.is_empty())
        .await;
    assert_eq!(
        calls.snapshot(),
        vec![0, 1, 2],
        "each timeout must count as a retry: 3 attempts with max_retries 2"
    );
    assert_eq!(dead[0].meta.reason.as_deref(), Some("max_retries_exceeded"));
    let _ = running.stop().await;
}

/// Rule 9: a handler that panics counts as `Retry`: it consumes the budget and ends in the DLQ with
/// `max_retries_exceeded`; the consumer survives.
pub async fn handler_panic_counts_as_retry<H: Harness>() {
    define_topic!(
        Panicky,
        Msg,
        TopologyBuilder::new(unique("panic")).hold_queue(ms(20)).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Panicky>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let calls = Recorder::<(String, u32)>::new();
    let dlq = Probe::<Msg>::new();
    let c = calls.clone();
    let handler = FnHandler::new(move |m: Msg, meta: MessageMetadata| {
        c.push((m.key.clone(), meta.retry_count));
        async move {
            if m.key == "boom" {
                panic!("conformance: deliberate handler panic");
            }
            Outcome::Ack
        }
    });
    let mut sup = broker.consumer_supervisor();
    sup.register::<Panicky, _>(handler, ConsumerOptions::new().with_max_retries(2))
        .expect("register");
    sup.register_dlq::<Panicky, _>(dlq.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish::<Panicky>(&Msg::new("boom", 0))
        .await
        .expect("publish");
    let dead = dlq
        .dead
        .wait_for("the panicking message in the DLQ", |d| !d.is_empty())
        .await;
    let boom: Vec<u32> = calls
        .snapshot()
        .into_iter()
        .filter(|(k, _)| k == "boom")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(boom, vec![0, 1, 2], "each panic must count as a retry");
    assert_eq!(dead[0].meta.reason.as_deref(), Some("max_retries_exceeded"));

    publisher
        .publish::<Panicky>(&Msg::new("fine", 0))
        .await
        .expect("publish");
    calls
        .wait_for("a later message on the same consumer", |c| {
            c.iter().any(|(k, _)| k == "fine")
        })
        .await;
    let outcome = running.stop().await;
    assert!(outcome.panics >= 1, "panics must be counted: {outcome:?}");
}

/// Rule 9: after a timeout or a panic the retry can succeed (with `retry_count` 1), and the message is
/// then not dead-lettered.
pub async fn retry_after_timeout_or_panic_can_succeed<H: Harness>() {
    define_topic!(
        Recover,
        Msg,
        TopologyBuilder::new(unique("recover")).hold_queue(ms(20)).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Recover>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let calls = Recorder::<(String, u32, &'static str)>::new();
    let dlq = Probe::<Msg>::new();
    let c = calls.clone();
    let handler = FnHandler::new(move |m: Msg, meta: MessageMetadata| {
        let c = c.clone();
        async move {
            match (m.key.as_str(), meta.retry_count) {
                ("slow", 0) => {
                    c.push((m.key.clone(), 0, "started"));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Outcome::Ack
                }
                ("boom", 0) => {
                    c.push((m.key.clone(), 0, "started"));
                    panic!("conformance: deliberate handler panic");
                }
                ("sentinel", _) => {
                    c.push((m.key.clone(), meta.retry_count, "rejected"));
                    Outcome::Reject
                }
                _ => {
                    c.push((m.key.clone(), meta.retry_count, "acked"));
                    Outcome::Ack
                }
            }
        }
    });
    let mut sup = broker.consumer_supervisor();
    sup.register::<Recover, _>(
        handler,
        ConsumerOptions::new().with_max_retries(3).with_handler_timeout(ms(100)),
    )
    .expect("register");
    sup.register_dlq::<Recover, _>(dlq.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish::<Recover>(&Msg::new("slow", 0))
        .await
        .expect("publish");
    publisher
        .publish::<Recover>(&Msg::new("boom", 0))
        .await
        .expect("publish");
    let seen = calls
        .wait_for("both messages acked on their retry", |c| {
            c.iter().filter(|(_, _, what)| *what == "acked").count() >= 2
        })
        .await;
    for key in ["slow", "boom"] {
        let acked: Vec<_> = seen.iter().filter(|(k, _, w)| k == key && *w == "acked").collect();
        assert_eq!(acked.len(), 1, "{key}: acked once: {seen:?}");
        assert_eq!(
            acked[0].1, 1,
            "{key}: the retry after a timeout/panic has retry_count 1"
        );
    }
    publisher
        .publish::<Recover>(&Msg::new("sentinel", 0))
        .await
        .expect("publish");
    let dead = dlq.dead.wait_for("the sentinel in the DLQ", |d| !d.is_empty()).await;
    assert!(
        dead.iter().all(|d| d.msg.key == "sentinel"),
        "a recovered message was dead-lettered: {dead:#?}"
    );
    let _ = running.stop().await;
}

/// Rule 10: a payload over `max_message_size` goes to the DLQ with reason `oversize`, never reaches
/// the handler and does not loop; smaller messages on the same consumer are handled.
pub async fn oversize_payload_is_dead_lettered_unhandled<H: Harness>() {
    define_topic!(
        Limited,
        String,
        TopologyBuilder::new(unique("oversize"))
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Limited>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<String>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Limited, _>(
        probe.handler(|_, _| Outcome::Ack),
        ConsumerOptions::new().with_max_message_size(16).with_max_retries(3),
    )
    .expect("register");
    sup.register_dlq::<Limited, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let big = "x".repeat(100);
    publisher.publish::<Limited>(&big).await.expect("publish big");
    publisher
        .publish::<Limited>(&"ok".to_string())
        .await
        .expect("publish small");
    let dead = probe
        .dead
        .wait_for("the big message in the DLQ", |d| !d.is_empty())
        .await;
    assert_eq!(dead[0].msg, big);
    assert_eq!(dead[0].meta.reason.as_deref(), Some("oversize"));
    assert_eq!(dead[0].meta.death_count, 1);
    probe
        .live
        .wait_for("the small message", |s| s.iter().any(|s| s.msg == "ok"))
        .await;
    publisher
        .publish::<Limited>(&"ok2".to_string())
        .await
        .expect("publish small");
    probe
        .live
        .wait_for("the second small message", |s| s.iter().any(|s| s.msg == "ok2"))
        .await;
    assert!(
        probe.calls_of(&big).is_empty(),
        "an oversize payload reached the handler"
    );
    assert_eq!(probe.deaths_of(&big).len(), 1, "the oversize payload looped");
    let _ = running.stop().await;
}

/// Rule 10: a payload the codec cannot decode goes to the DLQ with reason `deserialize`, never reaches
/// the handler and does not loop. (Two topics share one queue: one publishes raw bytes, the other
/// consumes JSON.)
pub async fn undecodable_payload_is_dead_lettered_unhandled<H: Harness>() {
    fn queue() -> &'static str {
        static QUEUE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        QUEUE.get_or_init(|| unique("undecodable"))
    }
    define_topic!(
        Json,
        Msg,
        TopologyBuilder::new(queue()).hold_queue(ms(20)).dlq().build()
    );
    define_topic!(
        Bytes,
        Vec<u8>,
        TopologyBuilder::new(queue()).hold_queue(ms(20)).dlq().build(),
        codec = shove::RawBytesCodec
    );
    let broker = H::broker().await;
    broker.topology().declare::<Json>().await.expect("declare");
    broker.topology().declare::<Bytes>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let raw_dlq = Probe::<Vec<u8>>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Json, _>(
        probe.handler(|_, _| Outcome::Ack),
        ConsumerOptions::new().with_max_retries(3),
    )
    .expect("register");
    sup.register_dlq::<Bytes, _>(raw_dlq.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let garbage = b"\xff\xfe{not json".to_vec();
    publisher.publish::<Bytes>(&garbage).await.expect("publish raw");
    publisher
        .publish::<Json>(&Msg::new("valid", 1))
        .await
        .expect("publish json");
    let dead = raw_dlq
        .dead
        .wait_for("the undecodable payload in the DLQ", |d| !d.is_empty())
        .await;
    assert_eq!(dead[0].msg, garbage, "the DLQ keeps the payload's bytes");
    assert_eq!(dead[0].meta.reason.as_deref(), Some("deserialize"));
    assert_eq!(dead[0].meta.original_queue.as_deref(), Some(queue()));
    probe
        .live
        .wait_for("the valid message", |s| s.iter().any(|s| s.msg == Msg::new("valid", 1)))
        .await;
    publisher
        .publish::<Json>(&Msg::new("valid", 2))
        .await
        .expect("publish json");
    probe
        .live
        .wait_for("a second valid message", |s| {
            s.iter().any(|s| s.msg == Msg::new("valid", 2))
        })
        .await;
    assert_eq!(probe.live.len(), 2, "only the valid messages reach the handler");
    assert_eq!(raw_dlq.dead.len(), 1, "the undecodable payload looped");
    let _ = running.stop().await;
}

/// A JSON codec that panics on message number 13: a user's codec meeting bytes it did not expect.
struct Touchy;

impl shove::Codec<Msg> for Touchy {
    const NAME: &'static str = "touchy";

    fn encode(value: &Msg) -> shove::error::Result<Vec<u8>> {
        <shove::JsonCodec as shove::Codec<Msg>>::encode(value)
    }

    fn decode(bytes: &[u8]) -> shove::error::Result<Msg> {
        let m = <shove::JsonCodec as shove::Codec<Msg>>::decode(bytes)?;
        assert_ne!(m.n, 13, "the touchy codec meets 13");
        Ok(m)
    }
}

/// Rule 10 (issue 12, item 2): a codec that panics while decoding is a payload that cannot be decoded —
/// dead-lettered with reason `deserialize`, the handler never called — not the end of the consumer task:
/// the next message is handled.
pub async fn a_codec_that_panics_dead_letters_and_the_consumer_goes_on<H: Harness>() {
    fn queue() -> &'static str {
        static QUEUE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        QUEUE.get_or_init(|| unique("codec-panic"))
    }
    define_topic!(
        Fragile,
        Msg,
        TopologyBuilder::new(queue()).hold_queue(ms(20)).dlq().build(),
        codec = Touchy
    );
    // The same queues read as raw bytes, so the dead letter is read without the codec that panics on it.
    define_topic!(
        Bytes,
        Vec<u8>,
        TopologyBuilder::new(queue()).hold_queue(ms(20)).dlq().build(),
        codec = shove::RawBytesCodec
    );
    let broker = H::broker().await;
    broker.topology().declare::<Fragile>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let raw_dlq = Probe::<Vec<u8>>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Fragile, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register");
    sup.register_dlq::<Bytes, _>(raw_dlq.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);
    for n in [13, 14] {
        publisher.publish::<Fragile>(&Msg::new("m", n)).await.expect("publish");
    }
    probe
        .live
        .wait_for("the message after the one the codec panicked on", |s| {
            s.iter().any(|s| s.msg.n == 14)
        })
        .await;
    let dead = raw_dlq.dead.wait_for("the dead letter", |d| !d.is_empty()).await;
    assert_eq!(dead[0].meta.reason.as_deref(), Some("deserialize"));
    let original: Msg = serde_json::from_slice(&dead[0].msg).expect("the DLQ keeps the payload");
    assert_eq!(original.n, 13);
    assert!(
        probe.live.snapshot().iter().all(|s| s.msg.n != 13),
        "the handler never sees it"
    );
    let _ = running.stop().await;
}

/// Rule 11: `DeadMessageMetadata` carries the reason, the queue the message was consumed from (the main
/// queue, also after hold queues), `death_count` 1, the original headers and the original id.
pub async fn dead_letter_metadata_is_complete<H: Harness>() {
    define_topic!(
        Dlq,
        Msg,
        TopologyBuilder::new(unique("dlq-meta"))
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Dlq>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Dlq, _>(
        probe.handler(|m, _| {
            if m.key == "rejected" {
                Outcome::Reject
            } else {
                Outcome::Retry
            }
        }),
        ConsumerOptions::new().with_max_retries(1),
    )
    .expect("register");
    sup.register_dlq::<Dlq, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let sent = headers([("tenant", "acme"), ("trace", "t-1")]);
    for key in ["rejected", "exhausted"] {
        publisher
            .publish_with_headers::<Dlq>(&Msg::new(key, 0), sent.clone())
            .await
            .expect("publish_with_headers");
    }
    probe.dead.wait_for("both messages in the DLQ", |d| d.len() >= 2).await;
    for (key, reason) in [("rejected", "rejected"), ("exhausted", "max_retries_exceeded")] {
        let msg = Msg::new(key, 0);
        let deaths = probe.deaths_of(&msg);
        assert_eq!(deaths.len(), 1, "{key}: one DLQ delivery");
        let dead = &deaths[0].meta;
        assert_eq!(dead.reason.as_deref(), Some(reason), "{key}: reason");
        assert_eq!(
            dead.original_queue.as_deref(),
            Some(Dlq::topology().queue()),
            "{key}: original_queue is the main queue it was consumed from"
        );
        assert_eq!(dead.death_count, 1, "{key}: death_count on the first dead-lettering");
        assert_eq!(*dead.message.headers, sent, "{key}: original headers");
        assert_eq!(
            dead.message.delivery_id,
            probe.calls_of(&msg)[0].meta.delivery_id,
            "{key}: the original delivery_id"
        );
    }
    let _ = running.stop().await;
}

/// Rules 6, 8 and 11 through a consumer group instead of a supervisor: the group applies the budget and
/// the reasons the same way.
pub async fn dead_letters_reach_a_group_consumer_too<H: Harness>() {
    define_topic!(
        Grouped,
        Msg,
        TopologyBuilder::new(unique("group-dlq"))
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Grouped>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut group = broker.consumer_group();
    let handler = probe.handler(|m, _| {
        if m.key == "rejected" {
            Outcome::Reject
        } else {
            Outcome::Retry
        }
    });
    group
        .register::<Grouped, _>(H::group_config(&GroupSpec::new(1, 2).max_retries(1)), move || {
            handler.clone()
        })
        .await
        .expect("register group");
    let mut dlq = broker.consumer_supervisor();
    dlq.register_dlq::<Grouped, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running_group = Running::group(group, DRAIN);
    let running_dlq = Running::supervisor(dlq, DRAIN);

    publisher
        .publish::<Grouped>(&Msg::new("rejected", 0))
        .await
        .expect("publish");
    publisher
        .publish::<Grouped>(&Msg::new("exhausted", 0))
        .await
        .expect("publish");
    probe.dead.wait_for("both messages in the DLQ", |d| d.len() >= 2).await;
    assert_eq!(retry_counts(&probe.calls_of(&Msg::new("rejected", 0))), vec![0]);
    assert_eq!(retry_counts(&probe.calls_of(&Msg::new("exhausted", 0))), vec![0, 1]);
    for (key, reason) in [("rejected", "rejected"), ("exhausted", "max_retries_exceeded")] {
        let deaths = probe.deaths_of(&Msg::new(key, 0));
        assert_eq!(deaths.len(), 1, "{key}");
        assert_eq!(deaths[0].meta.reason.as_deref(), Some(reason), "{key}");
        assert_eq!(
            deaths[0].meta.original_queue.as_deref(),
            Some(Grouped::topology().queue()),
            "{key}"
        );
    }
    let _ = running_group.stop().await;
    let _ = running_dlq.stop().await;
}
