//! Scenarios with consumers in processes of their own, which the scenario spawns and which die: the
//! faults a consumer in the same process as the test cannot show.
//!
//! A child is this test binary run again on its one ignored test, `conformance_child_process` (which
//! `conformance_suite!` generates), with its role and the queue name in environment variables. It writes
//! what it does on its standard output, one line per event, which the parent reads.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use shove::{ConsumerOptions, MessageMetadata, Outcome, TopologyBuilder, define_topic};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{DRAIN, FnHandler, Harness, Msg, Recorder, Running, skip, unique};

/// The environment variable naming a child's role.
const ROLE: &str = "SHOVE_CONFORMANCE_CHILD_ROLE";
/// The environment variable naming the queue of the scenario a child takes part in.
const QUEUE: &str = "SHOVE_CONFORMANCE_CHILD_QUEUE";
/// The exit code of a child whose handler ends its process.
const POISON_EXIT: i32 = 86;
/// Retries after the first attempt, in the poison scenario's consumers.
const POISON_MAX_RETRIES: u32 = 1;
/// How long a child lives at most if nobody ends it (its parent died or forgot it).
const CHILD_LIFETIME: Duration = Duration::from_secs(150);
/// The longest a broker takes to hand a dead consumer's message to another: NATS waits out its 30 s
/// ack wait, Redis twice the handler timeout; with room for a busy machine.
const REDELIVERY_WAIT: Duration = Duration::from_secs(50);

/// A queue name: the parent's (from [`QUEUE`]) in a child, a new one in the parent.
fn queue_name(name: &str) -> String {
    std::env::var(QUEUE).unwrap_or_else(|_| unique(name))
}

define_topic!(Poison, Msg, TopologyBuilder::new(queue_name("poison")).dlq().build());
define_topic!(Crashed, Msg, TopologyBuilder::new(queue_name("crash")).dlq().build());
define_topic!(
    Delayed,
    Msg,
    TopologyBuilder::new(queue_name("crash-delay"))
        .hold_queue(DELAY)
        .dlq()
        .build()
);

/// The retry delay of [`Delayed`]: long enough to kill a consumer inside it.
const DELAY: Duration = Duration::from_secs(2);
/// The message a `blocker` child never finishes.
const BLOCKED: u32 = 5;

/// What the parent saw of its children and of the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// Child `i` wrote `line`.
    Line(usize, String),
    /// Child `i` exited with `code` (`None`: killed by a signal).
    Exit(usize, Option<i32>),
    /// The DLQ consumer got a message: its key, number and reason.
    Dead(String, u32, String),
}

/// Spawns child `i` in `role`, with `env`, feeding its output lines and its exit into `events`.
fn spawn_child(
    i: usize,
    role: &str,
    env: &[(&str, String)],
    events: &Arc<Recorder<Event>>,
) -> Arc<tokio::sync::Mutex<Child>> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "conformance_child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning a child consumer process");
    let stdout = child.stdout.take().expect("the child's stdout");
    let child = Arc::new(tokio::sync::Mutex::new(child));
    let (lines, exits) = (events.clone(), events.clone());
    let watched = child.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.push(Event::Line(i, line));
        }
        // The output ends when the process does.
        let status = watched.lock().await.wait().await;
        exits.push(Event::Exit(i, status.ok().and_then(|s| s.code())));
    });
    child
}

