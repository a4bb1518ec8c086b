//! RabbitMQ stress run: shove next to raw `lapin` doing the same work in the same run.
//!
//! ```text
//! cargo run --release --features rabbitmq --example rabbitmq_stress            # all workloads
//! cargo run --release --features rabbitmq --example rabbitmq_stress -- raw 50000
//! ```
//! Workloads (broker at `AMQP_URI`, default amqp://guest:guest@127.0.0.1:5672/%2f):
//! - `raw` / `shove`: publish N persistent messages with confirms, then consume them (prefetch 100, no-op
//!   handler, ack each); prints the consume throughput.
//! - `retry`: 5,000 messages that each return `Retry` once through a 100 ms hold queue; prints the time
//!   until every message was handled twice.
//! - `raw_retry`: raw lapin doing the same (a task per first delivery publishes the copy to a hold queue
//!   declared as shove declares it, awaits the confirm, then acks); `all` runs it before `retry` and
//!   prints the ratio.
//! - `retry_tx` (feature `rabbitmq-transactional`): the same with `with_exactly_once()`.
//! - `bound`: 64 consumers with 5–15 ms handlers; prints the throughput against the concurrency ÷ latency
//!   bound.
//!
//! The figures in docs/PERFORMANCE.md are taken with classic queue storage version 2, the default from
//! RabbitMQ 3.13 on. On 3.10–3.12 `scripts/test.sh` sets it for this example's queues with a policy:
//! `rabbitmqctl set_policy --apply-to queues shove-stress-cqv2 '^stress-' '{"queue-version":2}'`.
//! Hold queues are quorum queues; the broker returns their due copies with 32 in flight per hold queue
//! unless `dead_letter_worker_consumer_prefetch` says otherwise (`scripts/test.sh` sets 512).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use shove::rabbitmq::{RabbitMqClient, RabbitMqConfig, RabbitMqConsumer, RabbitMqPublisher};
use shove::{
    ConsumerOptions, MessageHandler, MessageMetadata, Outcome, RabbitMq, Topic, TopologyBuilder, define_topic,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The shared workload (`examples/common/stress.rs`): the same ~110-byte JSON message everywhere.
#[path = "common/stress.rs"]
mod stress;
use stress::{Event, event};

fn run_id() -> String {
    format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos())
}

define_topic!(
    Plain,
    Event,
    TopologyBuilder::new(format!("stress-plain-{}", run_id())).build()
);
define_topic!(
    Retried,
    Event,
    TopologyBuilder::new(format!("stress-retry-{}", run_id()))
        .hold_queue(Duration::from_millis(100))
        .dlq()
        .build()
);
define_topic!(
    RetriedTx,
    Event,
    TopologyBuilder::new(format!("stress-retry-tx-{}", run_id()))
        .hold_queue(Duration::from_millis(100))
        .dlq()
        .build()
);
define_topic!(
    Bound,
    Event,
    TopologyBuilder::new(format!("stress-bound-{}", run_id())).build()
);

fn uri() -> String {
    std::env::var("AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Publishes the first `n` events to `queue` on the confirm channel `ch`, persistent, awaiting the
/// confirms 1,000 at a time.
async fn publish_raw(ch: &lapin::Channel, queue: &str, n: u64) {
    let mut pending = Vec::new();
    for i in 0..n {
        let body = serde_json::to_vec(&event(i)).expect("encode");
        let props = BasicProperties::default().with_delivery_mode(2);
        let publish = ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, props);
        pending.push(publish.await.expect("publish"));
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                c.await.expect("confirm");
            }
        }
    }
    for c in pending.drain(..) {
        c.await.expect("confirm");
    }
}

/// A consumer of `queue` on a channel of its own with `basic.qos` = `prefetch`.
async fn consume(conn: &Connection, queue: &str, prefetch: u16, tag: &str) -> lapin::Consumer {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("consume")
}

