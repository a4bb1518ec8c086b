//! The conformance suite (`tests/conformance/`) on NATS JetStream, plus tests of the `shove::nats` facade
//! types used directly.
//!
//! Needs a NATS server with JetStream at `$SHOVE_NATS_URL` (default `nats://127.0.0.1:4222`);
//! `scripts/test.sh` makes sure Debian's nats-server 2.9.10 listens on 4222, and runs this binary a second
//! time against a current upstream server (2.15) on 4223. Every scenario uses its own stream names, so the
//! tests run in parallel against one server.
//!
//! Capabilities: `durable_delays` — retry and defer delays are held in the server (a hold subject whose
//! messages go back to the topic when due), so a message waiting out its delay survives the consumer's
//! connection. `restart` is not claimed: the harness does not own the server process.
#![cfg(feature = "nats")]

mod conformance;

use conformance::{Capabilities, GroupSpec, Harness};
use shove::nats::{NatsConfig, NatsConsumerGroupConfig};
use shove::{Broker, ConsumerGroupConfig, Nats};

/// The server every test connects to: `$SHOVE_NATS_URL`, else the local NATS.
fn nats_url() -> String {
    std::env::var("SHOVE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Settings for the server under test.
fn config() -> NatsConfig {
    NatsConfig::new(nats_url())
}

/// What to do when the server is not there.
fn start_hint() -> String {
    format!(
        "a NATS server with JetStream must listen at {} (set SHOVE_NATS_URL to use another); run \
         scripts/test.sh, which starts nats-server 2.9.10 on 4222 and a current one on 4223",
        nats_url()
    )
}

/// Drives the suite on `shove::Nats`: a new client per scenario, all on the same server.
struct NatsHarness;

impl Harness for NatsHarness {
    type B = Nats;

    fn name() -> &'static str {
        "nats"
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            // Messages waiting out a retry or defer delay are kept in the server (a hold subject, moved
            // back to the topic's subject when due), not in the consumer.
            durable_delays: true,
            restart: false,
        }
    }

    async fn broker() -> Broker<Nats> {
        match Broker::<Nats>::new(config()).await {
            Ok(broker) => broker,
            Err(e) => panic!("cannot connect to NATS: {e}. {}", start_hint()),
        }
    }

    fn group_config(spec: &GroupSpec) -> ConsumerGroupConfig<Nats> {
        // shove 0.11's NatsConsumerGroupConfig has no message-size or per-key buffer settings; a scenario
        // that needs them on a group must not pass here unnoticed.
        assert!(
            spec.max_message_size.is_none() && spec.max_pending_per_key.is_none(),
            "NatsConsumerGroupConfig cannot express max_message_size / max_pending_per_key: {spec:?}"
        );
        let mut config = NatsConsumerGroupConfig::new(spec.min..=spec.max)
            .with_prefetch_count(spec.prefetch)
            .with_max_retries(spec.max_retries);
        if let Some(timeout) = spec.handler_timeout {
            config = config.with_handler_timeout(timeout);
        }
        ConsumerGroupConfig::new(config)
    }
}

conformance::conformance_suite!(NatsHarness);

/// The `shove::nats` facade types, used directly (not through `Broker<B>`). Where a test looks at the
/// server itself it uses the client's own JetStream context (`NatsClient::jetstream`) and assumes only that
/// a queue's stream has the queue's name in its own (the exact stream, subject and consumer names are the
/// backend's to choose).
mod facade {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures::StreamExt;
    use shove::nats::{
        JetStreamStatsProvider, NatsAutoscalerBackend, NatsClient, NatsConfig, NatsConsumer, NatsConsumerGroup,
        NatsConsumerGroupConfig, NatsConsumerGroupRegistry, NatsPublisher, NatsQueueStats, NatsQueueStatsProvider,
        NatsTopologyDeclarer,
    };
    use shove::{
        AutoscalerBackend, AutoscalerConfig, Backend, Broker, ConsumerOptions, Nats, Outcome, ScalingDecision,
        SequenceFailure, ShoveError, Topic, TopologyBuilder, define_sequenced_topic, define_topic,
    };
    use tokio::sync::{Mutex, Notify, oneshot};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::conformance::{FnHandler, Msg, Probe, Seen, WAIT, eventually, ms, unique};
    use super::{config, start_hint};

