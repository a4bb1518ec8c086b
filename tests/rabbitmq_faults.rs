//! Fault tests for the RabbitMQ backend against a real broker (127.0.0.1:5672, guest/guest, `rabbitmqctl`
//! on PATH): a broker app restart in the middle of a stream, `kill -9` of a consumer process during a
//! retry's hold delay and in the middle of transactional settles, and publisher confirms on every publish
//! path (contract rules 12, 13, 17, 22).
//!
//! `harness = false`: some scenarios must kill a consumer *process*, so this binary re-executes itself as
//! the child. With `SHOVE_FAULTS_CHILD=<role>` set it runs that child role and never returns; otherwise it
//! runs every scenario in turn (one of them stops the broker app, so nothing runs in parallel), each on its
//! own tokio runtime, and ends with `N passed, N failed`.
//!
//! Every wait polls a condition up to a deadline. Queue names carry the process id, a counter and a random
//! suffix; the child of a scenario learns the queue name of its topic from an environment variable.
//!
//! The restart scenario first checks that the broker can start again: RabbitMQ recovers every durable
//! queue on `start_app` and stalls (stays down) when it has more queues than file handles, so on such a
//! broker the scenario fails up front instead of stopping it. `SHOVE_FAULTS_AMQP_PORT` and
//! `SHOVE_FAULTS_RABBITMQ_NODE` point every scenario at another node (e.g. a private one on 5673).

mod fault_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fault_support::{
    ChildProc, Log, Msg, Recording, Scenario, assert_killed_by_sigkill, child_main, lock, name_from_env, poll_until,
    run_scenarios, say, unique,
};
use shove::rabbitmq::{QueueStatsProvider, RabbitMqClient, RabbitMqConfig, RabbitMqConsumer, RabbitMqPublisher};
use shove::{
    Broker, ConsumerOptions, MessageHandler, MessageMetadata, Outcome, QueueTopology, RabbitMq, ShoveError, Topic,
    TopologyBuilder, define_topic,
};
use tokio_util::sync::CancellationToken;

/// The broker's AMQP port on 127.0.0.1 (guest/guest): 5672 unless `SHOVE_FAULTS_AMQP_PORT` says otherwise
/// (to point the scenarios at a private node together with `SHOVE_FAULTS_RABBITMQ_NODE`).
const AMQP_PORT_ENV: &str = "SHOVE_FAULTS_AMQP_PORT";
/// The node `rabbitmqctl` controls (`-n`); its default node unless set.
const RABBITMQ_NODE_ENV: &str = "SHOVE_FAULTS_RABBITMQ_NODE";

/// Names the child role; set only in the re-executed child.
const CHILD_ROLE_ENV: &str = "SHOVE_FAULTS_CHILD";
/// The queue of [`Kill9Topic`], handed from the parent to its child.
const KILL9_QUEUE_ENV: &str = "SHOVE_FAULTS_KILL9_QUEUE";
/// The queue of `ExactlyOnceTopic`, handed from the parent to its child.
#[cfg(feature = "rabbitmq-transactional")]
const EXACTLY_ONCE_QUEUE_ENV: &str = "SHOVE_FAULTS_EXACTLY_ONCE_QUEUE";

/// Copies published per confirmed batch in the hold-queue stop scenario.
const HOLD_STOP_BATCH: usize = 50;
/// Copies confirmed into the hold queue before the broker app is stopped.
const HOLD_STOP_BEFORE_STOP: u64 = 3_000;

/// The hold delay of the kill -9 scenario.
const KILL9_HOLD: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------------------
// Topics and messages

/// The prefix of every queue name (see [`unique`]).
const NAME_PREFIX: &str = "faults";

define_topic!(
    RestartTopic,
    Msg,
    TopologyBuilder::new(unique(NAME_PREFIX, "restart"))
        .hold_queue(Duration::from_millis(500))
        .dlq()
        .build()
);
define_topic!(
    Kill9Topic,
    Msg,
    TopologyBuilder::new(name_from_env(KILL9_QUEUE_ENV, NAME_PREFIX, "kill9"))
        .hold_queue(KILL9_HOLD)
        .dlq()
        .build()
);
#[cfg(feature = "rabbitmq-transactional")]
define_topic!(
    ExactlyOnceTopic,
    Msg,
    TopologyBuilder::new(name_from_env(EXACTLY_ONCE_QUEUE_ENV, NAME_PREFIX, "exactly-once"))
        .hold_queue(Duration::from_secs(1))
        .dlq()
        .build()
);
define_topic!(
    HoldStopTopic,
    Msg,
    TopologyBuilder::new(unique(NAME_PREFIX, "hold-stop"))
        .hold_queue(Duration::from_millis(100))
        .dlq()
        .build()
);
define_topic!(
    ConfirmTopic,
    Msg,
    TopologyBuilder::new(unique(NAME_PREFIX, "confirms")).dlq().build()
);

// ---------------------------------------------------------------------------------------------------------
// Helpers

fn amqp_port() -> u16 {
    std::env::var(AMQP_PORT_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

fn amqp_addr() -> String {
    format!("127.0.0.1:{}", amqp_port())
}

fn amqp_uri() -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp_port())
}

