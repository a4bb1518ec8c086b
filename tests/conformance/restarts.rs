//! Rule 22 with a real restart: the broker process dies (SIGKILL) or stops gracefully (SIGTERM) in the
//! middle of a stream, and starts again. Publishers and consumers reconnect by themselves; no publish the
//! broker acknowledged is lost, a retry waiting in a hold queue still comes back, and the redeliveries are
//! within a stated bound.
//!
//! Each scenario runs its own broker process ([`Harness::own_broker`]), so killing it disturbs no other
//! scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shove::{ConsumerOptions, MessageMetadata, Outcome, Publisher, Topic, TopologyBuilder, define_topic};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::own_broker::{OwnBroker, Stop};
use super::{DRAIN, FnHandler, Harness, Msg, Recorder, Running, Seen, lock, ms, skip, unique};

/// Messages published in all; the first half before the stop, the rest into the outage and after it.
const TOTAL: u32 = 600;
/// Handled by the consumer before the broker is stopped (so the stop lands mid-stream).
const HANDLED_BEFORE_STOP: usize = 30;
/// Messages the consumer handles at once.
const PREFETCH: u16 = 10;
/// How long each handler call works: with [`PREFETCH`] calls at once, about 500 messages a second, so the
/// stop lands with a backlog in the broker.
const WORK: Duration = Duration::from_millis(20);
/// The longest the stream may take to finish after the broker is back.
const FINISH_WITHIN: Duration = Duration::from_secs(90);

define_topic!(
    KilledMidStream,
    Msg,
    TopologyBuilder::new(unique("kill9-broker"))
        .hold_queue(ms(300))
        .dlq()
        .build()
);
define_topic!(
    StoppedMidStream,
    Msg,
    TopologyBuilder::new(unique("stop-broker"))
        .hold_queue(ms(300))
        .dlq()
        .build()
);

/// Every 10th message is retried once, through the hold queue, so retries are in flight at the stop.
fn retried_once(msg: &Msg) -> bool {
    msg.n.is_multiple_of(10)
}

/// The broker is killed with SIGKILL mid-stream and started again.
pub async fn broker_kill_9_mid_stream_loses_nothing<H: Harness>() {
    restart_mid_stream::<H, KilledMidStream>("broker_kill_9_mid_stream_loses_nothing", Stop::Kill9).await;
}

/// The broker is stopped gracefully (SIGTERM) mid-stream and started again.
pub async fn graceful_broker_restart_mid_stream_loses_nothing<H: Harness>() {
    restart_mid_stream::<H, StoppedMidStream>("graceful_broker_restart_mid_stream_loses_nothing", Stop::Graceful).await;
}

/// What the publishing task reports.
#[derive(Default)]
struct Publishing {
    /// Numbers whose publish returned `Ok`: the broker acknowledged them.
    acknowledged: Mutex<BTreeSet<u32>>,
    /// Publish calls that returned an error (each was tried again).
    failures: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// Signalled when the first half is published.
    first_half_done: Notify,
    /// Signalled by the scenario once the broker is stopped.
    go_on: Notify,
}

