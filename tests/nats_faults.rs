//! Fault tests for the NATS JetStream backend against real servers: the server killed with SIGKILL and
//! restarted on its store in the middle of a stream (nothing confirmed is lost; publisher and consumer
//! carry on by themselves), `kill -9` of a consumer process while its retry waits out the hold delay (the
//! server holds the retry, so it is still delivered; twice: once the child's hold mover has handed the
//! held copy back to the server, and right after the retry was settled, while the mover may still have
//! it), and a consumer group whose tasks all share the topic's one durable JetStream consumer.
//!
//! `harness = false`: the retry-delay scenarios must kill a consumer *process*, so this binary re-executes
//! itself as the child. With `SHOVE_NATS_FAULTS_CHILD=<role>` set it runs that child role and never
//! returns; otherwise it runs every scenario in turn (arguments that are not flags select scenarios by
//! name, like libtest), each on its own tokio runtime, and ends with `N passed, N failed` (exit code 1
//! when one failed).
//!
//! The restart scenario starts a `nats-server` of its own on a free port of 127.0.0.1, with JetStream and
//! its store in a temporary directory: `$SHOVE_NATS_FAULTS_SERVER` when set, else `nats-server` from PATH
//! (Debian's 2.9.10, the oldest server the backend supports), else the upstream server that
//! `scripts/test.sh` installs into `~/.cache/shove-brokers/nats-venv/bin/nats-server`. The server process
//! is killed and its directory removed when the scenario ends, however it ends. The other scenarios use
//! the server at `$SHOVE_NATS_URL` (default `nats://127.0.0.1:4222`; `scripts/test.sh` starts one there).
//!
//! Queue names start with `nfaults-` (so `scripts/test.sh` deletes the streams a failed run leaves behind)
//! and carry the process id, a counter and a random suffix; the child learns the queue of its topic from an
//! environment variable. Every wait polls a condition up to a deadline.

mod fault_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fault_support::{
    ChildProc, Log, Msg, POLL, Recording, Running, Scenario, assert_killed_by_sigkill, child_main, field, free_port,
    lock, name_from_env, poll_until, run_scenarios, say, unique,
};
use futures::StreamExt;
use shove::nats::{NatsClient, NatsConfig, NatsConsumer, NatsConsumerGroupConfig, NatsPublisher};
use shove::{
    AutoscalerBackend, Backend, Broker, ConsumerGroupConfig, ConsumerOptions, MessageHandler, MessageMetadata, Nats,
    Outcome, QueueTopology, ShoveError, Topic, TopologyBuilder, define_topic,
};
use tokio_util::sync::CancellationToken;

/// The server of the scenarios that do not start their own.
const NATS_URL_ENV: &str = "SHOVE_NATS_URL";
/// The `nats-server` binary the restart scenario starts (overrides PATH and the venv).
const SERVER_BIN_ENV: &str = "SHOVE_NATS_FAULTS_SERVER";
/// Names the child role; set only in the re-executed child.
const CHILD_ROLE_ENV: &str = "SHOVE_NATS_FAULTS_CHILD";
/// The queue of [`DelayTopic`], handed from the parent to its child.
const DELAY_QUEUE_ENV: &str = "SHOVE_NATS_FAULTS_DELAY_QUEUE";
/// The queue of [`SettledTopic`], handed from the parent to its child.
const SETTLED_QUEUE_ENV: &str = "SHOVE_NATS_FAULTS_SETTLED_QUEUE";

/// Bound of one probe request to the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------------------
// Topics and messages

/// The prefix of every queue name (see [`unique`]).
const NAME_PREFIX: &str = "nfaults";

/// The hold delay of the restart scenario.
const RESTART_HOLD: Duration = Duration::from_millis(300);
/// The hold delay of the retry-delay kill scenario.
const DELAY_HOLD: Duration = Duration::from_secs(3);

define_topic!(
    RestartTopic,
    Msg,
    TopologyBuilder::new(unique(NAME_PREFIX, "restart"))
        .hold_queue(RESTART_HOLD)
        .dlq()
        .build()
);
define_topic!(
    DelayTopic,
    Msg,
    TopologyBuilder::new(name_from_env(DELAY_QUEUE_ENV, NAME_PREFIX, "delay"))
        .hold_queue(DELAY_HOLD)
        .dlq()
        .build()
);
define_topic!(
    SettledTopic,
    Msg,
    TopologyBuilder::new(name_from_env(SETTLED_QUEUE_ENV, NAME_PREFIX, "settled"))
        .hold_queue(DELAY_HOLD)
        .dlq()
        .build()
);
define_topic!(
    GroupTopic,
    Msg,
    TopologyBuilder::new(unique(NAME_PREFIX, "group"))
        .hold_queue(Duration::from_secs(1))
        .dlq()
        .build()
);

// ---------------------------------------------------------------------------------------------------------
// Names on the server (see `shove::nats`: stream `SHOVE_<queue>`, durable consumers `<queue>-consumer`
// and `<queue>-hold`, characters other than letters, digits, `-` and `_` replaced by `_`)