/// `rabbitmqctl` arguments, with `-n node` first when a node is configured.
fn rabbitmqctl_args<'a>(args: &[&'a str], node: &'a Option<String>) -> Vec<&'a str> {
    let mut all = Vec::with_capacity(args.len() + 2);
    if let Some(node) = node {
        all.extend(["-n", node.as_str()]);
    }
    all.extend_from_slice(args);
    all
}

async fn connect() -> RabbitMqClient {
    match RabbitMqClient::connect(&RabbitMqConfig::new(amqp_uri())).await {
        Ok(client) => client,
        Err(e) => panic!("cannot connect to RabbitMQ at {} (guest/guest): {e}", amqp_addr()),
    }
}

/// Ready messages of `queue` from a passive declare, `None` when the broker does not answer.
async fn try_ready<P: QueueStatsProvider>(stats: &P, queue: &str) -> Option<u64> {
    stats.get_queue_stats(queue).await.ok().map(|s| s.messages_ready)
}

/// Ready messages of `queue`; panics when the broker does not answer.
async fn ready<P: QueueStatsProvider>(stats: &P, queue: &str) -> u64 {
    match stats.get_queue_stats(queue).await {
        Ok(s) => s.messages_ready,
        Err(e) => panic!("cannot read the depth of '{queue}': {e}"),
    }
}

/// Waits until `queue` has a consumer (consumers subscribe asynchronously).
async fn wait_for_consumer<P: QueueStatsProvider>(stats: &P, queue: &str) {
    let subscribed = poll_until(Duration::from_secs(15), || async {
        stats.get_queue_stats(queue).await.is_ok_and(|s| s.consumers >= 1)
    })
    .await;
    assert!(subscribed, "no consumer subscribed to '{queue}' within 15 s");
}

/// Every queue of a topic: main, hold queues, DLQ.
fn queues_of(topology: &QueueTopology) -> Vec<String> {
    let mut names = vec![topology.queue().to_string()];
    names.extend(topology.hold_queues().iter().map(|h| h.name().to_string()));
    names.extend(topology.dlq().map(str::to_string));
    names
}

/// Deletes a topic's queues (best effort, after a passing scenario).
async fn delete_queues(client: &RabbitMqClient, topology: &QueueTopology) {
    for name in queues_of(topology) {
        if let Ok(channel) = client.create_channel().await {
            let _ = channel.queue_delete(name.as_str().into(), Default::default()).await;
            let _ = channel.close(200, "cleanup".into()).await;
        }
    }
}

/// Whether something accepts TCP connections on the AMQP port.
async fn amqp_port_open() -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(amqp_addr())).await,
        Ok(Ok(_))
    )
}

/// Runs `rabbitmqctl args`, bounded by `within`.
async fn rabbitmqctl(args: &[&str], within: Duration) -> Result<String, String> {
    let node = std::env::var(RABBITMQ_NODE_ENV).ok();
    let args = rabbitmqctl_args(args, &node);
    let shown = args.join(" ");
    let run = tokio::process::Command::new("rabbitmqctl")
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(within, run).await {
        Err(_) => Err(format!("`rabbitmqctl {shown}` did not finish within {within:?}")),
        Ok(Err(e)) => Err(format!("cannot run `rabbitmqctl {shown}`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => Err(format!(
            "`rabbitmqctl {shown}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Refuses to stop a broker app that cannot start again: on start, RabbitMQ recovers every durable queue
/// and needs a file handle per queue; with more queues than its file handle limit the recovery stalls and
/// the broker stays down (seen with RabbitMQ 3.10 and a 1024 ulimit).
async fn check_the_broker_can_restart() {
    let status = rabbitmqctl(&["status", "--formatter", "json"], Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status: serde_json::Value =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("`rabbitmqctl status` is not JSON: {e}"));
    let limit = status["file_descriptors"]["total_limit"]
        .as_u64()
        .unwrap_or_else(|| panic!("`rabbitmqctl status` reports no file descriptor limit: {status}"));
    let queues = rabbitmqctl(
        &["-q", "list_queues", "name", "--no-table-headers"],
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count() as u64;
    assert!(
        queues + 100 <= limit,
        "refusing to restart the broker app: it has {queues} queues and a file handle limit of {limit}; \
         recovering more queues than (limit - 100) on start_app stalls RabbitMQ and leaves it down. Delete \
         stale queues or raise the node's open-files limit (ulimit -n), or point this test at a private node \
         with {AMQP_PORT_ENV} and {RABBITMQ_NODE_ENV}"
    );
}

/// How long the node's at-least-once dead-letter workers wait before they send again a copy they could
/// not deliver (`dead_letter_worker_publisher_confirm_timeout`; 180 s unless set, and scripts/test.sh sets
/// 10 s). Hold-queue copies that fall due while the node is starting wait this long after a restart.
async fn dead_letter_resend_after() -> Duration {
    let out = rabbitmqctl(
        &[
            "eval",
            "application:get_env(rabbit, dead_letter_worker_publisher_confirm_timeout).",
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // `{ok,10000}`, or `undefined` on a broker without the setting.
    let ms = out
        .trim()
        .strip_prefix("{ok,")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(180_000);
    Duration::from_millis(ms)
}

/// Runs `rabbitmqctl args` synchronously, killing it after `within`.
fn rabbitmqctl_blocking(args: &[&str], within: Duration) -> Result<(), String> {
    let node = std::env::var(RABBITMQ_NODE_ENV).ok();
    let args = rabbitmqctl_args(args, &node);
    let shown = args.join(" ");
    let mut child = Command::new("rabbitmqctl")
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run `rabbitmqctl {shown}`: {e}"))?;
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("`rabbitmqctl {shown}` failed: {s}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`rabbitmqctl {shown}` did not finish within {within:?}"));
            }
        }
    }
}

/// Starts the broker app again when dropped while armed, so a failing restart scenario never leaves the
/// broker stopped.
struct StartAppGuard {
    armed: bool,
}

impl Drop for StartAppGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        eprintln!("rabbitmq_faults: starting the RabbitMQ app again after a failure");
        let started = rabbitmqctl_blocking(&["start_app"], Duration::from_secs(180))
            .and_then(|()| rabbitmqctl_blocking(&["-t", "120", "await_startup"], Duration::from_secs(150)));
        if let Err(e) = started {
            eprintln!(
                "rabbitmq_faults: THE RABBITMQ APP MAY STILL BE DOWN: {e}; check /var/log/rabbitmq and run \
                 `rabbitmqctl start_app`"
            );
        }
    }
}

/// A consumer running in a task of the scenario's runtime.
struct Running {
    stop: CancellationToken,
    /// True while the consumer has a handler or a settle in flight.
    processing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<(), ShoveError>>,
}

fn start_consumer<T: Topic<Message = Msg>>(
    client: &RabbitMqClient,
    handler: Recording,
    options: ConsumerOptions<RabbitMq>,
) -> Running {
    let stop = CancellationToken::new();
    let consumer = RabbitMqConsumer::new(client.clone());
    let options = options.with_shutdown(stop.clone());
    let processing = options.processing_handle();
    let task = tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await });
    Running { stop, processing, task }
}

