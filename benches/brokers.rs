//! Criterion benches of shove on the real brokers, next to the raw client doing the same work in the same
//! run: the criterion form of `examples/{rabbitmq,redis,nats}_stress.rs` (`raw` and `shove` workloads).
//!
//! ```text
//! cargo bench --all-features --bench brokers
//! ```
//!
//! One group per broker (`rabbitmq`, `redis`, `nats`), each with two functions; an iteration publishes a
//! batch of N = 1,000 messages (about 110 bytes of JSON each), then consumes and acknowledges them, and is
//! timed from the first publish until the N-th message was consumed (tearing the consumer down is not
//! timed). Throughput is in messages per second.
//! - `raw`: the broker's own client. RabbitMQ: `lapin` with publisher confirms, then `basic_qos(100)` +
//!   `basic_consume` + `basic_ack` each. Redis: `XADD` pipelined, then `XREADGROUP COUNT 100` + `XACK`
//!   pipelined. NATS: JetStream publish (every ack awaited), then a pull consumer in batches of 100 + ack
//!   each. Every payload is encoded and decoded with serde_json, as shove does.
//! - `shove`: `Publisher::publish_batch`, then a shove consumer with `ConsumerOptions::<B>::preset(100)`
//!   and a no-op handler, stopped through its shutdown token once it handled N.
//!
//! Servers: RabbitMQ at amqp://guest:guest@127.0.0.1:5672/%2f (as `tests/conformance_rabbitmq.rs`), Redis
//! at `$SHOVE_REDIS_URL` (default redis://127.0.0.1:6379/), NATS with JetStream at `$SHOVE_NATS_URL`
//! (default nats://127.0.0.1:4222). Queues and streams are named `bench-*-<run>` and deleted at the end of
//! their group. `cargo test --all-targets` runs each function once (criterion's test mode).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use redis::streams::StreamReadReply;
use shove::nats::{NatsConfig, NatsConsumer};
use shove::rabbitmq::{RabbitMqConfig, RabbitMqConsumer};
use shove::redis::{RedisConfig, RedisConsumer, RedisMode};
use shove::{
    Backend, Broker, ConsumerOptions, MessageHandler, MessageMetadata, Nats, Outcome, Publisher, RabbitMq, Redis,
    Topic, TopologyBuilder, define_topic,
};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Messages per iteration.
const N: u64 = 1_000;

/// The shared workload (`examples/common/stress.rs`): the same ~110-byte JSON message everywhere.
#[path = "../examples/common/stress.rs"]
mod stress;
use stress::{Event, event};

/// Makes every queue and stream name of this run unique.
static RUN: LazyLock<String> = LazyLock::new(|| format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));

/// `bench-<what>-<run>`.
fn name(what: &str) -> String {
    format!("bench-{what}-{}", *RUN)
}

const AMQP_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn redis_url() -> String {
    std::env::var("SHOVE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn nats_url() -> String {
    std::env::var("SHOVE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

define_topic!(
    RabbitEvents,
    Event,
    TopologyBuilder::new(name("rabbitmq-shove")).build()
);
define_topic!(RedisEvents, Event, TopologyBuilder::new(name("redis-shove")).build());
define_topic!(NatsEvents, Event, TopologyBuilder::new(name("nats-shove")).build());

// ---------------------------------------------------------------------------------------------------------
// shove

/// The no-op handler: counts, and wakes the bench at the target.
struct Count {
    seen: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
}

impl<T: Topic<Message = Event>> MessageHandler<T> for Count {
    type Context = ();

    async fn handle(&self, e: Event, _: MessageMetadata, _: &()) -> Outcome {
        std::hint::black_box(e);
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
        Outcome::Ack
    }
}

/// Starts a shove consumer of `T` (each backend has its own consumer type).
trait SpawnConsumer: Backend + Sized {
    fn spawn<T: Topic<Message = Event>>(
        client: &Self::Client,
        handler: Count,
        options: ConsumerOptions<Self>,
    ) -> JoinHandle<shove::error::Result<()>>;
}

impl SpawnConsumer for RabbitMq {
    fn spawn<T: Topic<Message = Event>>(
        client: &Self::Client,
        handler: Count,
        options: ConsumerOptions<Self>,
    ) -> JoinHandle<shove::error::Result<()>> {
        let consumer = RabbitMqConsumer::new(client.clone());
        tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await })
    }
}

impl SpawnConsumer for Redis {
    fn spawn<T: Topic<Message = Event>>(
        client: &Self::Client,
        handler: Count,
        options: ConsumerOptions<Self>,
    ) -> JoinHandle<shove::error::Result<()>> {
        let consumer = RedisConsumer::new(client.clone());
        tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await })
    }
}

