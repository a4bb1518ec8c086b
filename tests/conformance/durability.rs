//! Contract rules 12–13: messages waiting out a delay are stored in the broker, and scheduling a retry
//! never loses the message.
//!
//! Two scenarios hold on every backend (the consumer stops, the broker connection stays). Two need the
//! `durable_delays` capability (a new connection stands for a new process) and are skipped visibly where
//! it is not claimed, as on the in-process backend.

use std::collections::BTreeSet;
use std::time::Duration;

use shove::{ConsumerOptions, MessageMetadata, Outcome, TopologyBuilder, define_topic};

use super::{DRAIN, FnHandler, Harness, Msg, Probe, Recorder, Running, WAIT, ms, skip, unique};

/// Rule 12 (same connection): a message waiting out a retry delay when its consumer stops is delivered
/// to the next consumer of the queue, with the same id and its retry count.
pub async fn delayed_retry_survives_consumer_restart<H: Harness>() {
    define_topic!(
        Delayed,
        Msg,
        TopologyBuilder::new(unique("delay-restart"))
            .hold_queue(ms(800))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Delayed>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");

    let first = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Delayed, _>(first.handler(|_, _| Outcome::Retry), ConsumerOptions::new())
        .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    publisher.publish::<Delayed>(&Msg::new("m", 0)).await.expect("publish");
    let seen = first.live.wait_for("the first attempt", |s| !s.is_empty()).await;
    let outcome = running.stop().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert_eq!(
        first.live.len(),
        1,
        "the retry arrived before the consumer stopped; the hold is 800ms"
    );

    let second = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Delayed, _>(second.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register again");
    let running = Running::supervisor(sup, DRAIN);
    let retried = second
        .live
        .wait_for("the delayed retry on the new consumer", |s| !s.is_empty())
        .await;
    assert_eq!(retried[0].meta.retry_count, 1);
    assert_eq!(retried[0].meta.delivery_id, seen[0].meta.delivery_id);
    let _ = running.stop().await;
}

/// Rules 12, 13 and 17 (same connection): consumers aborted mid-stream — some messages in handlers,
/// some waiting out retry delays — lose nothing: a new consumer acknowledges every message.
pub async fn aborted_consumers_lose_no_message<H: Harness>() {
    define_topic!(
        Busy,
        Msg,
        TopologyBuilder::new(unique("abort-no-loss"))
            .hold_queue(ms(50))
            .dlq()
            .build()
    );
    const COUNT: u32 = 30;
    let broker = H::broker().await;
    broker.topology().declare::<Busy>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<(u32, &'static str)>::new();

    let handler = {
        let events = events.clone();
        FnHandler::new(move |m: Msg, meta: MessageMetadata| {
            let events = events.clone();
            async move {
                events.push((m.n, "started"));
                if m.n.is_multiple_of(2) && meta.retry_count == 0 {
                    return Outcome::Retry;
                }
                tokio::time::sleep(ms(30)).await;
                events.push((m.n, "acked"));
                Outcome::Ack
            }
        })
    };
    let options = || ConsumerOptions::new().with_prefetch_count(4).with_max_retries(5);
    let mut sup = broker.consumer_supervisor();
    sup.register::<Busy, _>(handler.clone(), options()).expect("register");
    let running = Running::supervisor(sup, ms(1));
    for n in 0..COUNT {
        publisher.publish::<Busy>(&Msg::new("m", n)).await.expect("publish");
    }
    events
        .wait_for("a third of the work started", |e| e.len() >= (COUNT / 3) as usize)
        .await;
    let _ = running.stop().await;

    let mut sup = broker.consumer_supervisor();
    sup.register::<Busy, _>(handler, options()).expect("register again");
    let running = Running::supervisor(sup, DRAIN);
    let done = events
        .wait_for_within("every message acknowledged", WAIT * 2, |e| {
            e.iter()
                .filter(|(_, w)| *w == "acked")
                .map(|(n, _)| *n)
                .collect::<BTreeSet<_>>()
                .len()
                == COUNT as usize
        })
        .await;
    let acked: BTreeSet<u32> = done.iter().filter(|(_, w)| *w == "acked").map(|(n, _)| *n).collect();
    assert_eq!(acked, (0..COUNT).collect::<BTreeSet<_>>());
    let _ = running.stop().await;
}

/// Rule 12 (new connection, `durable_delays`): a message waiting out a retry delay is in the broker, so
/// a consumer on a new connection (a restarted process) receives it.
pub async fn delayed_retry_survives_a_new_connection<H: Harness>() {
    if !H::capabilities().durable_delays {
        skip::<H>(
            "delayed_retry_survives_a_new_connection",
            "the backend does not claim durable delays (rule 12 exempts in-process backends)",
        );
        return;
    }
    define_topic!(
        Durable,
        Msg,
        TopologyBuilder::new(unique("durable-delay"))
            .hold_queue(ms(800))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Durable>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let first = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Durable, _>(first.handler(|_, _| Outcome::Retry), ConsumerOptions::new())
        .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    publisher.publish::<Durable>(&Msg::new("m", 0)).await.expect("publish");
    let seen = first.live.wait_for("the first attempt", |s| !s.is_empty()).await;
    // The drain lets the first attempt settle (its retry goes to the hold queue); then the process's
    // connection goes away while the retry is still waiting out its 800 ms.
    let _ = running.stop().await;
    broker.close().await;
    drop(broker);

    let broker = H::broker().await;
    let second = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Durable, _>(second.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register on the new connection");
    let running = Running::supervisor(sup, DRAIN);
    let retried = second
        .live
        .wait_for("the delayed retry on a new connection", |s| !s.is_empty())
        .await;
    assert_eq!(retried[0].meta.retry_count, 1);
    assert_eq!(retried[0].meta.delivery_id, seen[0].meta.delivery_id);
    let _ = running.stop().await;
}

/// Rule 13 (new connection, `durable_delays`): retries scheduled just before the consumer's connection
/// goes away are all delivered later: at most duplicated, never lost.
pub async fn retries_scheduled_before_a_crash_are_not_lost<H: Harness>() {
    if !H::capabilities().durable_delays {
        skip::<H>(
            "retries_scheduled_before_a_crash_are_not_lost",
            "the backend does not claim durable delays (rule 12 exempts in-process backends)",
        );
        return;
    }
    define_topic!(
        Crashy,
        Msg,
        TopologyBuilder::new(unique("crash-retries"))
            .hold_queue(ms(300))
            .dlq()
            .build()
    );
    const COUNT: u32 = 20;
    let broker = H::broker().await;
    broker.topology().declare::<Crashy>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let first = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Crashy, _>(
        first.handler(|_, _| Outcome::Retry),
        ConsumerOptions::new().with_prefetch_count(8),
    )
    .expect("register");
    let running = Running::supervisor(sup, ms(1));
    for n in 0..COUNT {
        publisher.publish::<Crashy>(&Msg::new("m", n)).await.expect("publish");
    }
    first
        .live
        .wait_for("every first attempt", |s| {
            s.iter().map(|s| s.msg.n).collect::<BTreeSet<_>>().len() == COUNT as usize
        })
        .await;
    let _ = running.stop().await;
    broker.close().await;
    drop(broker);

    let broker = H::broker().await;
    let second = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Crashy, _>(second.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register on the new connection");
    let running = Running::supervisor(sup, DRAIN);
    second
        .live
        .wait_for_within(
            "every message on the new connection",
            WAIT + Duration::from_secs(5),
            |s| s.iter().map(|s| s.msg.n).collect::<BTreeSet<_>>().len() == COUNT as usize,
        )
        .await;
    let _ = running.stop().await;
}