/// Rules 9 and 6: a message whose handler ends the consumer's process (a crash, an out-of-memory kill)
/// costs one attempt each time, like a `Retry`: after `max_retries + 1` such attempts it is
/// dead-lettered with reason `max_retries_exceeded`, without another call, and the consumer that did it
/// goes on with the next message. Needs `lost_attempts`.
pub async fn poison_message_that_kills_its_process_is_dead_lettered<H: Harness>() {
    if !H::capabilities().lost_attempts {
        skip::<H>(
            "poison_message_that_kills_its_process_is_dead_lettered",
            "the backend does not claim to count attempts lost with their consumer (lost_attempts)",
        );
        return;
    }
    let queue = <Poison as shove::Topic>::topology().queue().to_string();
    let broker = H::broker().await;
    broker.topology().declare::<Poison>().await.expect("declare");
    let events = Recorder::<Event>::new();
    let mut sup = broker.consumer_supervisor();
    let dead = events.clone();
    sup.register_dlq::<Poison, _>(
        FnHandler::dead(move |m: Msg, meta| {
            dead.push(Event::Dead(m.key, m.n, meta.reason.unwrap_or_default()));
            async {}
        }),
        ConsumerOptions::new(),
    )
    .expect("register the DLQ consumer");
    let dlq = Running::supervisor(sup, DRAIN);
    let publisher = broker.publisher().await.expect("publisher");
    publisher
        .publish::<Poison>(&Msg::new("poison", 0))
        .await
        .expect("publish");

    let env = [(QUEUE, queue.clone())];
    let is_dead = |e: &[Event]| e.iter().any(|e| matches!(e, Event::Dead(k, ..) if k == "poison"));
    let mut children = Vec::new();
    let max_children = POISON_MAX_RETRIES as usize + 2;
    for i in 0..max_children {
        children.push(spawn_child(i, "poison", &env, &events));
        let what = format!("child {i} to end, or the poison message to be dead-lettered");
        let seen = events
            .wait_for_within(&what, REDELIVERY_WAIT, |e| {
                is_dead(e) || e.iter().any(|e| matches!(e, Event::Exit(c, _) if *c == i))
            })
            .await;
        if is_dead(&seen) {
            break;
        }
    }
    let all = events
        .wait_for_within("the poison message in the DLQ", REDELIVERY_WAIT, is_dead)
        .await;
    let attempts: Vec<&str> = all
        .iter()
        .filter_map(|e| match e {
            Event::Line(_, l) => l.strip_prefix("poison-attempt "),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..=POISON_MAX_RETRIES).map(|r| r.to_string()).collect();
    assert_eq!(
        attempts, expected,
        "the handler runs max_retries + 1 times, one retry count each: {all:#?}"
    );
    let crashes = all
        .iter()
        .filter(|e| matches!(e, Event::Exit(_, Some(POISON_EXIT))))
        .count();
    assert_eq!(crashes, POISON_MAX_RETRIES as usize + 1, "{all:#?}");
    assert!(
        all.iter()
            .any(|e| matches!(e, Event::Dead(k, 0, r) if k == "poison" && r == "max_retries_exceeded")),
        "dead-lettered with reason max_retries_exceeded: {all:#?}"
    );

    // The consumer that dead-lettered it goes on.
    publisher
        .publish::<Poison>(&Msg::new("good", 1))
        .await
        .expect("publish");
    events
        .wait_for_within(
            "the next message handled by the surviving consumer",
            REDELIVERY_WAIT,
            |e| {
                e.iter()
                    .any(|e| matches!(e, Event::Line(_, l) if l == "handled good 1"))
            },
        )
        .await;
    for child in children {
        let _ = child.lock().await.start_kill();
    }
    let _ = dlq.stop().await;
}

/// The numbers child `i` or any child wrote `prefix <n> …` lines for.
fn numbers(events: &[Event], prefix: &str) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Line(_, l) => l.strip_prefix(prefix)?.split(' ').next()?.parse().ok(),
            _ => None,
        })
        .collect()
}

/// Whether the broker outlives a consumer's process: a broker of its own, over the network.
fn broker_outlives_consumers<H: Harness>(scenario: &str) -> bool {
    let outlives = H::address().is_some();
    if !outlives {
        skip::<H>(
            scenario,
            "the broker lives in the consumer's process (no network address)",
        );
    }
    outlives
}

