//! Contract rules 16–18: consumer groups and their bounds, scaling and autoscaling, draining on
//! shutdown, exit codes, and independence of groups, supervisors and publishers.

use std::sync::Arc;
use std::time::Duration;

use shove::{
    Autoscaler, AutoscalerConfig, ConsumerOptions, MessageHandler, MessageMetadata, Outcome, ScalingDecision,
    SequenceFailure, Stabilized, SupervisorOutcome, ThresholdStrategy, Topic, TopologyBuilder, define_sequenced_topic,
    define_topic,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Concurrency, DRAIN, FnHandler, GroupSpec, Harness, Msg, Probe, Recorder, Running, WAIT, active_consumers, ms,
    scale, scale_until, unique, wait_active,
};

/// What the gated handler records.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Started(Msg),
    Finished(Msg),
}

fn started(events: &[Step], m: &Msg) -> usize {
    events.iter().filter(|e| **e == Step::Started(m.clone())).count()
}

fn finished_count(events: &[Step]) -> usize {
    events.iter().filter(|e| matches!(e, Step::Finished(_))).count()
}

/// A handler whose calls for a message with `n < gates.len()` wait until gate `n` is cancelled; other
/// messages finish at once. Records starts and finishes; counts concurrency.
fn gated_handler(
    events: Arc<Recorder<Step>>,
    gates: Arc<Vec<CancellationToken>>,
    concurrency: Arc<Concurrency>,
) -> FnHandler<Msg> {
    cpu_then_gated_handler(events, gates, concurrency, Duration::ZERO)
}

/// [`gated_handler`] whose calls first compute for `cpu` (a synchronous stretch of work, as a real
/// handler may do before its first `.await`) right after recording their start.
fn cpu_then_gated_handler(
    events: Arc<Recorder<Step>>,
    gates: Arc<Vec<CancellationToken>>,
    concurrency: Arc<Concurrency>,
    cpu: Duration,
) -> FnHandler<Msg> {
    FnHandler::new(move |m: Msg, _: MessageMetadata| {
        let (events, gates, concurrency) = (events.clone(), gates.clone(), concurrency.clone());
        async move {
            let _entered = concurrency.enter();
            events.push(Step::Started(m.clone()));
            if !cpu.is_zero() {
                std::thread::sleep(cpu);
            }
            if let Some(gate) = gates.get(m.n as usize) {
                gate.cancelled().await;
            }
            events.push(Step::Finished(m));
            Outcome::Ack
        }
    })
}

fn gates(n: usize) -> Arc<Vec<CancellationToken>> {
    Arc::new((0..n).map(|_| CancellationToken::new()).collect())
}

/// An autoscaler configuration that reacts within a few polls of 50 ms.
fn fast_autoscaling() -> AutoscalerConfig {
    AutoscalerConfig {
        poll_interval: ms(50),
        scale_up_multiplier: 2.0,
        scale_down_multiplier: 0.5,
        hysteresis_duration: Duration::ZERO,
        cooldown_duration: Duration::ZERO,
    }
}