impl Running {
    /// Stops the consumer and checks it ended cleanly within 20 s.
    async fn finish(self) {
        let Running {
            stop,
            processing,
            mut task,
        } = self;
        let started = Instant::now();
        stop.cancel();
        let ended = match tokio::time::timeout(Duration::from_secs(20), &mut task).await {
            Ok(ended) => ended,
            Err(_) => {
                let in_flight = processing.load(Ordering::SeqCst);
                // Find out whether it stops at all, for the report.
                let later = match tokio::time::timeout(Duration::from_secs(60), &mut task).await {
                    Ok(ended) => format!("it stopped {:.1?} after the token, with {ended:?}", started.elapsed()),
                    Err(_) => format!("it was still running {:.1?} after the token", started.elapsed()),
                };
                panic!(
                    "the consumer did not stop within 20 s of its shutdown token; at 20 s a handler or settle was \
                     {}in flight; {later}",
                    if in_flight { "" } else { "not " }
                );
            }
        };
        match ended {
            Err(e) => panic!("the consumer task failed: {e}"),
            Ok(Err(e)) => panic!("the consumer ended with an error: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Child roles

/// The child's handler: on a first attempt prints `"{tag} {delivery_id} {n}"` and returns `Retry`; on
/// any later attempt prints `HANGING …` and never returns, so the child never settles a retried copy.
struct ChildHandler {
    tag: &'static str,
}

impl<T: Topic<Message = Msg>> MessageHandler<T> for ChildHandler {
    type Context = ();

    async fn handle(&self, msg: Msg, meta: MessageMetadata, _: &()) -> Outcome {
        if meta.retry_count == 0 {
            say(&format!("{} {} {}", self.tag, meta.delivery_id, msg.n));
            Outcome::Retry
        } else {
            say(&format!("HANGING {} {} {}", meta.delivery_id, msg.n, meta.retry_count));
            std::future::pending::<Outcome>().await
        }
    }
}

async fn child_consume<T: Topic<Message = Msg>>(options: ConsumerOptions<RabbitMq>, tag: &'static str) -> i32 {
    let client = match RabbitMqClient::connect(&RabbitMqConfig::new(amqp_uri())).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("child: cannot connect: {e}");
            return 2;
        }
    };
    let result = RabbitMqConsumer::new(client)
        .run::<T, _>(ChildHandler { tag }, (), options)
        .await;
    eprintln!("child: the consumer ended, which it must not: {result:?}");
    2
}

async fn child_role(role: &str) -> i32 {
    match role {
        "retry_then_hang" => {
            let options = ConsumerOptions::<RabbitMq>::preset(1).without_handler_timeout();
            child_consume::<Kill9Topic>(options, "RETRYING").await
        }
        #[cfg(feature = "rabbitmq-transactional")]
        "exactly_once_retry" => {
            let options = ConsumerOptions::<RabbitMq>::preset(50)
                .with_exactly_once()
                .without_handler_timeout();
            child_consume::<ExactlyOnceTopic>(options, "FIRST").await
        }
        other => {
            eprintln!("child: unknown role {other:?}");
            2
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 1: broker app restart in the middle of a stream

const RESTART_TOTAL: u64 = 2_000;
const RESTART_HALF: usize = 1_000;
const RESTART_BATCH: usize = 50;

/// What the publisher task reports to the scenario.
#[derive(Default)]
struct PublishState {
    /// Payload numbers the broker confirmed.
    confirmed: Mutex<BTreeSet<u64>>,
    failed_attempts: AtomicU32,
    errors: Mutex<Vec<String>>,
    half_done: AtomicBool,
    app_stopped: AtomicBool,
}

/// Publishes `batch`, retrying what was not confirmed with a doubling backoff (100 ms … 2 s) for at
/// most 120 s. Records every confirmed message.
async fn publish_retrying(publisher: &RabbitMqPublisher, batch: &[Msg], state: &PublishState) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rest = batch;
    let mut backoff = Duration::from_millis(100);
    while !rest.is_empty() {
        let (confirmed, result) =
            match tokio::time::timeout(Duration::from_secs(40), publisher.publish_batch::<RestartTopic>(rest)).await {
                Ok((n, r)) => (n, r.map_err(|e| e.to_string())),
                Err(_) => (0, Err("publish_batch did not return within 40 s".to_string())),
            };
        let confirmed = usize::try_from(confirmed).unwrap_or(usize::MAX).min(rest.len());
        lock(&state.confirmed).extend(rest[..confirmed].iter().map(|m| m.n));
        rest = &rest[confirmed..];
        if let Err(e) = result {
            state.failed_attempts.fetch_add(1, Ordering::Relaxed);
            lock(&state.errors).push(e.clone());
            assert!(
                Instant::now() < deadline,
                "publishing did not resume within 120 s; last error: {e}"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Publishes the first half, waits until the broker app has been stopped, then publishes the rest
/// (failing, backing off and retrying until the app is back).
async fn publish_around_restart(publisher: RabbitMqPublisher, state: Arc<PublishState>) {
    let all: Vec<Msg> = (0..RESTART_TOTAL).map(|n| Msg { n }).collect();
    for batch in all[..RESTART_HALF].chunks(RESTART_BATCH) {
        publish_retrying(&publisher, batch, &state).await;
    }
    state.half_done.store(true, Ordering::SeqCst);
    let stopped = poll_until(Duration::from_secs(120), || async {
        state.app_stopped.load(Ordering::SeqCst)
    })
    .await;
    assert!(stopped, "the scenario never stopped the broker app");
    for batch in all[RESTART_HALF..].chunks(RESTART_BATCH) {
        publish_retrying(&publisher, batch, &state).await;
    }
}

async fn broker_app_restart_mid_stream_loses_nothing() {
    check_the_broker_can_restart().await;
    let topology = RestartTopic::topology();
    let queue = topology.queue();
    let consumer_client = connect().await;
    let publisher_client = connect().await;
    let stats_client = connect().await;
    Broker::<RabbitMq>::from_client(publisher_client.clone())
        .topology()
        .declare::<RestartTopic>()
        .await
        .expect("declaring the topic");
    let stats = Broker::<RabbitMq>::from_client(stats_client.clone()).queue_stats_provider();

    // Every 7th message goes through the hold queue once; 20 ms of work per call keeps the stream going
    // while the broker app restarts.
    let log = Log::default();
    let handler = Recording {
        log: log.clone(),
        retry_first: |n| n % 7 == 0,
        work: Duration::from_millis(20),
    };
    let consumer = start_consumer::<RestartTopic>(&consumer_client, handler, ConsumerOptions::preset(5));
    wait_for_consumer(&stats, queue).await;

    let state = Arc::new(PublishState::default());
    let publisher = RabbitMqPublisher::new(publisher_client.clone())
        .await
        .expect("a publisher");
    let publishing = tokio::spawn(publish_around_restart(publisher, state.clone()));

    let mid_stream = poll_until(Duration::from_secs(60), || async {
        state.half_done.load(Ordering::SeqCst) && log.acked_calls() >= 200
    })
    .await;
    assert!(
        mid_stream,
        "before the restart: {} of {RESTART_HALF} published, {} handled within 60 s",
        lock(&state.confirmed).len(),
        log.acked_calls()
    );

    // Stop the broker app, check it is down, let the publisher run into the outage, start it again.
    let mut guard = StartAppGuard { armed: true };
    let outage_started = Instant::now();
    let handled_at_stop = log.acked().len();
    rabbitmqctl(&["stop_app"], Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let down = poll_until(Duration::from_secs(30), || async { !amqp_port_open().await }).await;
    assert!(
        down,
        "port 5672 still accepts connections 30 s after `rabbitmqctl stop_app`"
    );
    state.app_stopped.store(true, Ordering::SeqCst);
    let publisher_saw_outage = poll_until(Duration::from_secs(20), || async {
        state.failed_attempts.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(
        publisher_saw_outage,
        "no publish failed while the broker app was stopped (confirmed so far: {})",
        lock(&state.confirmed).len()
    );
    rabbitmqctl(&["start_app"], Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rabbitmqctl(&["-t", "120", "await_startup"], Duration::from_secs(130))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    guard.armed = false;
    let outage = outage_started.elapsed();
    let restarted_at = Instant::now();

    // The publisher resumes by itself and gets every message confirmed.
    match tokio::time::timeout(Duration::from_secs(150), publishing).await {
        Err(_) => panic!(
            "the publisher did not finish within 150 s of the restart; confirmed {}; errors: {:?}",
            lock(&state.confirmed).len(),
            lock(&state.errors)
        ),
        Ok(Err(e)) => panic!("the publisher task failed: {e}"),
        Ok(Ok(())) => {}
    }
    let confirmed = lock(&state.confirmed).clone();
    assert_eq!(
        confirmed.len() as u64,
        RESTART_TOTAL,
        "the publisher retried every batch until it was confirmed"
    );

    // The consumer resumes by itself and handles every confirmed message at least once; a retried copy
    // that fell due while the node was starting comes back after the dead-letter workers' resend delay.
    let within = Duration::from_secs(120).max(dead_letter_resend_after().await + Duration::from_secs(60));
    let all_handled = poll_until(within, || async { confirmed.is_subset(&log.acked()) }).await;
    let acked = log.acked();
    let missing: Vec<u64> = confirmed.difference(&acked).copied().collect();
    assert!(
        all_handled && missing.is_empty(),
        "{} confirmed messages were never handled within {within:?} of the restart (first: {:?}); handled {} \
         distinct, {} before the stop; the consumer task has {}",
        missing.len(),
        &missing[..missing.len().min(20)],
        acked.len(),
        handled_at_stop,
        if consumer.task.is_finished() {
            "ended"
        } else {
            "kept running"
        }
    );
    let after_restart = log.snapshot().iter().filter(|s| s.at > restarted_at).count();
    assert!(after_restart > 0, "no message was handled after the restart");
    assert!(!consumer.task.is_finished(), "the consumer ended instead of resuming");

    let mut calls: BTreeMap<u64, usize> = BTreeMap::new();
    for s in log.snapshot().iter().filter(|s| s.acked) {
        *calls.entry(s.n).or_default() += 1;
    }
    let duplicates = calls.values().filter(|&&c| c > 1).count();
    println!(
        "  note: {RESTART_TOTAL} confirmed, {} failed publish attempts, outage {outage:.1?}, {handled_at_stop} \
         handled before the stop, {after_restart} handler calls after the restart, {duplicates} messages \
         handled more than once (at-least-once duplicates)",
        state.failed_attempts.load(Ordering::SeqCst)
    );
    consumer.finish().await;
    delete_queues(&stats_client, topology).await;
    for client in [consumer_client, publisher_client, stats_client] {
        client.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 1b: due copies leave a hold queue at least once, even while the broker app stops

/// Publishes numbered persistent copies straight into `hold` (what a consumer's retry does), in confirmed
/// batches, until the broker fails a publish; counts confirmations in `confirmed_count` as it goes and
/// returns the confirmed numbers.
async fn fill_until_the_broker_fails(
    client: &RabbitMqClient,
    hold: &str,
    confirmed_count: &AtomicU64,
) -> BTreeSet<u64> {
    let channel = client
        .create_confirm_channel()
        .await
        .unwrap_or_else(|e| panic!("a confirm channel: {e}"));
    let mut confirmed = BTreeSet::new();
    let mut n = 0u64;
    loop {
        let mut pending = Vec::with_capacity(HOLD_STOP_BATCH);
        for _ in 0..HOLD_STOP_BATCH {
            let properties = lapin::BasicProperties::default().with_delivery_mode(2);
            let payload = n.to_string();
            match channel
                .basic_publish(
                    "".into(),
                    hold.into(),
                    lapin::options::BasicPublishOptions::default(),
                    payload.as_bytes(),
                    properties,
                )
                .await
            {
                Ok(confirm) => pending.push((n, confirm)),
                Err(_) => return confirmed,
            }
            n += 1;
        }
        for (n, confirm) in pending {
            match tokio::time::timeout(Duration::from_secs(30), confirm).await {
                Ok(Ok(c)) if c.is_ack() => {
                    confirmed.insert(n);
                    confirmed_count.fetch_add(1, Ordering::SeqCst);
                }
                _ => return confirmed,
            }
        }
    }
}

/// Takes every message now in `queue` (no ack) and adds its number to `seen`.
async fn drain_numbers(client: &RabbitMqClient, queue: &str, seen: &mut BTreeSet<u64>) {
    let Ok(channel) = client.create_channel().await else {
        return;
    };
    while let Ok(Some(got)) = channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
    {
        if let Some(n) = std::str::from_utf8(&got.delivery.data)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            seen.insert(n);
        }
    }
    let _ = channel.close(200, "drained".into()).await;
}

async fn hold_queue_returns_survive_a_broker_stop() {
    check_the_broker_can_restart().await;
    let topology = HoldStopTopic::topology();
    let queue = topology.queue().to_string();
    let hold = topology.hold_queues()[0].name().to_string();
    let client = connect().await;
    Broker::<RabbitMq>::from_client(client.clone())
        .topology()
        .declare::<HoldStopTopic>()
        .await
        .expect("declaring the topic");

    // Copies go into the hold queue and come back due 100 ms later, continuously, while the app stops.
    let count = Arc::new(AtomicU64::new(0));
    let filling = tokio::spawn({
        let (client, hold, count) = (client.clone(), hold.clone(), count.clone());
        async move { fill_until_the_broker_fails(&client, &hold, &count).await }
    });
    let flowing = poll_until(Duration::from_secs(60), || async {
        count.load(Ordering::SeqCst) >= HOLD_STOP_BEFORE_STOP
    })
    .await;
    assert!(
        flowing,
        "only {} copies confirmed into '{hold}' within 60 s",
        count.load(Ordering::SeqCst)
    );
    let mut guard = StartAppGuard { armed: true };
    rabbitmqctl(&["stop_app"], Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let confirmed = match tokio::time::timeout(Duration::from_secs(60), filling).await {
        Ok(Ok(confirmed)) => confirmed,
        Ok(Err(e)) => panic!("the publishing task failed: {e}"),
        Err(_) => panic!("publishing did not fail within 60 s of `rabbitmqctl stop_app`"),
    };
    rabbitmqctl(&["start_app"], Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rabbitmqctl(&["-t", "120", "await_startup"], Duration::from_secs(130))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    guard.armed = false;
    let restarted = Instant::now();

    // Every confirmed copy must come back to the main queue: those due while the node was starting after
    // the dead-letter workers' resend delay.
    let within = dead_letter_resend_after().await + Duration::from_secs(60);
    let client = connect().await;
    let stats = Broker::<RabbitMq>::from_client(client.clone()).queue_stats_provider();
    let seen = Mutex::new(BTreeSet::new());
    let all_back = poll_until(within, || async {
        let mut got = BTreeSet::new();
        drain_numbers(&client, &queue, &mut got).await;
        let mut seen = lock(&seen);
        seen.extend(got);
        confirmed.is_subset(&seen)
    })
    .await;
    let seen = lock(&seen).clone();
    let missing: Vec<u64> = confirmed.difference(&seen).copied().collect();
    assert!(
        all_back,
        "{} of {} copies confirmed into the hold queue never came back to '{queue}' within {within:?} of \
         the restart (first: {:?}); the hold queue has {:?} ready",
        missing.len(),
        confirmed.len(),
        &missing[..missing.len().min(20)],
        try_ready(&stats, &hold).await
    );
    println!(
        "  note: {} copies confirmed into the hold queue before the stop, {} came back (at-least-once \
         duplicates and unconfirmed publishes included), the last within {:.1?} of the restart",
        confirmed.len(),
        seen.len(),
        restarted.elapsed()
    );
    delete_queues(&client, topology).await;
    client.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 2: kill -9 during a retry's hold delay

async fn kill_9_during_hold_delay_still_delivers_the_retry() {
    let topology = Kill9Topic::topology();
    let queue = topology.queue().to_string();
    let hold = topology.hold_queues()[0].name().to_string();
    let client = connect().await;
    let broker = Broker::<RabbitMq>::from_client(client.clone());
    broker
        .topology()
        .declare::<Kill9Topic>()
        .await
        .expect("declaring the topic");
    broker
        .publisher()
        .await
        .expect("a publisher")
        .publish::<Kill9Topic>(&Msg { n: 42 })
        .await
        .expect("publishing");
    let stats = broker.queue_stats_provider();

    let mut child = ChildProc::spawn(CHILD_ROLE_ENV, "retry_then_hang", &[(KILL9_QUEUE_ENV, queue.as_str())]);
    let Some((retried_at, line)) = child.wait_for_line(Duration::from_secs(30), "RETRYING ").await else {
        panic!(
            "the child did not handle the message within 30 s; its output: {:?}",
            child.output()
        )
    };
    let id = line.split_whitespace().nth(1).expect("a delivery id").to_string();

    // The child's settle has stored the retry in the hold queue: kill it now, during the delay.
    let settle_within = KILL9_HOLD * 3 / 4;
    let in_hold = poll_until(settle_within, || async { try_ready(&stats, &hold).await == Some(1) }).await;
    assert!(
        in_hold,
        "the retry did not show up in the hold queue '{hold}' within {settle_within:?} of the handler's Retry"
    );
    let status = child.kill9();
    assert_killed_by_sigkill(status, "child `retry_then_hang`");
    assert_eq!(
        try_ready(&stats, &hold).await,
        Some(1),
        "after the kill the retry should still wait in the hold queue ({:?} after the Retry, delay {KILL9_HOLD:?})",
        retried_at.elapsed()
    );
    let hanging = child.count("HANGING ");
    assert_eq!(hanging, 0, "the child saw the retry before it was killed");

    // A new consumer (the restarted process) receives the retry once the delay is over.
    let log = Log::default();
    let consumer = start_consumer::<Kill9Topic>(&client, Recording::acking(&log), ConsumerOptions::preset(5));
    let margin = Duration::from_secs(8);
    let arrived = poll_until((KILL9_HOLD + margin).saturating_sub(retried_at.elapsed()), || async {
        log.snapshot().iter().any(|s| s.retry_count == 1)
    })
    .await;
    let seen = log.snapshot();
    assert!(
        arrived,
        "the retry did not arrive within the hold delay {KILL9_HOLD:?} + {margin:?}; seen: {seen:?}; main \
         queue ready {:?}, hold queue ready {:?}",
        try_ready(&stats, &queue).await,
        try_ready(&stats, &hold).await
    );
    let retry = seen.iter().find(|s| s.retry_count == 1).expect("the retry");
    assert_eq!(retry.id, id, "the retry keeps the message id");
    assert_eq!(retry.n, 42, "the retry carries the payload");
    let waited = retry.at.duration_since(retried_at);
    assert!(
        waited >= KILL9_HOLD.saturating_sub(Duration::from_millis(300)),
        "the retry arrived {waited:?} after the handler's Retry, before the {KILL9_HOLD:?} hold delay"
    );
    assert!(
        seen.iter().all(|s| s.id == id && s.n == 42),
        "deliveries of an unknown message: {seen:?}"
    );
    let originals = seen.iter().filter(|s| s.retry_count == 0).count();
    if originals > 0 {
        println!(
            "  note: the original was also redelivered {originals} time(s) (killed between the confirmed copy \
             and the ack: an allowed duplicate)"
        );
    }
    let drained = poll_until(Duration::from_secs(10), || async {
        try_ready(&stats, &queue).await == Some(0) && try_ready(&stats, &hold).await == Some(0)
    })
    .await;
    assert!(drained, "messages left behind in '{queue}' or '{hold}'");
    consumer.finish().await;
    println!("  note: the retry arrived {waited:.2?} after the Retry, the child was killed during the delay");
    delete_queues(&client, topology).await;
    client.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 3: kill -9 during transactional (exactly-once) settles

#[cfg(feature = "rabbitmq-transactional")]
async fn exactly_once_crash_leaves_no_duplicate() {
    const TOTAL: u64 = 500;
    const KILL_AFTER: usize = 100;
    let topology = ExactlyOnceTopic::topology();
    let queue = topology.queue().to_string();
    let hold = topology.hold_queues()[0].name().to_string();
    let dlq = topology.dlq().expect("a DLQ").to_string();
    let client = connect().await;
    let broker = Broker::<RabbitMq>::from_client(client.clone());
    broker
        .topology()
        .declare::<ExactlyOnceTopic>()
        .await
        .expect("declaring the topic");
    let messages: Vec<Msg> = (0..TOTAL).map(|n| Msg { n }).collect();
    broker
        .publisher()
        .await
        .expect("a publisher")
        .publish_batch::<ExactlyOnceTopic>(&messages)
        .await
        .expect("publishing 500 messages");
    let stats = broker.queue_stats_provider();
    assert_eq!(ready(&stats, &queue).await, TOTAL, "every message is in the queue");

    let mut child = ChildProc::spawn(
        CHILD_ROLE_ENV,
        "exactly_once_retry",
        &[(EXACTLY_ONCE_QUEUE_ENV, queue.as_str())],
    );
    let progressed = child
        .wait_for_output(Duration::from_secs(60), |lines| {
            lines.iter().filter(|(_, l)| l.starts_with("FIRST ")).count() >= KILL_AFTER
        })
        .await;
    assert!(
        progressed,
        "the child handled only {} first attempts within 60 s",
        child.count("FIRST ")
    );
    let status = child.kill9();
    assert_killed_by_sigkill(status, "child `exactly_once_retry`");
    let first_attempts = child.count("FIRST ");

    // The restarted consumer acknowledges everything and records what it sees.
    let log = Log::default();
    let consumer = start_consumer::<ExactlyOnceTopic>(&client, Recording::acking(&log), ConsumerOptions::preset(50));
    let all_seen = poll_until(Duration::from_secs(60), || async {
        log.snapshot().iter().map(|s| s.n).collect::<BTreeSet<_>>().len() as u64 == TOTAL
    })
    .await;
    let distinct = log.snapshot().iter().map(|s| s.n).collect::<BTreeSet<_>>().len();
    assert!(
        all_seen,
        "only {distinct} of {TOTAL} messages reached the new consumer within 60 s (the child handled \
         {first_attempts} first attempts before the kill); main ready {:?}, hold ready {:?}, DLQ ready {:?}",
        try_ready(&stats, &queue).await,
        try_ready(&stats, &hold).await,
        try_ready(&stats, &dlq).await
    );

    // Wait until nothing is left to arrive: main and hold queue empty and no new delivery for 2.5 s
    // (longer than the 1 s hold delay).
    let quiet_for = Duration::from_millis(2_500);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since: Option<(Instant, usize)> = None;
    loop {
        let empty = try_ready(&stats, &queue).await == Some(0) && try_ready(&stats, &hold).await == Some(0);
        let calls = log.snapshot().len();
        quiet_since = match quiet_since {
            Some((since, n)) if empty && n == calls => Some((since, n)),
            _ if empty => Some((Instant::now(), calls)),
            _ => None,
        };
        if quiet_since.is_some_and(|(since, _)| since.elapsed() >= quiet_for) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queues did not settle within 60 s: main ready {:?}, hold ready {:?}",
            try_ready(&stats, &queue).await,
            try_ready(&stats, &hold).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.finish().await;

    let seen = log.snapshot();
    let mut ids_of: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut per_copy: HashMap<(String, u32), usize> = HashMap::new();
    let mut per_id: HashMap<String, Vec<u32>> = HashMap::new();
    for s in &seen {
        ids_of.entry(s.n).or_default().insert(s.id.clone());
        *per_copy.entry((s.id.clone(), s.retry_count)).or_default() += 1;
        per_id.entry(s.id.clone()).or_default().push(s.retry_count);
    }
    assert_eq!(ids_of.len() as u64, TOTAL, "every message arrived (nothing lost)");
    let unstable: Vec<_> = ids_of.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(unstable.is_empty(), "messages seen under several ids: {unstable:?}");
    assert_eq!(per_id.len() as u64, TOTAL, "500 distinct delivery ids");
    let mut copies: Vec<_> = per_copy.iter().filter(|&(_, &c)| c > 1).collect();
    copies.sort();
    assert!(
        copies.is_empty(),
        "{} (delivery_id, retry_count) pairs reached the new consumer more than once (duplicate copies): {:?}",
        copies.len(),
        &copies[..copies.len().min(10)]
    );
    let mut twice: Vec<_> = per_id.iter().filter(|(_, rcs)| rcs.len() > 1).collect();
    twice.sort();
    assert!(
        twice.is_empty(),
        "with_exactly_once: {} messages reached the new consumer both as the original and as the retry copy \
         (the copy's publish and the original's ack did not commit together): {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let bad_counts: Vec<_> = seen.iter().filter(|s| s.retry_count > 1).collect();
    assert!(bad_counts.is_empty(), "retry counts above 1: {bad_counts:?}");
    assert_eq!(ready(&stats, &dlq).await, 0, "nothing was dead-lettered");
    let as_retry = seen.iter().filter(|s| s.retry_count == 1).count();
    println!(
        "  note: killed after {first_attempts} first attempts; the new consumer saw {} deliveries: {as_retry} \
         retry copies, {} originals",
        seen.len(),
        seen.len() - as_retry
    );
    delete_queues(&client, topology).await;
    client.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 4: every publish path returns only once the broker has the message

async fn publisher_confirms_every_publish_path() {
    let topology = ConfirmTopic::topology();
    let queue = topology.queue();
    let client = connect().await;
    let broker = Broker::<RabbitMq>::from_client(client.clone());
    broker
        .topology()
        .declare::<ConfirmTopic>()
        .await
        .expect("declaring the topic");
    let publisher = broker.publisher().await.expect("a publisher");
    // Depth is read on another connection, so only the broker's own state can make it match.
    let stats_client = connect().await;
    let stats = Broker::<RabbitMq>::from_client(stats_client.clone()).queue_stats_provider();
    assert_eq!(ready(&stats, queue).await, 0);

    let mut expected = 0u64;
    let mut n = 0u64;
    for round in 0..20 {
        publisher.publish::<ConfirmTopic>(&Msg { n }).await.expect("publish");
        n += 1;
        expected += 1;
        let got = ready(&stats, queue).await;
        assert_eq!(got, expected, "round {round}: right after publish returned");

        let headers = HashMap::from([("tenant".to_string(), format!("t{round}"))]);
        publisher
            .publish_with_headers::<ConfirmTopic>(&Msg { n }, headers)
            .await
            .expect("publish_with_headers");
        n += 1;
        expected += 1;
        let got = ready(&stats, queue).await;
        assert_eq!(
            got, expected,
            "round {round}: right after publish_with_headers returned"
        );

        let batch: Vec<Msg> = (n..n + 25).map(|n| Msg { n }).collect();
        publisher
            .publish_batch::<ConfirmTopic>(&batch)
            .await
            .expect("publish_batch");
        n += 25;
        expected += 25;
        let got = ready(&stats, queue).await;
        assert_eq!(got, expected, "round {round}: right after publish_batch returned");
    }
    delete_queues(&client, topology).await;
    client.shutdown().await;
    stats_client.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------
// The runner

fn main() {
    if let Ok(role) = std::env::var(CHILD_ROLE_ENV) {
        child_main(&role, child_role(&role));
    }
    run_scenarios(vec![
        Scenario::Run(
            "broker_app_restart_mid_stream_loses_nothing",
            Duration::from_secs(420),
            || Box::pin(broker_app_restart_mid_stream_loses_nothing()),
        ),
        Scenario::Run(
            "hold_queue_returns_survive_a_broker_stop",
            Duration::from_secs(360),
            || Box::pin(hold_queue_returns_survive_a_broker_stop()),
        ),
        Scenario::Run(
            "kill_9_during_hold_delay_still_delivers_the_retry",
            Duration::from_secs(90),
            || Box::pin(kill_9_during_hold_delay_still_delivers_the_retry()),
        ),
        #[cfg(feature = "rabbitmq-transactional")]
        Scenario::Run(
            "exactly_once_crash_leaves_no_duplicate",
            Duration::from_secs(180),
            || Box::pin(exactly_once_crash_leaves_no_duplicate()),
        ),
        #[cfg(not(feature = "rabbitmq-transactional"))]
        Scenario::Skip(
            "exactly_once_crash_leaves_no_duplicate",
            "needs feature `rabbitmq-transactional`",
        ),
        Scenario::Run("publisher_confirms_every_publish_path", Duration::from_secs(60), || {
            Box::pin(publisher_confirms_every_publish_path())
        }),
    ]);
}
