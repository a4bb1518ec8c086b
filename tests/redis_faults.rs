//! Fault tests for the Redis Streams backend against real servers: a server killed with SIGKILL and
//! restarted from its append-only file in the middle of a stream, `kill -9` of a consumer process in the
//! middle of a handler and during a retry's hold delay, and the server-side footprint after 100,000
//! messages (acknowledged entries deleted, nothing pending, consumer names removed).
//!
//! `harness = false`: some scenarios must kill a consumer *process*, so this binary re-executes itself as
//! the child. With `SHOVE_REDIS_FAULTS_CHILD=<role>` set it runs that child role and never returns;
//! otherwise it runs every scenario in turn, each on its own tokio runtime, and ends with
//! `N passed, N failed` (exit code 1 when one failed).
//!
//! The restart scenario starts a `redis-server` of its own (from PATH) on a free port with an append-only
//! file fsynced on every write, in a temporary directory; the server process is killed when the scenario
//! ends, however it ends. The other scenarios use the server at `$SHOVE_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`; `scripts/test.sh` starts Redis there). Stream names carry the process id, a
//! counter and a random suffix; a child learns the stream of its topic from an environment variable.
//!
//! Every wait polls a condition up to a deadline.

mod fault_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fault_support::{
    ChildProc, Log, Msg, POLL, Recording, Running, Scenario, Seen, assert_killed_by_sigkill, child_main, field,
    free_port, lock, name_from_env, poll_until, run_scenarios, say, unique,
};
use redis::Value;
use redis::aio::MultiplexedConnection;
use shove::redis::{RedisClient, RedisConfig, RedisConsumer, RedisMode, RedisPublisher, RedisTopologyDeclarer};
use shove::{
    Backend, Broker, ConsumerOptions, MessageHandler, MessageMetadata, Outcome, QueueTopology, Redis, Topic,
    TopologyBuilder, define_topic,
};
use tokio_util::sync::CancellationToken;

/// The server of the scenarios that do not start their own.
const REDIS_URL_ENV: &str = "SHOVE_REDIS_URL";
/// Names the child role; set only in the re-executed child.
const CHILD_ROLE_ENV: &str = "SHOVE_REDIS_FAULTS_CHILD";
/// The stream of [`CrashTopic`], handed from the parent to its child.
const CRASH_STREAM_ENV: &str = "SHOVE_REDIS_FAULTS_CRASH_STREAM";
/// The stream of [`DelayTopic`], handed from the parent to its child.
const DELAY_STREAM_ENV: &str = "SHOVE_REDIS_FAULTS_DELAY_STREAM";

/// The consumer group of every scenario but the footprint one (the backend's default).
const DEFAULT_GROUP: &str = "shove";

// ---------------------------------------------------------------------------------------------------------
// Topics and messages

/// The prefix of every stream name (see [`unique`]).
const NAME_PREFIX: &str = "redis-faults";

/// The hold delay of the restart scenario.
const RESTART_HOLD: Duration = Duration::from_millis(200);
/// The hold delay of the retry-delay kill scenario.
const DELAY_HOLD: Duration = Duration::from_secs(2);

define_topic!(
    RestartTopic,
    Msg,
    TopologyBuilder::new(unique(NAME_PREFIX, "restart"))
        .hold_queue(RESTART_HOLD)
        .dlq()
        .build()
);
define_topic!(
    CrashTopic,
    Msg,
    TopologyBuilder::new(name_from_env(CRASH_STREAM_ENV, NAME_PREFIX, "crash"))
        .dlq()
        .build()
);
define_topic!(
    DelayTopic,
    Msg,
    TopologyBuilder::new(name_from_env(DELAY_STREAM_ENV, NAME_PREFIX, "delay"))
        .hold_queue(DELAY_HOLD)
        .dlq()
        .build()
);
define_topic!(
    BulkTopic,
    Msg,
    TopologyBuilder::new(unique(NAME_PREFIX, "bulk")).dlq().build()
);

// ---------------------------------------------------------------------------------------------------------
// Helpers

