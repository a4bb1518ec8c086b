//! Plumbing of the fault-test binary `rabbitmq_faults` (`harness = false`; the NATS and Redis ones are now
//! scenarios of the conformance suite), included with `mod fault_support;`: the payload type and unique queue
//! names, condition polling up to a deadline, the recording handler and its call log, a consumer task of
//! the scenario's runtime, child processes that re-execute the test binary in a role (spawned, their
//! output read line by line, killed with SIGKILL), the child's entry point with its watchdog, and the
//! scenario runner that ends with the `N passed, N failed` line `scripts/test.sh` counts.
//!
//! Items a binary does not use carry `#[allow(dead_code)]`.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shove::{MessageHandler, MessageMetadata, Outcome, ShoveError, Topic};
use tokio_util::sync::CancellationToken;

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(50);
/// A child that was not killed by then exits by itself (its parent died or forgot it).
pub const CHILD_LIFETIME: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------------------
// Messages and names

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    pub n: u64,
}

/// A queue (stream) name unique to this process and call: `{prefix}-{name}-{pid}-{counter}-{random}`.
pub fn unique(prefix: &str, name: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{name}-{}-{counter}-{}", std::process::id(), &id[..8])
}

/// The queue name from `var` (in a child), or a fresh [`unique`] one (in the parent, which passes it on).
pub fn name_from_env(var: &str, prefix: &str, name: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| unique(prefix, name))
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `cond` every [`POLL`] until it holds (true) or `within` has passed (false).
pub async fn poll_until<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A port nobody listens on right now: bound once by the OS's choice, then released.
#[allow(dead_code)] // Not used by `rabbitmq_faults` (it restarts the broker on its own port).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("the bound address").port()
}

// ---------------------------------------------------------------------------------------------------------
// Handler calls

/// One handler call.
#[derive(Debug, Clone)]
pub struct Seen {
    pub n: u64,
    pub id: String,
    pub retry_count: u32,
    #[allow(dead_code)] // Not read by `rabbitmq_faults` (shown through `Debug` there).
    pub redelivered: bool,
    pub acked: bool,
    pub at: Instant,
}

/// Handler calls, shared between the handler and the test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn push(&self, seen: Seen) {
        lock(&self.0).push(seen);
    }

    pub fn snapshot(&self) -> Vec<Seen> {
        lock(&self.0).clone()
    }

    /// Payload numbers of the calls that acknowledged.
    pub fn acked(&self) -> BTreeSet<u64> {
        lock(&self.0).iter().filter(|s| s.acked).map(|s| s.n).collect()
    }

    pub fn acked_calls(&self) -> usize {
        lock(&self.0).iter().filter(|s| s.acked).count()
    }
}

/// Records every call; returns `Retry` on first attempts of the messages `retry_first` picks, `Ack`
/// otherwise, after `work` (so a stream is still being consumed when a fault hits).
#[derive(Clone)]
pub struct Recording {
    pub log: Log,
    pub retry_first: fn(u64) -> bool,
    pub work: Duration,
}

impl Recording {
    pub fn acking(log: &Log) -> Self {
        Self {
            log: log.clone(),
            retry_first: |_| false,
            work: Duration::ZERO,
        }
    }
}

impl<T: Topic<Message = Msg>> MessageHandler<T> for Recording {
    type Context = ();

    async fn handle(&self, msg: Msg, meta: MessageMetadata, _: &()) -> Outcome {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        let retry = meta.retry_count == 0 && (self.retry_first)(msg.n);
        self.log.push(Seen {
            n: msg.n,
            id: meta.delivery_id.clone(),
            retry_count: meta.retry_count,
            redelivered: meta.redelivered,
            acked: !retry,
            at: Instant::now(),
        });
        if retry { Outcome::Retry } else { Outcome::Ack }
    }
}

/// A consumer running in a task of the scenario's runtime (the binary's `start_consumer` builds it).
#[allow(dead_code)] // `rabbitmq_faults` has its own, which also reports whether a handler was in flight.
pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), ShoveError>>,
}