/// Rule 16: a group starts `min` consumers, scales up to `max` and no further, down to `min` and no
/// further; with prefetch 1 no more than `max` handlers ever run at once.
pub async fn group_respects_min_and_max<H: Harness>() {
    define_topic!(Bounded, Msg, TopologyBuilder::new(unique("group-bounds")).dlq().build());
    let queue = Bounded::topology().queue();
    let broker = H::broker().await;
    broker.topology().declare::<Bounded>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Step>::new();
    let gates = gates(1);
    let concurrency = Concurrency::new();
    let handler = gated_handler(events.clone(), gates.clone(), concurrency.clone());
    let mut group = broker.consumer_group();
    group
        .register::<Bounded, _>(H::group_config(&GroupSpec::new(2, 4).prefetch(1)), move || {
            handler.clone()
        })
        .await
        .expect("register");
    let running = Running::group(group, DRAIN);

    wait_active(&broker, queue, 2, "a group starts at min").await;
    scale(&broker, queue, ScalingDecision::ScaleUp(10)).await;
    wait_active(&broker, queue, 4, "scale-up stops at max").await;
    assert_eq!(active_consumers(&broker, queue).await, Some(4), "never above max");

    for i in 0..6 {
        publisher
            .publish::<Bounded>(&Msg::new(format!("m{i}"), 0))
            .await
            .expect("publish");
    }
    events
        .wait_for("4 handlers running at once (4 consumers, prefetch 1)", |e| e.len() >= 4)
        .await;
    gates[0].cancel();
    events.wait_for("all 6 messages", |e| finished_count(e) >= 6).await;
    assert_eq!(
        concurrency.max(),
        4,
        "4 consumers with prefetch 1 must run exactly 4 handlers at most at once"
    );

    scale_until(
        &broker,
        queue,
        ScalingDecision::ScaleDown(10),
        2,
        "scale-down stops at min",
    )
    .await;
    scale(&broker, queue, ScalingDecision::ScaleDown(10)).await;
    assert_eq!(active_consumers(&broker, queue).await, Some(2), "never below min");
    let outcome = running.stop().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
}

/// Rule 16: scaling down never stops a consumer that is running a handler — also while the handler is
/// in a synchronous stretch of work before its first `.await`: with every consumer busy the group keeps
/// its size; with one busy and one idle the idle one goes; busy handlers finish and their messages are
/// not redelivered.
pub async fn scale_down_removes_only_idle_consumers<H: Harness>() {
    define_topic!(
        Shrinking,
        Msg,
        TopologyBuilder::new(unique("scale-down-idle")).dlq().build()
    );
    let queue = Shrinking::topology().queue();
    let broker = H::broker().await;
    broker.topology().declare::<Shrinking>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Step>::new();
    let gates = gates(2);
    let handler = cpu_then_gated_handler(events.clone(), gates.clone(), Concurrency::new(), ms(50));
    let mut group = broker.consumer_group();
    group
        .register::<Shrinking, _>(H::group_config(&GroupSpec::new(1, 2).prefetch(1)), move || {
            handler.clone()
        })
        .await
        .expect("register");
    let running = Running::group(group, DRAIN);
    wait_active(&broker, queue, 1, "start at min").await;
    scale(&broker, queue, ScalingDecision::ScaleUp(1)).await;
    wait_active(&broker, queue, 2, "scaled up").await;

    // Both consumers busy: nothing may be removed.
    let (a, b) = (Msg::new("busy-a", 0), Msg::new("busy-b", 0));
    publisher.publish::<Shrinking>(&a).await.expect("publish");
    publisher.publish::<Shrinking>(&b).await.expect("publish");
    events
        .wait_for("both consumers busy", |e| started(e, &a) == 1 && started(e, &b) == 1)
        .await;
    scale(&broker, queue, ScalingDecision::ScaleDown(1)).await;
    assert_eq!(
        active_consumers(&broker, queue).await,
        Some(2),
        "a scale-down with every consumer busy must not stop a busy consumer"
    );
    gates[0].cancel();
    events
        .wait_for("both busy handlers finished", |e| finished_count(e) >= 2)
        .await;

    // One busy, one idle: the idle one goes, the busy one finishes its message.
    let c = Msg::new("busy-c", 1);
    publisher.publish::<Shrinking>(&c).await.expect("publish");
    events.wait_for("one consumer busy", |e| started(e, &c) == 1).await;
    // The other consumer may still be between its last handler and its next receive: ask again, as an
    // autoscaler polling would, until the idle one goes.
    scale_until(
        &broker,
        queue,
        ScalingDecision::ScaleDown(1),
        1,
        "the idle consumer is removed",
    )
    .await;
    gates[1].cancel();
    events
        .wait_for("the busy handler finished", |e| e.contains(&Step::Finished(c.clone())))
        .await;

    // Sentinel: a later message is handled; none of the busy messages was redelivered.
    let sentinel = Msg::new("sentinel", 99);
    publisher.publish::<Shrinking>(&sentinel).await.expect("publish");
    let all = events
        .wait_for("the sentinel", |e| e.contains(&Step::Finished(sentinel.clone())))
        .await;
    for m in [&a, &b, &c] {
        assert_eq!(
            started(&all, m),
            1,
            "{m:?} was redelivered after a scale-down: {all:#?}"
        );
    }
    let _ = running.stop().await;
}

