//! Allocations and memory per message on the in-process backend, counted by a counting allocator.
//! Counts, not time: deterministic for a given build, so they can be asserted.
#![cfg(feature = "inmemory")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use shove::inmemory::{InMemoryBroker, InMemoryConfig, InMemoryConsumer, InMemoryPublisher};
use shove::{ConsumerOptions, MessageHandler, MessageMetadata, Outcome, TopologyBuilder, define_topic};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with the same layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One string field, so the message itself costs exactly one allocation to decode.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    id: u64,
    kind: String,
    amount_cents: u64,
    ts: i64,
}

define_topic!(Footprint, Event, TopologyBuilder::new("footprint").build());

struct Count {
    left: Arc<AtomicU64>,
    done: Arc<Notify>,
}

impl MessageHandler<Footprint> for Count {
    type Context = ();

    async fn handle(&self, e: Event, _: MessageMetadata, _: &()) -> Outcome {
        std::hint::black_box(e);
        if self.left.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.done.notify_one();
        }
        Outcome::Ack
    }
}

fn event(i: u64) -> Event {
    Event {
        id: i,
        kind: "order.paid.with.a.longer.kind".into(),
        amount_cents: 129_900,
        ts: 1_764_337_000_000 + i as i64,
    }
}

const N: u64 = 20_000;

#[tokio::test(flavor = "current_thread")]
async fn queued_messages_cost_under_400_bytes_and_the_path_allocates_little() {
    let broker = InMemoryBroker::with_config(InMemoryConfig {
        default_capacity: N as usize + 1,
    });
    let publisher = InMemoryPublisher::new(broker.clone());
    let batch: Vec<Event> = (0..1000).map(event).collect();
    // Warm up: create the queue and let it reach its final capacity.
    publisher.publish_batch::<Footprint>(&batch).await.1.expect("publish");
    let left = Arc::new(AtomicU64::new(1000));
    let done = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let run = |left: Arc<AtomicU64>, done: Arc<Notify>, stop: CancellationToken| {
        InMemoryConsumer::new(broker.clone()).run::<Footprint, _>(
            Count { left, done },
            (),
            ConsumerOptions::preset(100).with_shutdown(stop),
        )
    };
    let warm = tokio::spawn(run(left, done.clone(), stop.clone()));
    done.notified().await;
    stop.cancel();
    warm.await.expect("task").expect("consumer");

    // Queue N messages: the live bytes that remain are what a queued message costs.
    let bytes_before = LIVE_BYTES.load(Ordering::Relaxed);
    let allocs_before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N / 1000 {
        publisher.publish_batch::<Footprint>(&batch).await.1.expect("publish");
    }
    let queued = (LIVE_BYTES.load(Ordering::Relaxed) - bytes_before) as f64 / N as f64;
    let publish_allocs = (ALLOCATIONS.load(Ordering::Relaxed) - allocs_before) as f64 / N as f64;

    // Consume them all.
    let allocs_before = ALLOCATIONS.load(Ordering::Relaxed);
    let left = Arc::new(AtomicU64::new(N));
    let done = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(left, done.clone(), stop.clone()));
    done.notified().await;
    let consume_allocs = (ALLOCATIONS.load(Ordering::Relaxed) - allocs_before) as f64 / N as f64;
    stop.cancel();
    task.await.expect("task").expect("consumer");

    println!(
        "queued message: {queued:.0} bytes; allocations per message: publish {publish_allocs:.2}, consume+ack {consume_allocs:.2}"
    );
    assert!(queued <= 400.0, "a queued message costs {queued:.0} bytes");
    // Publish: the encoded payload. Consume: the message's one String and the delivery_id String.
    assert!(
        publish_allocs <= 1.1,
        "publish allocates {publish_allocs:.2} times per message"
    );
    assert!(
        consume_allocs <= 2.1,
        "consume+ack allocates {consume_allocs:.2} times per message"
    );
}
