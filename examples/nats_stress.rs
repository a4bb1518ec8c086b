//! NATS JetStream stress run: shove next to the raw `async-nats` client (JetStream publish, pull consumer,
//! ack) doing the same work in the same run.
//!
//! ```text
//! cargo run --release --features nats --example nats_stress             # all workloads
//! cargo run --release --features nats --example nats_stress -- raw 50000
//! NATS_URL=nats://127.0.0.1:4223 cargo run --release --features nats --example nats_stress -- shove
//! ```
//! Server at `NATS_URL` (default nats://127.0.0.1:4222), with JetStream. Workloads:
//! - `raw` / `shove`: publish N messages, then consume them (prefetch 100, no-op handler, ack each);
//!   prints the consume throughput, measured from the consumer's start until the N-th message was handled.
//! - `retry`: 5,000 messages that each return `Retry` once through a 100 ms hold queue; prints the time until
//!   every message was handled twice.
//!
//! Knobs: `PREFETCH=n` (shove's prefetch, default 100); `RAW_HEADERS=id` (the raw loop stores shove's
//! message-id header too) or `RAW_HEADERS=1` (three headers); `RAW_FILTER=1` (the raw stream gets a
//! second subject and the consumer a filter, as shove's stream and consumer have); `SERVER_PID=$(pgrep -f 'nats-server.*4222')`
//! (also print the server's CPU per message while consuming).
//!
//! The streams are named `nstress-*`; `scripts/test.sh` deletes those left behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use shove::nats::{NatsClient, NatsConfig, NatsConsumer, NatsPublisher};
use shove::{
    Backend, ConsumerOptions, MessageHandler, MessageMetadata, Nats, Outcome, Topic, TopologyBuilder, define_topic,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The shared workload (`examples/common/stress.rs`): the same ~110-byte JSON message everywhere.
#[path = "common/stress.rs"]
mod stress;
use stress::{Event, event};

fn run_id() -> String {
    format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// CPU time a process has used so far (user + system, all threads), from its /proc stat file (10 ms
/// ticks); zero when it cannot be read.
fn cpu_of(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU time this process has used so far.
fn cpu_time() -> Duration {
    cpu_of("/proc/self/stat")
}

/// CPU time of the process SERVER_PID (the NATS server, when it runs on this machine), if set: the server
/// shares the two cores with the client, so its work per message weighs on both sides' throughput.
fn server_cpu() -> Duration {
    std::env::var("SERVER_PID").map_or(Duration::ZERO, |pid| cpu_of(&format!("/proc/{pid}/stat")))
}

/// Client CPU per message over a phase that began at `cpu_before`, in µs.
fn cpu_per_message(cpu_before: Duration, n: u64) -> f64 {
    (cpu_time() - cpu_before).as_secs_f64() * 1e6 / n as f64
}

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

define_topic!(
    Plain,
    Event,
    TopologyBuilder::new(format!("nstress-plain-{}", run_id())).build()
);
define_topic!(
    Retried,
    Event,
    TopologyBuilder::new(format!("nstress-retry-{}", run_id()))
        .hold_queue(Duration::from_millis(100))
        .dlq()
        .build()
);

/// Raw async-nats: a work-queue stream with one subject and a durable pull consumer; publish n (1,000 acks
/// in flight), then pull in batches of 100 + decode + ack each until all are read.
async fn raw(n: u64) -> f64 {
    let client = async_nats::connect(url()).await.expect("connect");
    let js = jetstream::new(client);
    let name = format!("nstress-raw-{}", run_id());
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: if std::env::var("RAW_FILTER").is_ok() {
                vec![name.clone(), format!("{name}.hold")]
            } else {
                vec![name.clone()]
            },
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("create stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            filter_subject: if std::env::var("RAW_FILTER").is_ok() {
                name.clone()
            } else {
                String::new()
            },
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .expect("create consumer");

    let mut sent = 0;
    while sent < n {
        let end = (sent + 1000).min(n);
        let mut acks = Vec::with_capacity(1000);
        for i in sent..end {
            let payload = serde_json::to_vec(&event(i)).expect("encode");
            // RAW_HEADERS=1 adds the headers shove stores with each message, to compare like with like.
            // RAW_HEADERS=id stores the one header shove's first publish carries (the message id, a UUID,
            // which is also the deduplication id).
            let ack = if std::env::var("RAW_HEADERS").as_deref() == Ok("id") {
                let id = uuid::Uuid::new_v4().to_string();
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                js.publish_with_headers(name.clone(), headers, payload.into()).await
            } else if std::env::var("RAW_HEADERS").as_deref() == Ok("1") {
                let id = uuid::Uuid::new_v4().to_string();
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Shove-Message-Id", id.as_str());
                headers.insert("Shove-Retry-Count", "0");
                headers.insert("Nats-Msg-Id", id.as_str());
                js.publish_with_headers(name.clone(), headers, payload.into()).await
            } else {
                js.publish(name.clone(), payload.into()).await
            };
            acks.push(ack.expect("publish"));
        }
        for ack in acks {
            ack.await.expect("publish ack");
        }
        sent = end;
    }

    let started = Instant::now();
    let cpu = cpu_time();
    let scpu = server_cpu();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(100)
        .messages()
        .await
        .expect("pull");
    let mut seen = 0;
    while seen < n {
        let message = messages
            .next()
            .await
            .expect("the pull stream ended early")
            .expect("message");
        let e: Event = serde_json::from_slice(&message.payload).expect("decode");
        std::hint::black_box(e);
        message.ack().await.expect("ack");
        seen += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "raw client CPU while consuming: {:.2} µs/msg, server {:.2}",
        cpu_per_message(cpu, n),
        (server_cpu() - scpu).as_secs_f64() * 1e6 / n as f64
    );
    drop(messages);
    js.delete_stream(&name).await.expect("delete stream");
    rate
}

struct Count {
    seen: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
    retry_first: bool,
}

impl<T: Topic<Message = Event>> MessageHandler<T> for Count {
    type Context = ();

    async fn handle(&self, e: Event, meta: MessageMetadata, _: &()) -> Outcome {
        std::hint::black_box(e);
        if self.retry_first && meta.retry_count == 0 {
            return Outcome::Retry;
        }
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
        Outcome::Ack
    }
}

async fn publish_all<T: Topic<Message = Event>>(client: &NatsClient, n: u64) {
    let publisher = NatsPublisher::new(client.clone()).await.expect("publisher");
    let batch: Vec<Event> = (0..1000).map(event).collect();
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(1000) as usize;
        publisher.publish_batch::<T>(&batch[..k]).await.1.expect("publish");
        sent += k as u64;
    }
}

/// Runs one consumer of T until `n` messages were acknowledged; returns when that happened (taken before
/// the consumer is shut down).
async fn consume<T: Topic<Message = Event>>(client: &NatsClient, n: u64, prefetch: u16, retry_first: bool) -> Instant {
    let done = Arc::new(Notify::new());
    let handler = Count {
        seen: Arc::new(AtomicU64::new(0)),
        target: n,
        done: done.clone(),
        retry_first,
    };
    let stop = CancellationToken::new();
    let consumer = NatsConsumer::new(client.clone());
    let options = ConsumerOptions::<Nats>::preset(prefetch).with_shutdown(stop.clone());
    let task = tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await });
    done.notified().await;
    let finished = Instant::now();
    stop.cancel();
    task.await.expect("task").expect("consumer");
    finished
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("all");
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let run = |w: &str| workload == "all" || workload == w;
    let client = <Nats as Backend>::connect(NatsConfig::new(url()))
        .await
        .expect("connect");
    let mut raw_rate = None;
    if run("raw") {
        let r = raw(n).await;
        raw_rate = Some(r);
        println!("raw nats   {n} msgs: {r:>9.0} msg/s consumed (JetStream pull consumer, batches of 100, ack each)");
    }
    if run("shove") {
        shove::Broker::<Nats>::from_client(client.clone())
            .topology()
            .declare::<Plain>()
            .await
            .expect("declare");
        publish_all::<Plain>(&client, n).await;
        let prefetch = std::env::var("PREFETCH")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(100);
        let started = Instant::now();
        let cpu = cpu_time();
        let scpu = server_cpu();
        let finished = consume::<Plain>(&client, n, prefetch, false).await;
        println!(
            "shove client CPU while consuming: {:.2} µs/msg, server {:.2}",
            cpu_per_message(cpu, n),
            (server_cpu() - scpu).as_secs_f64() * 1e6 / n as f64
        );
        let r = n as f64 / (finished - started).as_secs_f64();
        let ratio = raw_rate
            .map(|raw| format!(" = {:.0}% of raw", 100.0 * r / raw))
            .unwrap_or_default();
        println!("shove      {n} msgs: {r:>9.0} msg/s consumed (prefetch {prefetch}, no-op handler){ratio}");
    }
    if run("retry") {
        shove::Broker::<Nats>::from_client(client.clone())
            .topology()
            .declare::<Retried>()
            .await
            .expect("declare");
        let m = 5_000;
        let started = Instant::now();
        let consumer = consume::<Retried>(&client, m, 500, true);
        let publish = publish_all::<Retried>(&client, m);
        let (finished, ()) = tokio::join!(consumer, publish);
        println!(
            "retry      {m} msgs each retried once through a 100 ms hold queue: {:.0} ms end to end",
            (finished - started).as_secs_f64() * 1000.0
        );
    }
    // Leave no streams behind: stale streams slow the server down for the next run.
    let js = jetstream::new(async_nats::connect(url()).await.expect("connect"));
    for queue in [Plain::topology().queue(), Retried::topology().queue()]
        .into_iter()
        .chain(Retried::topology().dlq())
    {
        // shove names a topic's stream SHOVE_<queue> (these queue names need no escaping).
        let _ = js.delete_stream(format!("SHOVE_{queue}")).await;
    }
    <Nats as Backend>::close(&client).await;
}