/// Publishes `count` gated messages and checks an autoscaler grows the group from 1 to its max (3) while
/// they wait, and shrinks it back to 1 once they are done.
async fn exercise_autoscaling<H: Harness, T: Topic<Message = Msg>>(
    broker: &shove::Broker<H::B>,
    events: &Recorder<Step>,
    gates: &[CancellationToken],
    concurrency: &Concurrency,
) {
    let queue = T::topology().queue();
    let publisher = broker.publisher().await.expect("publisher");
    wait_active(broker, queue, 1, "start at min").await;
    for i in 0..20 {
        publisher
            .publish::<T>(&Msg::new(format!("m{i}"), 0))
            .await
            .expect("publish");
    }
    wait_active(broker, queue, 3, "the autoscaler scales a backlogged group up to max").await;
    events
        .wait_for("3 handlers running at once", |e| {
            e.iter().filter(|e| matches!(e, Step::Started(_))).count() >= 3
        })
        .await;
    gates[0].cancel();
    events.wait_for("all 20 messages", |e| finished_count(e) >= 20).await;
    assert!(
        concurrency.max() <= 3,
        "more handlers ran at once than max consumers × prefetch 1"
    );
    wait_active(broker, queue, 1, "the autoscaler scales an idle group down to min").await;
}

/// Rule 16: `ConsumerGroup::enable_autoscaling` scales a group of `broker.consumer_group()` up under
/// backlog and down when idle, within `min..=max`.
pub async fn autoscaling_through_consumer_group<H: Harness>() {
    define_topic!(
        AutoGroup,
        Msg,
        TopologyBuilder::new(unique("autoscale-group")).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<AutoGroup>().await.expect("declare");
    let events = Recorder::<Step>::new();
    let gates = gates(1);
    let concurrency = Concurrency::new();
    let handler = gated_handler(events.clone(), gates.clone(), concurrency.clone());
    let mut group = broker.consumer_group();
    group
        .register::<AutoGroup, _>(H::group_config(&GroupSpec::new(1, 3).prefetch(1)), move || {
            handler.clone()
        })
        .await
        .expect("register");
    let running = Running::group(group.enable_autoscaling(fast_autoscaling()), DRAIN);
    exercise_autoscaling::<H, AutoGroup>(&broker, &events, &gates, &concurrency).await;
    let _ = running.stop().await;
}

/// Rule 16: an `Autoscaler` over `broker.autoscaler()` scales the groups made by
/// `broker.consumer_group()` on that broker.
pub async fn autoscaling_through_broker_autoscaler<H: Harness>() {
    define_topic!(
        AutoBroker,
        Msg,
        TopologyBuilder::new(unique("autoscale-broker")).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<AutoBroker>().await.expect("declare");
    let events = Recorder::<Step>::new();
    let gates = gates(1);
    let concurrency = Concurrency::new();
    let handler = gated_handler(events.clone(), gates.clone(), concurrency.clone());
    let mut group = broker.consumer_group();
    group
        .register::<AutoBroker, _>(H::group_config(&GroupSpec::new(1, 3).prefetch(1)), move || {
            handler.clone()
        })
        .await
        .expect("register");
    let running = Running::group(group, DRAIN);

    let cfg = fast_autoscaling();
    let mut autoscaler = Autoscaler::new(
        broker.autoscaler(),
        Stabilized::new(
            ThresholdStrategy::default(),
            cfg.hysteresis_duration,
            cfg.cooldown_duration,
        ),
        cfg.poll_interval,
    );
    let stop = CancellationToken::new();
    let scaler_stop = stop.clone();
    let scaler = tokio::spawn(async move { autoscaler.run(scaler_stop).await });

    exercise_autoscaling::<H, AutoBroker>(&broker, &events, &gates, &concurrency).await;
    stop.cancel();
    tokio::time::timeout(WAIT, scaler)
        .await
        .expect("the autoscaler stops when its token is cancelled")
        .expect("autoscaler task");
    let _ = running.stop().await;
}

/// Publishes 10 messages to topic `T` (the caller's own, so that scenarios running at once do not share
/// it), consumed with `options` by a handler that sleeps a little in each call, and returns the most calls
/// that ran at once.
async fn most_calls_at_once<H: Harness, T: shove::Topic<Message = Msg>>(options: ConsumerOptions<H::B>) -> usize {
    let broker = H::broker().await;
    broker.topology().declare::<T>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let concurrency = Concurrency::new();
    let done = Recorder::<u32>::new();
    let (c, d) = (concurrency.clone(), done.clone());
    let handler = FnHandler::new(move |m: Msg, _: MessageMetadata| {
        let (c, d) = (c.clone(), d.clone());
        async move {
            let _entered = c.enter();
            tokio::time::sleep(ms(5)).await;
            d.push(m.n);
            Outcome::Ack
        }
    });
    let mut sup = broker.consumer_supervisor();
    sup.register::<T, _>(handler, options).expect("register");
    let running = Running::supervisor(sup, DRAIN);
    let batch: Vec<Msg> = (0..10).map(|n| Msg::new("m", n)).collect();
    publisher.publish_batch::<T>(&batch).await.expect("publish_batch");
    done.wait_for("all 10 messages", |d| d.len() >= 10).await;
    let _ = running.stop().await;
    concurrency.max()
}

/// `with_concurrent_processing(false)` handles one message at a time even with prefetch 10.
pub async fn concurrent_processing_off_never_overlaps<H: Harness>() {
    define_topic!(Serial, Msg, TopologyBuilder::new(unique("serial")).dlq().build());
    let options = ConsumerOptions::new()
        .with_prefetch_count(10)
        .with_concurrent_processing(false);
    assert_eq!(
        most_calls_at_once::<H, Serial>(options).await,
        1,
        "two handler calls overlapped with concurrent processing off"
    );
}

/// A prefetch of 0 would take nothing and hang; it is treated as 1, as documented on
/// `ConsumerOptions::prefetch_count`: every message is handled, one at a time.
pub async fn prefetch_zero_is_treated_as_one<H: Harness>() {
    define_topic!(
        NoPrefetch,
        Msg,
        TopologyBuilder::new(unique("prefetch-0")).dlq().build()
    );
    let options = ConsumerOptions::new().with_prefetch_count(0);
    assert_eq!(
        most_calls_at_once::<H, NoPrefetch>(options).await,
        1,
        "prefetch 0 runs one handler at a time, like 1"
    );
}

/// Rule 17: after the stop, no new message is taken; an in-flight handler finishes within the drain
/// timeout and its outcome is settled (acked: never redelivered). Exit code 0.
pub async fn drain_lets_in_flight_handlers_finish<H: Harness>() {
    define_topic!(
        Draining,
        Msg,
        TopologyBuilder::new(unique("drain-finish")).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Draining>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Step>::new();
    let gates = gates(1);
    let handler = gated_handler(events.clone(), gates.clone(), Concurrency::new());

    let mut sup = broker.consumer_supervisor();
    sup.register::<Draining, _>(handler.clone(), ConsumerOptions::new())
        .expect("register");
    let stop = sup.cancellation_token();
    let running = Running::supervisor(sup, DRAIN);

    let slow = Msg::new("slow", 0);
    publisher.publish::<Draining>(&slow).await.expect("publish");
    events
        .wait_for("the slow handler started", |e| started(e, &slow) == 1)
        .await;
    stop.cancel();
    let late = Msg::new("late", 99);
    publisher
        .publish::<Draining>(&late)
        .await
        .expect("publish after the stop");
    let release = gates[0].clone();
    tokio::spawn(async move {
        tokio::time::sleep(ms(200)).await;
        release.cancel();
    });
    let outcome = running
        .ended_within(WAIT, "after the stop and the handler's finish")
        .await;
    assert_eq!(
        outcome,
        SupervisorOutcome::default(),
        "a drain that finishes in time is clean"
    );
    let after_drain = events.snapshot();
    assert!(
        after_drain.contains(&Step::Finished(slow.clone())),
        "the in-flight handler must finish during the drain: {after_drain:#?}"
    );
    assert_eq!(
        started(&after_drain, &late),
        0,
        "a message published after the stop was taken by the stopping consumer"
    );

    // A new consumer gets the late message but not the settled one.
    let mut sup = broker.consumer_supervisor();
    sup.register::<Draining, _>(handler, ConsumerOptions::new())
        .expect("register again");
    let running = Running::supervisor(sup, DRAIN);
    let sentinel = Msg::new("sentinel", 99);
    publisher.publish::<Draining>(&sentinel).await.expect("publish");
    let all = events
        .wait_for("the late message and the sentinel", |e| {
            e.contains(&Step::Finished(late.clone())) && e.contains(&Step::Finished(sentinel.clone()))
        })
        .await;
    assert_eq!(
        started(&all, &slow),
        1,
        "the message settled during the drain was redelivered"
    );
    let _ = running.stop().await;
}

/// Rule 17: messages a stopping consumer had received but not started go back to the broker at once: a
/// new consumer gets them promptly (well before any visibility/ack timeout), each exactly once, and
/// with no retry budget used (a hand-back is not an attempt).
pub async fn drain_hands_back_unstarted_messages<H: Harness>() {
    define_topic!(
        Prefetched,
        Msg,
        TopologyBuilder::new(unique("drain-unstarted")).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Prefetched>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Step>::new();
    let gates = gates(1);
    let handler = gated_handler(events.clone(), gates.clone(), Concurrency::new());
    // No retry budget: a hand-back counted as an attempt would dead-letter its message unhandled.
    let options = || {
        ConsumerOptions::new()
            .with_prefetch_count(10)
            .with_concurrent_processing(false)
            .with_max_retries(0)
    };

    let mut sup = broker.consumer_supervisor();
    sup.register::<Prefetched, _>(handler.clone(), options())
        .expect("register");
    let stop = sup.cancellation_token();
    let running = Running::supervisor(sup, DRAIN);
    let first = Msg::new("first", 0);
    let rest: Vec<Msg> = (1..=4).map(|i| Msg::new(format!("rest-{i}"), 99)).collect();
    publisher.publish::<Prefetched>(&first).await.expect("publish");
    for m in &rest {
        publisher.publish::<Prefetched>(m).await.expect("publish");
    }
    events
        .wait_for("the first handler started", |e| started(e, &first) == 1)
        .await;
    stop.cancel();
    gates[0].cancel();
    let outcome = running.ended_within(WAIT, "after the stop").await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");

    let restarted = Instant::now();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Prefetched, _>(handler, options())
        .expect("register again");
    let running = Running::supervisor(sup, DRAIN);
    let all = events
        .wait_for("the unstarted messages on a new consumer", |e| {
            rest.iter().all(|m| e.contains(&Step::Finished(m.clone())))
        })
        .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(3),
        "unstarted messages must be handed back at once, took {:?}",
        restarted.elapsed()
    );
    for m in rest.iter().chain([&first]) {
        assert_eq!(started(&all, m), 1, "{m:?} handled more than once: {all:#?}");
    }
    let _ = running.stop().await;
}

/// Rule 17 on a sequenced topic: messages buffered behind their key's in-flight message are handed back
/// at once on stop and later handled in order by a new consumer, with no retry budget used (a hand-back
/// is not an attempt).
pub async fn drain_hands_back_buffered_sequenced_messages<H: Harness>() {
    define_sequenced_topic!(
        Buffered,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("drain-buffered"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(20))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Buffered>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Step>::new();
    let gates = gates(1);
    let gated = gated_handler(events.clone(), gates.clone(), Concurrency::new());
    let retry_counts = Recorder::<(u32, u32)>::new();
    let handler = {
        let retry_counts = retry_counts.clone();
        FnHandler::new(move |m: Msg, meta: MessageMetadata| {
            retry_counts.push((m.n, meta.retry_count));
            let gated = gated.clone();
            async move { MessageHandler::<Buffered>::handle(&gated, m, meta, &()).await }
        })
    };

    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Buffered, _>(handler.clone(), ConsumerOptions::new().with_prefetch_count(10))
        .await
        .expect("register_fifo");
    let stop = sup.cancellation_token();
    let running = Running::supervisor(sup, DRAIN);
    // k/0 blocks on gate 0; k/1.. (n ≥ 1, no gate) queue up behind it.
    let batch: Vec<Msg> = (0..5).map(|n| Msg::new("k", n)).collect();
    publisher
        .publish_batch::<Buffered>(&batch)
        .await
        .expect("publish_batch");
    events.wait_for("k/0 started", |e| started(e, &batch[0]) == 1).await;
    stop.cancel();
    gates[0].cancel();
    let outcome = running.ended_within(WAIT, "after the stop").await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    let before = events.snapshot();
    assert!(
        before.contains(&Step::Finished(batch[0].clone())),
        "k/0 finishes during the drain"
    );

    let restarted = Instant::now();
    let mut sup = broker.consumer_supervisor();
    sup.register_fifo::<Buffered, _>(handler, ConsumerOptions::new().with_prefetch_count(10))
        .await
        .expect("register_fifo again");
    let running = Running::supervisor(sup, DRAIN);
    let all = events
        .wait_for("every message of the key", |e| {
            batch.iter().all(|m| e.contains(&Step::Finished(m.clone())))
        })
        .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(3),
        "buffered messages must be handed back at once, took {:?}",
        restarted.elapsed()
    );
    let order: Vec<u32> = all
        .iter()
        .filter_map(|e| match e {
            Step::Finished(m) => Some(m.n),
            Step::Started(_) => None,
        })
        .collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4], "the key's messages, each once, in order");
    let counts = retry_counts.snapshot();
    assert!(
        counts.iter().all(|&(_, retry_count)| retry_count == 0),
        "handed-back messages must keep their retry count (n, retry_count): {counts:?}"
    );
    let _ = running.stop().await;
}

/// Rules 17–18: a handler still running when the drain timeout ends is aborted, the outcome reports the
/// timeout (exit code 3), and the broker redelivers the message to the next consumer.
pub async fn drain_timeout_gives_exit_code_3_and_redelivers<H: Harness>() {
    define_topic!(Stuck, Msg, TopologyBuilder::new(unique("drain-timeout")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<Stuck>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Step>::new();
    let never = gates(1);
    let mut sup = broker.consumer_supervisor();
    sup.register::<Stuck, _>(
        gated_handler(events.clone(), never.clone(), Concurrency::new()),
        ConsumerOptions::new().without_handler_timeout(),
    )
    .expect("register");
    let running = Running::supervisor(sup, ms(100));
    let stuck = Msg::new("stuck", 0);
    publisher.publish::<Stuck>(&stuck).await.expect("publish");
    let first = events
        .wait_for("the stuck handler started", |e| started(e, &stuck) == 1)
        .await;
    let outcome = running.stop().await;
    assert!(outcome.timed_out, "the drain must time out: {outcome:?}");
    assert_eq!(outcome.exit_code(), 3, "{outcome:?}");
    assert!(!first.contains(&Step::Finished(stuck.clone())));

    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Stuck, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register again");
    let running = Running::supervisor(sup, DRAIN);
    probe
        .live
        .wait_for("the aborted message redelivered", |s| s.iter().any(|s| s.msg == stuck))
        .await;
    let _ = running.stop().await;
    never[0].cancel();
}

/// Rule 18: handler panics give exit code 2 and are counted.
pub async fn handler_panic_gives_exit_code_2<H: Harness>() {
    define_topic!(
        Panics,
        Msg,
        TopologyBuilder::new(unique("exit-2")).hold_queue(ms(20)).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Panics>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let acked = Recorder::<u32>::new();
    let a = acked.clone();
    let handler = FnHandler::new(move |m: Msg, meta: MessageMetadata| {
        let a = a.clone();
        async move {
            if meta.retry_count == 0 {
                panic!("conformance: deliberate handler panic");
            }
            a.push(m.n);
            Outcome::Ack
        }
    });
    let mut sup = broker.consumer_supervisor();
    sup.register::<Panics, _>(handler, ConsumerOptions::new().with_max_retries(3))
        .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    publisher.publish::<Panics>(&Msg::new("m", 0)).await.expect("publish");
    acked.wait_for("the retry acked", |a| !a.is_empty()).await;
    let outcome = running.stop().await;
    assert!(outcome.panics >= 1, "the panic must be counted: {outcome:?}");
    assert!(!outcome.timed_out);
    assert_eq!(outcome.exit_code(), 2, "{outcome:?}");
}

/// Rule 18: a run with acks, a retry and a reject (handler decisions, not failures) is clean: exit 0.
pub async fn clean_run_gives_exit_code_0<H: Harness>() {
    define_topic!(
        Clean,
        Msg,
        TopologyBuilder::new(unique("exit-0")).hold_queue(ms(20)).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Clean>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Clean, _>(
        probe.handler(|m, meta| match (m.key.as_str(), meta.retry_count) {
            ("retry", 0) => Outcome::Retry,
            ("reject", _) => Outcome::Reject,
            _ => Outcome::Ack,
        }),
        ConsumerOptions::new(),
    )
    .expect("register");
    sup.register_dlq::<Clean, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);
    for key in ["ack", "retry", "reject"] {
        publisher.publish::<Clean>(&Msg::new(key, 0)).await.expect("publish");
    }
    probe.live.wait_for("4 handler calls", |s| s.len() >= 4).await;
    probe.dead.wait_for("the rejected message", |d| !d.is_empty()).await;
    let outcome = running.stop().await;
    assert_eq!(outcome, SupervisorOutcome::default());
    assert_eq!(outcome.exit_code(), 0);
    assert!(outcome.is_clean());
}

/// Rule 18: a drain timeout outranks panics: exit code 3 even though a handler panicked.
pub async fn drain_timeout_outranks_panics<H: Harness>() {
    define_topic!(Both, Msg, TopologyBuilder::new(unique("exit-3-over-2")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<Both>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<String>::new();
    let never = CancellationToken::new();
    let (e, gate) = (events.clone(), never.clone());
    let handler = FnHandler::new(move |m: Msg, _: MessageMetadata| {
        let (e, gate) = (e.clone(), gate.clone());
        async move {
            e.push(m.key.clone());
            if m.key == "boom" {
                panic!("conformance: deliberate handler panic");
            }
            gate.cancelled().await;
            Outcome::Ack
        }
    });
    let mut sup = broker.consumer_supervisor();
    sup.register::<Both, _>(
        handler,
        ConsumerOptions::new().with_max_retries(0).without_handler_timeout(),
    )
    .expect("register");
    let running = Running::supervisor(sup, ms(100));
    publisher.publish::<Both>(&Msg::new("boom", 0)).await.expect("publish");
    publisher.publish::<Both>(&Msg::new("stuck", 0)).await.expect("publish");
    events
        .wait_for("the panic and the stuck handler", |e| {
            e.iter().any(|k| k == "boom") && e.iter().any(|k| k == "stuck")
        })
        .await;
    let outcome = running.stop().await;
    assert!(outcome.panics >= 1, "{outcome:?}");
    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.exit_code(), 3, "a drain timeout outranks panics: {outcome:?}");
    never.cancel();
}

/// Rule 17: stopping one consumer group stops neither another group, nor a supervisor, nor the broker
/// connection its publishers use; messages of the stopped group's topic wait in the broker.
pub async fn stopping_one_group_leaves_others_running<H: Harness>() {
    define_topic!(A, Msg, TopologyBuilder::new(unique("indep-a")).dlq().build());
    define_topic!(B, Msg, TopologyBuilder::new(unique("indep-b")).dlq().build());
    define_topic!(C, Msg, TopologyBuilder::new(unique("indep-c")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<A>().await.expect("declare");
    broker.topology().declare::<B>().await.expect("declare");
    broker.topology().declare::<C>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let (pa, pb, pc) = (Probe::<Msg>::new(), Probe::<Msg>::new(), Probe::<Msg>::new());

    let mut group_a = broker.consumer_group();
    let ha = pa.handler(|_, _| Outcome::Ack);
    group_a
        .register::<A, _>(H::group_config(&GroupSpec::new(1, 1)), move || ha.clone())
        .await
        .expect("register A");
    let mut group_b = broker.consumer_group();
    let hb = pb.handler(|_, _| Outcome::Ack);
    group_b
        .register::<B, _>(H::group_config(&GroupSpec::new(1, 1)), move || hb.clone())
        .await
        .expect("register B");
    let mut sup_c = broker.consumer_supervisor();
    sup_c
        .register::<C, _>(pc.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register C");
    let (run_a, run_b, run_c) = (
        Running::group(group_a, DRAIN),
        Running::group(group_b, DRAIN),
        Running::supervisor(sup_c, DRAIN),
    );
    publisher.publish::<A>(&Msg::new("a", 0)).await.expect("publish A");
    pa.live.wait_for("A's first message", |s| !s.is_empty()).await;

    let outcome = run_a.stop().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    broker
        .ping()
        .await
        .expect("the broker connection survives stopping a group");
    publisher
        .publish::<A>(&Msg::new("a", 1))
        .await
        .expect("publishing survives stopping a group");
    publisher.publish::<B>(&Msg::new("b", 0)).await.expect("publish B");
    publisher.publish::<C>(&Msg::new("c", 0)).await.expect("publish C");
    pb.live.wait_for("B still consuming", |s| !s.is_empty()).await;
    pc.live.wait_for("C still consuming", |s| !s.is_empty()).await;

    let outcome = run_c.stop().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    publisher.publish::<B>(&Msg::new("b", 1)).await.expect("publish B");
    pb.live
        .wait_for("B still consuming after the supervisor stopped", |s| s.len() >= 2)
        .await;
    assert_eq!(pa.live.len(), 1, "the stopped group A took a message");

    // A's message waited in the broker for a new group.
    let mut group_a = broker.consumer_group();
    let ha = pa.handler(|_, _| Outcome::Ack);
    group_a
        .register::<A, _>(H::group_config(&GroupSpec::new(1, 1)), move || ha.clone())
        .await
        .expect("register A again");
    let run_a = Running::group(group_a, DRAIN);
    pa.live
        .wait_for("A's message published while A was stopped", |s| {
            s.iter().any(|s| s.msg == Msg::new("a", 1))
        })
        .await;
    let _ = run_a.stop().await;
    let _ = run_b.stop().await;
}

/// Rules 17–18 for consumer groups: a group handler past the drain timeout gives exit code 3 and its
/// message is redelivered.
pub async fn group_drain_timeout_gives_exit_code_3<H: Harness>() {
    define_topic!(
        GroupStuck,
        Msg,
        TopologyBuilder::new(unique("group-drain-timeout")).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<GroupStuck>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Step>::new();
    let never = gates(1);
    let handler = gated_handler(events.clone(), never.clone(), Concurrency::new());
    let mut group = broker.consumer_group();
    group
        .register::<GroupStuck, _>(H::group_config(&GroupSpec::new(1, 1)), move || handler.clone())
        .await
        .expect("register");
    let running = Running::group(group, ms(100));
    let stuck = Msg::new("stuck", 0);
    publisher.publish::<GroupStuck>(&stuck).await.expect("publish");
    events
        .wait_for("the stuck handler started", |e| started(e, &stuck) == 1)
        .await;
    let outcome = running.stop().await;
    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.exit_code(), 3, "{outcome:?}");

    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<GroupStuck, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register a supervisor");
    let running = Running::supervisor(sup, DRAIN);
    probe
        .live
        .wait_for("the aborted message redelivered", |s| s.iter().any(|s| s.msg == stuck))
        .await;
    let _ = running.stop().await;
    never[0].cancel();
}