    async fn client() -> NatsClient {
        match <Nats as Backend>::connect(config()).await {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to NATS: {e}. {}", start_hint()),
        }
    }

    async fn close(client: &NatsClient) {
        <Nats as Backend>::close(client).await;
    }

    async fn publish<T: Topic<Message = Msg>>(client: &NatsClient, keys: &[&str]) {
        let publisher = NatsPublisher::new(client.clone()).await.expect("publisher");
        for (i, key) in keys.iter().enumerate() {
            let n = u32::try_from(i).expect("few messages");
            publisher.publish::<T>(&Msg::new(*key, n)).await.expect("publish");
        }
    }

    /// The names of the streams on the server whose name contains `part`.
    async fn streams_named_like(client: &NatsClient, part: &str) -> Vec<String> {
        let mut names = client.jetstream().stream_names();
        let mut found = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.expect("list streams");
            if name.contains(part) {
                found.push(name);
            }
        }
        found
    }

    /// A handler that records each call and acknowledges it only once `gate` is notified while it waits.
    fn gated(probe: &Probe<Msg>, gate: Arc<Notify>) -> FnHandler<Msg> {
        let live = probe.live.clone();
        FnHandler::new(move |msg: Msg, meta| {
            live.push(Seen {
                msg,
                meta,
                at: Instant::now(),
            });
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Outcome::Ack
            }
        })
    }

    /// Connecting to nothing, or asking for TLS on a `nats://` URL, fails with a connection error instead of
    /// hanging or panicking. Needs no server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_failures_are_connection_errors() {
        let nothing = NatsConfig::new("nats://127.0.0.1:1");
        match tokio::time::timeout(WAIT, NatsClient::connect(&nothing)).await {
            Ok(Err(ShoveError::Connection(_))) => {}
            Ok(Err(other)) => panic!("expected a connection error, got {other:?}"),
            Ok(Ok(_)) => panic!("connected to a closed port"),
            Err(_) => panic!("connecting to a closed port did not fail within {WAIT:?}"),
        }
        match tokio::time::timeout(WAIT, NatsClient::connect_with_retry(&nothing, 2)).await {
            Ok(Err(ShoveError::Connection(_))) => {}
            Ok(Err(other)) => panic!("expected a connection error, got {other:?}"),
            Ok(Ok(_)) => panic!("connected to a closed port"),
            Err(_) => panic!("two attempts at a closed port did not fail within {WAIT:?}"),
        }
        match tokio::time::timeout(WAIT, <Nats as Backend>::connect(NatsConfig::new("nats://127.0.0.1:1"))).await {
            Ok(Err(ShoveError::Connection(_))) => {}
            Ok(Err(other)) => panic!("expected a connection error, got {other:?}"),
            Ok(Ok(_)) => panic!("connected to a closed port"),
            Err(_) => panic!("Backend::connect to a closed port did not fail within {WAIT:?}"),
        }

        let mut tls = NatsConfig::new("nats://127.0.0.1:1");
        tls.tls_ca_cert = Some(PathBuf::from("/nonexistent/shove-test-ca.pem"));
        match tokio::time::timeout(WAIT, NatsClient::connect(&tls)).await {
            Ok(Err(ShoveError::Connection(msg))) => assert!(msg.to_lowercase().contains("tls"), "{msg}"),
            Ok(Err(other)) => panic!("expected a connection error naming TLS, got {other:?}"),
            Ok(Ok(_)) => panic!("TLS options with a nats:// URL must be refused"),
            Err(_) => panic!("connecting with TLS options on a nats:// URL did not fail within {WAIT:?}"),
        }
    }

    /// `NatsConfig` keeps the URL it is given, defaults to the local server, and its `Debug` shows no
    /// secret. Needs no server.
    #[test]
    fn config_defaults_and_debug_redacts_secrets() {
        assert_eq!(NatsConfig::default().url(), "nats://localhost:4222");
        assert_eq!(NatsConfig::new("nats://127.0.0.1:4999").url(), "nats://127.0.0.1:4999");

        let password = "pw-5a0c1e7b-never-printed";
        let token = "tok-93d2f4aa-never-printed";
        let nkey_seed = "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4";
        let config = NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            tls_ca_cert: None,
            tls_client_cert: None,
            tls_client_key: None,
            username: Some("shove-user".into()),
            password: Some(password.into()),
            token: Some(token.into()),
            nkey_seed: Some(nkey_seed.into()),
            creds_file: None,
        };
        let debug = format!("{config:?}");
        let pretty = format!("{config:#?}");
        for shown in [&debug, &pretty] {
            assert!(shown.contains("127.0.0.1:4222"), "the URL is shown: {shown}");
            for secret in [password, token, nkey_seed] {
                assert!(!shown.contains(secret), "Debug shows a secret ({secret}): {shown}");
            }
        }
        // A password in the URL itself is not shown either.
        let in_url = NatsConfig::new("nats://shove-user:pw-url-1f0e9c@127.0.0.1:4222");
        let shown = format!("{in_url:?}");
        assert!(
            !shown.contains("pw-url-1f0e9c"),
            "Debug shows the URL's password: {shown}"
        );
    }

    /// The declarer creates a topic's streams, its DLQ's included (idempotently); after it, publishing to
    /// the topic succeeds, the shards of a sequenced topic included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn declarer_creates_the_streams() {
        define_topic!(Plain, Msg, TopologyBuilder::new(unique("decl-plain")).dlq().build());
        define_sequenced_topic!(
            Ordered,
            Msg,
            Msg::key_of,
            TopologyBuilder::new(unique("decl-seq"))
                .sequenced(SequenceFailure::Skip)
                .routing_shards(2)
                .hold_queue(ms(100))
                .dlq()
                .build()
        );
        let client = client().await;
        let declarer = NatsTopologyDeclarer::new(client.clone());
        for _ in 0..2 {
            declarer.declare(Plain::topology()).await.expect("declare (idempotent)");
            declarer
                .declare(Ordered::topology())
                .await
                .expect("declare (idempotent)");
        }
        for queue in [Plain::topology().queue(), Ordered::topology().queue()] {
            assert!(
                !streams_named_like(&client, queue).await.is_empty(),
                "no stream is named after {queue}"
            );
            let dlq = format!("{queue}-dlq");
            assert!(
                !streams_named_like(&client, &dlq).await.is_empty(),
                "no stream is named after the DLQ {dlq}"
            );
        }
        publish::<Plain>(&client, &["a"]).await;
        publish::<Ordered>(&client, &["a", "b", "c"]).await;
        close(&client).await;
    }

    /// The registry declares on registration and refuses misregistration with topology errors; its
    /// groups consume once started and stop on `shutdown_all`; closing the client cancels its token.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registry_registers_starts_and_refuses_misuse() {
        define_topic!(Plain, Msg, TopologyBuilder::new(unique("reg-plain")).dlq().build());
        define_sequenced_topic!(
            Ordered,
            Msg,
            Msg::key_of,
            TopologyBuilder::new(unique("reg-seq"))
                .sequenced(SequenceFailure::Skip)
                .routing_shards(2)
                .hold_queue(ms(100))
                .dlq()
                .build()
        );
        // A sequenced topic type whose topology is not sequenced.
        define_sequenced_topic!(
            Unsequenced,
            Msg,
            Msg::key_of,
            TopologyBuilder::new(unique("reg-unseq")).dlq().build()
        );
        let client = client().await;
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        let factory = move || handler.clone();
        let mut registry = NatsConsumerGroupRegistry::new(client.clone()).with_default_handler_timeout(ms(5_000));
        let config = NatsConsumerGroupConfig::new(1..=2).with_prefetch_count(4);

        let err = registry
            .register::<Ordered, _>(config.clone(), factory.clone(), ())
            .await
            .expect_err("a sequenced topic on register");
        assert!(matches!(err, ShoveError::Topology(_)), "{err:?}");
        let err = registry
            .register_fifo::<Unsequenced, _>(config.clone(), factory.clone(), ())
            .await
            .expect_err("an unsequenced topology on register_fifo");
        assert!(matches!(err, ShoveError::Topology(_)), "{err:?}");
        registry
            .register::<Plain, _>(config.clone(), factory.clone(), ())
            .await
            .expect("register");
        let err = registry
            .register::<Plain, _>(config.clone(), factory.clone(), ())
            .await
            .expect_err("the same topic twice");
        assert!(matches!(err, ShoveError::Topology(_)), "{err:?}");
        registry
            .register_fifo::<Ordered, _>(config.clone(), factory.clone(), ())
            .await
            .expect("register_fifo");
        // Registration declared the streams, before any consumer ran.
        for queue in [Plain::topology().queue(), Ordered::topology().queue()] {
            assert!(
                !streams_named_like(&client, queue).await.is_empty(),
                "no stream is named after {queue}"
            );
        }

        assert_eq!(registry.groups().len(), 2);
        assert!(registry.groups().values().all(|g| g.active_consumers() == 0));
        // Published before any consumer runs: the streams keep the messages.
        publish::<Plain>(&client, &["a", "b"]).await;
        registry.start_all();
        let plain = registry
            .groups()
            .get(Plain::topology().queue())
            .expect("the plain group");
        assert_eq!(plain.active_consumers(), 1);
        assert_eq!(plain.queue(), Plain::topology().queue());
        assert_eq!(plain.config().prefetch_count(), 4);
        assert!(
            registry
                .groups_mut()
                .get_mut(Plain::topology().queue())
                .expect("group")
                .scale_up()
        );
        let token = client.shutdown_token();
        assert!(!token.is_cancelled());

        publish::<Ordered>(&client, &["a", "b"]).await;
        probe
            .live
            .wait_for("4 messages over both groups", |s| s.len() >= 4)
            .await;
        tokio::time::timeout(WAIT, registry.shutdown_all())
            .await
            .expect("shutdown_all drains promptly");
        assert!(registry.groups().values().all(|g| g.active_consumers() == 0));
        close(&client).await;
        assert!(token.is_cancelled(), "closing the client cancels its shutdown token");
    }

    /// `NatsConsumerGroup::new` starts nothing until `start`; then the group consumes until `shutdown`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_group_consumes_until_shutdown() {
        define_topic!(Standalone, Msg, TopologyBuilder::new(unique("group-new")).dlq().build());
        let queue = Standalone::topology().queue();
        let client = client().await;
        NatsTopologyDeclarer::new(client.clone())
            .declare(Standalone::topology())
            .await
            .expect("declare");
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        let mut group = NatsConsumerGroup::new::<Standalone, _>(
            queue,
            NatsConsumerGroupConfig::default(),
            client.clone(),
            CancellationToken::new(),
            move || handler.clone(),
            (),
        );
        assert_eq!(group.queue(), queue);
        assert_eq!(group.config().min_consumers(), 1);
        assert_eq!(group.config().max_consumers(), 4);
        assert_eq!(group.active_consumers(), 0);
        publish::<Standalone>(&client, &["a", "b", "c"]).await;
        tokio::time::sleep(ms(200)).await;
        assert!(probe.live.snapshot().is_empty(), "nothing is consumed before start");

        group.start();
        assert_eq!(group.active_consumers(), 1);
        probe.live.wait_for("3 messages", |s| s.len() >= 3).await;
        assert!(group.scale_up());
        assert_eq!(group.active_consumers(), 2);
        publish::<Standalone>(&client, &["d", "e"]).await;
        probe.live.wait_for("5 messages", |s| s.len() >= 5).await;
        tokio::time::timeout(WAIT, group.shutdown())
            .await
            .expect("shutdown drains promptly");
        assert_eq!(group.active_consumers(), 0);
        close(&client).await;
    }

    /// `NatsConsumer::run` stops on the options' shutdown token; `run_dlq` receives what was rejected
    /// and follows the client, not the other consumer's token.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_runs_until_its_token_and_reads_the_dlq() {
        define_topic!(Direct, Msg, TopologyBuilder::new(unique("consumer")).dlq().build());
        let client = client().await;
        NatsTopologyDeclarer::new(client.clone())
            .declare(Direct::topology())
            .await
            .expect("declare");
        let consumer = NatsConsumer::new(client.clone());
        let probe = Probe::<Msg>::new();
        let stop = CancellationToken::new();
        let run = {
            let consumer = consumer.clone();
            let handler = probe.handler(|m, _| if m.n == 1 { Outcome::Reject } else { Outcome::Ack });
            let options = ConsumerOptions::<Nats>::new().with_shutdown(stop.clone());
            tokio::spawn(async move { consumer.run::<Direct, _>(handler, (), options).await })
        };
        let dlq = {
            let consumer = consumer.clone();
            let handler = probe.dead_handler();
            tokio::spawn(async move { consumer.run_dlq::<Direct, _>(handler, ()).await })
        };
        publish::<Direct>(&client, &["k", "k", "k"]).await;
        probe.live.wait_for("3 messages", |s| s.len() >= 3).await;
        probe
            .dead
            .wait_for("the rejected message in the DLQ", |d| !d.is_empty())
            .await;
        assert_eq!(probe.dead.snapshot()[0].msg, Msg::new("k", 1));

        stop.cancel();
        let ended = tokio::time::timeout(WAIT, run).await.expect("run stops on its token");
        ended.expect("run task").expect("run ends cleanly");
        assert!(
            !dlq.is_finished(),
            "run_dlq follows the client, not the other consumer's token"
        );
        close(&client).await;
        let ended = tokio::time::timeout(WAIT, dlq)
            .await
            .expect("run_dlq stops when the client is closed");
        let _ = ended.expect("run_dlq task");
    }

    /// `ConsumerOptions::<Nats>::with_max_ack_pending` bounds the deliveries not yet acknowledged, whatever
    /// the prefetch: with 2, a consumer whose handlers all wait holds two messages, no more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_ack_pending_bounds_unacknowledged_deliveries() {
        define_topic!(Bounded, Msg, TopologyBuilder::new(unique("ack-pending")).dlq().build());
        let client = client().await;
        NatsTopologyDeclarer::new(client.clone())
            .declare(Bounded::topology())
            .await
            .expect("declare");
        publish::<Bounded>(&client, &["a", "b", "c", "d", "e"]).await;
        let probe = Probe::<Msg>::new();
        let gate = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let run = {
            let consumer = NatsConsumer::new(client.clone());
            let handler = gated(&probe, gate.clone());
            let options = ConsumerOptions::<Nats>::preset(10)
                .with_max_ack_pending(2)
                .with_shutdown(stop.clone());
            assert_eq!(options.max_ack_pending, Some(2));
            tokio::spawn(async move { consumer.run::<Bounded, _>(handler, (), options).await })
        };
        probe.live.wait_for("2 handler calls", |s| s.len() >= 2).await;
        tokio::time::sleep(ms(500)).await;
        assert_eq!(
            probe.live.len(),
            2,
            "max_ack_pending 2 lets no third message in while two are unacknowledged"
        );
        eventually("every message to be handled", WAIT, || async {
            gate.notify_waiters();
            probe.live.len() >= 5
        })
        .await;
        eventually("the last handlers to finish", WAIT, || async {
            gate.notify_waiters();
            let stats = JetStreamStatsProvider::new(client.clone())
                .get_queue_stats(Bounded::topology().queue())
                .await
                .expect("stats");
            (stats.messages_pending, stats.messages_ack_pending) == (0, 0)
        })
        .await;
        stop.cancel();
        let ended = tokio::time::timeout(WAIT, run).await.expect("run stops on its token");
        ended.expect("run task").expect("run ends cleanly");
        close(&client).await;
    }

    /// `run_fifo_until_timeout` consumes the shards in per-key order until its signal, and reports a clean
    /// run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_fifo_until_timeout_keeps_key_order_and_stops_on_signal() {
        define_sequenced_topic!(
            Ordered,
            Msg,
            Msg::key_of,
            TopologyBuilder::new(unique("fifo-run"))
                .sequenced(SequenceFailure::Skip)
                .routing_shards(2)
                .hold_queue(ms(100))
                .dlq()
                .build()
        );
        let client = client().await;
        NatsTopologyDeclarer::new(client.clone())
            .declare(Ordered::topology())
            .await
            .expect("declare");
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        let (tx, rx) = oneshot::channel::<()>();
        let run = {
            let consumer = NatsConsumer::new(client.clone());
            tokio::spawn(async move {
                let signal = async move {
                    let _ = rx.await;
                };
                consumer
                    .run_fifo_until_timeout::<Ordered, _, _>(handler, (), ConsumerOptions::new(), signal, ms(5_000))
                    .await
            })
        };
        let keys: Vec<&str> = ["a", "b", "c"].iter().cycle().take(12).copied().collect();
        publish::<Ordered>(&client, &keys).await;
        let seen = probe.live.wait_for("12 messages", |s| s.len() >= 12).await;
        for key in ["a", "b", "c"] {
            let order: Vec<u32> = seen.iter().filter(|s| s.msg.key == key).map(|s| s.msg.n).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(order, sorted, "key {key} out of order");
        }
        let _ = tx.send(());
        let outcome = tokio::time::timeout(WAIT, run)
            .await
            .expect("the run stops on its signal")
            .expect("run task");
        assert!(outcome.is_clean(), "{outcome:?}");
        close(&client).await;
    }

    /// `JetStreamStatsProvider` (and `Broker::queue_stats_provider`) counts messages not yet delivered as
    /// pending and delivered-unacknowledged ones as ack-pending, also before any consumer has run; a
    /// sequenced topic's main name sums its shards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_provider_counts_pending_and_ack_pending() {
        define_topic!(Counted, Msg, TopologyBuilder::new(unique("stats")).dlq().build());
        define_sequenced_topic!(
            Sharded,
            Msg,
            Msg::key_of,
            TopologyBuilder::new(unique("stats-seq"))
                .sequenced(SequenceFailure::Skip)
                .routing_shards(3)
                .hold_queue(ms(100))
                .dlq()
                .build()
        );
        let queue = Counted::topology().queue();
        let client = client().await;
        let declarer = NatsTopologyDeclarer::new(client.clone());
        declarer.declare(Counted::topology()).await.expect("declare");
        declarer.declare(Sharded::topology()).await.expect("declare");
        let stats = JetStreamStatsProvider::new(client.clone());
        let read = |s: NatsQueueStats| (s.messages_pending, s.messages_ack_pending);

        assert_eq!(read(stats.get_queue_stats(queue).await.expect("stats")), (0, 0));
        publish::<Counted>(&client, &["a", "b", "c"]).await;
        assert_eq!(read(stats.get_queue_stats(queue).await.expect("stats")), (3, 0));
        let bridge = Broker::<Nats>::from_client(client.clone())
            .queue_stats_provider()
            .get_queue_stats(queue)
            .await
            .expect("stats through the broker");
        assert_eq!(read(bridge), (3, 0));

        publish::<Sharded>(&client, &["a", "b", "c", "d", "e"]).await;
        let sharded = stats
            .get_queue_stats(Sharded::topology().queue())
            .await
            .expect("stats of a sequenced topic");
        assert_eq!(read(sharded), (5, 0));

        // A consumer holding all three messages in its handlers: none pending, three ack-pending.
        let probe = Probe::<Msg>::new();
        let gate = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let run = {
            let consumer = NatsConsumer::new(client.clone());
            let handler = gated(&probe, gate.clone());
            let options = ConsumerOptions::<Nats>::new().with_shutdown(stop.clone());
            tokio::spawn(async move { consumer.run::<Counted, _>(handler, (), options).await })
        };
        probe.live.wait_for("3 handler calls", |s| s.len() >= 3).await;
        eventually("0 pending and 3 ack-pending", WAIT, || async {
            read(stats.get_queue_stats(queue).await.expect("stats")) == (0, 3)
        })
        .await;
        eventually("every acknowledgement to be counted", WAIT, || async {
            gate.notify_waiters();
            read(stats.get_queue_stats(queue).await.expect("stats")) == (0, 0)
        })
        .await;
        stop.cancel();
        let ended = tokio::time::timeout(WAIT, run).await.expect("run stops on its token");
        ended.expect("run task").expect("run ends cleanly");
        close(&client).await;
    }

    /// Fixed numbers, to see how the autoscaler backend passes them on.
    struct FixedStats(Arc<AtomicU32>);

    impl NatsQueueStatsProvider for FixedStats {
        async fn get_queue_stats(&self, _queue: &str) -> shove::error::Result<NatsQueueStats> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(NatsQueueStats {
                messages_pending: 42,
                messages_ack_pending: 7,
            })
        }
    }

    /// `NatsAutoscalerBackend` lists a registry's groups, measures them and scales them; with another
    /// stats provider it reports that provider's numbers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn autoscaler_backend_lists_measures_and_scales() {
        define_topic!(Scaled, Msg, TopologyBuilder::new(unique("scaled")).dlq().build());
        let queue = Scaled::topology().queue().to_string();
        let client = client().await;
        let registry = Arc::new(Mutex::new(NatsConsumerGroupRegistry::new(client.clone())));
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        registry
            .lock()
            .await
            .register::<Scaled, _>(
                NatsConsumerGroupConfig::new(1..=3).with_prefetch_count(6),
                move || handler.clone(),
                (),
            )
            .await
            .expect("register");
        publish::<Scaled>(&client, &["a", "b"]).await;

        let scaler = NatsAutoscalerBackend::new(client.clone(), registry.clone());
        assert_eq!(scaler.list_groups().await.expect("list_groups"), vec![queue.clone()]);
        let metrics = scaler.fetch_metrics(&queue).await.expect("fetch_metrics");
        assert_eq!(
            (
                metrics.messages_ready,
                metrics.messages_in_flight,
                metrics.active_consumers,
                metrics.prefetch_count
            ),
            (2, 0, 0, 6)
        );
        let err = scaler
            .fetch_metrics(&"no-such-group".to_string())
            .await
            .expect_err("an unknown group");
        assert!(matches!(err, ShoveError::Topology(_)), "{err:?}");

        registry.lock().await.start_all();
        probe.live.wait_for("2 messages", |s| s.len() >= 2).await;
        scaler
            .scale(&queue, ScalingDecision::ScaleUp(5))
            .await
            .expect("scale up");
        assert_eq!(scaler.fetch_metrics(&queue).await.expect("metrics").active_consumers, 3);
        eventually("scale-down to the minimum", WAIT, || async {
            scaler
                .scale(&queue, ScalingDecision::ScaleDown(5))
                .await
                .expect("scale down");
            scaler.fetch_metrics(&queue).await.expect("metrics").active_consumers == 1
        })
        .await;

        let calls = Arc::new(AtomicU32::new(0));
        let fixed = NatsAutoscalerBackend::with_stats_provider(FixedStats(calls.clone()), registry.clone());
        let metrics = fixed.fetch_metrics(&queue).await.expect("fetch_metrics");
        assert_eq!((metrics.messages_ready, metrics.messages_in_flight), (42, 7));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The ready-made autoscaler over the same registry builds without touching the server.
        let _autoscaler =
            NatsAutoscalerBackend::autoscaler(client.clone(), registry.clone(), AutoscalerConfig::default());

        registry.lock().await.shutdown_all().await;
        close(&client).await;
    }

    /// `NatsPublisher::publish_batch` reports how many it published; `publish_with_headers` hands the extra
    /// headers to the handler.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publisher_batches_and_headers_arrive() {
        define_topic!(Batched, Msg, TopologyBuilder::new(unique("batch")).dlq().build());
        let client = client().await;
        NatsTopologyDeclarer::new(client.clone())
            .declare(Batched::topology())
            .await
            .expect("declare");
        let publisher = NatsPublisher::new(client.clone()).await.expect("publisher");
        let batch: Vec<Msg> = (0..5).map(|n| Msg::new("k", n)).collect();
        let (published, result) = publisher.publish_batch::<Batched>(&batch).await;
        result.expect("publish_batch");
        assert_eq!(published, 5);
        let (published, result) = publisher.publish_batch::<Batched>(&[]).await;
        result.expect("an empty batch");
        assert_eq!(published, 0);
        publisher
            .publish_with_headers::<Batched>(&Msg::new("h", 0), super::conformance::headers([("x-tenant", "acme")]))
            .await
            .expect("publish_with_headers");

        let probe = Probe::<Msg>::new();
        let stop = CancellationToken::new();
        let run = {
            let consumer = NatsConsumer::new(client.clone());
            let handler = probe.handler(|_, _| Outcome::Ack);
            let options = ConsumerOptions::<Nats>::new().with_shutdown(stop.clone());
            tokio::spawn(async move { consumer.run::<Batched, _>(handler, (), options).await })
        };
        let seen = probe.live.wait_for("6 messages", |s| s.len() >= 6).await;
        let mut batch_seen: Vec<u32> = seen.iter().filter(|s| s.msg.key == "k").map(|s| s.msg.n).collect();
        batch_seen.sort_unstable();
        assert_eq!(batch_seen, vec![0, 1, 2, 3, 4]);
        let with_headers = seen
            .iter()
            .find(|s| s.msg.key == "h")
            .expect("the message with headers");
        assert_eq!(
            with_headers.meta.headers.get("x-tenant").map(String::as_str),
            Some("acme"),
            "{:?}",
            with_headers.meta
        );
        stop.cancel();
        let ended = tokio::time::timeout(WAIT, run).await.expect("run stops on its token");
        ended.expect("run task").expect("run ends cleanly");
        close(&client).await;
    }
}