impl SpawnConsumer for Nats {
    fn spawn<T: Topic<Message = Event>>(
        client: &Self::Client,
        handler: Count,
        options: ConsumerOptions<Self>,
    ) -> JoinHandle<shove::error::Result<()>> {
        let consumer = NatsConsumer::new(client.clone());
        tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await })
    }
}

/// A connected shove client with its publisher; `T` is declared.
struct Shove<B: Backend> {
    client: B::Client,
    broker: Broker<B>,
    publisher: Publisher<B>,
}

impl<B: SpawnConsumer> Shove<B> {
    async fn connect<T: Topic>(config: B::Config) -> Self {
        let client = B::connect(config).await.expect("shove connect");
        let broker = Broker::<B>::from_client(client.clone());
        broker.topology().declare::<T>().await.expect("declare");
        let publisher = broker.publisher().await.expect("publisher");
        Self {
            client,
            broker,
            publisher,
        }
    }

    /// One iteration: publishes `batch`, consumes it with a fresh consumer (prefetch 100); returns the time
    /// until the last message was handled.
    async fn round<T: Topic<Message = Event>>(&self, batch: &[Event]) -> Duration {
        let started = Instant::now();
        self.publisher.publish_batch::<T>(batch).await.expect("publish");
        let done = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let handler = Count {
            seen: Arc::new(AtomicU64::new(0)),
            target: batch.len() as u64,
            done: done.clone(),
        };
        let task = B::spawn::<T>(
            &self.client,
            handler,
            ConsumerOptions::<B>::preset(100).with_shutdown(stop.clone()),
        );
        done.notified().await;
        let took = started.elapsed();
        stop.cancel();
        task.await.expect("consumer task").expect("consumer");
        took
    }
}

// ---------------------------------------------------------------------------------------------------------
// raw clients

/// Raw lapin: a durable queue, a publishing channel in confirm mode, a consuming channel with prefetch 100.
struct RawRabbit {
    conn: Connection,
    publish: Channel,
    consume: Channel,
    queue: String,
}

impl RawRabbit {
    async fn connect() -> Self {
        let conn = Connection::connect(AMQP_URI, ConnectionProperties::default())
            .await
            .expect("connect");
        let publish = conn.create_channel().await.expect("channel");
        let queue = name("rabbitmq-raw");
        publish
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare");
        publish.confirm_select(Default::default()).await.expect("confirms");
        let consume = conn.create_channel().await.expect("channel");
        consume.basic_qos(100, BasicQosOptions::default()).await.expect("qos");
        Self {
            conn,
            publish,
            consume,
            queue,
        }
    }