fn token(queue: &str) -> String {
    queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn stream_name(queue: &str) -> String {
    format!("SHOVE_{}", token(queue))
}

fn main_consumer(queue: &str) -> String {
    format!("{}-consumer", token(queue))
}

fn hold_consumer(queue: &str) -> String {
    format!("{}-hold", token(queue))
}

fn hold_subject(queue: &str) -> String {
    format!("{queue}.hold")
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

fn default_url() -> String {
    std::env::var(NATS_URL_ENV).unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

async fn connect(url: &str) -> NatsClient {
    match <Nats as Backend>::connect(NatsConfig::new(url)).await {
        Ok(client) => client,
        Err(e) => panic!(
            "cannot connect to NATS at {url}: {e}; start nats-server with JetStream there (scripts/test.sh \
             starts one on 4222) or point {NATS_URL_ENV} at one"
        ),
    }
}

/// Closes a client (its consumers stop).
async fn close(client: NatsClient) {
    <Nats as Backend>::close(&client).await;
}

/// Looks at the server's state through a client's JetStream context, behind the library's back. Every
/// query answers `None` when the server does not (so it can be polled across a restart).
struct Probe {
    js: async_nats::jetstream::Context,
}

impl Probe {
    fn new(client: &NatsClient) -> Self {
        Self {
            js: client.jetstream().clone(),
        }
    }

    async fn stream(&self, queue: &str) -> Option<async_nats::jetstream::stream::Stream> {
        tokio::time::timeout(PROBE_TIMEOUT, self.js.get_stream(stream_name(queue)))
            .await
            .ok()?
            .ok()
    }

    /// Messages stored in the queue's stream (every subject: main, hold, shards).
    async fn messages(&self, queue: &str) -> Option<u64> {
        let mut stream = self.stream(queue).await?;
        let info = tokio::time::timeout(PROBE_TIMEOUT, stream.info()).await.ok()?.ok()?;
        Some(info.state.messages)
    }

    /// (not yet delivered, delivered and not acknowledged) of a durable consumer of the queue's stream.
    async fn consumer(&self, queue: &str, consumer: &str) -> Option<(u64, usize)> {
        let stream = self.stream(queue).await?;
        let info = tokio::time::timeout(PROBE_TIMEOUT, stream.consumer_info(consumer))
            .await
            .ok()?
            .ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }

    /// The names of the durable consumers of the queue's stream.
    async fn consumer_names(&self, queue: &str) -> Option<BTreeSet<String>> {
        let stream = self.stream(queue).await?;
        let mut names = stream.consumer_names();
        let mut found = BTreeSet::new();
        loop {
            match tokio::time::timeout(PROBE_TIMEOUT, names.next()).await.ok()? {
                None => return Some(found),
                Some(Ok(name)) => {
                    found.insert(name);
                }
                Some(Err(_)) => return None,
            }
        }
    }

    /// The headers of the last message on `subject` of the queue's stream.
    async fn last_headers(&self, queue: &str, subject: &str) -> Option<Vec<(String, String)>> {
        let stream = self.stream(queue).await?;
        let m = tokio::time::timeout(PROBE_TIMEOUT, stream.get_last_raw_message_by_subject(subject))
            .await
            .ok()?
            .ok()?;
        Some(
            m.headers
                .iter()
                .map(|(k, v)| {
                    (
                        <async_nats::HeaderName as AsRef<str>>::as_ref(k).to_string(),
                        v.first().map(|v| v.as_str().to_string()).unwrap_or_default(),
                    )
                })
                .collect(),
        )
    }

    /// (last delivered, acknowledgement floor) stream sequences of a durable consumer of the queue's stream.
    async fn consumer_sequences(&self, queue: &str, consumer: &str) -> Option<(u64, u64)> {
        let stream = self.stream(queue).await?;
        let info = tokio::time::timeout(PROBE_TIMEOUT, stream.consumer_info(consumer))
            .await
            .ok()?
            .ok()?;
        Some((info.delivered.stream_sequence, info.ack_floor.stream_sequence))
    }

    /// Up to `max` messages still stored in the queue's stream, oldest first.
    async fn stored(&self, queue: &str, max: usize) -> Option<Vec<Stored>> {
        let stream = self.stream(queue).await?;
        let mut found = Vec::new();
        let mut next = 1;
        while found.len() < max {
            let get = stream.raw_message_builder().sequence(next).next_by_subject(">").send();
            let m = match tokio::time::timeout(PROBE_TIMEOUT, get).await.ok()? {
                Ok(m) => m,
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    ) =>
                {
                    break;
                }
                Err(_) => return None,
            };
            found.push(Stored {
                sequence: m.sequence,
                subject: m.subject.to_string(),
                n: serde_json::from_slice::<Msg>(&m.payload).ok().map(|m| m.n),
                headers: m
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            <async_nats::HeaderName as AsRef<str>>::as_ref(k),
                            v.first().map(|v| v.as_str()).unwrap_or_default()
                        )
                    })
                    .collect(),
            });
            next = m.sequence + 1;
        }
        Some(found)
    }

    /// Deletes a topic's streams (best effort, after a passing scenario).
    async fn delete_topic(&self, topology: &QueueTopology) {
        let mut queues = vec![topology.queue()];
        queues.extend(topology.dlq());
        for queue in queues {
            let _ = tokio::time::timeout(PROBE_TIMEOUT, self.js.delete_stream(stream_name(queue))).await;
        }
    }
}

/// A message stored in a stream.
#[derive(Debug)]
#[allow(dead_code)] // Read through `Debug` in failure messages.
struct Stored {
    sequence: u64,
    subject: String,
    n: Option<u64>,
    headers: Vec<String>,
}

/// (delivered, ack floor) stream sequences of a topic's consumer and of its hold consumer.
type Floors = (Option<(u64, u64)>, Option<(u64, u64)>);

/// Runs a consumer of `T` in a task of the scenario's runtime.
fn start_consumer<T>(client: &NatsClient, handler: Recording, options: ConsumerOptions<Nats>) -> Running
where
    T: Topic<Message = Msg>,
{
    let stop = CancellationToken::new();
    let consumer = NatsConsumer::new(client.clone());
    let options = options.with_shutdown(stop.clone());
    let task = tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await });
    Running { stop, task }
}