/// Rule 22 and at-least-once delivery: a consumer process killed with SIGKILL in the middle of a handler
/// (and with other messages prefetched) loses nothing: the next consumer gets every message, the one
/// being handled included, once the broker notices (at once on RabbitMQ, after twice the handler timeout
/// on Redis, after the 30 s ack wait on NATS).
pub async fn kill_9_mid_handler_loses_nothing<H: Harness>() {
    if !broker_outlives_consumers::<H>("kill_9_mid_handler_loses_nothing") {
        return;
    }
    const TOTAL: u32 = 20;
    let queue = <Crashed as shove::Topic>::topology().queue().to_string();
    let broker = H::broker().await;
    broker.topology().declare::<Crashed>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    for n in 0..TOTAL {
        publisher.publish::<Crashed>(&Msg::new("m", n)).await.expect("publish");
    }
    let events = Recorder::<Event>::new();
    let env = [(QUEUE, queue)];
    let first = spawn_child(0, "blocker", &env, &events);
    events
        .wait_for_within("the first consumer in the blocking handler", REDELIVERY_WAIT, |e| {
            numbers(e, "blocking ").contains(&BLOCKED)
        })
        .await;
    first.lock().await.start_kill().expect("SIGKILL the first consumer");
    let second = spawn_child(1, "acker", &env, &events);
    let all = events
        .wait_for_within(
            "every message handled by one consumer or the other",
            REDELIVERY_WAIT,
            |e| {
                let handled: std::collections::BTreeSet<u32> = numbers(e, "handled ").into_iter().collect();
                handled.len() == TOTAL as usize
            },
        )
        .await;
    let handled = numbers(&all, "handled ");
    let duplicates = handled.len() - TOTAL as usize;
    assert!(
        duplicates <= 20,
        "{duplicates} messages handled twice; at most the first consumer's prefetch window may be: {all:#?}"
    );
    let _ = second.lock().await.start_kill();
}