fn default_url() -> String {
    std::env::var(REDIS_URL_ENV).unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn config(url: &str) -> RedisConfig {
    RedisConfig::new(RedisMode::Standalone { url: url.to_string() })
}

async fn connect_with(config: RedisConfig, url: &str) -> RedisClient {
    match <Redis as Backend>::connect(config).await {
        Ok(client) => client,
        Err(e) => panic!(
            "cannot connect to Redis at {url}: {e}; start a server there (scripts/test.sh starts Redis on 6379) \
             or point {REDIS_URL_ENV} at one"
        ),
    }
}

async fn connect(url: &str) -> RedisClient {
    connect_with(config(url), url).await
}

/// Closes a client (its consumers stop).
async fn close(client: RedisClient) {
    Broker::<Redis>::from_client(client).close().await;
}

/// A plain `redis` connection for looking at the server's state behind the library's back. Every query
/// answers `None` when the server does not (so it can be polled across a restart).
#[derive(Clone)]
struct Probe {
    con: MultiplexedConnection,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

impl Probe {
    async fn try_open(url: &str) -> Option<Self> {
        let client = redis::Client::open(url).ok()?;
        let con = tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
            .await
            .ok()?
            .ok()?;
        Some(Self { con })
    }

    async fn open(url: &str) -> Self {
        match Self::try_open(url).await {
            Some(p) => p,
            None => panic!("cannot open a plain Redis connection to {url}"),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut con = self.con.clone();
        tokio::time::timeout(Duration::from_secs(5), cmd.query_async::<T>(&mut con))
            .await
            .ok()?
            .ok()
    }

    async fn ping(&self) -> bool {
        self.query::<String>(&redis::cmd("PING")).await.as_deref() == Some("PONG")
    }

    async fn xlen(&self, stream: &str) -> Option<u64> {
        self.query(redis::cmd("XLEN").arg(stream)).await
    }

    async fn zcard(&self, set: &str) -> Option<u64> {
        self.query(redis::cmd("ZCARD").arg(set)).await
    }

    /// `XINFO GROUPS stream`, the entry of `group`.
    async fn group(&self, stream: &str, group: &str) -> Option<HashMap<String, Value>> {
        let groups: Vec<HashMap<String, Value>> = self.query(redis::cmd("XINFO").arg("GROUPS").arg(stream)).await?;
        groups
            .into_iter()
            .find(|g| g.get("name").and_then(text_of).as_deref() == Some(group))
    }

    /// The group's pending count (`XINFO GROUPS`).
    async fn group_pending(&self, stream: &str, group: &str) -> Option<i64> {
        self.group(stream, group).await?.get("pending").and_then(int_of)
    }

    /// `XINFO CONSUMERS stream group`: (name, pending) of each consumer.
    async fn consumers(&self, stream: &str, group: &str) -> Option<Vec<(String, i64)>> {
        let list: Vec<HashMap<String, Value>> = self
            .query(redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(group))
            .await?;
        Some(
            list.iter()
                .map(|c| {
                    (
                        c.get("name").and_then(text_of).unwrap_or_default(),
                        c.get("pending").and_then(int_of).unwrap_or(-1),
                    )
                })
                .collect(),
        )
    }

    /// `XPENDING stream group - + 1000`: (entry id, consumer) of each pending entry.
    async fn pending_entries(&self, stream: &str, group: &str) -> Option<Vec<(String, String)>> {
        let rows: Vec<(String, String, u64, u64)> = self
            .query(
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(group)
                    .arg("-")
                    .arg("+")
                    .arg(1000),
            )
            .await?;
        Some(rows.into_iter().map(|(id, consumer, _, _)| (id, consumer)).collect())
    }

    /// The `x-message-id` of stream entry `id`.
    async fn message_id_of(&self, stream: &str, id: &str) -> Option<String> {
        let rows: Vec<(String, HashMap<String, Value>)> =
            self.query(redis::cmd("XRANGE").arg(stream).arg(id).arg(id)).await?;
        rows.first()?.1.get("x-message-id").and_then(text_of)
    }

    async fn memory_usage(&self, key: &str) -> Option<i64> {
        self.query(redis::cmd("MEMORY").arg("USAGE").arg(key)).await
    }

    /// Deletes a topic's keys (best effort, after a passing scenario).
    async fn delete_topic(&self, topology: &QueueTopology) {
        let mut keys = vec![topology.queue().to_string(), format!("{}-delay:due", topology.queue())];
        keys.extend(topology.dlq().map(str::to_string));
        keys.extend(
            topology
                .hold_queues()
                .iter()
                .map(|h| RedisTopologyDeclarer::hold_set_name(h.name())),
        );
        let mut del = redis::cmd("DEL");
        for k in &keys {
            del.arg(k);
        }
        let _ = self.query::<i64>(&del).await;
    }
}

/// Runs a consumer of `T` in a task of the scenario's runtime.
fn start_consumer<T, H>(client: &RedisClient, handler: H, options: ConsumerOptions<Redis>) -> Running
where
    T: Topic,
    H: MessageHandler<T, Context = ()>,
{
    let stop = CancellationToken::new();
    let consumer = RedisConsumer::new(client.clone());
    let options = options.with_shutdown(stop.clone());
    let task = tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await });
    Running { stop, task }
}

// ---------------------------------------------------------------------------------------------------------
// A redis-server of the test's own (restart scenario)

/// A `redis-server` process with an append-only file fsynced on every write, in a directory of its own.
/// Dropping it kills the server and removes the directory (printing the server log's tail first when the
/// scenario is failing).
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "shove-redis-faults-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server process on the port and directory (again, after a kill).
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server already runs");
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let log = self.dir.join("redis.log").to_string_lossy().into_owned();
        let child = Command::new("redis-server")
            .args([
                "--port",
                port.as_str(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir.as_str(),
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                log.as_str(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `redis-server` (is it on PATH?): {e}"));
        self.child = Some(child);
    }

    /// Waits until the server answers `PING` (it refuses with `LOADING` while it replays its file).
    async fn wait_ready(&mut self, within: Duration) {
        let url = self.url();
        let deadline = Instant::now() + within;
        loop {
            if let Some(probe) = Probe::try_open(&url).await
                && probe.ping().await
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "redis-server on port {} exited ({status}); its log ends with:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {within:?}; its log ends with:\n{}",
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs the server (`Child::kill` on Unix) and reaps it.
    fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server runs");
        child.kill().expect("killing redis-server");
        child.wait().expect("reaping redis-server")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "redis_faults: the log of the scenario's redis-server (port {}) ends with:\n{}",
                self.port,
                self.log_tail()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Child roles

/// The message [`BlockOn`] never finishes.
const CRASH_AT: u64 = 7;
/// Messages of the mid-handler kill scenario.
const CRASH_TOTAL: u64 = 20;

/// Acknowledges every message (printing `HANDLED {id} {n}` first) except message `n`: for it, prints
/// `BLOCKING {id} {n} {retry_count}` and never returns. It blocks its thread rather than awaiting forever,
/// so the consumer's 1 s handler timeout cannot turn the crash into an ordinary timed-out retry before the
/// parent's kill lands: the entry is still in the handler, pending on this consumer, when the process dies.
struct BlockOn {
    n: u64,
}

impl<T: Topic<Message = Msg>> MessageHandler<T> for BlockOn {
    type Context = ();

    async fn handle(&self, msg: Msg, meta: MessageMetadata, _: &()) -> Outcome {
        if msg.n == self.n {
            say(&format!("BLOCKING {} {} {}", meta.delivery_id, msg.n, meta.retry_count));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        say(&format!("HANDLED {} {}", meta.delivery_id, msg.n));
        Outcome::Ack
    }
}

/// Returns `Retry` on every first attempt (printing `RETRIED {id} {n}`); on a later attempt prints
/// `HANGING {id} {n} {retry_count}` and never returns, so the child never settles a retried copy.
struct RetryFirst;

impl<T: Topic<Message = Msg>> MessageHandler<T> for RetryFirst {
    type Context = ();

    async fn handle(&self, msg: Msg, meta: MessageMetadata, _: &()) -> Outcome {
        if meta.retry_count == 0 {
            say(&format!("RETRIED {} {}", meta.delivery_id, msg.n));
            Outcome::Retry
        } else {
            say(&format!("HANGING {} {} {}", meta.delivery_id, msg.n, meta.retry_count));
            std::future::pending::<Outcome>().await
        }
    }
}

async fn child_consume<T, H>(handler: H, options: ConsumerOptions<Redis>) -> i32
where
    T: Topic,
    H: MessageHandler<T, Context = ()>,
{
    let client = match <Redis as Backend>::connect(config(&default_url())).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("child: cannot connect: {e}");
            return 2;
        }
    };
    let result = RedisConsumer::new(client).run::<T, _>(handler, (), options).await;
    eprintln!("child: the consumer ended, which it must not: {result:?}");
    2
}

async fn child_role(role: &str) -> i32 {
    match role {
        "block_on_n" => {
            // One message at a time: every message before CRASH_AT is settled when its handler starts.
            let options = ConsumerOptions::<Redis>::preset(1).with_handler_timeout(Duration::from_secs(1));
            child_consume::<CrashTopic, _>(BlockOn { n: CRASH_AT }, options).await
        }
        "retry_first" => child_consume::<DelayTopic, _>(RetryFirst, ConsumerOptions::preset(50)).await,
        other => {
            eprintln!("child: unknown role {other:?}");
            2
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 1: the server is killed and restarted from its append-only file in the middle of a stream

const RESTART_TOTAL: u64 = 1_000;
const RESTART_HALF: u64 = 500;
/// Failed publish attempts to wait for while the server is down.
const OUTAGE_FAILURES: u32 = 5;

/// Every 10th message is retried once (through the 200 ms hold queue).
fn retried_once(n: u64) -> bool {
    n.is_multiple_of(10)
}

/// What the publisher task reports to the scenario.
#[derive(Default)]
struct PublishState {
    /// Payload numbers whose `publish` returned `Ok`.
    confirmed: Mutex<BTreeSet<u64>>,
    failed_attempts: AtomicU32,
    /// Failed attempts whose error was not retryable (`ShoveError::is_retryable` false).
    not_retryable: Mutex<Vec<String>>,
    last_error: Mutex<Option<String>>,
    half_done: AtomicBool,
    server_killed: AtomicBool,
}

/// Publishes `msg` until `publish` returns `Ok`, backing off 50 ms … 2 s between failed attempts, for at
/// most 120 s.
async fn publish_until_confirmed(publisher: &RedisPublisher, msg: &Msg, state: &PublishState) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = match tokio::time::timeout(Duration::from_secs(40), publisher.publish::<RestartTopic>(msg)).await {
            Ok(Ok(())) => {
                lock(&state.confirmed).insert(msg.n);
                return;
            }
            Ok(Err(e)) => {
                if !e.is_retryable() {
                    lock(&state.not_retryable).push(e.to_string());
                }
                e.to_string()
            }
            Err(_) => "publish did not return within 40 s".to_string(),
        };
        state.failed_attempts.fetch_add(1, Ordering::SeqCst);
        *lock(&state.last_error) = Some(error.clone());
        assert!(
            Instant::now() < deadline,
            "publishing message {} did not succeed within 120 s; last error: {error}",
            msg.n
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Publishes the first half, waits until the server has been killed, then publishes the rest (failing,
/// backing off and retrying until the server is back).
async fn publish_around_restart(publisher: RedisPublisher, state: Arc<PublishState>) {
    for n in 0..RESTART_HALF {
        publish_until_confirmed(&publisher, &Msg { n }, &state).await;
    }
    state.half_done.store(true, Ordering::SeqCst);
    let killed = poll_until(Duration::from_secs(120), || async {
        state.server_killed.load(Ordering::SeqCst)
    })
    .await;
    assert!(killed, "the scenario never killed the server");
    for n in RESTART_HALF..RESTART_TOTAL {
        publish_until_confirmed(&publisher, &Msg { n }, &state).await;
    }
}

async fn server_restart_with_aof_loses_nothing() {
    let mut server = OwnRedis::start();
    server.wait_ready(Duration::from_secs(30)).await;
    let url = server.url();
    let topology = RestartTopic::topology();
    let stream = topology.queue().to_string();
    let due_set = RedisTopologyDeclarer::hold_set_name(topology.hold_queues()[0].name());
    let consumer_client = connect(&url).await;
    let publisher_client = connect(&url).await;
    Broker::<Redis>::from_client(publisher_client.clone())
        .topology()
        .declare::<RestartTopic>()
        .await
        .expect("declaring the topic");

    // A 2 s handler timeout: entries whose settle is lost with the server are reclaimed after 4 s idle.
    let log = Log::default();
    let handler = Recording {
        log: log.clone(),
        retry_first: retried_once,
        work: Duration::from_millis(20),
    };
    let options = ConsumerOptions::<Redis>::preset(5).with_handler_timeout(Duration::from_secs(2));
    let consumer = start_consumer::<RestartTopic, _>(&consumer_client, handler, options);

    let state = Arc::new(PublishState::default());
    let publisher = RedisPublisher::new(publisher_client.clone());
    let publishing = tokio::spawn(publish_around_restart(publisher, state.clone()));

    let mid_stream = poll_until(Duration::from_secs(60), || async {
        state.half_done.load(Ordering::SeqCst) && log.acked_calls() >= 200
    })
    .await;
    assert!(
        mid_stream,
        "before the kill: {} of {RESTART_HALF} published, {} handled within 60 s",
        lock(&state.confirmed).len(),
        log.acked_calls()
    );

    // Kill the server, let the publisher run into the outage, start the server again on its files.
    let outage_started = Instant::now();
    let handled_at_kill = log.acked().len();
    let waiting_at_kill = {
        let probe = Probe::open(&url).await;
        (probe.xlen(&stream).await, probe.zcard(&due_set).await)
    };
    let status = server.kill9();
    assert_killed_by_sigkill(status, "redis-server");
    state.server_killed.store(true, Ordering::SeqCst);
    // Down long enough for the publisher to fail OUTAGE_FAILURES times in a row (backing off 50 ms … 800 ms,
    // about 1.5 s), so the consumer's connections fail and retry for a while as well.
    let publisher_saw_outage = poll_until(Duration::from_secs(30), || async {
        state.failed_attempts.load(Ordering::SeqCst) >= OUTAGE_FAILURES
    })
    .await;
    assert!(
        publisher_saw_outage,
        "fewer than {OUTAGE_FAILURES} publish attempts failed within 30 s of killing the server ({} did; \
         confirmed so far: {})",
        state.failed_attempts.load(Ordering::SeqCst),
        lock(&state.confirmed).len()
    );
    server.spawn();
    server.wait_ready(Duration::from_secs(30)).await;
    let outage = outage_started.elapsed();
    let restarted_at = Instant::now();
    let probe = Probe::open(&url).await;
    assert!(
        probe.group(&stream, DEFAULT_GROUP).await.is_some(),
        "after the restart the stream '{stream}' or its group '{DEFAULT_GROUP}' is gone: the append-only file \
         was not replayed"
    );

    // The publisher resumes and gets every message confirmed.
    match tokio::time::timeout(Duration::from_secs(150), publishing).await {
        Err(_) => panic!(
            "the publisher did not finish within 150 s of the restart; confirmed {}; last error: {:?}",
            lock(&state.confirmed).len(),
            lock(&state.last_error)
        ),
        Ok(Err(e)) => panic!("the publisher task failed: {e}"),
        Ok(Ok(())) => {}
    }
    let confirmed = lock(&state.confirmed).clone();
    assert_eq!(
        confirmed.len() as u64,
        RESTART_TOTAL,
        "the test retried every publish until it returned Ok"
    );

    // The consumer resumes by itself and acknowledges every confirmed message at least once.
    let all_handled = poll_until(Duration::from_secs(120), || async { confirmed.is_subset(&log.acked()) }).await;
    let acked = log.acked();
    let missing: Vec<u64> = confirmed.difference(&acked).copied().collect();
    assert!(
        all_handled && missing.is_empty(),
        "{} confirmed messages were never acknowledged within 120 s of the restart (first: {:?}); {} \
         acknowledged, {handled_at_kill} before the kill; stream length {:?}, due set {:?}, pending {:?}; the \
         consumer task has {}",
        missing.len(),
        &missing[..missing.len().min(20)],
        acked.len(),
        probe.xlen(&stream).await,
        probe.zcard(&due_set).await,
        probe.group_pending(&stream, DEFAULT_GROUP).await,
        if consumer.task.is_finished() {
            "ended"
        } else {
            "kept running"
        }
    );
    let after_restart = log.snapshot().iter().filter(|s| s.at > restarted_at).count();
    assert!(after_restart > 0, "no message was handled after the restart");
    assert!(!consumer.task.is_finished(), "the consumer ended instead of resuming");

    // Every message that returned Retry came back (through the hold queue, or reclaimed) and was handled
    // again: at least two calls, one Retry and one Ack.
    let mut calls: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for s in log.snapshot() {
        let (retries, acks) = calls.entry(s.n).or_default();
        if s.acked {
            *acks += 1;
        } else {
            *retries += 1;
        }
    }
    let short: Vec<(u64, (usize, usize))> = confirmed
        .iter()
        .filter(|&&n| retried_once(n))
        .map(|&n| (n, calls.get(&n).copied().unwrap_or_default()))
        .filter(|&(_, (retries, acks))| retries == 0 || acks == 0)
        .collect();
    assert!(
        short.is_empty(),
        "{} messages picked for one Retry were not handled as (>= 1 Retry, >= 1 Ack); (n, (retries, acks)): \
         {:?}",
        short.len(),
        &short[..short.len().min(20)]
    );

    // Nothing is left behind: the stream, the due set and the pending list drain.
    let drained = poll_until(Duration::from_secs(30), || async {
        probe.xlen(&stream).await == Some(0)
            && probe.zcard(&due_set).await == Some(0)
            && probe.group_pending(&stream, DEFAULT_GROUP).await == Some(0)
    })
    .await;
    assert!(
        drained,
        "30 s after every message was handled: stream length {:?}, due set {:?}, pending {:?}",
        probe.xlen(&stream).await,
        probe.zcard(&due_set).await,
        probe.group_pending(&stream, DEFAULT_GROUP).await
    );
    consumer.finish().await;

    let duplicates = calls.iter().filter(|(_, (_, acks))| *acks > 1).count();
    let not_retryable = lock(&state.not_retryable).clone();
    println!(
        "  note: {RESTART_TOTAL} confirmed, {} failed publish attempts ({} not retryable{}), outage {outage:.1?}, \
         {handled_at_kill} acknowledged before the kill (stream length, due set) at the kill {waiting_at_kill:?}, \
         {after_restart} handler calls after the restart, {duplicates} messages acknowledged more than once",
        state.failed_attempts.load(Ordering::SeqCst),
        not_retryable.len(),
        not_retryable
            .first()
            .map(|e| format!(", e.g. {e:?}"))
            .unwrap_or_default(),
    );
    close(consumer_client).await;
    close(publisher_client).await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 2: kill -9 of a consumer process in the middle of a handler

async fn kill_9_mid_handler_every_message_handled() {
    let url = default_url();
    let topology = CrashTopic::topology();
    let stream = topology.queue().to_string();
    let dlq = topology.dlq().expect("a DLQ").to_string();
    let client = connect(&url).await;
    let probe = Probe::open(&url).await;
    let broker = Broker::<Redis>::from_client(client.clone());
    broker
        .topology()
        .declare::<CrashTopic>()
        .await
        .expect("declaring the topic");
    let messages: Vec<Msg> = (0..CRASH_TOTAL).map(|n| Msg { n }).collect();
    broker
        .publisher()
        .await
        .expect("a publisher")
        .publish_batch::<CrashTopic>(&messages)
        .await
        .expect("publishing");

    let mut child = ChildProc::spawn(CHILD_ROLE_ENV, "block_on_n", &[(CRASH_STREAM_ENV, stream.as_str())]);
    let blocking = child
        .wait_for_output(Duration::from_secs(30), |lines| {
            lines.iter().any(|(_, l)| l.starts_with("BLOCKING "))
        })
        .await;
    assert!(
        blocking,
        "the child did not reach message {CRASH_AT} within 30 s; its output: {:?}",
        child.output()
    );
    let status = child.kill9();
    assert_killed_by_sigkill(status, "child `block_on_n`");
    let killed_at = Instant::now();
    let line = child.lines_with("BLOCKING ")[0].1.to_string();
    let blocked_id = field(&line, 0).to_string();
    assert_eq!(
        field(&line, 1),
        CRASH_AT.to_string(),
        "the child blocked on the wrong message"
    );
    assert_eq!(
        field(&line, 2),
        "0",
        "the child's first delivery of the message was not a first attempt"
    );
    let handled_by_child: BTreeSet<u64> = child
        .lines_with("HANDLED ")
        .iter()
        .map(|(_, l)| field(l, 1).parse().expect("a message number"))
        .collect();

    // The message is still pending on the dead child's consumer (it never settled it).
    let child_consumer = format!("{DEFAULT_GROUP}-{}-", child.pid);
    let pending = probe
        .pending_entries(&stream, DEFAULT_GROUP)
        .await
        .expect("XPENDING after the kill");
    let mut pending_ids = Vec::new();
    for (entry, owner) in &pending {
        assert!(
            owner.starts_with(&child_consumer),
            "entry {entry} is pending on {owner:?}, not on the killed child ({child_consumer}…): {pending:?}"
        );
        pending_ids.push(probe.message_id_of(&stream, entry).await.unwrap_or_default());
    }
    assert!(
        pending_ids.contains(&blocked_id),
        "message {CRASH_AT} ({blocked_id}) is not pending on the killed child; pending: {pending:?} (message ids \
         {pending_ids:?})"
    );

    // A new consumer of the same group reclaims it once idle for twice its handler timeout (2 s).
    let log = Log::default();
    let options = ConsumerOptions::<Redis>::new().with_handler_timeout(Duration::from_secs(1));
    let consumer = start_consumer::<CrashTopic, _>(&client, Recording::acking(&log), options);
    let everything = poll_until(Duration::from_secs(20), || async {
        let acked = log.acked();
        (0..CRASH_TOTAL).all(|n| acked.contains(&n) || handled_by_child.contains(&n))
    })
    .await;
    let seen = log.snapshot();
    let missing: Vec<u64> = (0..CRASH_TOTAL)
        .filter(|n| !handled_by_child.contains(n) && !seen.iter().any(|s| s.n == *n))
        .collect();
    assert!(
        everything,
        "messages {missing:?} were handled neither by the child nor by the new consumer within 20 s of the kill; \
         the new consumer saw {seen:?}; pending {:?}",
        probe.pending_entries(&stream, DEFAULT_GROUP).await
    );
    let drained = poll_until(Duration::from_secs(10), || async {
        probe.xlen(&stream).await == Some(0) && probe.group_pending(&stream, DEFAULT_GROUP).await == Some(0)
    })
    .await;
    assert!(
        drained,
        "entries left behind: stream length {:?}, pending {:?}",
        probe.xlen(&stream).await,
        probe.pending_entries(&stream, DEFAULT_GROUP).await
    );
    consumer.finish().await;

    let seen = log.snapshot();
    let reclaimed: Vec<&Seen> = seen.iter().filter(|s| s.n == CRASH_AT).collect();
    assert_eq!(
        reclaimed.len(),
        1,
        "message {CRASH_AT} should reach the new consumer exactly once: {reclaimed:?}"
    );
    let r = reclaimed[0];
    assert_eq!(r.id, blocked_id, "the reclaimed message keeps its id");
    assert_eq!(
        r.retry_count, 1,
        "a reclaimed entry counts as a retry: retry_count should be 1"
    );
    assert!(
        r.redelivered,
        "a reclaimed entry is a redelivery: redelivered should be true"
    );
    assert_eq!(probe.xlen(&dlq).await, Some(0), "nothing was dead-lettered");
    let twice: Vec<u64> = seen
        .iter()
        .filter(|s| handled_by_child.contains(&s.n))
        .map(|s| s.n)
        .collect();
    let dead_names: Vec<String> = probe
        .consumers(&stream, DEFAULT_GROUP)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| name.starts_with(&child_consumer))
        .map(|(name, pending)| format!("{name} (pending {pending})"))
        .collect();
    println!(
        "  note: the child acknowledged {} messages before blocking; message {CRASH_AT} reclaimed {:.2?} after \
         the kill; {} entries were pending on the child; handled by both: {twice:?}; consumer names of the dead \
         child left in the group: {dead_names:?}",
        handled_by_child.len(),
        r.at.duration_since(killed_at),
        pending.len()
    );
    probe.delete_topic(topology).await;
    close(client).await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 3: kill -9 of a consumer process while its retries wait out the hold delay

const DELAY_TOTAL: u64 = 50;

async fn kill_9_during_retry_delay_still_delivers() {
    let url = default_url();
    let topology = DelayTopic::topology();
    let stream = topology.queue().to_string();
    let hold = topology.hold_queues()[0].name().to_string();
    let due_set = format!("{hold}:due");
    assert_eq!(
        RedisTopologyDeclarer::hold_set_name(&hold),
        due_set,
        "the documented name of a hold queue's due set"
    );
    let client = connect(&url).await;
    let probe = Probe::open(&url).await;
    let broker = Broker::<Redis>::from_client(client.clone());
    broker
        .topology()
        .declare::<DelayTopic>()
        .await
        .expect("declaring the topic");
    let messages: Vec<Msg> = (0..DELAY_TOTAL).map(|n| Msg { n }).collect();
    broker
        .publisher()
        .await
        .expect("a publisher")
        .publish_batch::<DelayTopic>(&messages)
        .await
        .expect("publishing");

    let mut child = ChildProc::spawn(CHILD_ROLE_ENV, "retry_first", &[(DELAY_STREAM_ENV, stream.as_str())]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        child.pump();
        let retried = child.count("RETRIED ");
        let due = probe.zcard(&due_set).await;
        if retried as u64 == DELAY_TOTAL && due == Some(DELAY_TOTAL) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 30 s the child reported {retried} of {DELAY_TOTAL} retries and the due set '{due_set}' holds \
             {due:?}; the child's output: {:?}",
            child.output()
        );
        tokio::time::sleep(POLL).await;
    }
    let status = child.kill9();
    assert_killed_by_sigkill(status, "child `retry_first`");
    let retried = child.lines_with("RETRIED ");
    let first_retry_at = retried.iter().map(|(at, _)| *at).min().expect("a RETRIED line");
    let last_retry_at = retried.iter().map(|(at, _)| *at).max().expect("a RETRIED line");
    let retried_ids: BTreeSet<String> = retried.iter().map(|(_, l)| field(l, 0).to_string()).collect();
    assert_eq!(
        retried_ids.len() as u64,
        DELAY_TOTAL,
        "50 distinct message ids were retried"
    );
    assert_eq!(child.count("HANGING "), 0, "the child saw a retry before it was killed");
    let since_first = first_retry_at.elapsed();
    assert!(
        since_first < DELAY_HOLD,
        "the kill came {since_first:?} after the first Retry, not within the {DELAY_HOLD:?} delay: this scenario \
         needs a faster machine"
    );
    assert_eq!(
        probe.zcard(&due_set).await,
        Some(DELAY_TOTAL),
        "after the kill every retry still waits in the due set"
    );
    assert_eq!(
        probe.xlen(&stream).await,
        Some(0),
        "every original was acknowledged and removed together with scheduling its retry"
    );

    // A new consumer (the restarted process) receives every retry once the delay is over, once.
    let log = Log::default();
    let consumer = start_consumer::<DelayTopic, _>(&client, Recording::acking(&log), ConsumerOptions::preset(50));
    let margin = Duration::from_secs(10);
    let arrived = poll_until(
        (DELAY_HOLD + margin).saturating_sub(last_retry_at.elapsed()),
        || async { log.snapshot().iter().map(|s| &s.id).collect::<BTreeSet<_>>().len() as u64 == DELAY_TOTAL },
    )
    .await;
    assert!(
        arrived,
        "only {} of {DELAY_TOTAL} retries arrived within the delay {DELAY_HOLD:?} + {margin:?}; due set {:?}, \
         stream length {:?}",
        log.snapshot().len(),
        probe.zcard(&due_set).await,
        probe.xlen(&stream).await
    );
    // Once the due set, the stream and the pending list are empty, nothing else can arrive.
    let drained = poll_until(Duration::from_secs(10), || async {
        probe.zcard(&due_set).await == Some(0)
            && probe.xlen(&stream).await == Some(0)
            && probe.group_pending(&stream, DEFAULT_GROUP).await == Some(0)
    })
    .await;
    assert!(
        drained,
        "entries left behind: due set {:?}, stream length {:?}, pending {:?}",
        probe.zcard(&due_set).await,
        probe.xlen(&stream).await,
        probe.group_pending(&stream, DEFAULT_GROUP).await
    );
    consumer.finish().await;

    let seen = log.snapshot();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seen {
        *per_id.entry(s.id.as_str()).or_default() += 1;
    }
    let twice: Vec<(&&str, &usize)> = per_id.iter().filter(|&(_, &c)| c > 1).collect();
    assert!(twice.is_empty(), "retries delivered more than once: {twice:?}");
    let got: BTreeSet<String> = per_id.keys().map(|s| s.to_string()).collect();
    assert_eq!(got, retried_ids, "the new consumer got exactly the retried messages");
    let wrong: Vec<&Seen> = seen.iter().filter(|s| s.retry_count != 1).collect();
    assert!(wrong.is_empty(), "retries with a retry_count other than 1: {wrong:?}");
    // A retry is due DELAY_HOLD after its Retry was settled, which follows the child's RETRIED line.
    let retried_at: HashMap<String, Instant> = retried.iter().map(|(at, l)| (field(l, 0).to_string(), *at)).collect();
    let early: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at < retried_at[&s.id] + DELAY_HOLD.saturating_sub(Duration::from_millis(300)))
        .collect();
    assert!(
        early.is_empty(),
        "retries delivered before the {DELAY_HOLD:?} hold delay was over: {early:?}"
    );
    let redelivered = seen.iter().filter(|s| s.redelivered).count();
    println!(
        "  note: killed {since_first:.2?} after the first Retry; the retries arrived {:.2?} … {:.2?} after it; \
         {redelivered} of {DELAY_TOTAL} flagged redelivered",
        seen.iter()
            .map(|s| s.at.duration_since(first_retry_at))
            .min()
            .unwrap_or_default(),
        seen.iter()
            .map(|s| s.at.duration_since(first_retry_at))
            .max()
            .unwrap_or_default(),
    );
    probe.delete_topic(topology).await;
    close(client).await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 4: bounded server-side memory after 100,000 messages

const BULK_TOTAL: u64 = 100_000;
const BULK_BATCH: u64 = 1_000;

/// Counts calls and marks each message seen; acknowledges everything.
#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<bool>>>,
}

impl<T: Topic<Message = Msg>> MessageHandler<T> for Counting {
    type Context = ();

    async fn handle(&self, msg: Msg, _: MessageMetadata, _: &()) -> Outcome {
        if let Some(slot) = lock(&self.seen).get_mut(msg.n as usize) {
            *slot = true;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Outcome::Ack
    }
}

async fn memory_is_bounded_after_100k_messages() {
    let url = default_url();
    let topology = BulkTopic::topology();
    let stream = topology.queue().to_string();
    let group = unique(NAME_PREFIX, "group");
    let client = connect_with(config(&url).with_group(group.clone()), &url).await;
    let probe = Probe::open(&url).await;
    Broker::<Redis>::from_client(client.clone())
        .topology()
        .declare::<BulkTopic>()
        .await
        .expect("declaring the topic");
    let publisher = RedisPublisher::new(client.clone());
    let started = Instant::now();
    for start in (0..BULK_TOTAL).step_by(BULK_BATCH as usize) {
        let batch: Vec<Msg> = (start..start + BULK_BATCH).map(|n| Msg { n }).collect();
        let (stored, result) = publisher.publish_batch::<BulkTopic>(&batch).await;
        result.unwrap_or_else(|e| panic!("publishing the batch from {start}: {e}"));
        assert_eq!(stored, BULK_BATCH, "the batch from {start} was stored whole");
    }
    let published_in = started.elapsed();
    assert_eq!(
        probe.xlen(&stream).await,
        Some(BULK_TOTAL),
        "every message is in the stream"
    );
    let peak_memory = probe.memory_usage(&stream).await;

    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(vec![false; BULK_TOTAL as usize]));
    let handler = Counting {
        calls: calls.clone(),
        seen: seen.clone(),
    };
    let started = Instant::now();
    let consumer = start_consumer::<BulkTopic, _>(&client, handler, ConsumerOptions::preset(100));
    let consumed = poll_until(Duration::from_secs(240), || async {
        calls.load(Ordering::Relaxed) >= BULK_TOTAL
    })
    .await;
    assert!(
        consumed,
        "only {} of {BULK_TOTAL} messages were handled within 240 s; stream length {:?}, pending {:?}",
        calls.load(Ordering::Relaxed),
        probe.xlen(&stream).await,
        probe.group_pending(&stream, &group).await
    );
    let consumed_in = started.elapsed();
    consumer.finish().await;

    assert_eq!(
        calls.load(Ordering::Relaxed),
        BULK_TOTAL,
        "handler calls (no fault, so no redelivery)"
    );
    let unseen = lock(&seen).iter().filter(|s| !**s).count();
    assert_eq!(unseen, 0, "{unseen} messages were never handled");
    assert_eq!(
        probe.xlen(&stream).await,
        Some(0),
        "acknowledged entries are deleted: the stream is empty again"
    );
    let info = probe
        .group(&stream, &group)
        .await
        .unwrap_or_else(|| panic!("XINFO GROUPS {stream} lists no group {group}"));
    assert_eq!(
        info.get("pending").and_then(int_of),
        Some(0),
        "nothing is pending in the group: {info:?}"
    );
    if let Some(lag) = info.get("lag").and_then(int_of) {
        assert_eq!(lag, 0, "nothing is left undelivered: {info:?}");
    }
    let consumers = probe
        .consumers(&stream, &group)
        .await
        .unwrap_or_else(|| panic!("XINFO CONSUMERS {stream} {group} failed"));
    let ours = format!("{group}-{}-", std::process::id());
    let left: Vec<&(String, i64)> = consumers.iter().filter(|(name, _)| name.starts_with(&ours)).collect();
    assert!(
        left.is_empty(),
        "the stopped consumer's name is still in the group: {left:?} (all consumers: {consumers:?})"
    );
    println!(
        "  note: published in {published_in:.1?}, consumed in {consumed_in:.1?}; stream memory {peak_memory:?} \
         bytes with {BULK_TOTAL} entries, {:?} bytes empty; consumers left in the group: {consumers:?}",
        probe.memory_usage(&stream).await
    );
    probe.delete_topic(topology).await;
    close(client).await;
}

// ---------------------------------------------------------------------------------------------------------
// The runner

fn main() {
    if let Ok(role) = std::env::var(CHILD_ROLE_ENV) {
        child_main(&role, child_role(&role));
    }
    run_scenarios(vec![
        Scenario::Run(
            "server_restart_with_aof_loses_nothing",
            Duration::from_secs(360),
            || Box::pin(server_restart_with_aof_loses_nothing()),
        ),
        Scenario::Run(
            "kill_9_mid_handler_every_message_handled",
            Duration::from_secs(90),
            || Box::pin(kill_9_mid_handler_every_message_handled()),
        ),
        Scenario::Run(
            "kill_9_during_retry_delay_still_delivers",
            Duration::from_secs(90),
            || Box::pin(kill_9_during_retry_delay_still_delivers()),
        ),
        Scenario::Run(
            "memory_is_bounded_after_100k_messages",
            Duration::from_secs(360),
            || Box::pin(memory_is_bounded_after_100k_messages()),
        ),
    ]);
}