#[allow(dead_code)] // See `Running`.
impl Running {
    /// Stops the consumer and checks it ended cleanly.
    pub async fn finish(self) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(20), self.task).await {
            Err(_) => panic!("the consumer did not stop within 20 s of its shutdown token"),
            Ok(Err(e)) => panic!("the consumer task failed: {e}"),
            Ok(Ok(Err(e))) => panic!("the consumer ended with an error: {e}"),
            Ok(Ok(Ok(()))) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Child processes

/// A child process running one role of this binary; killed when dropped.
pub struct ChildProc {
    role: &'static str,
    #[allow(dead_code)] // Read only by `redis_faults` (its consumer names carry the pid).
    pub pid: u32,
    child: Option<Child>,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl ChildProc {
    /// Re-executes this test binary with `role_env=role` (and `env`), reading its stdout line by line.
    pub fn spawn(role_env: &str, role: &'static str, env: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().expect("the path of this test binary");
        let mut command = Command::new(exe);
        command
            .env(role_env, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start child `{role}`: {e}"));
        let stdout = child.stdout.take().expect("the child's stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self {
            role,
            pid: child.id(),
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Moves the lines read so far into `seen`; panics when the child has exited by itself.
    pub fn pump(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            while let Ok(line) = self.lines.recv_timeout(POLL) {
                self.seen.push(line);
            }
            panic!(
                "child `{}` exited early ({status}); its output: {:?}",
                self.role,
                self.output()
            );
        }
    }

    /// Waits until `done` holds for the child's output lines.
    pub async fn wait_for_output(&mut self, within: Duration, done: impl Fn(&[(Instant, String)]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            self.pump();
            if done(&self.seen) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a line starting with `prefix` arrived: when it was read, and the line.
    #[allow(dead_code)] // Not used by `redis_faults`.
    pub async fn wait_for_line(&mut self, within: Duration, prefix: &str) -> Option<(Instant, String)> {
        let found = self
            .wait_for_output(within, |lines| lines.iter().any(|(_, l)| l.starts_with(prefix)))
            .await;
        if !found {
            return None;
        }
        self.seen.iter().find(|(_, l)| l.starts_with(prefix)).cloned()
    }

    pub fn output(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, l)| l.as_str()).collect()
    }

    /// Lines starting with `prefix`, with when they were read.
    pub fn lines_with(&self, prefix: &str) -> Vec<(Instant, &str)> {
        self.seen
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .map(|(at, l)| (*at, l.as_str()))
            .collect()
    }

    /// How many lines start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.lines_with(prefix).len()
    }

    /// SIGKILLs the child (`Child::kill` on Unix) and reaps it, keeping what it printed before dying.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the child runs");
        child
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill child `{}`: {e}", self.role));
        let status = child.wait().expect("reaping the killed child");
        // Whatever it printed is still in the pipe; the reader thread ends at end of file.
        let drained = Instant::now() + Duration::from_secs(5);
        while Instant::now() < drained {
            match self.lines.recv_timeout(POLL) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        status
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn assert_killed_by_sigkill(status: ExitStatus, what: &str) {
    assert_eq!(status.signal(), Some(9), "{what} was not ended by SIGKILL: {status}");
}

/// Field `i` (0-based, after the tag) of a child's output line `"TAG field…"`.
#[allow(dead_code)] // Not used by `rabbitmq_faults`.
pub fn field(line: &str, i: usize) -> &str {
    line.split_whitespace()
        .nth(i + 1)
        .unwrap_or_else(|| panic!("line {line:?} has no field {i}"))
}

// ---------------------------------------------------------------------------------------------------------
// In the child

/// Writes one line to stdout, flushed (the parent reads it through a pipe).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        // The parent is gone.
        std::process::exit(5);
    }
}

/// Runs a child role (`run`, the binary's role dispatch, answering an exit code) until killed; never
/// returns. A watchdog thread ends the process after [`CHILD_LIFETIME`] even when the runtime is stuck
/// (a handler may block its threads).
pub fn child_main(role: &str, run: impl Future<Output = i32>) -> ! {
    let name = role.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(CHILD_LIFETIME);
        eprintln!("child `{name}`: not killed within {CHILD_LIFETIME:?}; exiting");
        std::process::exit(3);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(run);
    std::process::exit(code)
}

// ---------------------------------------------------------------------------------------------------------
// The runner

pub type ScenarioFn = fn() -> Pin<Box<dyn Future<Output = ()>>>;

/// One scenario of a binary: run with a time limit, or skipped (with the reason).
pub enum Scenario {
    Run(&'static str, Duration, ScenarioFn),
    #[allow(dead_code)] // Only `rabbitmq_faults` skips a scenario, and only without a feature.
    Skip(&'static str, &'static str),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Run(name, ..) | Scenario::Skip(name, _) => name,
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs one scenario on its own runtime, bounded by `limit`; the panic message on failure.
fn run_scenario(name: &str, limit: Duration, scenario: ScenarioFn) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
    let result = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            if tokio::time::timeout(limit, scenario()).await.is_err() {
                panic!("scenario `{name}` did not finish within {limit:?}");
            }
        })
    }));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result.map_err(|payload| panic_message(payload.as_ref()))
}

/// Runs the scenarios in turn, each on its own runtime, and prints `N passed, N failed`; exits with code 1
/// when one failed. Like libtest, arguments that are not flags select the scenarios whose names contain
/// one of them.
pub fn run_scenarios(scenarios: Vec<Scenario>) {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let scenarios: Vec<Scenario> = scenarios.into_iter().filter(|s| selected(s.name())).collect();
    let runnable = scenarios.iter().filter(|s| matches!(s, Scenario::Run(..))).count();
    println!("\nrunning {runnable} tests");
    let (mut passed, mut failed) = (0usize, 0usize);
    for scenario in scenarios {
        match scenario {
            Scenario::Skip(name, why) => println!("test {name} ... skipped ({why})"),
            Scenario::Run(name, limit, scenario) => {
                let started = Instant::now();
                match run_scenario(name, limit, scenario) {
                    Ok(()) => {
                        passed += 1;
                        println!("test {name} ... ok");
                        println!("  took {:.1?}", started.elapsed());
                    }
                    Err(message) => {
                        failed += 1;
                        println!("test {name} ... FAILED");
                        println!("  after {:.1?}: {message}", started.elapsed());
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