/// Rules 12 and 22: a consumer killed with SIGKILL while its messages wait out a retry delay loses
/// nothing: the delayed copies are held by the broker, and a new consumer handles every message. Needs
/// `durable_delays`.
pub async fn kill_9_during_a_retry_delay_loses_nothing<H: Harness>() {
    if !H::capabilities().durable_delays {
        skip::<H>(
            "kill_9_during_a_retry_delay_loses_nothing",
            "the backend does not claim durable delays (rule 12 exempts in-process backends)",
        );
        return;
    }
    const TOTAL: u32 = 10;
    let queue = <Delayed as shove::Topic>::topology().queue().to_string();
    let broker = H::broker().await;
    broker.topology().declare::<Delayed>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let events = Recorder::<Event>::new();
    let env = [(QUEUE, queue)];
    let first = spawn_child(0, "retrier", &env, &events);
    events
        .wait_for_within("the first consumer ready", REDELIVERY_WAIT, |e| {
            // The test harness writes its own "test … " before a child's first line.
            e.iter().any(|e| matches!(e, Event::Line(0, l) if l.ends_with("ready")))
        })
        .await;
    for n in 0..TOTAL {
        publisher.publish::<Delayed>(&Msg::new("m", n)).await.expect("publish");
    }
    events
        .wait_for_within("every first attempt asking for a retry", REDELIVERY_WAIT, |e| {
            numbers(e, "retry ").len() >= TOTAL as usize
        })
        .await;
    // Killed inside the 2 s delay of every copy.
    first.lock().await.start_kill().expect("SIGKILL the first consumer");
    let second = spawn_child(1, "delayed-acker", &env, &events);
    let all = events
        .wait_for_within(
            "every message's second attempt on the new consumer",
            REDELIVERY_WAIT,
            |e| {
                let handled: std::collections::BTreeSet<u32> = numbers(e, "handled ").into_iter().collect();
                handled.len() == TOTAL as usize
            },
        )
        .await;
    // Every message came back to the new consumer (the killed one asked for a retry of each and handled
    // none): a copy settled before the kill waited out its delay in the broker (retry count 1); one whose
    // settlement was still on its way comes back as the redelivered original (on RabbitMQ and NATS
    // the kill usually lands before the broker confirms the copies, so there the scenario covers retries in
    // flight rather than held).
    let by_second: std::collections::BTreeSet<u32> = all
        .iter()
        .filter_map(|e| match e {
            Event::Line(1, l) => l.strip_prefix("handled ")?.split(' ').next()?.parse().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(
        by_second.len(),
        TOTAL as usize,
        "the new consumer handles every message: {all:#?}"
    );
    let _ = second.lock().await.start_kill();
}

/// The body of a child process: runs the role named by the environment, then ends the process. Run as a
/// test (without a role) it returns at once.
pub fn child_main<H: Harness>() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the child");
    let code = runtime.block_on(async move {
        // A forgotten child ends by itself.
        tokio::spawn(async {
            tokio::time::sleep(CHILD_LIFETIME).await;
            std::process::exit(3);
        });
        match role.as_str() {
            "poison" => poison_consumer::<H>().await,
            "blocker" => {
                consume::<H, Crashed>(
                    FnHandler::new(|m: Msg, _| async move {
                        if m.n == BLOCKED {
                            say(&format!("blocking {}", m.n));
                            std::future::pending::<()>().await;
                        }
                        say(&format!("handled {}", m.n));
                        Outcome::Ack
                    }),
                    ConsumerOptions::new(),
                )
                .await
            }
            "acker" => {
                consume::<H, Crashed>(
                    FnHandler::new(|m: Msg, _| async move {
                        say(&format!("handled {}", m.n));
                        Outcome::Ack
                    }),
                    reclaiming_soon(),
                )
                .await
            }
            "retrier" => {
                consume::<H, Delayed>(
                    FnHandler::new(|m: Msg, meta: MessageMetadata| async move {
                        if meta.retry_count == 0 {
                            say(&format!("retry {}", m.n));
                            return Outcome::Retry;
                        }
                        say(&format!("handled {} {}", m.n, meta.retry_count));
                        Outcome::Ack
                    }),
                    ConsumerOptions::new(),
                )
                .await
            }
            "delayed-acker" => {
                consume::<H, Delayed>(
                    FnHandler::new(|m: Msg, meta: MessageMetadata| async move {
                        say(&format!("handled {} {}", m.n, meta.retry_count));
                        Outcome::Ack
                    }),
                    reclaiming_soon(),
                )
                .await
            }
            other => panic!("unknown child role {other:?}"),
        }
    });
    std::process::exit(code);
}

/// Consumes `Poison` until the parent kills the process; the poison message's handler ends the process.
async fn poison_consumer<H: Harness>() -> i32 {
    let broker = H::broker().await;
    let mut sup = broker.consumer_supervisor();
    let handler = FnHandler::new(|m: Msg, meta: MessageMetadata| async move {
        if m.key == "poison" {
            say(&format!("poison-attempt {}", meta.retry_count));
            std::process::exit(POISON_EXIT);
        }
        say(&format!("handled {} {}", m.key, m.n));
        Outcome::Ack
    });
    sup.register::<Poison, _>(
        handler,
        ConsumerOptions::new()
            .with_max_retries(POISON_MAX_RETRIES)
            .with_prefetch_count(1)
            .with_concurrent_processing(false)
            // A short timeout: brokers that reclaim a dead consumer's messages after a multiple of it
            // (Redis) do so soon.
            .with_handler_timeout(Duration::from_secs(1)),
    )
    .expect("register");
    say("ready");
    let outcome = sup.run_until_timeout(std::future::pending::<()>(), DRAIN).await;
    outcome.exit_code()
}

/// Options of a consumer that takes over from a killed one: a short handler timeout, because brokers
/// that reclaim a dead consumer's messages after a multiple of it (Redis) then do so within seconds.
fn reclaiming_soon<B: shove::Backend>() -> ConsumerOptions<B> {
    ConsumerOptions::new().with_handler_timeout(Duration::from_secs(1))
}

/// Consumes `T` with `handler` until the parent kills the process.
async fn consume<H: Harness, T: shove::Topic<Message = Msg>>(
    handler: FnHandler<Msg>,
    options: ConsumerOptions<H::B>,
) -> i32 {
    let broker = H::broker().await;
    let mut sup = broker.consumer_supervisor();
    sup.register::<T, _>(handler, options).expect("register");
    say("ready");
    sup.run_until_timeout(std::future::pending::<()>(), DRAIN)
        .await
        .exit_code()
}

/// Writes one line for the parent, at once.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