/// Raw lapin: publish n with confirms, then consume with prefetch 100 and ack each.
async fn raw(n: u64) -> f64 {
    let conn = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let queue = format!("stress-raw-{}", run_id());
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(Default::default()).await.expect("confirms");
    publish_raw(&ch, &queue, n).await;
    let started = Instant::now();
    let mut consumer = consume(&conn, &queue, 100, "raw").await;
    let mut seen = 0;
    while seen < n {
        let d = consumer.next().await.expect("stream").expect("delivery");
        let e: Event = serde_json::from_slice(&d.data).expect("decode");
        std::hint::black_box(e);
        d.ack(BasicAckOptions::default()).await.expect("ack");
        seen += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = ch.queue_delete(queue.as_str().into(), Default::default()).await;
    rate
}

/// The arguments shove gives a hold queue (src/backends/rabbitmq/topology.rs): a quorum queue whose
/// copies wait `ttl_ms` and are dead-lettered back to `target` at least once.
fn hold_arguments(ttl_ms: i64, target: &str) -> FieldTable {
    let mut args = FieldTable::default();
    let text = |v: &str| AMQPValue::LongString(v.into());
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(target));
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
    args
}

/// Raw lapin doing the retry run's work: `m` messages published with confirms while one consumer
/// (`basic.qos` 1,000, as shove's prefetch 500 asks for) handles them; each first delivery is copied to a
/// 100 ms hold queue (persistent, confirmed) and then acknowledged, concurrently, in a task per message;
/// each second delivery is acknowledged. Returns the time until every message was handled twice.
async fn raw_retry(m: u64) -> Duration {
    let conn = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let queue = format!("stress-raw-retry-{}", run_id());
    let hold = format!("{queue}-hold-100ms");
    let ch = conn.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await
        .expect("declare");
    ch.queue_declare(hold.as_str().into(), durable, hold_arguments(100, &queue))
        .await
        .expect("declare the hold queue");
    ch.confirm_select(Default::default()).await.expect("confirms");
    let copies = conn.create_channel().await.expect("channel");
    copies.confirm_select(Default::default()).await.expect("confirms");

    let started = Instant::now();
    let mut consumer = consume(&conn, &queue, 1000, "raw-retry").await;
    let publishing = tokio::spawn({
        let (ch, queue) = (ch.clone(), queue.clone());
        async move { publish_raw(&ch, &queue, m).await }
    });
    let mut handled_twice = 0;
    while handled_twice < m {
        let d = consumer.next().await.expect("stream").expect("delivery");
        let e: Event = serde_json::from_slice(&d.data).expect("decode");
        std::hint::black_box(&e);
        let retried = d
            .properties
            .headers()
            .as_ref()
            .is_some_and(|h| h.inner().contains_key("x-retry-count"));
        if retried {
            d.ack(BasicAckOptions::default()).await.expect("ack");
            handled_twice += 1;
            continue;
        }
        let (copies, hold) = (copies.clone(), hold.clone());
        tokio::spawn(async move {
            let mut headers = FieldTable::default();
            headers.insert("x-retry-count".into(), AMQPValue::LongString("1".into()));
            let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
            let publish = copies.basic_publish(
                "".into(),
                hold.as_str().into(),
                BasicPublishOptions::default(),
                &d.data,
                props,
            );
            publish.await.expect("publish").await.expect("confirm");
            d.ack(BasicAckOptions::default()).await.expect("ack");
        });
    }
    let elapsed = started.elapsed();
    publishing.await.expect("publishing");
    for q in [&queue, &hold] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    elapsed
}

struct Count {
    /// When the 20 % and 80 % marks of `target` were handled (steady-state window), in µs since `origin`.
    marks: Arc<[AtomicU64; 2]>,
    origin: Instant,
    /// Total time handlers spent sleeping, in microseconds (to compute the real latency bound).
    slept_us: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
    retry_first: bool,
    sleep_ms: Option<(u64, u64)>,
    /// When this consumer's last handler call returned, in µs since `origin` (0: none yet).
    last_end: AtomicU64,
    /// Time between one handler call of a consumer returning and its next starting: total µs, count.
    gaps: Arc<[AtomicU64; 2]>,
}

impl<T: Topic<Message = Event>> MessageHandler<T> for Count {
    type Context = ();

    async fn handle(&self, e: Event, meta: MessageMetadata, _: &()) -> Outcome {
        let last = self.last_end.load(Ordering::Relaxed);
        if last > 0 {
            let now = self.origin.elapsed().as_micros() as u64;
            self.gaps[0].fetch_add(now.saturating_sub(last), Ordering::Relaxed);
            self.gaps[1].fetch_add(1, Ordering::Relaxed);
        }
        let outcome = self.outcome(e, meta).await;
        self.last_end
            .store(self.origin.elapsed().as_micros() as u64, Ordering::Relaxed);
        outcome
    }
}

