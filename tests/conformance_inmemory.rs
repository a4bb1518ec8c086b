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

/// Issue 16, item 3: `InMemoryConsumer::run_fifo_until_timeout` whose options' shutdown token is already
/// cancelled returns at once with a clean outcome, though its signal never fires (it hung).
mod fifo_until_timeout {
    use shove::inmemory::{InMemoryBroker, InMemoryConsumer, InMemoryTopologyDeclarer};
    use shove::{ConsumerOptions, Outcome, SequenceFailure, Topic, TopologyBuilder, define_sequenced_topic};
    use tokio_util::sync::CancellationToken;

    use super::conformance::{Msg, Probe, WAIT, ms, unique};

    #[tokio::test]
    async fn returns_at_once_when_its_token_is_already_cancelled() {
        define_sequenced_topic!(
            Cancelled,
            Msg,
            Msg::key_of,
            TopologyBuilder::new(unique("fifo-cancelled"))
                .sequenced(SequenceFailure::Skip)
                .hold_queue(ms(20))
                .dlq()
                .build()
        );
        let broker = InMemoryBroker::new();
        InMemoryTopologyDeclarer::new(broker.clone())
            .declare(Cancelled::topology())
            .await
            .expect("declare");
        let probe = Probe::<Msg>::new();
        let token = CancellationToken::new();
        token.cancel();
        let consumer = InMemoryConsumer::new(broker.clone());
        let run = consumer.run_fifo_until_timeout::<Cancelled, _, _>(
            probe.handler(|_, _| Outcome::Ack),
            (),
            ConsumerOptions::new().with_shutdown(token),
            std::future::pending::<()>(),
            ms(5_000),
        );
        let outcome = tokio::time::timeout(WAIT, run)
            .await
            .expect("returns promptly when its token is already cancelled");
        assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    }
}