// ---------------------------------------------------------------------------------------------------------
// A nats-server of the test's own (restart scenario)

/// The `nats-server` to start: `$SHOVE_NATS_FAULTS_SERVER`, else the one on PATH (or Debian's in
/// /usr/sbin, which a user's PATH may lack), else the one `scripts/test.sh` installs into a venv.
fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(SERVER_BIN_ENV) {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|p| p.is_file());
    if let Some(bin) = on_path {
        return bin;
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/shove-brokers/nats-venv/bin/nats-server");
        if venv.is_file() {
            return venv;
        }
    }
    panic!(
        "no nats-server found: put one on PATH (Debian: apt-get install nats-server), run scripts/test.sh \
         (it installs one), or set {SERVER_BIN_ENV} to its path"
    )
}

/// A `nats-server` process with JetStream, listening on 127.0.0.1 only, with its store in a directory of
/// its own. Dropping it kills the server and removes the directory (printing the server log's tail first
/// when the scenario is failing).
struct OwnNats {
    binary: PathBuf,
    version: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Starts so far (each writes its own log file).
    starts: u32,
}

impl OwnNats {
    fn start() -> Self {
        let binary = server_binary();
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| panic!("cannot run `{} --version`: {e}", binary.display()));
        let dir = std::env::temp_dir().join(format!(
            "shove-nats-faults-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut server = Self {
            binary,
            version,
            port: free_port(),
            dir,
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("nats-server-{}.log", self.starts))
    }

    /// Starts the server process on the port and store directory (again, after a kill).
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server already runs");
        self.starts += 1;
        let port = self.port.to_string();
        let store = self.dir.join("store").to_string_lossy().into_owned();
        let log = self.log_path().to_string_lossy().into_owned();
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                port.as_str(),
                "-js",
                "-sd",
                store.as_str(),
                "-l",
                log.as_str(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Waits until the server has recovered its store and listens: its log says "Server is ready" and the
    /// port accepts connections.
    async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            let logged = std::fs::read_to_string(self.log_path()).is_ok_and(|l| l.contains("Server is ready"));
            if logged
                && matches!(
                    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(&addr)).await,
                    Ok(Ok(_))
                )
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{} on port {} exited ({status}); its log ends with:\n{}",
                    self.version,
                    self.port,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} on port {} was not ready within {within:?}; its log ends with:\n{}",
                self.version,
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs the server (`Child::kill` on Unix) and reaps it.
    fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server runs");
        child.kill().expect("killing nats-server");
        child.wait().expect("reaping nats-server")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "nats_faults: the log of the scenario's {} (port {}, start {}) ends with:\n{}",
                self.version,
                self.port,
                self.starts,
                self.log_tail()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Child roles

/// Returns `Retry` on a first attempt (printing `RETRYING {id} {n}`); on a later attempt prints
/// `HANGING {id} {n} {retry_count}` and never returns, so the child never settles a retried copy.
struct RetryThenHang;

impl<T: Topic<Message = Msg>> MessageHandler<T> for RetryThenHang {
    type Context = ();

    async fn handle(&self, msg: Msg, meta: MessageMetadata, _: &()) -> Outcome {
        if meta.retry_count == 0 {
            say(&format!("RETRYING {} {}", meta.delivery_id, msg.n));
            Outcome::Retry
        } else {
            say(&format!("HANGING {} {} {}", meta.delivery_id, msg.n, meta.retry_count));
            std::future::pending::<Outcome>().await
        }
    }
}

/// Consumes `T` with [`RetryThenHang`], one message at a time, until killed.
async fn child_retry_then_hang<T: Topic<Message = Msg>>() -> i32 {
    let client = match NatsClient::connect(&NatsConfig::new(default_url())).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("child: cannot connect: {e}");
            return 2;
        }
    };
    let options = ConsumerOptions::<Nats>::preset(1).without_handler_timeout();
    let result = NatsConsumer::new(client).run::<T, _>(RetryThenHang, (), options).await;
    eprintln!("child: the consumer ended, which it must not: {result:?}");
    2
}

