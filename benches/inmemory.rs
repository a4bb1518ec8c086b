//! Criterion benches of the in-process per-message path, next to a bare tokio channel doing the same JSON
//! work in the same run. `cargo bench --bench inmemory`. Figures: docs/PERFORMANCE.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shove::inmemory::{InMemoryBroker, InMemoryConfig, InMemoryConsumer, InMemoryPublisher};
use shove::{ConsumerOptions, MessageHandler, MessageMetadata, Outcome, Topic, TopologyBuilder, define_topic};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The shared workload (`examples/common/stress.rs`): the same ~110-byte JSON message everywhere.
#[path = "../examples/common/stress.rs"]
mod stress;
use stress::{Event, event};

define_topic!(Events, Event, TopologyBuilder::new("bench-events").build());
define_topic!(Retried, Event, TopologyBuilder::new("bench-retried").dlq().build());

struct Count {
    seen: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
    retry_first: bool,
}

impl<T: Topic<Message = Event>> MessageHandler<T> for Count {
    type Context = ();

    async fn handle(&self, e: Event, meta: MessageMetadata, _: &()) -> Outcome {
        if self.retry_first && meta.retry_count == 0 {
            return Outcome::Retry;
        }
        std::hint::black_box(&e);
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
        Outcome::Ack
    }
}

/// Publishes `n` in batches of 1000, consumes them (prefetch 100, no-op handler), returns the time taken.
async fn shove_round<T: Topic<Message = Event>>(n: u64, retry_first: bool, batch: &[Event]) -> Duration {
    let broker = InMemoryBroker::with_config(InMemoryConfig {
        default_capacity: n as usize + 1,
    });
    let publisher = InMemoryPublisher::new(broker.clone());
    let done = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let handler = Count {
        seen: Arc::new(AtomicU64::new(0)),
        target: n,
        done: done.clone(),
        retry_first,
    };
    let started = Instant::now();
    let consumer = InMemoryConsumer::new(broker.clone()).run::<T, _>(
        handler,
        (),
        ConsumerOptions::preset(100).with_shutdown(stop.clone()),
    );
    let task = tokio::spawn(consumer);
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(batch.len() as u64) as usize;
        publisher.publish_batch::<T>(&batch[..k]).await.1.expect("publish");
        sent += k as u64;
    }
    done.notified().await;
    let took = started.elapsed();
    stop.cancel();
    task.await.expect("consumer task").expect("consumer");
    took
}

/// The same JSON through a bounded mpsc channel: encode, send, receive, decode.
async fn channel_round(n: u64, batch: &[Event]) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(10_000);
    let started = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut count = 0;
        while count < n {
            let bytes = rx.recv().await.expect("sender alive");
            let e: Event = serde_json::from_slice(&bytes).expect("decode");
            std::hint::black_box(e);
            count += 1;
        }
    });
    for i in 0..n {
        let bytes = serde_json::to_vec(&batch[(i % batch.len() as u64) as usize]).expect("encode");
        tx.send(bytes).await.expect("send");
    }
    consumer.await.expect("consumer");
    started.elapsed()
}

fn per_message(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let batch: Vec<Event> = (0..1000).map(event).collect();
    let mut group = c.benchmark_group("publish_consume_ack");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("shove_inmemory", "json_110B"), |b| {
        b.iter_custom(|iters| rt.block_on(shove_round::<Events>(iters.max(1), false, &batch)))
    });
    group.bench_function(BenchmarkId::new("bare_tokio_channel", "json_110B"), |b| {
        b.iter_custom(|iters| rt.block_on(channel_round(iters.max(1), &batch)))
    });
    group.bench_function(BenchmarkId::new("shove_inmemory_retried_once", "json_110B"), |b| {
        b.iter_custom(|iters| rt.block_on(shove_round::<Retried>(iters.max(1), true, &batch)))
    });
    group.finish();
}

criterion_group!(benches, per_message);
criterion_main!(benches);
