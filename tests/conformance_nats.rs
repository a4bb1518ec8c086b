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
//! connection. The restart scenarios run a nats-server of their own (`$SHOVE_NATS_SERVER`, else the one on
//! PATH) on a free port.
#![cfg(feature = "nats")]

mod conformance;

use conformance::own_broker::{OwnBrokerSpec, find_program};
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

/// The server's address, from its URL.
fn address() -> std::net::SocketAddr {
    let url = nats_url();
    let host_port = url.rsplit("://").next().unwrap_or(&url).trim_end_matches('/');
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("SHOVE_NATS_URL must be nats://<ip>:<port> for the proxy scenarios ({url}): {e}"))
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
            // The ack subject's delivery count, less the hand-backs the client recorded.
            lost_attempts: true,
            // JetStream flushes a consumer's state (its ack floor) to its store in the background.
            kill_9_forgets_recent_acks: true,
            broker_kill_9_gap: None,
        }
    }

    async fn broker() -> Broker<Nats> {
        match Broker::<Nats>::new(config()).await {
            Ok(broker) => broker,
            Err(e) => panic!("cannot connect to NATS: {e}. {}", start_hint()),
        }
    }

    fn address() -> Option<std::net::SocketAddr> {
        Some(address())
    }

    fn own_broker() -> Option<OwnBrokerSpec> {
        // The server under test's version: `$SHOVE_NATS_SERVER` (scripts/test.sh sets it to the current
        // server for the run on 4223), else the one on PATH (Debian's 2.9.10).
        let program = find_program(
            "nats-server",
            "SHOVE_NATS_SERVER",
            &[std::path::PathBuf::from("/usr/sbin/nats-server")],
        );
        Some(OwnBrokerSpec::new(
            program,
            &["-a", "127.0.0.1", "-p", "{port}", "-js", "-sd", "{dir}/store"],
            "Server is ready",
        ))
    }

    async fn broker_at(addr: std::net::SocketAddr) -> Broker<Nats> {
        match Broker::<Nats>::new(NatsConfig::new(format!("nats://{addr}"))).await {
            Ok(broker) => broker,
            Err(e) => panic!("cannot connect to NATS through {addr}: {e}. {}", start_hint()),
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

    use futures::StreamExt;
    use shove::nats::{
        JetStreamStatsProvider, NatsAutoscalerBackend, NatsClient, NatsConfig, NatsConsumer, NatsConsumerGroup,
        NatsConsumerGroupConfig, NatsConsumerGroupRegistry, NatsPublisher, NatsQueueStats, NatsQueueStatsProvider,
        NatsTopologyDeclarer,
    };
    use shove::{
        Backend, ConsumerOptions, Nats, Outcome, ShoveError, Topic, TopologyBuilder, define_sequenced_topic,
        define_topic,
    };
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    use super::conformance::facades::{self, gated, sharded};
    use super::conformance::{Msg, Probe, WAIT, eventually, ms, unique};
    use super::{config, start_hint};

    async fn client() -> NatsClient {
        facades::connect::<Nats>(config(), &start_hint()).await
    }

    async fn close(client: &NatsClient) {
        facades::close::<Nats>(client).await;
    }

    async fn publish<T: Topic<Message = Msg>>(client: &NatsClient, keys: &[&str]) {
        facades::publish::<Nats, T>(client, keys).await;
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

    /// Each queue has a stream named after it (registration declared them).
    async fn streams_declared(client: &NatsClient, plain: &str, sequenced: &str) {
        for queue in [plain, sequenced] {
            assert!(
                !streams_named_like(client, queue).await.is_empty(),
                "no stream is named after {queue}"
            );
        }
    }

    facades::registry_registers_starts_and_refuses_misuse! {
        backend: Nats,
        connect: client,
        registry: NatsConsumerGroupRegistry,
        config: NatsConsumerGroupConfig,
        token: |_: &NatsConsumerGroupRegistry, client: &NatsClient| client.shutdown_token(),
        publish_before_start: true,
        declared: streams_declared,
    }

    facades::consumer_runs_until_its_token_and_reads_the_dlq! {
        backend: Nats,
        connect: client,
        consumer: NatsConsumer,
        declarer: NatsTopologyDeclarer,
    }

    facades::run_fifo_until_timeout_keeps_key_order_and_stops_on_signal! {
        backend: Nats,
        connect: client,
        consumer: NatsConsumer,
        declarer: NatsTopologyDeclarer,
    }

    facades::stats_provider_counts! {
        stats_provider_counts_pending_and_ack_pending,
        backend: Nats,
        connect: client,
        consumer: NatsConsumer,
        declarer: NatsTopologyDeclarer,
        provider: JetStreamStatsProvider,
        stats: NatsQueueStats { messages_pending, messages_ack_pending },
    }

    facades::autoscaler_backend_lists_measures_and_scales! {
        backend: Nats,
        connect: client,
        autoscaler: NatsAutoscalerBackend,
        registry: NatsConsumerGroupRegistry,
        config: NatsConsumerGroupConfig,
        provider_trait: NatsQueueStatsProvider,
        stats: NatsQueueStats { messages_pending, messages_ack_pending },
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
        define_sequenced_topic!(Ordered, Msg, Msg::key_of, sharded("decl-seq", 2));
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

    /// A consumer of `T` whose handlers all wait for `gate`, over `n` published messages.
    struct Gated {
        probe: Probe<Msg>,
        gate: Arc<Notify>,
        stop: CancellationToken,
        run: tokio::task::JoinHandle<Result<(), ShoveError>>,
        n: usize,
    }

    impl Gated {
        /// Declares `T`, publishes `n` messages and starts the consumer with `options`.
        async fn start<T: Topic<Message = Msg>>(client: &NatsClient, n: usize, options: ConsumerOptions<Nats>) -> Self {
            NatsTopologyDeclarer::new(client.clone())
                .declare(T::topology())
                .await
                .expect("declare");
            let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            publish::<T>(client, &keys.iter().map(String::as_str).collect::<Vec<_>>()).await;
            let probe = Probe::<Msg>::new();
            let gate = Arc::new(Notify::new());
            let stop = CancellationToken::new();
            let consumer = NatsConsumer::new(client.clone());
            let handler = gated(&probe, gate.clone());
            let options = options.with_shutdown(stop.clone());
            let run = tokio::spawn(async move { consumer.run::<T, _>(handler, (), options).await });
            Self {
                probe,
                gate,
                stop,
                run,
                n,
            }
        }

        /// Opens the gate until every message was handled and acknowledged, then stops the consumer.
        async fn finish<T: Topic>(self, client: &NatsClient) {
            eventually("every message to be handled and acknowledged", WAIT, || async {
                self.gate.notify_waiters();
                self.probe.live.len() >= self.n && stats::<T>(client).await == (0, 0)
            })
            .await;
            self.stop.cancel();
            let ended = tokio::time::timeout(WAIT, self.run)
                .await
                .expect("run stops on its token");
            ended.expect("run task").expect("run ends cleanly");
        }
    }

    /// (not yet delivered, delivered and not acknowledged) of `T`'s queue.
    async fn stats<T: Topic>(client: &NatsClient) -> (u64, u64) {
        let s = JetStreamStatsProvider::new(client.clone())
            .get_queue_stats(T::topology().queue())
            .await
            .expect("stats");
        (s.messages_pending, s.messages_ack_pending)
    }

    /// `ConsumerOptions::<Nats>::with_max_ack_pending` bounds the deliveries not yet acknowledged, whatever
    /// the prefetch: with 2, a consumer whose handlers all wait holds two messages, no more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_ack_pending_bounds_unacknowledged_deliveries() {
        define_topic!(Bounded, Msg, TopologyBuilder::new(unique("ack-pending")).dlq().build());
        let client = client().await;
        let options = ConsumerOptions::<Nats>::preset(10).with_max_ack_pending(2);
        assert_eq!(options.max_ack_pending, Some(2));
        let run = Gated::start::<Bounded>(&client, 5, options).await;
        run.probe.live.wait_for("2 handler calls", |s| s.len() >= 2).await;
        tokio::time::sleep(ms(500)).await;
        assert_eq!(
            run.probe.live.len(),
            2,
            "max_ack_pending 2 lets no third message in while two are unacknowledged"
        );
        run.finish::<Bounded>(&client).await;
        close(&client).await;
    }

    /// Prefetch on NATS: a consumer whose handlers are slow holds `prefetch` messages, no more (it reads
    /// ahead only while its handlers are fast): with prefetch 2 and every handler waiting, 2 are being
    /// handled, none waits in the consumer, and the other 8 stay on the server for the rest of the group.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_handlers_hold_no_more_than_the_prefetch() {
        define_topic!(Ahead, Msg, TopologyBuilder::new(unique("ahead")).dlq().build());
        let client = client().await;
        let run = Gated::start::<Ahead>(&client, 10, ConsumerOptions::<Nats>::preset(2)).await;
        eventually("2 handlers running, 8 messages left on the server", WAIT, || async {
            run.probe.live.len() == 2 && stats::<Ahead>(&client).await == (8, 2)
        })
        .await;
        assert_eq!(run.probe.live.len(), 2, "prefetch 2 runs 2 handlers at once");
        run.finish::<Ahead>(&client).await;
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

/// The tasks of a consumer group share the topic's durable consumers on the server: however many tasks
/// run, the topic has one durable consumer for its messages and one for its held retries, and the tasks
/// share the work.
mod shared_durables {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::StreamExt;
    use shove::nats::NatsConsumerGroupConfig;
    use shove::{Broker, ConsumerGroupConfig, MessageMetadata, Nats, Outcome, Topic, TopologyBuilder, define_topic};

    use super::conformance::facades;
    use super::conformance::{DRAIN, FnHandler, Msg, Running, active_consumers, eventually, ms, unique};
    use super::{config, start_hint};

    const TOTAL: u32 = 300;
    const TASKS: u16 = 3;

    define_topic!(
        Shared,
        Msg,
        TopologyBuilder::new(unique("shared-durables"))
            .hold_queue(ms(100))
            .dlq()
            .build()
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_tasks_share_the_topics_durable_consumers() {
        let queue = Shared::topology().queue().to_string();
        let broker = match Broker::<Nats>::new(config()).await {
            Ok(broker) => broker,
            Err(e) => panic!("cannot connect to NATS: {e}. {}", start_hint()),
        };
        broker.topology().declare::<Shared>().await.expect("declare");

        // The factory makes one handler per task; each records its own number with what it handled.
        let instances = Arc::new(AtomicUsize::new(0));
        let handled: Arc<Mutex<Vec<(u32, usize)>>> = Arc::default();
        let factory = {
            let (instances, handled) = (instances.clone(), handled.clone());
            move || {
                let instance = instances.fetch_add(1, Ordering::SeqCst);
                let handled = handled.clone();
                FnHandler::new(move |msg: Msg, _: MessageMetadata| {
                    let handled = handled.clone();
                    async move {
                        tokio::time::sleep(ms(5)).await;
                        handled.lock().expect("handled").push((msg.n, instance));
                        Outcome::Ack
                    }
                })
            }
        };
        let mut group = broker.consumer_group();
        group
            .register::<Shared, _>(
                ConsumerGroupConfig::new(NatsConsumerGroupConfig::new(TASKS..=TASKS).with_prefetch_count(2)),
                factory,
            )
            .await
            .expect("register the group");
        let running = Running::group(group, DRAIN);
        eventually("every task of the group running", Duration::from_secs(30), || async {
            active_consumers(&broker, &queue).await == Some(TASKS)
        })
        .await;

        let publisher = broker.publisher().await.expect("publisher");
        let messages: Vec<Msg> = (0..TOTAL).map(|n| Msg::new("shared", n)).collect();
        publisher.publish_batch::<Shared>(&messages).await.expect("publish");
        let distinct = || {
            handled
                .lock()
                .expect("handled")
                .iter()
                .map(|(n, _)| *n)
                .collect::<BTreeSet<_>>()
                .len()
        };
        eventually("every message handled", Duration::from_secs(60), || async {
            distinct() == TOTAL as usize
        })
        .await;

        // The durable consumers on the topic's streams (the DLQ has none: no DLQ consumer runs).
        let client = shove::nats::NatsClient::connect(&config())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to NATS: {e}. {}", start_hint()));
        let js = client.jetstream();
        let mut names = js.stream_names();
        let mut durables = BTreeSet::new();
        while let Some(name) = names.next().await {
            let name = name.expect("list streams");
            if !name.contains(&queue) {
                continue;
            }
            let stream = js.get_stream(&name).await.expect("the stream");
            let mut consumers = stream.consumer_names();
            while let Some(consumer) = consumers.next().await {
                durables.insert(format!("{name}/{}", consumer.expect("list consumers")));
            }
        }
        assert_eq!(
            durables.len(),
            2,
            "one durable consumer for the topic's messages and one for its held retries, with {TASKS} tasks \
             running: {durables:?}"
        );
        let mut per_instance: BTreeMap<usize, usize> = BTreeMap::new();
        for (_, instance) in handled.lock().expect("handled").iter() {
            *per_instance.entry(*instance).or_default() += 1;
        }
        assert!(
            per_instance.len() > 1,
            "only one task handled messages: (task, messages) {per_instance:?}"
        );
        assert_eq!(running.stop().await.exit_code(), 0);
        broker.close().await;
        facades::close::<Nats>(&client).await;
    }
}

/// Issue 12, item 8: a password or token in the URL shows in no error of a failed connection.
mod secrets {
    use shove::nats::NatsConfig;
    use shove::{Broker, Nats};

    #[tokio::test]
    async fn a_password_in_the_url_never_shows_in_a_connection_error() {
        // Port 1 on loopback: nothing listens there, so the connection is refused.
        for url in ["nats://app:s3cretpw@127.0.0.1:1", "nats://s3cretpw@127.0.0.1:1"] {
            let error = match Broker::<Nats>::new(NatsConfig::new(url)).await {
                Ok(_) => panic!("connected to a closed port ({url})"),
                Err(e) => e,
            };
            for shown in [error.to_string(), format!("{error:?}")] {
                assert!(!shown.contains("s3cretpw"), "the password shows: {shown}");
            }
        }
    }
}

/// Issue 12, item 4: a message over the server's `max_payload` (1 MiB by default) is refused at publish
/// with a non-retryable `Validation` error, and nothing of its batch is stored; the connection the
/// server would otherwise close stays usable.
mod oversize {
    use serde::{Deserialize, Serialize};
    use shove::nats::NatsQueueStatsProvider;
    use shove::{ShoveError, Topic, TopologyBuilder, define_topic};

    use super::NatsHarness;
    use super::conformance::{Harness, unique};

    #[derive(Debug, Serialize, Deserialize)]
    struct Blob {
        body: String,
    }

    #[tokio::test]
    async fn a_message_over_max_payload_is_refused_at_publish() {
        define_topic!(Blobs, Blob, TopologyBuilder::new(unique("oversize")).dlq().build());
        let broker = NatsHarness::broker().await;
        broker.topology().declare::<Blobs>().await.expect("declare");
        let publisher = broker.publisher().await.expect("publisher");
        let small = Blob { body: "ok".into() };
        let big = Blob {
            body: "x".repeat(2 * 1024 * 1024),
        };
        match publisher.publish_batch::<Blobs>(&[small, big]).await {
            Err(ShoveError::Validation(msg)) => {
                assert!(msg.contains("max_payload"), "the error names the limit: {msg}");
            }
            other => panic!("a 2 MiB message must be refused at publish, got {other:?}"),
        }
        let depth = broker
            .queue_stats_provider()
            .get_queue_stats(Blobs::topology().queue())
            .await
            .expect("stats");
        assert_eq!(depth.messages_pending, 0, "nothing of the refused batch is stored");
        publisher
            .publish::<Blobs>(&Blob { body: "after".into() })
            .await
            .expect("the connection is still usable");
        broker.close().await;
    }
}
