//! An autoscaling consumer group: a burst of work makes the group grow, an empty queue makes it shrink.
//!
//! A group of 1 to 4 consumers (each handling up to 4 messages at once) gets a burst of 2,000 jobs that
//! take 5 ms each. The group's autoscaler adds consumers while the backlog is large and removes idle ones
//! once the queue is empty. The example watches the group from outside through `broker.autoscaler()` and
//! prints how many consumers are running as time goes on.
//!
//! Run with `cargo run --example consumer_groups`. Exits 0 once every job is handled and the group has
//! grown and shrunk back to one consumer; 1 if that has not happened within 20 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shove::inmemory::{InMemoryConfig, InMemoryConsumerGroupConfig};
use shove::{
    AutoscalerBackend, AutoscalerConfig, Broker, ConsumerGroupConfig, InMemory, MessageHandler, MessageMetadata,
    Outcome, Topic, TopologyBuilder, define_topic,
};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    id: u32,
}

define_topic!(Jobs, Job, TopologyBuilder::new("jobs").dlq().build());

const JOBS: usize = 2_000;
const MIN_CONSUMERS: u16 = 1;
const MAX_CONSUMERS: u16 = 4;
/// How often the example looks at the group.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Give up after this long.
const DEADLINE: Duration = Duration::from_secs(20);

struct Worker {
    handled: Arc<AtomicUsize>,
    all_handled: Arc<Notify>,
}

impl MessageHandler<Jobs> for Worker {
    type Context = ();

    async fn handle(&self, _job: Job, _: MessageMetadata, _: &()) -> Outcome {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if self.handled.fetch_add(1, Ordering::SeqCst) + 1 == JOBS {
            self.all_handled.notify_one();
        }
        Outcome::Ack
    }
}

#[tokio::main]
async fn main() -> shove::error::Result<()> {
    let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
    broker.topology().declare::<Jobs>().await?;

    let handled = Arc::new(AtomicUsize::new(0));
    let all_handled = Arc::new(Notify::new());

    // A small prefetch keeps one consumer's capacity low, so the burst clearly calls for more consumers.
    let config = InMemoryConsumerGroupConfig::new(MIN_CONSUMERS..=MAX_CONSUMERS).with_prefetch_count(4);
    let mut group = broker.consumer_group().enable_autoscaling(AutoscalerConfig {
        poll_interval: Duration::from_millis(100),
        hysteresis_duration: Duration::from_millis(200),
        cooldown_duration: Duration::from_millis(300),
        ..AutoscalerConfig::default()
    });
    let (h, n) = (handled.clone(), all_handled.clone());
    group
        .register::<Jobs, _>(ConsumerGroupConfig::new(config), move || Worker {
            handled: h.clone(),
            all_handled: n.clone(),
        })
        .await?;

    let jobs: Vec<Job> = (0..JOBS as u32).map(|id| Job { id }).collect();
    broker.publisher().await?.publish_batch::<Jobs>(&jobs).await?;
    println!("published {JOBS} jobs (5 ms each); group of {MIN_CONSUMERS}..={MAX_CONSUMERS} consumers, prefetch 4");

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let running = tokio::spawn(group.run_until_timeout(
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(5),
    ));

    // Watch the group as any other process could: through the broker's autoscaler backend, whose group
    // id is the topic's queue name.
    let watcher = broker.autoscaler();
    let group_id = Jobs::topology().queue().to_string();
    let started = Instant::now();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    let mut peak = 0u16;
    let mut last: Option<u16> = None;
    let mut all_done_at: Option<Duration> = None;
    let succeeded = loop {
        tokio::select! {
            _ = ticks.tick() => {}
            // Wake at once when the last job is handled, so the trace shows that moment.
            _ = all_handled.notified(), if all_done_at.is_none() => {}
        }
        let elapsed = started.elapsed();
        let done = handled.load(Ordering::SeqCst);
        if done == JOBS && all_done_at.is_none() {
            all_done_at = Some(elapsed);
            println!("{:>5} ms  all {JOBS} jobs handled", elapsed.as_millis());
        }
        let m = watcher.fetch_metrics(&group_id).await?;
        let consumers = m.active_consumers;
        peak = peak.max(consumers);
        if last != Some(consumers) {
            println!(
                "{:>5} ms  consumers {consumers}  {}  (ready {}, in flight {}, handled {done})",
                elapsed.as_millis(),
                "#".repeat(usize::from(consumers)),
                m.messages_ready,
                m.messages_in_flight,
            );
            last = Some(consumers);
        }
        if all_done_at.is_some() && peak > MIN_CONSUMERS && consumers == MIN_CONSUMERS {
            break true;
        }
        if elapsed > DEADLINE {
            break false;
        }
    };

    let _ = stop_tx.send(());
    let outcome = running.await.expect("the group task");
    broker.close().await;

    let handled = handled.load(Ordering::SeqCst);
    if succeeded && outcome.is_clean() {
        println!(
            "done: {handled} jobs handled; the group grew to {peak} consumers and shrank back to {MIN_CONSUMERS}; exit code 0"
        );
        Ok(())
    } else {
        eprintln!(
            "FAILED after {} ms: handled {handled}/{JOBS}, peak {peak} consumers, last seen {last:?}, group exit code {}",
            started.elapsed().as_millis(),
            outcome.exit_code()
        );
        std::process::exit(1);
    }
}
