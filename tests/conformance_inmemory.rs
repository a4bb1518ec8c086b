//! The conformance suite (`tests/conformance/`) on the in-process backend.
//!
//! The in-process backend claims no optional capability: its delays live in process memory (contract
//! rule 12 exempts it) and there is no broker process to restart, so those scenarios report themselves
//! as skipped.
#![cfg(feature = "inmemory")]

mod conformance;

use conformance::{Capabilities, GroupSpec, Harness};
use shove::inmemory::{InMemoryConfig, InMemoryConsumerGroupConfig};
use shove::{Broker, ConsumerGroupConfig, InMemory};

/// Drives the suite on `shove::InMemory`: a new in-process broker per scenario.
struct InMemoryHarness;

impl Harness for InMemoryHarness {
    type B = InMemory;

    fn name() -> &'static str {
        "inmemory"
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            durable_delays: false,
            // Consumers share the broker's process: there is no consumer process to lose.
            lost_attempts: false,
            kill_9_forgets_recent_acks: false,
            broker_kill_9_gap: None,
        }
    }

    async fn broker() -> Broker<InMemory> {
        Broker::<InMemory>::new(InMemoryConfig::default())
            .await
            .expect("an in-process broker")
    }

    fn group_config(spec: &GroupSpec) -> ConsumerGroupConfig<InMemory> {
        let mut config = InMemoryConsumerGroupConfig::new(spec.min..=spec.max)
            .with_prefetch_count(spec.prefetch)
            .with_max_retries(spec.max_retries);
        if let Some(timeout) = spec.handler_timeout {
            config = config.with_handler_timeout(timeout);
        }
        if let Some(max) = spec.max_message_size {
            config = config.with_max_message_size(max);
        }
        if let Some(limit) = spec.max_pending_per_key {
            config = config.with_max_pending_per_key(limit);
        }
        ConsumerGroupConfig::new(config)
    }
}

conformance::conformance_suite!(InMemoryHarness);

/// The direct consumer's `run_fifo_until_timeout` (shared with the broker backends): per-key order until
/// its signal, and (issue 16, item 3) a prompt, clean return when its options' token is already cancelled.
mod facade {
    use shove::InMemory;
    use shove::inmemory::{InMemoryBroker, InMemoryConfig, InMemoryConsumer, InMemoryTopologyDeclarer};

    use super::conformance::facades;

    async fn client() -> InMemoryBroker {
        facades::connect::<InMemory>(InMemoryConfig::default(), "the in-process broker needs nothing").await
    }

    facades::run_fifo_until_timeout_keeps_key_order_and_stops_on_signal! {
        backend: InMemory,
        connect: client,
        consumer: InMemoryConsumer,
        declarer: InMemoryTopologyDeclarer,
    }
}