impl Count {
    async fn outcome(&self, e: Event, meta: MessageMetadata) -> Outcome {
        if let Some((lo, hi)) = self.sleep_ms {
            let started = Instant::now();
            tokio::time::sleep(Duration::from_millis(lo + e.id % (hi - lo + 1))).await;
            self.slept_us
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        if self.retry_first && meta.retry_count == 0 {
            return Outcome::Retry;
        }
        let handled = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        for (i, pct) in [20, 80].into_iter().enumerate() {
            if handled == self.target * pct / 100 {
                self.marks[i].store(self.origin.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
        }
        if handled == self.target {
            self.done.notify_one();
        }
        Outcome::Ack
    }
}

async fn publish_all<T: Topic<Message = Event>>(client: &RabbitMqClient, n: u64) {
    let publisher = RabbitMqPublisher::new(client.clone()).await.expect("publisher");
    let batch: Vec<Event> = (0..1000).map(event).collect();
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(1000) as usize;
        publisher.publish_batch::<T>(&batch[..k]).await.1.expect("publish");
        sent += k as u64;
    }
}

/// Starts `consumers` consumers of T; returns a handle that waits until `n` messages were acknowledged.
fn start<T: Topic<Message = Event>>(
    client: &RabbitMqClient,
    n: u64,
    consumers: usize,
    options: ConsumerOptions<RabbitMq>,
    retry_first: bool,
    sleep_ms: Option<(u64, u64)>,
) -> Running {
    let done = Arc::new(Notify::new());
    let seen = Arc::new(AtomicU64::new(0));
    let slept_us = Arc::new(AtomicU64::new(0));
    let marks: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let gaps: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let origin = Instant::now();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let consumer = RabbitMqConsumer::new(client.clone());
        let handler = Count {
            marks: marks.clone(),
            origin,
            slept_us: slept_us.clone(),
            seen: seen.clone(),
            target: n,
            done: done.clone(),
            retry_first,
            sleep_ms,
            last_end: AtomicU64::new(0),
            gaps: gaps.clone(),
        };
        let opts = options.clone().with_shutdown(stop.clone());
        tasks.push(tokio::spawn(
            async move { consumer.run::<T, _>(handler, (), opts).await },
        ));
    }
    Running {
        done,
        stop,
        tasks,
        slept_us,
        marks,
        gaps,
        n,
    }
}

struct Running {
    done: Arc<Notify>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<shove::error::Result<()>>>,
    slept_us: Arc<AtomicU64>,
    marks: Arc<[AtomicU64; 2]>,
    gaps: Arc<[AtomicU64; 2]>,
    n: u64,
}

/// Mean time between one handler call of a consumer returning and its next starting, in seconds.
fn mean_gap(gaps: &[AtomicU64; 2]) -> f64 {
    let [total, count] = [0, 1].map(|i| gaps[i].load(Ordering::Relaxed));
    total as f64 / 1e6 / count.max(1) as f64
}

impl Running {
    /// Waits for every message, stops the consumers; returns the mean handler sleep in seconds.
    async fn finish(self) -> f64 {
        self.finish_with_window().await.0
    }

    /// As `finish`; returns when the last message was handled (before the consumers were stopped).
    async fn finish_timed(self) -> Instant {
        self.done.notified().await;
        let handled = Instant::now();
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("task").expect("consumer");
        }
        handled
    }

    /// As `finish`, plus the steady-state rate: messages per second between the 20 % and 80 % marks.
    async fn finish_with_window(self) -> (f64, f64) {
        self.done.notified().await;
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("task").expect("consumer");
        }
        let [a, b] = [0, 1].map(|i| self.marks[i].load(Ordering::Relaxed));
        let steady = (self.n as f64 * 0.6) / ((b.saturating_sub(a)).max(1) as f64 / 1e6);
        (
            self.slept_us.load(Ordering::Relaxed) as f64 / 1e6 / self.n as f64,
            steady,
        )
    }
}

