//! Contract rules 14–15: sequenced topics — per-key order, a retry blocks only its key, `Skip` and
//! `FailAll`, and `Defer` acting as `Retry`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use shove::{
    ConsumerOptions, MessageMetadata, Outcome, SequenceFailure, Topic, TopologyBuilder, define_sequenced_topic,
};

use super::{Concurrency, DRAIN, FnHandler, GroupSpec, Harness, Msg, Probe, Recorder, Running, WAIT, ms, unique};

/// What the ordering handler records: a completed call, or two calls of one key running at once.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Done(String, u32),
    Overlap(String, u32),
}

/// A handler that records completions in order, detects two calls of one key at once, and sleeps a
/// little (varying by message) so that keys interleave.
fn ordering_handler(events: Arc<Recorder<Event>>, concurrency: Arc<Concurrency>) -> FnHandler<Msg> {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    FnHandler::new(move |m: Msg, _: MessageMetadata| {
        let (events, concurrency, running) = (events.clone(), concurrency.clone(), running.clone());
        async move {
            let _entered = concurrency.enter();
            let alone = running.lock().unwrap().insert(m.key.clone());
            if !alone {
                events.push(Event::Overlap(m.key.clone(), m.n));
            }
            let spread = m.key.bytes().map(u64::from).sum::<u64>() + u64::from(m.n) * 7;
            tokio::time::sleep(ms(spread % 4)).await;
            if alone {
                running.lock().unwrap().remove(&m.key);
            }
            events.push(Event::Done(m.key, m.n));
            Outcome::Ack
        }
    })
}

/// `keys` keys × `per_key` messages, interleaved: n = 0 of every key, then n = 1, …
fn interleaved(keys: usize, per_key: u32) -> Vec<Msg> {
    (0..per_key)
        .flat_map(|n| (0..keys).map(move |k| Msg::new(format!("key-{k:02}"), n)))
        .collect()
}

/// Checks every key was completed exactly once per message, in publish order, never two at once.
fn assert_per_key_order(events: &[Event], keys: usize, per_key: u32) {
    let overlaps: Vec<_> = events.iter().filter(|e| matches!(e, Event::Overlap(..))).collect();
    assert!(
        overlaps.is_empty(),
        "two messages of one key were handled at once: {overlaps:?}"
    );
    let mut by_key: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for e in events {
        if let Event::Done(k, n) = e {
            by_key.entry(k.as_str()).or_default().push(*n);
        }
    }
    assert_eq!(by_key.len(), keys, "every key must be handled");
    for (k, ns) in by_key {
        assert_eq!(
            ns,
            (0..per_key).collect::<Vec<_>>(),
            "key {k}: handled out of publish order"
        );
    }
}

fn done_count(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Done(..))).count()
}

/// Rule 14: 16 keys × 12 messages through one consumer with prefetch 16: every key in publish order,
/// one at a time, while different keys run in parallel.
pub async fn per_key_order_over_16_keys<H: Harness>() {
    define_sequenced_topic!(
        Ordered,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("order-16"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(50))
            .dlq()
            .build()
    );
    const KEYS: usize = 16;
    const PER_KEY: u32 = 12;
    let broker = H::broker().await;
    broker.topology().declare::<Ordered>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Event>::new();
    let concurrency = Concurrency::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Ordered, _>(
        ordering_handler(events.clone(), concurrency.clone()),
        ConsumerOptions::new().with_prefetch_count(16),
    )
    .await
    .expect("register_fifo");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish_batch::<Ordered>(&interleaved(KEYS, PER_KEY))
        .await
        .expect("publish_batch");
    let all = events
        .wait_for("every message", |e| done_count(e) >= KEYS * PER_KEY as usize)
        .await;
    assert_per_key_order(&all, KEYS, PER_KEY);
    assert!(
        concurrency.max() >= 2,
        "different keys must proceed in parallel (prefetch 16), but at most {} ran at once",
        concurrency.max()
    );
    let _ = running.stop().await;
}

