//! Quickstart: one topic with a hold queue and a DLQ, on the in-process backend.
//!
//! Three orders are published. A consumer group handles them: the first succeeds, the second fails once
//! and succeeds on retry, the third is rejected and lands in the DLQ, where a DLQ consumer reports it.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shove::inmemory::{InMemoryConfig, InMemoryConsumerGroupConfig};
use shove::{
    Broker, ConsumerGroupConfig, ConsumerOptions, DeadMessageMetadata, InMemory, MessageHandler, MessageMetadata,
    Outcome, TopologyBuilder, define_topic,
};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPaid {
    order_id: u32,
    amount_cents: u64,
}

define_topic!(
    Orders,
    OrderPaid,
    TopologyBuilder::new("orders")
        .hold_queue(Duration::from_millis(200))
        .dlq()
        .build()
);

/// Handles orders: #1 succeeds, #2 fails on its first attempt, #3 is invalid.
struct OrderHandler {
    finished: Arc<AtomicUsize>,
    done: Arc<Notify>,
}

impl MessageHandler<Orders> for OrderHandler {
    type Context = ();

    async fn handle(&self, order: OrderPaid, meta: MessageMetadata, _: &()) -> Outcome {
        let attempt = meta.retry_count + 1;
        let outcome = match order.order_id {
            2 if meta.retry_count == 0 => Outcome::Retry,
            3 => Outcome::Reject,
            _ => Outcome::Ack,
        };
        println!(
            "handle   order #{} ({} cents), attempt {attempt}, id {} -> {outcome:?}",
            order.order_id, order.amount_cents, meta.delivery_id
        );
        if matches!(outcome, Outcome::Ack) {
            self.finished.fetch_add(1, Ordering::SeqCst);
            self.done.notify_one();
        }
        outcome
    }
}

/// Reports dead-lettered orders.
struct DeadOrders {
    done: Arc<Notify>,
    seen: Arc<AtomicUsize>,
}

impl MessageHandler<Orders> for DeadOrders {
    type Context = ();

    async fn handle(&self, _: OrderPaid, _: MessageMetadata, _: &()) -> Outcome {
        Outcome::Ack
    }

    async fn handle_dead(&self, order: OrderPaid, meta: DeadMessageMetadata, _: &()) {
        println!(
            "dlq      order #{} reason={:?} from={:?} deaths={}",
            order.order_id, meta.reason, meta.original_queue, meta.death_count
        );
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.done.notify_one();
    }
}

#[tokio::main]
async fn main() -> shove::error::Result<()> {
    let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
    broker.topology().declare::<Orders>().await?;

    let publisher = broker.publisher().await?;
    for (order_id, amount_cents) in [(1, 1_250), (2, 990), (3, 0)] {
        publisher
            .publish::<Orders>(&OrderPaid { order_id, amount_cents })
            .await?;
        println!("publish  order #{order_id}");
    }

    let done = Arc::new(Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicUsize::new(0));

    // Dead letters are consumed through the generic supervisor.
    let mut dlq = broker.consumer_supervisor();
    dlq.register_dlq::<Orders, _>(
        DeadOrders {
            done: done.clone(),
            seen: dead.clone(),
        },
        ConsumerOptions::new(),
    )?;

    let mut group = broker.consumer_group();
    let (f, d) = (finished.clone(), done.clone());
    group
        .register::<Orders, _>(
            ConsumerGroupConfig::new(InMemoryConsumerGroupConfig::new(1..=2).with_max_retries(3)),
            move || OrderHandler {
                finished: f.clone(),
                done: d.clone(),
            },
        )
        .await?;

    // Stop once two orders succeeded and one reached the DLQ.
    let (f, x, d) = (finished.clone(), dead.clone(), done.clone());
    let all_handled = async move {
        while f.load(Ordering::SeqCst) < 2 || x.load(Ordering::SeqCst) < 1 {
            d.notified().await;
        }
    };
    let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
    let dlq_run = tokio::spawn(dlq.run_until_timeout(
        async move {
            let _ = signal_rx.await;
        },
        Duration::from_secs(5),
    ));
    let outcome = group.run_until_timeout(all_handled, Duration::from_secs(5)).await;
    let _ = signal_tx.send(());
    let dlq_outcome = dlq_run.await.expect("the DLQ supervisor task");

    println!(
        "done     group exit code {}, dlq exit code {}",
        outcome.exit_code(),
        dlq_outcome.exit_code()
    );
    broker.close().await;
    std::process::exit(outcome.exit_code().max(dlq_outcome.exit_code()));
}