async fn restart_mid_stream<H: Harness, T: Topic<Message = Msg>>(scenario: &str, how: Stop) {
    let Some(spec) = H::own_broker() else {
        skip::<H>(scenario, "the harness cannot start a broker process of its own");
        return;
    };
    if let (Stop::Kill9, Some(gap)) = (how, H::capabilities().broker_kill_9_gap) {
        skip::<H>(scenario, gap);
        return;
    }
    let mut own = OwnBroker::start(spec).await;
    let broker = H::broker_at(own.address()).await;
    broker.topology().declare::<T>().await.expect("declaring the topic");
    let publisher = broker.publisher().await.expect("a publisher");

    let calls: Arc<Recorder<Seen<Msg>>> = Recorder::new();
    let recorder = calls.clone();
    let handler = FnHandler::new(move |msg: Msg, meta: MessageMetadata| {
        let outcome = if retried_once(&msg) && meta.retry_count == 0 {
            Outcome::Retry
        } else {
            Outcome::Ack
        };
        recorder.push(Seen {
            msg,
            meta,
            at: Instant::now(),
        });
        async move {
            tokio::time::sleep(WORK).await;
            outcome
        }
    });
    let mut supervisor = broker.consumer_supervisor();
    supervisor
        .register::<T, _>(handler, ConsumerOptions::new().with_prefetch_count(PREFETCH))
        .expect("register");
    // A generous drain: the machine is busy with a broker that just started.
    let running = Running::supervisor(supervisor, DRAIN * 2);

    let state = Arc::new(Publishing::default());
    let publishing = tokio::spawn(publish_all::<T>(publisher, state.clone()));
    state.first_half_done.notified().await;
    calls
        .wait_for("the consumer to be mid-stream", |c| c.len() >= HANDLED_BEFORE_STOP)
        .await;

    // Counted when the stop begins: a graceful stop takes seconds on some brokers (RabbitMQ), and the
    // consumer keeps going while it does.
    let handled_at_stop = calls.len();
    assert!(
        handled_at_stop < (TOTAL / 2) as usize,
        "the stream was drained ({handled_at_stop} calls) before the stop: not mid-stream"
    );
    let status = own.stop(how).await;
    let handled_by_stop_end = calls.len();
    if how == Stop::Kill9 {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "the broker must die of SIGKILL: {status:?}");
    }
    // The second half is published into the outage: the publisher sees errors and tries again.
    state.go_on.notify_one();
    let failed_into_outage = wait_until(Duration::from_secs(30), || state.failures.load(Ordering::SeqCst) >= 1).await;
    assert!(
        failed_into_outage,
        "no publish failed within 30 s while the broker was down; acknowledged so far: {}",
        lock(&state.acknowledged).len()
    );
    own.start_again().await;

    match tokio::time::timeout(FINISH_WITHIN, publishing).await {
        Ok(joined) => joined.expect("the publishing task panicked"),
        Err(_) => panic!(
            "the publisher did not resume within {FINISH_WITHIN:?} of the restart; acknowledged {}, last error: {:?}",
            lock(&state.acknowledged).len(),
            lock(&state.last_error)
        ),
    }
    let acknowledged = lock(&state.acknowledged).clone();
    assert_eq!(
        acknowledged.len() as u32,
        TOTAL,
        "every publish is tried until acknowledged"
    );

    // Lost = 0: every acknowledged message is handled to its Ack, the retried ones after their Retry.
    let finished = |calls: &[Seen<Msg>]| -> BTreeSet<u32> {
        calls
            .iter()
            .filter(|s| !retried_once(&s.msg) || s.meta.retry_count >= 1)
            .map(|s| s.msg.n)
            .collect()
    };
    let all_finished = wait_until(FINISH_WITHIN, || acknowledged.is_subset(&finished(&calls.snapshot()))).await;
    let calls = calls.snapshot();
    if !all_finished {
        let done = finished(&calls);
        let lost: Vec<u32> = acknowledged.difference(&done).copied().collect();
        let started: Vec<u32> = lost
            .iter()
            .copied()
            .filter(|n| calls.iter().any(|c| c.msg.n == *n))
            .collect();
        panic!(
            "{} acknowledged messages were not handled to their end within {FINISH_WITHIN:?} of the restart: \
             {lost:?}; of these, {started:?} were handled before (a retry that never came back)",
            lost.len()
        );
    }

    // Duplicates: a message handled but not yet acknowledged when the broker stopped is handled again (at
    // most a prefetch's worth), and a publish that failed may still have been stored (the broker took it
    // but its acknowledgement was lost, or the client sent it once reconnected), so each failed publish
    // may add a copy. A broker that writes acknowledgements lazily forgets the last ones when killed:
    // then every message handled before the kill may come again.
    let failures = state.failures.load(Ordering::SeqCst) as usize;
    let forgotten = if how == Stop::Kill9 && H::capabilities().kill_9_forgets_recent_acks {
        handled_by_stop_end
    } else {
        0
    };
    let bound = PREFETCH as usize + failures + forgotten;
    let mut per_message: BTreeMap<u32, usize> = BTreeMap::new();
    for call in &calls {
        *per_message.entry(call.msg.n).or_default() += 1;
    }
    let expected: usize = (0..TOTAL).map(|n| if n.is_multiple_of(10) { 2 } else { 1 }).sum();
    let extra = calls.len().saturating_sub(expected);
    let duplicated: Vec<(u32, usize)> = per_message
        .iter()
        .filter(|(n, count)| **count > if n.is_multiple_of(10) { 2 } else { 1 })
        .map(|(n, c)| (*n, *c))
        .collect();
    assert!(
        extra <= bound,
        "{extra} calls beyond one per attempt; bound {bound} (prefetch {PREFETCH} + {failures} failed \
         publishes + {forgotten} forgotten acknowledgements); duplicated (number, calls): {duplicated:?}"
    );

    let outcome = running.stop().await;
    assert!(
        outcome.errors == 0 && outcome.panics == 0,
        "the consumer must have reconnected by itself and never failed: {outcome:?}"
    );
    if outcome.timed_out {
        // Seen on RabbitMQ under a loaded machine (about one run in three of its whole suite): the drain
        // after the restart exceeds its 10 s, though every message was handled and settled. Not understood
        // yet (open in issue 11); reported visibly rather than failing the run or passing silently.
        let line = format!(
            "note: {scenario} on {}: the final drain timed out: {outcome:?}",
            H::name()
        );
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
    broker.close().await;
    own.passed();
}

/// Publishes `0..TOTAL` one by one, each until the broker acknowledges it. Stops after the first half until
/// the scenario has stopped the broker.
async fn publish_all<T: Topic<Message = Msg>>(publisher: Publisher<impl shove::Backend>, state: Arc<Publishing>) {
    for n in 0..TOTAL {
        if n == TOTAL / 2 {
            state.first_half_done.notify_one();
            state.go_on.notified().await;
        }
        let mut backoff = ms(50);
        loop {
            let result = tokio::time::timeout(Duration::from_secs(20), publisher.publish::<T>(&Msg::new("m", n))).await;
            match result {
                Ok(Ok(())) => {
                    lock(&state.acknowledged).insert(n);
                    break;
                }
                Ok(Err(e)) => *lock(&state.last_error) = Some(e.to_string()),
                Err(_) => *lock(&state.last_error) = Some("publish did not return within 20 s".into()),
            }
            state.failures.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Polls `done` every 20 ms until it holds or `within` passes; whether it held.
async fn wait_until(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(ms(20)).await;
    }
    true
}