/// Rule 14 in a consumer group of two consumers: per-key order and exclusivity hold across consumers.
pub async fn per_key_order_in_a_consumer_group<H: Harness>() {
    define_sequenced_topic!(
        GroupOrdered,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("order-group"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(50))
            .dlq()
            .build()
    );
    const KEYS: usize = 16;
    const PER_KEY: u32 = 8;
    let broker = H::broker().await;
    broker.topology().declare::<GroupOrdered>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Event>::new();
    let concurrency = Concurrency::new();
    let handler = ordering_handler(events.clone(), concurrency.clone());
    let mut group = broker.consumer_group();
    group
        .register_fifo::<GroupOrdered, _>(H::group_config(&GroupSpec::new(2, 2).prefetch(8)), move || {
            handler.clone()
        })
        .await
        .expect("register_fifo");
    let running = Running::group(group, DRAIN);

    for m in interleaved(KEYS, PER_KEY) {
        publisher.publish::<GroupOrdered>(&m).await.expect("publish");
    }
    let all = events
        .wait_for("every message", |e| done_count(e) >= KEYS * PER_KEY as usize)
        .await;
    assert_per_key_order(&all, KEYS, PER_KEY);
    let _ = running.stop().await;
}

/// Rule 14: a retry of one key (hold 300 ms) blocks only that key: another key's messages all complete
/// while it waits, and the retried key's next message comes only after the retry.
pub async fn retry_blocks_only_its_own_key<H: Harness>() {
    define_sequenced_topic!(
        Blocking,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("retry-blocks-key"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(300))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Blocking>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Blocking, _>(
        probe.handler(|m, meta| {
            if m.key == "slow" && m.n == 0 && meta.retry_count == 0 {
                Outcome::Retry
            } else {
                Outcome::Ack
            }
        }),
        ConsumerOptions::new().with_prefetch_count(8).with_max_retries(3),
    )
    .await
    .expect("register_fifo");
    let running = Running::supervisor(sup, DRAIN);

    let mut batch = vec![Msg::new("slow", 0), Msg::new("slow", 1)];
    batch.extend((0..5).map(|n| Msg::new("fast", n)));
    publisher
        .publish_batch::<Blocking>(&batch)
        .await
        .expect("publish_batch");

    let seen = probe
        .live
        .wait_for("the retried key's next message", |s| {
            s.iter().any(|s| s.msg == Msg::new("slow", 1))
        })
        .await;
    let slow: Vec<(u32, u32)> = seen
        .iter()
        .filter(|s| s.msg.key == "slow")
        .map(|s| (s.msg.n, s.meta.retry_count))
        .collect();
    assert_eq!(
        slow,
        vec![(0, 0), (0, 1), (1, 0)],
        "the key's next message must wait for the retry"
    );
    let retry_at = seen
        .iter()
        .position(|s| s.msg == Msg::new("slow", 0) && s.meta.retry_count == 1)
        .expect("the retry");
    let fast_before: Vec<u32> = seen[..retry_at]
        .iter()
        .filter(|s| s.msg.key == "fast")
        .map(|s| s.msg.n)
        .collect();
    assert_eq!(
        fast_before,
        vec![0, 1, 2, 3, 4],
        "another key must not wait for the retry: {seen:#?}"
    );
    let _ = running.stop().await;
}

/// Rule 15, `Skip`: the failed message is dead-lettered and the key continues with its next message;
/// other keys are unaffected.
pub async fn skip_dead_letters_and_continues_the_key<H: Harness>() {
    define_sequenced_topic!(
        Skipping,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("seq-skip"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Skipping>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Skipping, _>(
        probe.handler(|m, _| {
            if m.key == "k" && m.n == 1 {
                Outcome::Reject
            } else {
                Outcome::Ack
            }
        }),
        ConsumerOptions::new(),
    )
    .await
    .expect("register_fifo");
    sup.register_dlq::<Skipping, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let batch: Vec<Msg> = (0..4).flat_map(|n| [Msg::new("k", n), Msg::new("l", n)]).collect();
    publisher
        .publish_batch::<Skipping>(&batch)
        .await
        .expect("publish_batch");
    let seen = probe.live.wait_for("all 8 messages handled", |s| s.len() >= 8).await;
    let dead = probe
        .dead
        .wait_for("the rejected message in the DLQ", |d| !d.is_empty())
        .await;
    for key in ["k", "l"] {
        let ns: Vec<u32> = seen.iter().filter(|s| s.msg.key == key).map(|s| s.msg.n).collect();
        assert_eq!(ns, vec![0, 1, 2, 3], "key {key}: every message, in order");
    }
    assert_eq!(dead.len(), 1, "only the failed message is dead-lettered: {dead:#?}");
    assert_eq!(dead[0].msg, Msg::new("k", 1));
    assert_eq!(dead[0].meta.reason.as_deref(), Some("rejected"));
    let _ = running.stop().await;
}

/// Rule 15, `FailAll`: the failed message and every later message of its key are dead-lettered (reason
/// `sequence_poisoned`, never handled), the key stays poisoned for the consumer's life, other keys go
/// on. `original_queue` is the topic's main queue.
pub async fn fail_all_poisons_the_rest_of_the_key<H: Harness>() {
    define_sequenced_topic!(
        Poisoned,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("seq-failall"))
            .sequenced(SequenceFailure::FailAll)
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Poisoned>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Poisoned, _>(
        probe.handler(|m, _| {
            if m.key == "k" && m.n == 1 {
                Outcome::Reject
            } else {
                Outcome::Ack
            }
        }),
        ConsumerOptions::new(),
    )
    .await
    .expect("register_fifo");
    sup.register_dlq::<Poisoned, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let batch: Vec<Msg> = (0..4).flat_map(|n| [Msg::new("k", n), Msg::new("l", n)]).collect();
    publisher
        .publish_batch::<Poisoned>(&batch)
        .await
        .expect("publish_batch");
    probe.dead.wait_for("k1, k2 and k3 in the DLQ", |d| d.len() >= 3).await;
    probe
        .live
        .wait_for("every message of the other key", |s| {
            s.iter().filter(|s| s.msg.key == "l").count() >= 4
        })
        .await;

    // Published after the failure: the key is still poisoned; the other key is not.
    publisher.publish::<Poisoned>(&Msg::new("k", 4)).await.expect("publish");
    publisher.publish::<Poisoned>(&Msg::new("l", 4)).await.expect("publish");
    let dead = probe.dead.wait_for("k4 in the DLQ", |d| d.len() >= 4).await;
    let seen = probe
        .live
        .wait_for("l4 handled", |s| s.iter().any(|s| s.msg == Msg::new("l", 4)))
        .await;

    let k_handled: Vec<u32> = seen.iter().filter(|s| s.msg.key == "k").map(|s| s.msg.n).collect();
    assert_eq!(
        k_handled,
        vec![0, 1],
        "later messages of a poisoned key must not reach the handler"
    );
    let l_handled: Vec<u32> = seen.iter().filter(|s| s.msg.key == "l").map(|s| s.msg.n).collect();
    assert_eq!(l_handled, vec![0, 1, 2, 3, 4], "the other key is unaffected");
    let mut reasons: Vec<(u32, Option<String>)> = dead.iter().map(|d| (d.msg.n, d.meta.reason.clone())).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            (1, Some("rejected".into())),
            (2, Some("sequence_poisoned".into())),
            (3, Some("sequence_poisoned".into())),
            (4, Some("sequence_poisoned".into())),
        ]
    );
    for d in &dead {
        assert_eq!(d.msg.key, "k", "only key k is dead-lettered: {d:#?}");
        assert_eq!(
            d.meta.original_queue.as_deref(),
            Some(Poisoned::topology().queue()),
            "original_queue of a sequenced topic is its main queue"
        );
        assert_eq!(d.meta.death_count, 1);
    }
    let _ = running.stop().await;
}

/// Rule 15, `FailAll` when the failure is an exhausted retry budget: the message goes to the DLQ with
/// `max_retries_exceeded`, the key's later messages with `sequence_poisoned`.
pub async fn fail_all_after_exhausted_retries_poisons_the_key<H: Harness>() {
    define_sequenced_topic!(
        Exhausted,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("seq-failall-retries"))
            .sequenced(SequenceFailure::FailAll)
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Exhausted>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Exhausted, _>(
        probe.handler(|m, _| if m.key == "k" { Outcome::Retry } else { Outcome::Ack }),
        ConsumerOptions::new().with_max_retries(1),
    )
    .await
    .expect("register_fifo");
    sup.register_dlq::<Exhausted, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish_batch::<Exhausted>(&[Msg::new("k", 0), Msg::new("k", 1), Msg::new("l", 0)])
        .await
        .expect("publish_batch");
    let dead = probe.dead.wait_for("k0 and k1 in the DLQ", |d| d.len() >= 2).await;
    probe
        .live
        .wait_for("the other key", |s| s.iter().any(|s| s.msg == Msg::new("l", 0)))
        .await;
    let k_calls: Vec<(u32, u32)> = probe
        .live
        .snapshot()
        .iter()
        .filter(|s| s.msg.key == "k")
        .map(|s| (s.msg.n, s.meta.retry_count))
        .collect();
    assert_eq!(k_calls, vec![(0, 0), (0, 1)], "k0 gets its budget, k1 is never handled");
    let reason_of = |n: u32| {
        dead.iter()
            .find(|d| d.msg == Msg::new("k", n))
            .and_then(|d| d.meta.reason.clone())
    };
    assert_eq!(reason_of(0).as_deref(), Some("max_retries_exceeded"));
    assert_eq!(reason_of(1).as_deref(), Some("sequence_poisoned"));
    let _ = running.stop().await;
}

/// Rule 15: on a sequenced topic `Defer` acts as `Retry`: it increases the retry count and consumes the
/// budget; the key's next message follows once the deferred one is dead-lettered (`Skip`).
pub async fn defer_on_sequenced_topic_counts_as_retry<H: Harness>() {
    define_sequenced_topic!(
        SeqDefer,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("seq-defer"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<SeqDefer>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<SeqDefer, _>(
        probe.handler(|m, _| if m.n == 0 { Outcome::Defer } else { Outcome::Ack }),
        ConsumerOptions::new().with_max_retries(2),
    )
    .await
    .expect("register_fifo");
    sup.register_dlq::<SeqDefer, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish_batch::<SeqDefer>(&[Msg::new("k", 0), Msg::new("k", 1)])
        .await
        .expect("publish_batch");
    let dead = probe
        .dead
        .wait_for("the deferred message in the DLQ", |d| !d.is_empty())
        .await;
    let seen = probe
        .live
        .wait_for("the key's next message", |s| {
            s.iter().any(|s| s.msg == Msg::new("k", 1))
        })
        .await;
    let calls: Vec<(u32, u32)> = seen.iter().map(|s| (s.msg.n, s.meta.retry_count)).collect();
    assert_eq!(
        calls,
        vec![(0, 0), (0, 1), (0, 2), (1, 0)],
        "Defer on a sequenced topic must count as Retry (max_retries 2 → 3 attempts)"
    );
    assert_eq!(dead[0].msg, Msg::new("k", 0));
    assert_eq!(dead[0].meta.reason.as_deref(), Some("max_retries_exceeded"));
    let _ = running.stop().await;
}

/// Rule 14 under back-pressure: with `max_pending_per_key = 2` every message of every key is still
/// handled exactly once, in publish order.
pub async fn small_max_pending_per_key_keeps_order<H: Harness>() {
    define_sequenced_topic!(
        Pending,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("max-pending"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    const KEYS: usize = 3;
    const PER_KEY: u32 = 15;
    let broker = H::broker().await;
    broker.topology().declare::<Pending>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Event>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Pending, _>(
        ordering_handler(events.clone(), Concurrency::new()),
        ConsumerOptions::new()
            .with_prefetch_count(10)
            .with_max_pending_per_key(2),
    )
    .await
    .expect("register_fifo");
    let running = Running::supervisor(sup, DRAIN);

    publisher
        .publish_batch::<Pending>(&interleaved(KEYS, PER_KEY))
        .await
        .expect("publish_batch");
    let all = events
        .wait_for_within("every message", WAIT * 2, |e| done_count(e) >= KEYS * PER_KEY as usize)
        .await;
    assert_per_key_order(&all, KEYS, PER_KEY);
    let _ = running.stop().await;
}

/// Rule 14 across a hand-over: a consumer stopped while a key's head is in its handler gives back the
/// key's messages it had already taken; the next consumer handles them, and the rest of the key, in
/// publish order.
///
/// Which messages the first consumer holds when it stops is not observable from outside, so the
/// messages after the head are published one at a time while the head is held in its handler: the
/// consumer takes them as they arrive, and stopping finds them buffered behind the head.
pub async fn a_stopped_consumers_buffered_messages_go_back_in_order<H: Harness>() {
    define_sequenced_topic!(
        Handover,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("handover"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(50))
            .dlq()
            .build()
    );
    const TOTAL: u32 = 30;
    let broker = H::broker().await;
    broker.topology().declare::<Handover>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");

    let first = Probe::<Msg>::new();
    let release_head = tokio_util::sync::CancellationToken::new();
    let handler = {
        let (live, release_head) = (first.live.clone(), release_head.clone());
        FnHandler::new(move |m: Msg, meta: MessageMetadata| {
            let (live, release_head) = (live.clone(), release_head.clone());
            async move {
                let n = m.n;
                live.push(super::Seen {
                    msg: m,
                    meta,
                    at: tokio::time::Instant::now(),
                });
                if n == 0 {
                    release_head.cancelled().await;
                }
                Outcome::Ack
            }
        })
    };
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Handover, _>(handler, ConsumerOptions::new().with_prefetch_count(10))
        .await
        .expect("register_fifo");
    let running = Running::supervisor(sup, WAIT);
    publisher.publish::<Handover>(&Msg::new("k", 0)).await.expect("publish");
    first.live.wait_for("the head in its handler", |s| !s.is_empty()).await;
    for n in 1..TOTAL {
        publisher.publish::<Handover>(&Msg::new("k", n)).await.expect("publish");
    }
    // The stop is asked for before the head may finish, so the consumer stops with messages taken.
    let stopping = tokio::spawn(running.stop());
    release_head.cancel();
    let outcome = stopping.await.expect("the stop task");
    assert_eq!(outcome.exit_code(), 0, "a graceful stop: {outcome:?}");
    let handled_first: Vec<u32> = first.live.snapshot().iter().map(|s| s.msg.n).collect();

    let second = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Handover, _>(
        second.handler(|_, _| Outcome::Ack),
        ConsumerOptions::new().with_prefetch_count(10),
    )
    .await
    .expect("register_fifo");
    let running = Running::supervisor(sup, DRAIN);
    let rest = TOTAL as usize - handled_first.len();
    let seen = second
        .live
        .wait_for("the rest of the key on the next consumer", |s| s.len() >= rest)
        .await;
    let handled: Vec<u32> = handled_first
        .iter()
        .copied()
        .chain(seen.iter().map(|s| s.msg.n))
        .collect();
    assert_eq!(
        handled,
        (0..TOTAL).collect::<Vec<_>>(),
        "the first consumer handled {handled_first:?}; the next one must go on from there in publish order"
    );
    let _ = running.stop().await;
}

/// Rule 15 without a hold queue: on a sequenced topic with message loss allowed (no DLQ, no hold queue),
/// `Defer` requeues the message at once; it is handled again and acknowledged, and the key's next message
/// follows. (Issue 16 item 8: it hung waiting for the acknowledgement.)
pub async fn defer_without_hold_queue_on_sequenced_topic_requeues<H: Harness>() {
    define_sequenced_topic!(
        Loose,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("seq-loose"))
            .sequenced(SequenceFailure::Skip)
            .allow_message_loss()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Loose>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Loose, _>(
        probe.handler(|m, meta| {
            if m.n == 0 && meta.retry_count == 0 {
                Outcome::Defer
            } else {
                Outcome::Ack
            }
        }),
        ConsumerOptions::new(),
    )
    .await
    .expect("register_fifo");
    let running = Running::supervisor(sup, DRAIN);
    publisher
        .publish_batch::<Loose>(&[Msg::new("k", 0), Msg::new("k", 1)])
        .await
        .expect("publish_batch");
    let seen = probe
        .live
        .wait_for("the deferred message again, then the next", |s| s.len() >= 3)
        .await;
    let calls: Vec<(u32, u32)> = seen.iter().map(|s| (s.msg.n, s.meta.retry_count)).collect();
    assert_eq!(calls, vec![(0, 0), (0, 1), (1, 0)], "Defer acts as Retry, in key order");
    let outcome = running.stop().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
}