/// Waits until `queue` has `consumers` consumers (they subscribe asynchronously).
async fn wait_for_consumers(client: &RabbitMqClient, queue: &str, consumers: u64) {
    use shove::rabbitmq::QueueStatsProvider;
    let broker = shove::Broker::<RabbitMq>::from_client(client.clone());
    let stats = broker.queue_stats_provider();
    for _ in 0..600 {
        if stats.get_queue_stats(queue).await.map(|s| s.consumers).unwrap_or(0) >= consumers {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{consumers} consumers did not subscribe to {queue} within 30 s");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("all");
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let run = |w: &str| workload == "all" || workload == w;
    let client = RabbitMqClient::connect(&RabbitMqConfig::new(uri()))
        .await
        .expect("connect");
    let mut raw_rate = None;
    if run("raw") {
        let r = raw(n).await;
        raw_rate = Some(r);
        println!("raw lapin  {n} msgs: {r:>9.0} msg/s consumed (prefetch 100, ack each)");
    }
    if run("shove") {
        publish_all::<Plain>(&client, n).await;
        let started = Instant::now();
        start::<Plain>(&client, n, 1, ConsumerOptions::preset(100), false, None)
            .finish()
            .await;
        let r = n as f64 / started.elapsed().as_secs_f64();
        let ratio = raw_rate
            .map(|raw| format!(" = {:.0}% of raw", 100.0 * r / raw))
            .unwrap_or_default();
        println!("shove      {n} msgs: {r:>9.0} msg/s consumed (prefetch 100, no-op handler){ratio}");
    }
    let mut raw_retry_ms = None;
    if run("raw_retry") {
        let m = 5_000;
        let ms = raw_retry(m).await.as_secs_f64() * 1000.0;
        raw_retry_ms = Some(ms);
        println!(
            "raw_retry  {m} msgs each retried once through a 100 ms hold queue (raw lapin): {ms:.0} ms end to end"
        );
    }
    if run("retry") {
        let m = 5_000;
        let started = Instant::now();
        let running = start::<Retried>(&client, m, 1, ConsumerOptions::preset(500), true, None);
        publish_all::<Retried>(&client, m).await;
        let published = started.elapsed();
        let handled = running.finish_timed().await - started;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let ratio = raw_retry_ms
            .map(|raw| format!("; raw lapin's time = {:.0}% of this", 100.0 * raw / ms))
            .unwrap_or_default();
        println!(
            "retry      {m} msgs each retried once through a 100 ms hold queue: {ms:.0} ms end to end \
             (published after {} ms, all handled twice after {} ms){ratio}",
            published.as_millis(),
            handled.as_millis()
        );
    }
    #[cfg(feature = "rabbitmq-transactional")]
    if run("retry_tx") {
        let m = 5_000;
        let started = Instant::now();
        let options = ConsumerOptions::preset(500).with_exactly_once();
        let running = start::<RetriedTx>(&client, m, 1, options, true, None);
        publish_all::<RetriedTx>(&client, m).await;
        running.finish().await;
        println!(
            "retry_tx   {m} msgs each retried once, exactly-once (AMQP transactions): {:.0} ms end to end",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    if run("bound") {
        // The queue filled while the consumers run, then with the whole backlog there before they start.
        bound(&client, false).await;
        bound(&client, true).await;
    }
    client.shutdown().await;
}

/// 12,800 messages handled by 64 consumers (prefetch 1) whose handlers sleep 5–15 ms, against the
/// concurrency ÷ latency bound. `backlog`: every message is published before the consumers start (the
/// consumers' capacity alone); otherwise publishing runs alongside them.
async fn bound(client: &RabbitMqClient, backlog: bool) {
    let m = 12_800;
    let c: u64 = std::env::var("BOUND_CONSUMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    if backlog {
        publish_all::<Bound>(client, m).await;
    }
    let running = start::<Bound>(client, m, c as usize, ConsumerOptions::preset(1), false, Some((5, 15)));
    wait_for_consumers(client, Bound::topology().queue(), c).await;
    let started = Instant::now();
    if !backlog {
        publish_all::<Bound>(client, m).await;
    }
    let gaps = running.gaps.clone();
    let (latency, steady) = running.finish_with_window().await;
    let rate = m as f64 / started.elapsed().as_secs_f64();
    let bound = c as f64 / latency;
    println!(
        "bound      {m} msgs, {c} consumers, 5-15 ms handlers, {} (measured mean {:.2} ms, bound {bound:.0} msg/s): \
         steady state {steady:.0} msg/s = {:.0}% of the bound; whole run {rate:.0} msg/s = {:.0}%; mean gap between a \
         consumer's handlers {:.0} µs",
        if backlog {
            "backlog published first"
        } else {
            "published meanwhile"
        },
        latency * 1000.0,
        100.0 * steady / bound,
        100.0 * rate / bound,
        mean_gap(&gaps) * 1e6,
    );
}
