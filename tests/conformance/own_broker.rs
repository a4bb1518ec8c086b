//! A broker process of the scenario's own: started on free loopback ports with its store in a directory
//! of its own, so a scenario can kill it (SIGKILL) or stop it gracefully (SIGTERM) and start it again
//! without disturbing the scenarios that run in parallel on the shared broker.
//!
//! A harness describes how to start its broker with an [`OwnBrokerSpec`]; the process handling is the same
//! for every backend.

// Each test binary compiles this module; the in-process one starts no broker, and a harness uses only
// the helpers its broker needs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How to start one broker process. In every argument, environment value and file, `{port}` is replaced
/// by the client port, `{port2}` by a second free port (for a broker that needs one, such as Erlang's
/// distribution port) and `{dir}` by the process's own directory.
#[derive(Debug, Clone)]
pub struct OwnBrokerSpec {
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables to set.
    pub env: Vec<(String, String)>,
    /// Files to write into the directory before the first start: (file name, contents).
    pub files: Vec<(String, String)>,
    /// A line the broker writes (on stdout or stderr) once it serves clients.
    pub ready_line: String,
    /// How long a start may take.
    pub start_within: Duration,
    /// Runs one at a time in this test process: a heavy broker (a RabbitMQ node takes about a core for
    /// ten seconds to boot) whose scenarios would otherwise starve each other on a small machine.
    pub exclusive: bool,
}

impl OwnBrokerSpec {
    /// A spec for `program` with `args`, ready when it writes `ready_line`, within 30 s.
    pub fn new(program: impl Into<PathBuf>, args: &[&str], ready_line: &str) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            files: Vec::new(),
            ready_line: ready_line.to_string(),
            start_within: Duration::from_secs(30),
            exclusive: false,
        }
    }
}

/// How a scenario stops its broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL to the broker's whole process group: no shutdown work at all.
    Kill9,
    /// SIGTERM, and a wait for the broker's own orderly shutdown.
    Graceful,
}

/// A running (or stopped) broker process. Dropping it kills the process group and removes its directory.
pub struct OwnBroker {
    spec: OwnBrokerSpec,
    port: u16,
    port2: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Starts so far; each start writes its own log file.
    starts: u32,
    /// Whether the scenario got to its end (else the log's tail is printed on drop).
    passed: bool,
    /// Held while an exclusive broker lives.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The turn of exclusive brokers ([`OwnBrokerSpec::exclusive`]).
static EXCLUSIVE: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(std::sync::Arc::default);

impl OwnBroker {
    /// Starts the broker and waits until it serves clients.
    pub async fn start(spec: OwnBrokerSpec) -> Self {
        let dir = std::env::temp_dir().join(format!("shove-own-broker-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let turn = if spec.exclusive {
            Some(EXCLUSIVE.clone().lock_owned().await)
        } else {
            None
        };
        let mut broker = Self {
            _turn: turn,
            port: free_port(),
            port2: free_port(),
            dir,
            child: None,
            starts: 0,
            passed: false,
            spec,
        };
        for (name, contents) in &broker.spec.files {
            let path = broker.dir.join(name);
            std::fs::write(&path, broker.fill(contents))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        broker.start_again().await;
        broker
    }

    /// The loopback address clients connect to.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops the broker and reaps it. Returns how it exited.
    pub async fn stop(&mut self, how: Stop) -> ExitStatus {
        let mut child = self.child.take().expect("the broker runs");
        let pid = child.id();
        match how {
            // The process group: a broker started by a wrapper script (RabbitMQ) is more than one process.
            Stop::Kill9 => signal(&format!("-{pid}"), "KILL"),
            Stop::Graceful => signal(&pid.to_string(), "TERM"),
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the broker") {
                // Whatever the wrapper left behind goes too, so the ports are free for the next start.
                signal(&format!("-{pid}"), "KILL");
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not exit within 60 s of {how:?}; its log ends with:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the broker (again, after [`OwnBroker::stop`]) on the same ports and directory, and waits until
    /// it serves clients.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker already runs");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("creating the broker's log file");
        let mut command = Command::new(&self.spec.program);
        command
            .args(self.spec.args.iter().map(|a| self.fill(a)))
            .envs(self.spec.env.iter().map(|(k, v)| (k, self.fill(v))))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.spec.program.display()));
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Marks the scenario as passed: dropping the broker no longer prints its log.
    pub fn passed(&mut self) {
        self.passed = true;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + self.spec.start_within;
        loop {
            let logged = std::fs::read_to_string(self.log_path()).is_ok_and(|l| l.contains(&self.spec.ready_line));
            if logged && tokio::net::TcpStream::connect(self.address()).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "`{}` exited ({status}) before it was ready; its log ends with:\n{}",
                    self.spec.program.display(),
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not write {:?} within {:?}; its log ends with:\n{}",
                self.spec.program.display(),
                self.spec.ready_line,
                self.spec.start_within,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{port2}", &self.port2.to_string())
            .replace("{port}", &self.port.to_string())
            .replace("{dir}", &self.dir.to_string_lossy())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("broker-{}.log", self.starts))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&format!("-{}", child.id()), "KILL");
            let _ = child.wait();
        }
        if !self.passed {
            eprintln!(
                "the scenario's own broker (port {}) log ends with:\n{}",
                self.port,
                self.log_tail()
            );
        }
        remove_dir(&self.dir);
    }
}

/// Sends `sig` to `target` (a pid, or `-pgid` for a process group) with kill(1).
fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}

/// The first of `candidates` that is a file, else the program `name` on PATH.
pub fn find_program(name: &str, env_override: &str, candidates: &[PathBuf]) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .chain(candidates.iter().cloned())
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("no `{name}` found on PATH or in {candidates:?}: run scripts/test.sh, or set {env_override}")
        })
}