    /// Publishes `batch` persistent with confirms, then consumes it (prefetch 100, ack each).
    async fn round(&self, batch: &[Event]) -> Duration {
        let started = Instant::now();
        let mut pending = Vec::with_capacity(batch.len());
        for e in batch {
            let body = serde_json::to_vec(e).expect("encode");
            let props = BasicProperties::default().with_delivery_mode(2);
            pending.push(
                self.publish
                    .basic_publish(
                        "".into(),
                        self.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .expect("publish"),
            );
        }
        for c in pending {
            c.await.expect("confirm");
        }
        let mut consumer = self
            .consume
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        for _ in 0..batch.len() {
            let d = consumer.next().await.expect("stream").expect("delivery");
            let e: Event = serde_json::from_slice(&d.data).expect("decode");
            std::hint::black_box(e);
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
        let took = started.elapsed();
        self.consume
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel");
        took
    }

    /// Deletes the raw queue and shove's, and closes the connection.
    async fn cleanup(self) {
        for queue in [self.queue.as_str(), RabbitEvents::topology().queue()] {
            let _ = self.publish.queue_delete(queue.into(), Default::default()).await;
        }
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}

/// Raw redis: a stream with consumer group `g`.
struct RawRedis {
    con: redis::aio::MultiplexedConnection,
    stream: String,
}

impl RawRedis {
    async fn connect() -> Self {
        let client = redis::Client::open(redis_url()).expect("url");
        let mut con = client.get_multiplexed_async_connection().await.expect("connect");
        let stream = name("redis-raw");
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("g")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await
            .expect("group");
        Self { con, stream }
    }

    /// XADD `batch` in one pipeline, then XREADGROUP COUNT 100 + decode + XACK (pipelined per read).
    async fn round(&self, batch: &[Event]) -> Duration {
        let mut con = self.con.clone();
        let started = Instant::now();
        let mut pipe = redis::pipe();
        for e in batch {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("payload")
                .arg(serde_json::to_vec(e).expect("encode"));
        }
        let _: Vec<String> = pipe.query_async(&mut con).await.expect("xadd");
        let mut seen = 0;
        while seen < batch.len() {
            let reply: StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(100)
                .arg("STREAMS")
                .arg(&self.stream)
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
                    pipe.cmd("XACK").arg(&self.stream).arg("g").arg(&entry.id);
                    seen += 1;
                }
            }
            let _: Vec<i64> = pipe.query_async(&mut con).await.expect("xack");
        }
        started.elapsed()
    }

    /// Deletes the raw stream and shove's.
    async fn cleanup(self) {
        let mut con = self.con;
        let _: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(&self.stream)
            .arg(RedisEvents::topology().queue())
            .query_async(&mut con)
            .await;
    }
}

/// Raw async-nats: a work-queue stream with one subject and a durable pull consumer.
struct RawNats {
    js: jetstream::Context,
    consumer: consumer::PullConsumer,
    name: String,
}

impl RawNats {
    async fn connect() -> Self {
        let client = async_nats::connect(nats_url()).await.expect("connect");
        let js = jetstream::new(client);
        let name = name("nats-raw");
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![name.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .expect("create stream");
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .expect("create consumer");
        Self { js, consumer, name }
    }

    /// Publishes `batch` (every ack awaited, all in flight at once), then pulls it in batches of 100 +
    /// decode + ack each.
    ///
    /// The stress example's `consumer.stream()` cannot be used once per iteration: when it is dropped, the
    /// pull request it keeps open ahead is still pending on the server, which hands the next iteration's
    /// messages to it, and they come back only after the ack wait (30 s). So each batch is a pull request
    /// of exactly 100, and the next one is sent before the current one is read (as `stream()` keeps one
    /// ahead): every request is filled, none is left open.
    async fn round(&self, batch: &[Event]) -> Duration {
        let started = Instant::now();
        let mut acks = Vec::with_capacity(batch.len());
        for e in batch {
            let payload = serde_json::to_vec(e).expect("encode");
            acks.push(
                self.js
                    .publish(self.name.clone(), payload.into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("publish ack");
        }
        let pull = |count: usize| {
            self.consumer
                .batch()
                .max_messages(count)
                .expires(Duration::from_secs(10))
                .messages()
        };
        let mut left = batch.len();
        let mut next = Some(pull(left.min(100)).await.expect("pull"));
        while let Some(mut messages) = next.take() {
            let count = left.min(100);
            left -= count;
            if left > 0 {
                next = Some(pull(left.min(100)).await.expect("pull"));
            }
            for _ in 0..count {
                let message = messages
                    .next()
                    .await
                    .expect("the pull request ended early")
                    .expect("message");
                let e: Event = serde_json::from_slice(&message.payload).expect("decode");
                std::hint::black_box(e);
                message.ack().await.expect("ack");
            }
        }
        started.elapsed()
    }

    /// Deletes the raw stream and shove's.
    async fn cleanup(self) {
        let shove_stream = format!("SHOVE_{}", NatsEvents::topology().queue());
        for stream in [self.name.as_str(), shove_stream.as_str()] {
            let _ = self.js.delete_stream(stream).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// criterion

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(N));
    group
}

/// Runs `round` `iters` times and sums the times it reports.
fn timed<F: Future<Output = Duration>>(rt: &Runtime, iters: u64, mut round: impl FnMut() -> F) -> Duration {
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            total += round().await;
        }
        total
    })
}

fn brokers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let batch: Vec<Event> = (0..N).map(event).collect();

    let raw = rt.block_on(RawRabbit::connect());
    let config = RabbitMqConfig::new(AMQP_URI);
    let shove = rt.block_on(Shove::<RabbitMq>::connect::<RabbitEvents>(config));
    let mut g = group(c, "rabbitmq");
    g.bench_function("raw", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || raw.round(&batch)))
    });
    g.bench_function("shove", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || shove.round::<RabbitEvents>(&batch)))
    });
    g.finish();
    rt.block_on(async {
        shove.broker.close().await;
        raw.cleanup().await;
    });

    let raw = rt.block_on(RawRedis::connect());
    let config = RedisConfig::new(RedisMode::Standalone { url: redis_url() });
    let shove = rt.block_on(Shove::<Redis>::connect::<RedisEvents>(config));
    let mut g = group(c, "redis");
    g.bench_function("raw", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || raw.round(&batch)))
    });
    g.bench_function("shove", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || shove.round::<RedisEvents>(&batch)))
    });
    g.finish();
    rt.block_on(async {
        shove.broker.close().await;
        raw.cleanup().await;
    });

    let raw = rt.block_on(RawNats::connect());
    let config = NatsConfig::new(nats_url());
    let shove = rt.block_on(Shove::<Nats>::connect::<NatsEvents>(config));
    let mut g = group(c, "nats");
    g.bench_function("raw", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || raw.round(&batch)))
    });
    g.bench_function("shove", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || shove.round::<NatsEvents>(&batch)))
    });
    g.finish();
    rt.block_on(async {
        shove.broker.close().await;
        raw.cleanup().await;
    });
}

criterion_group!(benches, brokers);
criterion_main!(benches);