async fn child_role(role: &str) -> i32 {
    match role {
        "retry_then_hang_delay" => child_retry_then_hang::<DelayTopic>().await,
        "retry_then_hang_settled" => child_retry_then_hang::<SettledTopic>().await,
        other => {
            eprintln!("child: unknown role {other:?}");
            2
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 1: the server is killed and restarted on its store in the middle of a stream

const RESTART_TOTAL: u64 = 2_000;
/// Published before the consumer starts.
const RESTART_FIRST: u64 = 1_000;
/// Published (with the consumer running) before the kill; the rest is published across the outage.
const RESTART_BEFORE_KILL: u64 = 1_500;
const RESTART_BATCH: u64 = 10;
/// Failed publish attempts to wait for while the server is down.
const OUTAGE_FAILURES: u32 = 1;

/// Every 10th message is retried once (through the 300 ms hold queue).
fn retried_once(n: u64) -> bool {
    n.is_multiple_of(10)
}

/// What the publisher task reports to the scenario.
#[derive(Default)]
struct PublishState {
    /// Payload numbers the server confirmed (`publish_batch` counted them as stored).
    confirmed: Mutex<BTreeSet<u64>>,
    failed_attempts: AtomicU32,
    /// Failed attempts whose error was not retryable (`ShoveError::is_retryable` false).
    not_retryable: Mutex<Vec<String>>,
    last_error: Mutex<Option<String>>,
    before_kill_done: AtomicBool,
    server_killed: AtomicBool,
}

/// Publishes `from..to` in batches of [`RESTART_BATCH`], retrying what was not confirmed with a doubling
/// backoff (50 ms … 2 s) for at most 120 s per batch.
async fn publish_retrying(publisher: &NatsPublisher, from: u64, to: u64, state: &PublishState) {
    let mut start = from;
    while start < to {
        let batch: Vec<Msg> = (start..(start + RESTART_BATCH).min(to)).map(|n| Msg { n }).collect();
        let mut rest = &batch[..];
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut backoff = Duration::from_millis(50);
        while !rest.is_empty() {
            let (stored, result) = match tokio::time::timeout(
                Duration::from_secs(40),
                publisher.publish_batch::<RestartTopic>(rest),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => (
                    0,
                    Err(ShoveError::Connection(
                        "publish_batch did not return within 40 s".into(),
                    )),
                ),
            };
            let stored = usize::try_from(stored).unwrap_or(usize::MAX).min(rest.len());
            lock(&state.confirmed).extend(rest[..stored].iter().map(|m| m.n));
            rest = &rest[stored..];
            if let Err(e) = result {
                if !e.is_retryable() {
                    lock(&state.not_retryable).push(e.to_string());
                }
                state.failed_attempts.fetch_add(1, Ordering::SeqCst);
                *lock(&state.last_error) = Some(e.to_string());
                assert!(
                    Instant::now() < deadline,
                    "publishing the batch from {start} did not succeed within 120 s; last error: {e}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        start += RESTART_BATCH;
    }
}

/// Publishes up to [`RESTART_BEFORE_KILL`], waits until the server has been killed, then publishes the
/// rest (failing, backing off and retrying until the server is back).
async fn publish_around_restart(publisher: NatsPublisher, state: Arc<PublishState>) {
    publish_retrying(&publisher, RESTART_FIRST, RESTART_BEFORE_KILL, &state).await;
    state.before_kill_done.store(true, Ordering::SeqCst);
    let killed = poll_until(Duration::from_secs(120), || async {
        state.server_killed.load(Ordering::SeqCst)
    })
    .await;
    assert!(killed, "the scenario never killed the server");
    publish_retrying(&publisher, RESTART_BEFORE_KILL, RESTART_TOTAL, &state).await;
}

async fn server_restart_mid_stream_loses_nothing() {
    let mut server = OwnNats::start();
    server.wait_ready(Duration::from_secs(30)).await;
    let url = server.url();
    let topology = RestartTopic::topology();
    let queue = topology.queue().to_string();
    let consumer_client = connect(&url).await;
    let publisher_client = connect(&url).await;
    let probe_client = connect(&url).await;
    let probe = Probe::new(&probe_client);
    Broker::<Nats>::from_client(publisher_client.clone())
        .topology()
        .declare::<RestartTopic>()
        .await
        .expect("declaring the topic");

    // A backlog first, then the consumer, then more messages while it runs.
    let state = Arc::new(PublishState::default());
    let publisher = NatsPublisher::new(publisher_client.clone()).await.expect("a publisher");
    publish_retrying(&publisher, 0, RESTART_FIRST, &state).await;
    assert_eq!(
        state.failed_attempts.load(Ordering::SeqCst),
        0,
        "publishing failed before any fault: {:?}",
        lock(&state.last_error)
    );

    // 10 ms of work per call and 10 at a time: at most ~1,000 messages a second, so the kill lands with a
    // backlog in the stream.
    let log = Log::default();
    let handler = Recording {
        log: log.clone(),
        retry_first: retried_once,
        work: Duration::from_millis(10),
    };
    let consumer = start_consumer::<RestartTopic>(&consumer_client, handler, ConsumerOptions::preset(10));
    let publishing = tokio::spawn(publish_around_restart(publisher, state.clone()));

    let mid_stream = poll_until(Duration::from_secs(60), || async {
        state.before_kill_done.load(Ordering::SeqCst) && log.acked_calls() >= 300
    })
    .await;
    assert!(
        mid_stream,
        "before the kill: {} of {RESTART_BEFORE_KILL} published, {} handled within 60 s",
        lock(&state.confirmed).len(),
        log.acked_calls()
    );

    // Kill the server, let the publisher and the consumer run into the outage, start it again.
    let confirmed_at_kill = lock(&state.confirmed).clone();
    let handled_at_kill = log.acked().len();
    let stored_at_kill = probe.messages(&queue).await;
    let status = server.kill9();
    let killed_at = Instant::now();
    assert_killed_by_sigkill(status, "nats-server");
    state.server_killed.store(true, Ordering::SeqCst);
    assert!(
        handled_at_kill < confirmed_at_kill.len(),
        "the kill came after the stream was drained ({handled_at_kill} of {} handled): not mid-stream",
        confirmed_at_kill.len()
    );
    let outage_seen = poll_until(Duration::from_secs(30), || async {
        state.failed_attempts.load(Ordering::SeqCst) >= OUTAGE_FAILURES
            && !consumer_client.is_connected()
            && !publisher_client.is_connected()
    })
    .await;
    assert!(
        outage_seen,
        "within 30 s of the kill: {} publish attempts failed (confirmed so far {}), the consumer's client \
         connected: {}, the publisher's: {}",
        state.failed_attempts.load(Ordering::SeqCst),
        lock(&state.confirmed).len(),
        consumer_client.is_connected(),
        publisher_client.is_connected()
    );
    server.spawn();
    server.wait_ready(Duration::from_secs(60)).await;
    let outage = killed_at.elapsed();
    let restarted_at = Instant::now();
    let recovered = poll_until(Duration::from_secs(30), || async {
        probe.messages(&queue).await.is_some()
    })
    .await;
    assert!(
        recovered,
        "30 s after the restart the stream {} cannot be read: the store was not recovered",
        stream_name(&queue)
    );
    let stored_after_restart = probe.messages(&queue).await;

    // The publisher resumes by itself and gets every message confirmed.
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
        "the test retried every batch until it was confirmed"
    );

    // The consumer resumes by itself and acknowledges every confirmed message at least once. Messages in
    // flight at the kill may wait out the ack wait (30 s) before they come again.
    let within = Duration::from_secs(120);
    let all_handled = poll_until(within, || async { confirmed.is_subset(&log.acked()) }).await;
    let acked = log.acked();
    let missing: Vec<u64> = confirmed.difference(&acked).copied().collect();
    let missing_before_kill: Vec<u64> = missing
        .iter()
        .copied()
        .filter(|n| confirmed_at_kill.contains(n))
        .collect();
    assert!(
        all_handled && missing.is_empty(),
        "{} confirmed messages were never acknowledged within {within:?} of the restart (first: {:?}; {} of \
         them confirmed before the kill, first: {:?}); {} acknowledged, {handled_at_kill} before the kill; \
         stream messages at the kill {stored_at_kill:?}, after the restart {stored_after_restart:?}, now {:?}; \
         consumer (pending, ack pending) {:?}, hold consumer {:?}; the consumer task has {}",
        missing.len(),
        &missing[..missing.len().min(20)],
        missing_before_kill.len(),
        &missing_before_kill[..missing_before_kill.len().min(20)],
        acked.len(),
        probe.messages(&queue).await,
        probe.consumer(&queue, &main_consumer(&queue)).await,
        probe.consumer(&queue, &hold_consumer(&queue)).await,
        if consumer.task.is_finished() {
            "ended"
        } else {
            "kept running"
        }
    );
    let all_in = restarted_at.elapsed();
    let after_restart = log.snapshot().iter().filter(|s| s.at > restarted_at).count();
    assert!(after_restart > 0, "no message was handled after the restart");
    assert!(!consumer.task.is_finished(), "the consumer ended instead of resuming");

    // Every message that returned Retry came back (through the hold subject, or redelivered) and was
    // handled again: at least one Retry and one Ack.
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

    // Nothing is left behind: with work-queue retention the stream empties once everything is settled.
    // After a SIGKILL the server may have forgotten that it removed acknowledged messages while it kept its
    // consumers' acknowledgement floors: such messages stay in the stream below the floor, never delivered
    // again (they were handled). Anything else left over is a failure.
    let (main, held) = (main_consumer(&queue), hold_consumer(&queue));
    let acked = log.acked();
    // Whether a message left in the stream is one the server forgot it had removed: at or below its
    // consumer's ack floor (never delivered again), and handled.
    let forgotten_by_server = |m: &Stored, floors: &Floors| {
        let floor = if m.subject == hold_subject(&queue) {
            floors.1
        } else {
            floors.0
        };
        floor.is_some_and(|(_, ack_floor)| m.sequence <= ack_floor) && m.n.is_some_and(|n| acked.contains(&n))
    };
    let drain_within = Duration::from_secs(90);
    let forgotten: Mutex<Vec<Stored>> = Mutex::default();
    let settled = poll_until(drain_within, || async {
        if probe.consumer(&queue, &main).await != Some((0, 0)) || probe.consumer(&queue, &held).await != Some((0, 0)) {
            return false;
        }
        match probe.messages(&queue).await {
            Some(0) => true,
            Some(n) if n <= 500 => {
                let floors = (
                    probe.consumer_sequences(&queue, &main).await,
                    probe.consumer_sequences(&queue, &held).await,
                );
                match probe.stored(&queue, 500).await {
                    Some(left) if left.iter().all(|m| forgotten_by_server(m, &floors)) => {
                        *lock(&forgotten) = left;
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    })
    .await;
    let drained_after = restarted_at.elapsed();
    if !settled {
        let floors = (
            probe.consumer_sequences(&queue, &main).await,
            probe.consumer_sequences(&queue, &held).await,
        );
        let left = probe.stored(&queue, 500).await.unwrap_or_default();
        let unexplained: Vec<&Stored> = left.iter().filter(|m| !forgotten_by_server(m, &floors)).collect();
        panic!(
            "{drain_within:?} after every message was handled: consumer '{main}' (pending, ack pending) {:?} and \
             (delivered, ack floor) stream sequences {floors_main:?}; consumer '{held}' {:?} {floors_hold:?}; the \
             stream holds {:?} messages, of which these are neither at or below their consumer's ack floor nor \
             acknowledged by the handler (first 20): {:#?}",
            probe.consumer(&queue, &main).await,
            probe.consumer(&queue, &held).await,
            probe.messages(&queue).await,
            &unexplained[..unexplained.len().min(20)],
            floors_main = floors.0,
            floors_hold = floors.1,
        );
    }
    let forgotten = forgotten.into_inner().unwrap_or_else(|p| p.into_inner());
    consumer.finish().await;

    // Duplicates: a message (id) acknowledged more than once was delivered again (its acknowledgement was
    // lost with the server); a payload published under several ids was stored by a publish attempt that
    // timed out in the outage and was then published again by the test.
    let seen = log.snapshot();
    let mut acks_per_id: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ids_per_n: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.acked) {
        *acks_per_id.entry(s.id.as_str()).or_default() += 1;
        ids_per_n.entry(s.n).or_default().insert(s.id.as_str());
    }
    let last_call = seen
        .iter()
        .map(|s| s.at)
        .max()
        .map(|at| at.saturating_duration_since(restarted_at));
    let delivered_again = acks_per_id.values().filter(|&&c| c > 1).count();
    let published_twice = ids_per_n.values().filter(|ids| ids.len() > 1).count();
    let again_unflagged = {
        let mut first_acked: BTreeSet<&str> = BTreeSet::new();
        seen.iter()
            .filter(|s| s.acked && !first_acked.insert(s.id.as_str()) && !s.redelivered)
            .count()
    };
    let not_retryable = lock(&state.not_retryable).clone();
    println!(
        "  note: {} ({}); SIGKILL with {handled_at_kill} of {} confirmed messages handled (stream messages at \
         the kill {stored_at_kill:?}, after the restart {stored_after_restart:?}); outage {outage:.1?}; every \
         message handled {all_in:.1?} after the restart; {} failed publish attempts ({} not retryable{}); \
         {after_restart} handler calls after the restart; {delivered_again} messages acknowledged more than once \
         ({again_unflagged} of these repeat deliveries not flagged redelivered), {published_twice} payloads \
         stored twice by publish retries; the last handler call {last_call:.1?} and the consumers settled \
         {drained_after:.1?} after the restart (messages handled at the kill, whose acknowledgement died with \
         the server, come again after the 30 s ack wait); {}",
        server.version,
        server.binary.display(),
        confirmed_at_kill.len(),
        state.failed_attempts.load(Ordering::SeqCst),
        not_retryable.len(),
        not_retryable
            .first()
            .map(|e| format!(", e.g. {e:?}"))
            .unwrap_or_default(),
        if forgotten.is_empty() {
            "the stream drained".to_string()
        } else {
            format!(
                "{} handled messages stayed in the stream below the consumer's ack floor (the restarted server \
                 had lost their removal), stream sequences {}..={}",
                forgotten.len(),
                forgotten.first().map_or(0, |m| m.sequence),
                forgotten.last().map_or(0, |m| m.sequence)
            )
        }
    );
    probe.delete_topic(topology).await;
    close(consumer_client).await;
    close(publisher_client).await;
    close(probe_client).await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios 2 and 3: kill -9 of a consumer process while its retry waits out the hold delay

/// When the parent kills the child, counted from the child's `Retry`.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// As soon as the server shows the retry settled (the held copy stored, the original acknowledged).
    /// The child's hold mover then usually still has the copy: it pulls held messages in batches that
    /// stay open for up to 300 ms and hands a copy that is not due back to the server (nak with the time
    /// left) only once its batch has ended.
    Settled,
    /// Once the retry is settled and this long has passed since the `Retry`: well after the child's hold
    /// mover has handed the copy back to the server with its delay.
    HandedBack(Duration),
}

/// How long after the end of the hold delay the retry may arrive when the child was killed at [`KillAt::HandedBack`]:
/// the server redelivers the copy to the hold consumer when it is due, the new consumer's mover moves it
/// back within one pull.
const ON_TIME_MARGIN: Duration = Duration::from_secs(5);

/// Publishes one message, lets a child consumer process return `Retry` for it, kills the child with
/// SIGKILL during the hold delay (`kill_at`), and checks that a new consumer receives the retry (retry
/// count 1, same id, not before the delay is over) within `delay + margin`.
async fn kill_9_during_retry_delay<T: Topic<Message = Msg>>(
    role: &'static str,
    queue_env: &'static str,
    kill_at: KillAt,
    margin: Duration,
) {
    let url = default_url();
    let topology = T::topology();
    let queue = topology.queue().to_string();
    let hold_delay = topology.hold_queues()[0].delay();
    let client = connect(&url).await;
    let probe = Probe::new(&client);
    let broker = Broker::<Nats>::from_client(client.clone());
    broker.topology().declare::<T>().await.expect("declaring the topic");
    broker
        .publisher()
        .await
        .expect("a publisher")
        .publish::<T>(&Msg { n: 42 })
        .await
        .expect("publishing");

    let mut child = ChildProc::spawn(CHILD_ROLE_ENV, role, &[(queue_env, queue.as_str())]);
    let Some((retried_at, line)) = child.wait_for_line(Duration::from_secs(30), "RETRYING ").await else {
        panic!(
            "the child did not handle the message within 30 s; its output: {:?}",
            child.output()
        )
    };
    let id = field(&line, 0).to_string();
    assert_eq!(field(&line, 1), "42", "the child handled an unknown message");

    // The retry is settled once the server has the held copy and the original is acknowledged (work-queue
    // retention: gone from the stream): one message left, on the hold subject, and nothing delivered or
    // pending on the topic's consumer. Then kill the child, still within the delay.
    let main = main_consumer(&queue);
    let hold = hold_subject(&queue);
    let settle_within = hold_delay / 4;
    let settled = poll_until(settle_within, || async {
        probe.messages(&queue).await == Some(1)
            && probe.consumer(&queue, &main).await == Some((0, 0))
            && probe.last_headers(&queue, &hold).await.is_some()
    })
    .await;
    assert!(
        settled,
        "{settle_within:?} after the handler's Retry the retry was not settled: stream messages {:?}, consumer \
         '{main}' (pending, ack pending) {:?}, last message on '{hold}' {:?}",
        probe.messages(&queue).await,
        probe.consumer(&queue, &main).await,
        probe.last_headers(&queue, &hold).await
    );
    let settled_after = retried_at.elapsed();
    if let KillAt::HandedBack(after) = kill_at {
        // Positions the fault (no assertion depends on this wait).
        tokio::time::sleep_until((retried_at + after).into()).await;
    }
    let status = child.kill9();
    let killed_after = retried_at.elapsed();
    assert_killed_by_sigkill(status, &format!("child `{role}`"));
    assert!(
        killed_after < hold_delay,
        "the kill came {killed_after:?} after the Retry, not within the {hold_delay:?} delay: this scenario needs \
         a faster machine"
    );
    assert_eq!(
        child.count("HANGING "),
        0,
        "the child saw the retry before it was killed"
    );
    let held = probe.last_headers(&queue, &hold).await.unwrap_or_default();
    let header = |name: &str| held.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(
        header("Shove-Retry-Count"),
        Some("1"),
        "the held copy carries retry count 1: {held:?}"
    );
    assert_eq!(
        header("Shove-Message-Id"),
        Some(id.as_str()),
        "the held copy keeps the message id: {held:?}"
    );
    assert_eq!(
        probe.messages(&queue).await,
        Some(1),
        "after the kill the retry still waits in the stream"
    );

    // A new consumer (the restarted process) receives the retry.
    let log = Log::default();
    let consumer = start_consumer::<T>(&client, Recording::acking(&log), ConsumerOptions::preset(5));
    let arrived = poll_until((hold_delay + margin).saturating_sub(retried_at.elapsed()), || async {
        !log.snapshot().is_empty()
    })
    .await;
    assert!(
        arrived,
        "the retry did not arrive within the delay {hold_delay:?} + {margin:?} of the Retry (killed \
         {killed_after:?} after it, {kill_at:?}; a held copy the child's hold mover still had when it died \
         comes again only after the 30 s ack wait); stream messages {:?}, consumer '{main}' {:?}, hold consumer \
         {:?}",
        probe.messages(&queue).await,
        probe.consumer(&queue, &main).await,
        probe.consumer(&queue, &hold_consumer(&queue)).await
    );
    // Once the stream is empty and nothing is pending, nothing else can arrive.
    let drained = poll_until(Duration::from_secs(10), || async {
        probe.messages(&queue).await == Some(0) && probe.consumer(&queue, &main).await == Some((0, 0))
    })
    .await;
    assert!(
        drained,
        "left behind: stream messages {:?}, consumer '{main}' {:?}",
        probe.messages(&queue).await,
        probe.consumer(&queue, &main).await
    );
    consumer.finish().await;

    let seen = log.snapshot();
    assert_eq!(
        seen.len(),
        1,
        "the retry should reach the new consumer exactly once: {seen:?}"
    );
    let retry = &seen[0];
    assert_eq!(retry.id, id, "the retry keeps the message id");
    assert_eq!(retry.n, 42, "the retry carries the payload");
    assert_eq!(
        retry.retry_count, 1,
        "the retry is delivered with retry_count 1: {retry:?}"
    );
    assert!(retry.redelivered, "a retry is a redelivery: {retry:?}");
    let waited = retry.at.duration_since(retried_at);
    assert!(
        waited >= hold_delay.saturating_sub(Duration::from_millis(300)),
        "the retry arrived {waited:?} after the handler's Retry, before the {hold_delay:?} hold delay was over"
    );
    let late = waited.saturating_sub(hold_delay);
    println!(
        "  note: retry settled {settled_after:.2?} after the Retry, child killed {killed_after:.2?} after it \
         ({kill_at:?}); the retry arrived {waited:.2?} after the Retry, {late:.2?} after the {hold_delay:?} delay{}",
        if late > ON_TIME_MARGIN {
            " (the copy was still with the dead child's hold mover: the server sent it again only after the \
             30 s ack wait)"
        } else {
            ""
        }
    );
    probe.delete_topic(topology).await;
    close(client).await;
}

/// The child is killed once its hold mover has handed the held copy back to the server: the server holds
/// the delay, and the retry arrives when it is due.
async fn kill_9_during_retry_delay_still_delivers() {
    kill_9_during_retry_delay::<DelayTopic>(
        "retry_then_hang_delay",
        DELAY_QUEUE_ENV,
        KillAt::HandedBack(Duration::from_secs(1)),
        ON_TIME_MARGIN,
    )
    .await;
}

/// The child is killed as soon as the retry is settled, while its hold mover may still have the held copy
/// (the mover hands each copy that is not due back to the server as soon as it pulls it, so the retry
/// still arrives on time).
async fn kill_9_right_after_retry_settled_still_delivers() {
    kill_9_during_retry_delay::<SettledTopic>(
        "retry_then_hang_settled",
        SETTLED_QUEUE_ENV,
        KillAt::Settled,
        ON_TIME_MARGIN,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 4: the tasks of a consumer group share the topic's one durable consumer

const GROUP_TOTAL: u64 = 300;
const GROUP_SIZE: u16 = 3;

/// Records (message, handler instance) and acknowledges after a few milliseconds of work.
#[derive(Clone)]
struct Tagged {
    instance: usize,
    handled: Arc<Mutex<Vec<(u64, usize)>>>,
}

impl MessageHandler<GroupTopic> for Tagged {
    type Context = ();

    async fn handle(&self, msg: Msg, _: MessageMetadata, _: &()) -> Outcome {
        tokio::time::sleep(Duration::from_millis(5)).await;
        lock(&self.handled).push((msg.n, self.instance));
        Outcome::Ack
    }
}

/// The active consumers of the group named `queue`, through `broker.autoscaler()`.
async fn active_consumers(broker: &Broker<Nats>, queue: &str) -> Option<u16> {
    let scaler = broker.autoscaler();
    let groups = scaler.list_groups().await.ok()?;
    let id = groups.into_iter().find(|g| g == queue)?;
    Some(scaler.fetch_metrics(&id).await.ok()?.active_consumers)
}

async fn group_tasks_share_one_durable_consumer() {
    let url = default_url();
    let topology = GroupTopic::topology();
    let queue = topology.queue().to_string();
    let broker = match Broker::<Nats>::new(NatsConfig::new(&url)).await {
        Ok(b) => b,
        Err(e) => panic!("cannot connect to NATS at {url}: {e}; point {NATS_URL_ENV} at a server with JetStream"),
    };
    let probe_client = connect(&url).await;
    let probe = Probe::new(&probe_client);
    broker
        .topology()
        .declare::<GroupTopic>()
        .await
        .expect("declaring the topic");

    // The factory is called once per consumer task: each handler instance gets its own number.
    let instances = Arc::new(AtomicUsize::new(0));
    let handled: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let factory = {
        let (instances, handled) = (instances.clone(), handled.clone());
        move || Tagged {
            instance: instances.fetch_add(1, Ordering::SeqCst),
            handled: handled.clone(),
        }
    };
    let config = NatsConsumerGroupConfig::new(GROUP_SIZE..=GROUP_SIZE).with_prefetch_count(2);
    let mut group = broker.consumer_group();
    group
        .register::<GroupTopic, _>(ConsumerGroupConfig::new(config), factory)
        .await
        .expect("registering the group");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(group.run_until_timeout(
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(10),
    ));
    let started = poll_until(Duration::from_secs(30), || async {
        active_consumers(&broker, &queue).await == Some(GROUP_SIZE)
    })
    .await;
    assert!(
        started,
        "the group did not have {GROUP_SIZE} active consumers within 30 s (has {:?}; handler instances made: {})",
        active_consumers(&broker, &queue).await,
        instances.load(Ordering::SeqCst)
    );

    let messages: Vec<Msg> = (0..GROUP_TOTAL).map(|n| Msg { n }).collect();
    broker
        .publisher()
        .await
        .expect("a publisher")
        .publish_batch::<GroupTopic>(&messages)
        .await
        .expect("publishing");
    let distinct = || lock(&handled).iter().map(|(n, _)| *n).collect::<BTreeSet<_>>().len() as u64;
    let all = poll_until(Duration::from_secs(60), || async { distinct() == GROUP_TOTAL }).await;
    let handled_distinct = distinct();
    assert!(
        all,
        "only {handled_distinct} of {GROUP_TOTAL} messages were handled within 60 s; stream messages {:?}, \
         consumer {:?}",
        probe.messages(&queue).await,
        probe.consumer(&queue, &main_consumer(&queue)).await
    );

    // (a) One durable consumer for the topic's messages and one for its held retries, whatever the number
    // of tasks.
    let names = probe
        .consumer_names(&queue)
        .await
        .unwrap_or_else(|| panic!("cannot list the consumers of stream {}", stream_name(&queue)));
    let expected: BTreeSet<String> = [main_consumer(&queue), hold_consumer(&queue)].into_iter().collect();
    assert_eq!(
        names,
        expected,
        "the durable consumers of stream {} with {GROUP_SIZE} consumer tasks running",
        stream_name(&queue)
    );

    // (b) The tasks shared the work.
    let mut per_instance: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, instance) in lock(&handled).iter() {
        *per_instance.entry(*instance).or_default() += 1;
    }
    assert!(
        per_instance.len() > 1,
        "only one consumer task handled messages: (handler instance, messages) {per_instance:?}; handler \
         instances made: {}",
        instances.load(Ordering::SeqCst)
    );
    let calls = lock(&handled).len();

    let _ = stop.send(());
    let outcome = match tokio::time::timeout(Duration::from_secs(30), running).await {
        Err(_) => panic!("the group did not stop within 30 s of its stop signal"),
        Ok(Err(e)) => panic!("the group task failed: {e}"),
        Ok(Ok(outcome)) => outcome,
    };
    assert!(outcome.is_clean(), "the group did not stop cleanly: {outcome:?}");
    println!(
        "  note: {GROUP_SIZE} tasks, {} handler instances made; (instance, messages handled) {per_instance:?}; \
         {calls} calls for {GROUP_TOTAL} messages; consumers of the stream: {names:?}",
        instances.load(Ordering::SeqCst)
    );
    probe.delete_topic(topology).await;
    broker.close().await;
    close(probe_client).await;
}

// ---------------------------------------------------------------------------------------------------------
// The runner

fn main() {
    if let Ok(role) = std::env::var(CHILD_ROLE_ENV) {
        child_main(&role, child_role(&role));
    }
    run_scenarios(vec![
        Scenario::Run(
            "server_restart_mid_stream_loses_nothing",
            Duration::from_secs(420),
            || Box::pin(server_restart_mid_stream_loses_nothing()),
        ),
        Scenario::Run(
            "kill_9_during_retry_delay_still_delivers",
            Duration::from_secs(90),
            || Box::pin(kill_9_during_retry_delay_still_delivers()),
        ),
        Scenario::Run(
            "kill_9_right_after_retry_settled_still_delivers",
            Duration::from_secs(120),
            || Box::pin(kill_9_right_after_retry_settled_still_delivers()),
        ),
        Scenario::Run(
            "group_tasks_share_one_durable_consumer",
            Duration::from_secs(120),
            || Box::pin(group_tasks_share_one_durable_consumer()),
        ),
    ]);
}
