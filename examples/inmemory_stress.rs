//! In-process stress run: consume throughput, instructions-per-message workloads and end-to-end latency,
//! for shove and for a bare tokio channel carrying the same JSON in the same run.
//!
//! ```text
//! cargo run --release --example inmemory_stress                 # all workloads, 200k messages
//! cargo run --release --example inmemory_stress -- shove 100000 # one workload (for callgrind)
//! ```
//! Workloads: `shove` (publish N, then consume N with a no-op handler, prefetch 100), `retry` (every
//! message returns Retry once, no hold queue), `channel` (the same JSON through an mpsc channel: encode,
//! send, receive, decode), `latency` (paced publishes, publish→handler latency percentiles).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shove::inmemory::{InMemoryBroker, InMemoryConfig, InMemoryConsumer, InMemoryPublisher, InMemoryTopologyDeclarer};
use shove::{ConsumerOptions, MessageHandler, MessageMetadata, Outcome, TopologyBuilder, define_topic};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

// The shared workload: the same ~110-byte JSON message everywhere. `include!` rather than `mod`, so `Event`
// stays in this crate's root module and the code generated for it (and the instruction counts quoted in
// docs/PERFORMANCE.md) stay the same.
include!("common/stress.rs");

define_topic!(Events, Event, TopologyBuilder::new("stress-events").build());
define_topic!(Retried, Event, TopologyBuilder::new("stress-retried").dlq().build());

struct Count {
    seen: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
    retry_first: bool,
    latency: Option<Arc<std::sync::Mutex<Vec<u64>>>>,
    origin: Instant,
}

impl<T: shove::Topic<Message = Event>> MessageHandler<T> for Count {
    type Context = ();

    async fn handle(&self, e: Event, meta: MessageMetadata, _: &()) -> Outcome {
        if self.retry_first && meta.retry_count == 0 {
            return Outcome::Retry;
        }
        if let Some(lat) = &self.latency {
            let now = self.origin.elapsed().as_nanos() as i64;
            lat.lock().expect("latency lock").push((now - e.ts).max(0) as u64);
        }
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
        std::hint::black_box(&e);
        Outcome::Ack
    }
}

async fn consume<T: shove::Topic<Message = Event>>(
    broker: &InMemoryBroker,
    n: u64,
    retry_first: bool,
    latency: Option<Arc<std::sync::Mutex<Vec<u64>>>>,
    origin: Instant,
) -> (
    CancellationToken,
    Arc<Notify>,
    tokio::task::JoinHandle<shove::error::Result<()>>,
) {
    let done = Arc::new(Notify::new());
    let handler = Count {
        seen: Arc::new(AtomicU64::new(0)),
        target: n,
        done: done.clone(),
        retry_first,
        latency,
        origin,
    };
    let stop = CancellationToken::new();
    let opts = ConsumerOptions::preset(100).with_shutdown(stop.clone());
    let consumer = InMemoryConsumer::new(broker.clone());
    (
        stop,
        done,
        tokio::spawn(async move { consumer.run::<T, _>(handler, (), opts).await }),
    )
}

/// Publishes n, then measures consuming them. Returns messages per second of the consume phase.
async fn shove_run<T: shove::Topic<Message = Event>>(n: u64, retry_first: bool) -> f64 {
    let broker = InMemoryBroker::with_config(InMemoryConfig {
        default_capacity: n as usize + 1,
    });
    InMemoryTopologyDeclarer::new(broker.clone())
        .declare(T::topology())
        .await
        .expect("declare");
    let publisher = InMemoryPublisher::new(broker.clone());
    let batch: Vec<Event> = (0..1000).map(event).collect();
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(1000) as usize;
        let (_, r) = publisher.publish_batch::<T>(&batch[..k]).await;
        r.expect("publish");
        sent += k as u64;
    }
    let started = Instant::now();
    let (stop, done, task) = consume::<T>(&broker, n, retry_first, None, started).await;
    done.notified().await;
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    task.await.expect("consumer task").expect("consumer");
    n as f64 / secs
}

/// The same JSON through a bare channel: encode, send, receive, decode, count.
async fn channel_run(n: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(n as usize + 1);
    let batch: Vec<Event> = (0..1000).map(event).collect();
    for i in 0..n {
        let bytes = serde_json::to_vec(&batch[(i % 1000) as usize]).expect("encode");
        tx.send(bytes).await.expect("send");
    }
    drop(tx);
    let started = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut count = 0u64;
        while let Some(bytes) = rx.recv().await {
            let e: Event = serde_json::from_slice(&bytes).expect("decode");
            std::hint::black_box(e);
            count += 1;
        }
        count
    });
    let count = consumer.await.expect("consumer");
    assert_eq!(count, n);
    n as f64 / started.elapsed().as_secs_f64()
}

/// Paced publishing; returns (p50, p99, max) publish→handler latency in microseconds.
async fn latency_run(n: u64) -> (f64, f64, f64) {
    let broker = InMemoryBroker::new();
    InMemoryTopologyDeclarer::new(broker.clone())
        .declare(<Events as shove::Topic>::topology())
        .await
        .expect("declare");
    let publisher = InMemoryPublisher::new(broker.clone());
    let origin = Instant::now();
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n as usize)));
    let (stop, done, task) = consume::<Events>(&broker, n, false, Some(lat.clone()), origin).await;
    let mut tick = tokio::time::interval(Duration::from_micros(50));
    for i in 0..n {
        tick.tick().await;
        let mut e = event(i);
        e.ts = origin.elapsed().as_nanos() as i64;
        publisher.publish::<Events>(&e).await.expect("publish");
    }
    done.notified().await;
    stop.cancel();
    task.await.expect("consumer task").expect("consumer");
    let mut v = lat.lock().expect("latency lock").clone();
    v.sort_unstable();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (pct(0.5), pct(0.99), pct(1.0))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("all");
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let run = |w: &str| workload == "all" || workload == w;
    if run("channel") {
        println!(
            "channel  {n} msgs: {:>10.0} msg/s (bare tokio mpsc + serde_json)",
            channel_run(n).await
        );
    }
    if run("shove") {
        println!(
            "shove    {n} msgs: {:>10.0} msg/s (publish, consume, ack; prefetch 100)",
            shove_run::<Events>(n, false).await
        );
    }
    if run("retry") {
        println!(
            "retry    {n} msgs: {:>10.0} msg/s (each message retried once)",
            shove_run::<Retried>(n, true).await
        );
    }
    if run("latency") {
        let m = n.min(20_000);
        let (p50, p99, max) = latency_run(m).await;
        println!("latency  {m} msgs at 20k/s: p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us");
    }
}
