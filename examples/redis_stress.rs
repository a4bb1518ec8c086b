//! Redis Streams stress run: shove next to the raw `redis` client (XADD, XREADGROUP, XACK) doing the same
//! work in the same run.
//!
//! ```text
//! cargo run --release --features redis-streams --example redis_stress             # all workloads
//! cargo run --release --features redis-streams --example redis_stress -- raw 50000
//! ```
//! Server at `REDIS_URL` (default redis://127.0.0.1:6379/). Workloads:
//! - `raw` / `shove`: publish N messages, then consume them (prefetch 100, no-op handler, ack each);
//!   prints the consume throughput.
//! - `retry`: 5,000 messages that each return `Retry` once through a 100 ms hold queue; prints the time until
//!   every message was handled twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use shove::redis::{RedisConfig, RedisConsumer, RedisMode, RedisPublisher};
use shove::{
    Backend, ConsumerOptions, MessageHandler, MessageMetadata, Outcome, Redis, Topic, TopologyBuilder, define_topic,
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

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

define_topic!(
    Plain,
    Event,
    TopologyBuilder::new(format!("rstress-plain-{}", run_id())).build()
);
define_topic!(
    Retried,
    Event,
    TopologyBuilder::new(format!("rstress-retry-{}", run_id()))
        .hold_queue(Duration::from_millis(100))
        .dlq()
        .build()
);

/// Raw redis: XADD n (pipelined by 1,000), then XREADGROUP COUNT 100 + decode + XACK until all are read.
async fn raw(n: u64) -> f64 {
    let client = redis::Client::open(url()).expect("url");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    let stream = format!("rstress-raw-{}", run_id());
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await
        .expect("group");
    let mut sent = 0;
    while sent < n {
        let mut pipe = redis::pipe();
        for i in sent..(sent + 1000).min(n) {
            let cmd = pipe
                .cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("payload")
                .arg(serde_json::to_vec(&event(i)).expect("encode"));
            // RAW_FIELDS=3 adds the two envelope fields shove stores, to compare like with like.
            if std::env::var("RAW_FIELDS").as_deref() == Ok("3") {
                cmd.arg("x-message-id")
                    .arg(uuid::Uuid::new_v4().to_string())
                    .arg("x-retry-count")
                    .arg("0");
            }
        }
        let _: Vec<String> = pipe.query_async(&mut con).await.expect("xadd");
        sent = (sent + 1000).min(n);
    }
    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        let reply: StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut con)
            .await
            .expect("read");
        let mut pipe = redis::pipe();
        for key in reply.keys {
            for entry in key.ids {
                if let Some(redis::Value::BulkString(b)) = entry.map.get("payload") {
                    let e: Event = serde_json::from_slice(b).expect("decode");
                    std::hint::black_box(e);
                }
                pipe.cmd("XACK").arg(&stream).arg("g").arg(&entry.id);
                seen += 1;
            }
        }
        let _: Vec<i64> = pipe.query_async(&mut con).await.expect("xack");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _: i64 = redis::cmd("DEL").arg(&stream).query_async(&mut con).await.expect("del");
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

async fn publish_all<T: Topic<Message = Event>>(client: &shove::redis::RedisClient, n: u64) {
    let publisher = RedisPublisher::new(client.clone());
    let batch: Vec<Event> = (0..1000).map(event).collect();
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(1000) as usize;
        publisher.publish_batch::<T>(&batch[..k]).await.1.expect("publish");
        sent += k as u64;
    }
}

/// Runs one consumer of T until `n` messages were acknowledged.
async fn consume<T: Topic<Message = Event>>(
    client: &shove::redis::RedisClient,
    n: u64,
    prefetch: u16,
    retry_first: bool,
) {
    let done = Arc::new(Notify::new());
    let handler = Count {
        seen: Arc::new(AtomicU64::new(0)),
        target: n,
        done: done.clone(),
        retry_first,
    };
    let stop = CancellationToken::new();
    let consumer = RedisConsumer::new(client.clone());
    let options = ConsumerOptions::<Redis>::preset(prefetch).with_shutdown(stop.clone());
    let task = tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await });
    done.notified().await;
    stop.cancel();
    task.await.expect("task").expect("consumer");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("all");
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let run = |w: &str| workload == "all" || workload == w;
    let client = <Redis as Backend>::connect(RedisConfig::new(RedisMode::Standalone { url: url() }))
        .await
        .expect("connect");
    let mut raw_rate = None;
    if run("raw") {
        let r = raw(n).await;
        raw_rate = Some(r);
        println!("raw redis  {n} msgs: {r:>9.0} msg/s consumed (XREADGROUP COUNT 100, XACK each, pipelined)");
    }
    if run("shove") {
        shove::Broker::<Redis>::from_client(client.clone())
            .topology()
            .declare::<Plain>()
            .await
            .expect("declare");
        publish_all::<Plain>(&client, n).await;
        let started = Instant::now();
        let prefetch = std::env::var("PREFETCH")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(100);
        consume::<Plain>(&client, n, prefetch, false).await;
        let r = n as f64 / started.elapsed().as_secs_f64();
        let ratio = raw_rate
            .map(|raw| format!(" = {:.0}% of raw", 100.0 * r / raw))
            .unwrap_or_default();
        println!("shove      {n} msgs: {r:>9.0} msg/s consumed (prefetch 100, no-op handler){ratio}");
    }
    if run("retry") {
        let m = 5_000;
        let started = Instant::now();
        let consumer = consume::<Retried>(&client, m, 500, true);
        let publish = publish_all::<Retried>(&client, m);
        tokio::join!(consumer, publish);
        println!(
            "retry      {m} msgs each retried once through a 100 ms hold queue: {:.0} ms end to end",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}
