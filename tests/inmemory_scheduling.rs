//! A consumer whose queue never runs dry must still let other tasks of a single-threaded runtime run.
#![cfg(feature = "inmemory")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shove::inmemory::InMemoryConfig;
use shove::{
    Broker, ConsumerOptions, InMemory, MessageHandler, MessageMetadata, Outcome, TopologyBuilder, define_topic,
};

define_topic!(Forever, u64, TopologyBuilder::new("scheduling-forever").build());

/// Defers every message; with no hold queue each one is redelivered at once, for ever.
struct AlwaysDefer(Arc<AtomicU64>);

impl MessageHandler<Forever> for AlwaysDefer {
    type Context = ();

    async fn handle(&self, _: u64, _: MessageMetadata, _: &()) -> Outcome {
        self.0.fetch_add(1, Ordering::Relaxed);
        Outcome::Defer
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_busy_consumer_does_not_starve_a_single_threaded_runtime() {
    let broker = Broker::<InMemory>::new(InMemoryConfig::default())
        .await
        .expect("broker");
    let publisher = broker.publisher().await.expect("publisher");
    publisher.publish_batch::<Forever>(&[1, 2, 3]).await.expect("publish");

    let calls = Arc::new(AtomicU64::new(0));
    let mut supervisor = broker.consumer_supervisor();
    supervisor
        .register::<Forever, _>(AlwaysDefer(calls.clone()), ConsumerOptions::preset(10))
        .expect("register");

    // The stop signal is a timer on the same thread as the consumer: it fires only if the consumer yields.
    let signal = tokio::time::sleep(Duration::from_millis(100));
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        supervisor.run_until_timeout(signal, Duration::from_secs(1)),
    )
    .await
    .expect("the supervisor returns: the consumer yields to the runtime");
    assert_eq!(outcome.exit_code(), 0);
    assert!(
        calls.load(Ordering::Relaxed) > 3,
        "the messages were redelivered repeatedly"
    );
}
