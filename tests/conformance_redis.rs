//! The conformance suite (`tests/conformance/`) on Redis Streams, plus tests of the `shove::redis` facade
//! types used directly.
//!
//! Needs a Redis-compatible server at `$SHOVE_REDIS_URL` (default `redis://127.0.0.1:6379/`);
//! `scripts/test.sh` starts Redis on 6379, and runs this binary a second time against Valkey on 6380.
//! Every scenario uses its own stream names, so the tests run in parallel against one server.
//!
//! Capabilities: `durable_delays` — retry and defer delays are held in the server (a sorted set per hold
//! queue), so a message waiting out its delay survives the consumer's connection. The restart scenarios
//! run a server of their own (`$SHOVE_REDIS_SERVER`, else redis-server from PATH) with an fsynced
//! append-only file.
#![cfg(feature = "redis-streams")]

mod conformance;

use conformance::own_broker::{OwnBrokerSpec, find_program};
use conformance::{Capabilities, GroupSpec, Harness};
use shove::redis::{RedisConfig, RedisConsumerGroupConfig, RedisMode};
use shove::{Broker, ConsumerGroupConfig, Redis};

/// The server every test connects to: `$SHOVE_REDIS_URL`, else the local Redis.
fn redis_url() -> String {
    std::env::var("SHOVE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// Settings for the server under test.
fn config() -> RedisConfig {
    RedisConfig::new(RedisMode::Standalone { url: redis_url() })
}

/// The server's address, from its URL (`redis://<ip>:<port>/`).
fn address() -> std::net::SocketAddr {
    let url = redis_url();
    let host_port = url.rsplit("://").next().unwrap_or(&url).trim_end_matches('/');
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("SHOVE_REDIS_URL must be redis://<ip>:<port>/ for the proxy scenarios ({url}): {e}"))
}

/// What to do when the server is not there.
fn start_hint() -> String {
    format!(
        "a Redis-compatible server must listen at {} (set SHOVE_REDIS_URL to use another); run \
         scripts/test.sh, which installs and starts Redis on 6379 and Valkey on 6380",
        redis_url()
    )
}

/// Drives the suite on `shove::Redis`: a new client per scenario, all on the same server.
struct RedisHarness;

impl Harness for RedisHarness {
    type B = Redis;

    fn name() -> &'static str {
        "redis"
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            // Messages waiting out a retry or defer delay are kept in the server (a sorted set per hold
            // queue, moved back to the stream when due), not in the consumer.
            durable_delays: true,
            // The pending entry's delivery count.
            lost_attempts: true,
            kill_9_forgets_recent_acks: false,
            broker_kill_9_gap: None,
        }
    }

    async fn broker() -> Broker<Redis> {
        match Broker::<Redis>::new(config()).await {
            Ok(broker) => broker,
            Err(e) => panic!("cannot connect to Redis: {e}. {}", start_hint()),
        }
    }

    fn address() -> Option<std::net::SocketAddr> {
        Some(address())
    }

    fn own_broker() -> Option<OwnBrokerSpec> {
        // `$SHOVE_REDIS_SERVER` (scripts/test.sh sets it to valkey-server for the run on 6380), else
        // redis-server from PATH. Every write is fsynced to the append-only file before it is
        // acknowledged, as a deployment that must survive kill -9 runs it.
        let program = find_program(
            "redis-server",
            "SHOVE_REDIS_SERVER",
            &[std::path::PathBuf::from("/usr/bin/redis-server")],
        );
        Some(OwnBrokerSpec::new(
            program,
            &[
                "--bind",
                "127.0.0.1",
                "--port",
                "{port}",
                "--dir",
                "{dir}",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            "Ready to accept connections",
        ))
    }

    async fn broker_at(addr: std::net::SocketAddr) -> Broker<Redis> {
        let config = RedisConfig::new(RedisMode::Standalone {
            url: format!("redis://{addr}/"),
        });
        match Broker::<Redis>::new(config).await {
            Ok(broker) => broker,
            Err(e) => panic!("cannot connect to Redis through {addr}: {e}. {}", start_hint()),
        }
    }

    fn group_config(spec: &GroupSpec) -> ConsumerGroupConfig<Redis> {
        let mut config = RedisConsumerGroupConfig::new(spec.min..=spec.max)
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

conformance::conformance_suite!(RedisHarness);

/// The `shove::redis` facade types, used directly (not through `Broker<B>`). Where a test looks at the
/// server itself it opens its own connection with the `redis` crate and checks only names the API
/// documents: a topic's stream is named as its queue, shard streams `"{queue}-seq-{i}"`, the consumer
/// group `"shove"` unless configured, the payload in the entry field `payload`.
mod facade {
    use std::future::pending;
    use std::sync::Arc;
    use std::time::Duration;

    use redis::AsyncCommands;
    use redis::streams::{StreamInfoGroupsReply, StreamRangeReply};
    use shove::redis::{
        RedisAutoscalerBackend, RedisClient, RedisConsumer, RedisConsumerGroup, RedisConsumerGroupConfig,
        RedisConsumerGroupRegistry, RedisMode, RedisQueueStats, RedisQueueStatsProvider, RedisTopologyDeclarer,
        XlenStatsProvider, spawn_reaper,
    };
    use shove::{
        Backend, ConsumerOptions, Outcome, Redis, ShoveError, Topic, TopologyBuilder, define_sequenced_topic,
        define_topic,
    };
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    use super::conformance::facades::{self, gated, sharded, stop_cleanly, stop_signal};
    use super::conformance::{FnHandler, Msg, Probe, WAIT, eventually, ms, unique};
    use super::{config, redis_url, start_hint};

    async fn client_with(config: shove::redis::RedisConfig) -> RedisClient {
        match <Redis as Backend>::connect(config).await {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to Redis: {e}. {}", start_hint()),
        }
    }

    /// A plain connection to the server under test, to look at what shove left there.
    async fn raw() -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .expect("a valid SHOVE_REDIS_URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Redis: {e}. {}", start_hint()))
    }

    /// The consumer groups of `stream` (none when the stream does not exist).
    async fn groups_of(con: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
        let exists: bool = con.exists(stream).await.expect("EXISTS");
        if !exists {
            return Vec::new();
        }
        let reply: StreamInfoGroupsReply = con.xinfo_groups(stream).await.expect("XINFO GROUPS");
        reply.groups.into_iter().map(|g| g.name).collect()
    }

    async fn client() -> RedisClient {
        client_with(config()).await
    }

    async fn close(client: &RedisClient) {
        facades::close::<Redis>(client).await;
    }

    async fn publish<T: Topic<Message = Msg>>(client: &RedisClient, keys: &[&str]) {
        facades::publish::<Redis, T>(client, keys).await;
    }

    /// Registration created the plain topic's stream and a sequenced topic's shard streams, each with the
    /// consumer group `shove`.
    async fn groups_declared(_client: &RedisClient, plain: &str, sequenced: &str) {
        let mut con = raw().await;
        assert_eq!(groups_of(&mut con, plain).await, vec!["shove"]);
        let shard = RedisTopologyDeclarer::shard_stream_name(sequenced, 1);
        assert_eq!(groups_of(&mut con, &shard).await, vec!["shove"]);
    }

    facades::registry_registers_starts_and_refuses_misuse! {
        backend: Redis,
        connect: client,
        registry: RedisConsumerGroupRegistry,
        config: RedisConsumerGroupConfig,
        token: |registry: &RedisConsumerGroupRegistry, _: &RedisClient| registry.broker_shutdown_token(),
        publish_before_start: false,
        declared: groups_declared,
    }

    facades::consumer_runs_until_its_token_and_reads_the_dlq! {
        backend: Redis,
        connect: client,
        consumer: RedisConsumer,
        declarer: RedisTopologyDeclarer,
    }

    facades::run_fifo_until_timeout_keeps_key_order_and_stops_on_signal! {
        backend: Redis,
        connect: client,
        consumer: RedisConsumer,
        declarer: RedisTopologyDeclarer,
    }

    facades::stats_provider_counts! {
        stats_provider_counts_ready_and_in_flight,
        backend: Redis,
        connect: client,
        consumer: RedisConsumer,
        declarer: RedisTopologyDeclarer,
        provider: XlenStatsProvider,
        stats: RedisQueueStats { messages_ready, messages_in_flight },
    }

    facades::autoscaler_backend_lists_measures_and_scales! {
        backend: Redis,
        connect: client,
        autoscaler: RedisAutoscalerBackend,
        registry: RedisConsumerGroupRegistry,
        config: RedisConsumerGroupConfig,
        provider_trait: RedisQueueStatsProvider,
        stats: RedisQueueStats { messages_ready, messages_in_flight },
    }

    /// Connecting to nothing, or to a cluster (not supported by this build), fails with a connection
    /// error instead of hanging or panicking; a refused connection gives up within the connection timeout
    /// (plus slack for a loaded machine), not after a retry schedule of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_failures_are_connection_errors() {
        let connection_timeout = Duration::from_secs(2);
        let nothing = shove::redis::RedisConfig::new(RedisMode::Standalone {
            url: "redis://127.0.0.1:1/".into(),
        })
        .with_connection_timeout(connection_timeout);
        let bound = connection_timeout + Duration::from_secs(3);
        match tokio::time::timeout(bound, <Redis as Backend>::connect(nothing)).await {
            Ok(Err(ShoveError::Connection(_))) => {}
            Ok(Err(other)) => panic!("expected a connection error, got {other:?}"),
            Ok(Ok(_)) => panic!("connected to a closed port"),
            Err(_) => panic!(
                "connecting to a closed port with a connection timeout of {connection_timeout:?} did not fail \
                 within {bound:?}"
            ),
        }
        let cluster = shove::redis::RedisConfig::new(RedisMode::Cluster {
            urls: vec![redis_url()],
        });
        match tokio::time::timeout(WAIT, <Redis as Backend>::connect(cluster)).await {
            Ok(Err(ShoveError::Connection(msg))) => assert!(msg.to_lowercase().contains("cluster"), "{msg}"),
            Ok(Err(other)) => panic!("expected a connection error naming cluster mode, got {other:?}"),
            Ok(Ok(_)) => panic!("cluster mode is not supported by this build and must be refused"),
            Err(_) => panic!("connecting in cluster mode did not fail within {WAIT:?}"),
        }
    }

    /// Issue 12 item 6, contract rule 14: a key's shard is FNV-1a 64 of its bytes modulo the shard count,
    /// the same in every build (`""` → 0xcbf29ce484222325, shard 5 of 8; `"a"` → 0xaf63dc4c8601ec8c, shard
    /// 4; `"foobar"` → 0x85944171f73967e8, shard 0): read back from the shard streams the entries landed in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_land_on_their_fnv1a_shard_streams() {
        define_sequenced_topic!(Ordered, Msg, Msg::key_of, sharded("fnv-shards", 8));
        let client = client().await;
        RedisTopologyDeclarer::new(client.clone())
            .declare(Ordered::topology())
            .await
            .expect("declare");
        publish::<Ordered>(&client, &["", "a", "foobar"]).await;
        let mut con = raw().await;
        let queue = Ordered::topology().queue();
        for (key, shard) in [("", 5), ("a", 4), ("foobar", 0)] {
            let stream = RedisTopologyDeclarer::shard_stream_name(queue, shard);
            let range: StreamRangeReply = con.xrange_all(&stream).await.expect("XRANGE");
            let keys: Vec<String> = range
                .ids
                .iter()
                .filter_map(|e| e.get::<String>("x-sequence-key"))
                .collect();
            assert_eq!(keys, vec![key.to_string()], "shard stream {stream}");
        }
        close(&client).await;
    }

    /// The declarer creates each stream with the consumer group (idempotently), names shard streams as
    /// documented, and publishing stores the payload in the field `payload`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn declarer_creates_streams_with_the_consumer_group() {
        define_topic!(Plain, Msg, TopologyBuilder::new(unique("decl-plain")).dlq().build());
        define_sequenced_topic!(Ordered, Msg, Msg::key_of, sharded("decl-seq", 2));
        assert_eq!(RedisTopologyDeclarer::shard_stream_name("orders", 3), "orders-seq-3");
        let hold = RedisTopologyDeclarer::hold_set_name("orders-hold-5s");
        assert!(hold.contains("orders-hold-5s"), "{hold}");

        let client = client().await;
        let mut con = raw().await;
        let declarer = RedisTopologyDeclarer::new(client.clone());
        for _ in 0..2 {
            declarer.declare(Plain::topology()).await.expect("declare (idempotent)");
            declarer
                .declare(Ordered::topology())
                .await
                .expect("declare (idempotent)");
        }
        let plain = Plain::topology().queue();
        assert_eq!(groups_of(&mut con, plain).await, vec!["shove".to_string()]);
        for shard in 0..2 {
            let stream = RedisTopologyDeclarer::shard_stream_name(Ordered::topology().queue(), shard);
            assert_eq!(
                groups_of(&mut con, &stream).await,
                vec!["shove".to_string()],
                "{stream}"
            );
        }

        publish::<Plain>(&client, &["a"]).await;
        let range: StreamRangeReply = con.xrange_all(plain).await.expect("XRANGE");
        assert_eq!(range.ids.len(), 1, "{range:?}");
        assert!(range.ids[0].map.contains_key("payload"), "{range:?}");

        // Another group name is used as configured.
        let group = unique("group");
        let other = client_with(super::config().with_group(group.clone())).await;
        define_topic!(Grouped, Msg, TopologyBuilder::new(unique("decl-grouped")).build());
        RedisTopologyDeclarer::new(other.clone())
            .declare(Grouped::topology())
            .await
            .expect("declare");
        assert_eq!(groups_of(&mut con, Grouped::topology().queue()).await, vec![group]);
        close(&other).await;
        close(&client).await;
    }

    /// `RedisConsumerGroup::new` touches nothing until started; its first consumer creates the stream
    /// and group, then the group consumes until `shutdown`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_group_declares_lazily_then_consumes() {
        define_topic!(Standalone, Msg, TopologyBuilder::new(unique("group-new")).dlq().build());
        let queue = Standalone::topology().queue();
        let client = client().await;
        let mut con = raw().await;
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        let mut group = RedisConsumerGroup::new::<Standalone, _>(
            queue,
            client.clone(),
            RedisConsumerGroupConfig::default(),
            CancellationToken::new(),
            move || handler.clone(),
            (),
        );
        assert_eq!(group.queue(), queue);
        assert_eq!(group.config().max_consumers(), 4);
        assert_eq!(group.active_consumers(), 0);
        assert!(
            groups_of(&mut con, queue).await.is_empty(),
            "nothing is declared before start"
        );

        group.start();
        assert_eq!(group.active_consumers(), 1);
        eventually("the first consumer to create the stream's group", WAIT, || {
            let mut con = con.clone();
            async move { groups_of(&mut con, queue).await == ["shove"] }
        })
        .await;
        publish::<Standalone>(&client, &["a", "b", "c"]).await;
        probe.live.wait_for("3 messages", |s| s.len() >= 3).await;
        assert!(group.scale_up());
        assert_eq!(group.active_consumers(), 2);
        tokio::time::timeout(WAIT, group.shutdown())
            .await
            .expect("shutdown drains promptly");
        assert_eq!(group.active_consumers(), 0);
        close(&client).await;
    }

    /// A registry on `client` with one group of `1..=max` consumers for `T`, each running `handler`.
    async fn registry_of<T: Topic<Message = Msg>>(
        client: &RedisClient,
        max: u16,
        handler: FnHandler<Msg>,
    ) -> RedisConsumerGroupRegistry {
        let mut registry = RedisConsumerGroupRegistry::new(client.clone());
        registry
            .register::<T, _>(RedisConsumerGroupConfig::new(1..=max), move || handler.clone(), ())
            .await
            .expect("register");
        registry
    }

    /// The registry's own `run_until_timeout`: starts every group, stops on the signal and reports a
    /// clean run; a handler outliving the drain deadline makes it report a timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registry_run_until_timeout_drains_and_reports() {
        define_topic!(Quick, Msg, TopologyBuilder::new(unique("run-quick")).dlq().build());
        define_topic!(Slow, Msg, TopologyBuilder::new(unique("run-slow")).dlq().build());
        let client = client().await;

        let probe = Probe::<Msg>::new();
        let registry = registry_of::<Quick>(&client, 1, probe.handler(|_, _| Outcome::Ack)).await;
        let (tx, signal) = stop_signal();
        let run = tokio::spawn(registry.run_until_timeout(signal, ms(5_000)));
        publish::<Quick>(&client, &["a", "b"]).await;
        probe.live.wait_for("2 messages", |s| s.len() >= 2).await;
        stop_cleanly(tx, run).await;

        // A handler that never finishes: the drain gives up at its deadline.
        let probe = Probe::<Msg>::new();
        let registry = registry_of::<Slow>(&client, 1, gated(&probe, Arc::new(Notify::new()))).await;
        let (tx, signal) = stop_signal();
        let run = tokio::spawn(registry.run_until_timeout(signal, ms(300)));
        publish::<Slow>(&client, &["a"]).await;
        probe
            .live
            .wait_for("the stuck handler to start", |s| !s.is_empty())
            .await;
        let _ = tx.send(());
        let outcome = tokio::time::timeout(WAIT, run)
            .await
            .expect("the run ends soon after its drain deadline")
            .expect("run task");
        assert!(outcome.timed_out, "{outcome:?}");
        assert_eq!(outcome.exit_code(), 3, "{outcome:?}");
        close(&client).await;
    }

    /// Closing the client ends a registry's `run_until_timeout` without a signal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registry_run_until_timeout_stops_when_the_client_closes() {
        define_topic!(Closing, Msg, TopologyBuilder::new(unique("run-close")).build());
        let client = client().await;
        let probe = Probe::<Msg>::new();
        let registry = registry_of::<Closing>(&client, 2, probe.handler(|_, _| Outcome::Ack)).await;
        let token = registry.broker_shutdown_token();
        let run = tokio::spawn(registry.run_until_timeout(pending::<()>(), ms(5_000)));
        publish::<Closing>(&client, &["a"]).await;
        probe.live.wait_for("1 message", |s| !s.is_empty()).await;
        close(&client).await;
        assert!(token.is_cancelled());
        let outcome = tokio::time::timeout(WAIT, run)
            .await
            .expect("the run stops when the client closes")
            .expect("run task");
        assert!(!outcome.timed_out, "{outcome:?}");
    }

    /// A consumer of group `shove` reads `count` new entries of `stream` and dies without settling them.
    async fn orphan(stream: &str, count: usize) {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("shove")
            .arg("died")
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut raw().await)
            .await
            .expect("XREADGROUP");
    }

    /// Cancels a consumer's token and checks that its run ends cleanly.
    async fn stop_run(stop: &CancellationToken, run: tokio::task::JoinHandle<Result<(), ShoveError>>) {
        stop.cancel();
        tokio::time::timeout(WAIT, run)
            .await
            .expect("run stops on its token")
            .expect("run task")
            .expect("run ends cleanly");
    }

    /// An entry left pending by a consumer that died is a lost attempt, and stays one when the reaper hands
    /// it back: the consumer that finally takes it counts the attempt against the retry budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_the_reaper_hands_back_is_still_a_lost_attempt() {
        define_topic!(Orphaned, Msg, TopologyBuilder::new(unique("orphan")).dlq().build());
        let client = client().await;
        RedisTopologyDeclarer::new(client.clone())
            .declare(Orphaned::topology())
            .await
            .expect("declare");
        publish::<Orphaned>(&client, &["a"]).await;
        let stream = Orphaned::topology().queue().to_string();
        orphan(&stream, 1).await;
        let stop_reaper = CancellationToken::new();
        let reaper = spawn_reaper(
            client.clone(),
            vec![stream.clone()],
            "shove".to_string(),
            ms(20),
            50,
            stop_reaper.clone(),
        );
        eventually("the reaper to hand the entry back", WAIT, || async {
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("shove")
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut raw().await)
                .await
                .expect("XPENDING");
            format!("{pending:?}").contains("shove-handback")
        })
        .await;
        stop_reaper.cancel();
        tokio::time::timeout(WAIT, reaper)
            .await
            .expect("reaper stops")
            .expect("reaper task");

        let probe = Probe::<Msg>::new();
        let stop = CancellationToken::new();
        let run = {
            let consumer = RedisConsumer::new(client.clone());
            let handler = probe.handler(|_, _| Outcome::Ack);
            let options = ConsumerOptions::<Redis>::new()
                .with_max_retries(3)
                .with_shutdown(stop.clone());
            tokio::spawn(async move { consumer.run::<Orphaned, _>(handler, (), options).await })
        };
        let seen = probe.live.wait_for("the orphaned message", |s| !s.is_empty()).await;
        assert_eq!(
            seen[0].meta.retry_count, 1,
            "the attempt of the consumer that died counts against the budget"
        );
        stop_run(&stop, run).await;
        close(&client).await;
    }

    /// On a sequenced topic, a lost attempt that goes back unstarted (buffered behind its key when the
    /// consumer stops) is still a lost attempt for the next consumer: the hand-back in place keeps it on
    /// record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_attempt_handed_back_unstarted_stays_one() {
        define_sequenced_topic!(Ordered, Msg, Msg::key_of, sharded("lost-back", 1));
        let client = client().await;
        RedisTopologyDeclarer::new(client.clone())
            .declare(Ordered::topology())
            .await
            .expect("declare");
        publish::<Ordered>(&client, &["k", "k"]).await;
        orphan(
            &RedisTopologyDeclarer::shard_stream_name(Ordered::topology().queue(), 0),
            2,
        )
        .await;
        // With a 1 s handler timeout a consumer reclaims entries idle for 2 s: both, as lost attempts. The
        // first is handled (and held there), the second waits behind it when the consumer stops.
        let run_once = |probe: &Probe<Msg>, gate: Arc<Notify>, stop: CancellationToken| {
            let consumer = RedisConsumer::new(client.clone());
            let handler = gated(probe, gate);
            let options = ConsumerOptions::<Redis>::new()
                .with_max_retries(5)
                .with_handler_timeout(ms(1_000))
                .with_shutdown(stop);
            tokio::spawn(async move { consumer.run_fifo::<Ordered, _>(handler, (), options).await })
        };
        let first = Probe::<Msg>::new();
        let gate = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let run = run_once(&first, gate.clone(), stop.clone());
        let seen = first
            .live
            .wait_for("the first orphaned message", |s| !s.is_empty())
            .await;
        assert_eq!(
            (seen[0].msg.n, seen[0].meta.retry_count),
            (0, 1),
            "a lost attempt counts"
        );
        // The stop is asked for first, so the buffered entry goes back before the gate lets the first finish.
        stop.cancel();
        gate.notify_waiters();
        stop_run(&stop, run).await;
        assert_eq!(first.live.len(), 1, "the second message was handed back unstarted");

        let second = Probe::<Msg>::new();
        let stop = CancellationToken::new();
        let run = run_once(&second, Arc::new(Notify::new()), stop.clone());
        let seen = second.live.wait_for("the handed-back message", |s| !s.is_empty()).await;
        assert_eq!(
            (seen[0].msg.n, seen[0].meta.retry_count),
            (1, 1),
            "the lost attempt of the consumer that died still counts after the hand-back"
        );
        stop_run(&stop, run).await;
        close(&client).await;
    }

    /// The (hidden) reaper runs until its token is cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reaper_stops_on_its_token() {
        define_topic!(Reaped, Msg, TopologyBuilder::new(unique("reaper")).build());
        let client = client().await;
        RedisTopologyDeclarer::new(client.clone())
            .declare(Reaped::topology())
            .await
            .expect("declare");
        let stop = CancellationToken::new();
        let reaper = spawn_reaper(
            client.clone(),
            vec![Reaped::topology().queue().to_string()],
            "shove".to_string(),
            ms(50),
            1_000,
            stop.clone(),
        );
        tokio::time::sleep(ms(200)).await;
        assert!(!reaper.is_finished(), "the reaper runs until told to stop");
        stop.cancel();
        tokio::time::timeout(WAIT, reaper)
            .await
            .expect("the reaper stops on its token")
            .expect("reaper task");
        close(&client).await;
    }
}

/// The server-side footprint of a long stream: after 100,000 messages are published and consumed, the
/// stream is empty again (acknowledged entries are deleted), nothing is pending or left undelivered in
/// the group, and the stopped consumer's name is gone from it.
mod footprint {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use redis::Value;
    use shove::redis::RedisPublisher;
    use shove::{
        Backend, Broker, ConsumerOptions, MessageMetadata, Outcome, Redis, Topic, TopologyBuilder, define_topic,
    };

    use super::conformance::{DRAIN, FnHandler, Msg, Running, eventually, unique};
    use super::{config, redis_url, start_hint};

    const TOTAL: u32 = 100_000;
    const BATCH: u32 = 1_000;

    define_topic!(Bulk, Msg, TopologyBuilder::new(unique("bulk")).dlq().build());

    fn int(value: Option<&Value>) -> Option<i64> {
        match value? {
            Value::Int(n) => Some(*n),
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    fn text(value: &Value) -> Option<String> {
        match value {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// `XINFO GROUPS` / `XINFO CONSUMERS` rows as field maps.
    async fn info(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> Vec<HashMap<String, Value>> {
        let rows: Vec<Value> = redis::cmd("XINFO")
            .arg(args)
            .query_async(con)
            .await
            .unwrap_or_else(|e| panic!("XINFO {args:?}: {e}"));
        rows.into_iter()
            .map(|row| match row {
                Value::Array(items) => items
                    .chunks(2)
                    .filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?.clone())))
                    .collect(),
                Value::Map(pairs) => pairs.into_iter().filter_map(|(k, v)| Some((text(&k)?, v))).collect(),
                other => panic!("XINFO {args:?} returned {other:?}"),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_and_group_are_empty_after_100k_messages() {
        let stream = Bulk::topology().queue().to_string();
        let group = unique("group");
        let client = match <Redis as Backend>::connect(config().with_group(group.clone())).await {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to Redis: {e}. {}", start_hint()),
        };
        let broker = Broker::<Redis>::from_client(client.clone());
        let mut con = redis::Client::open(redis_url())
            .expect("the Redis URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Redis: {e}. {}", start_hint()));
        broker.topology().declare::<Bulk>().await.expect("declaring the topic");
        let publisher = RedisPublisher::new(client);
        for start in (0..TOTAL).step_by(BATCH as usize) {
            let batch: Vec<Msg> = (start..start + BATCH).map(|n| Msg::new("bulk", n)).collect();
            let (stored, result) = publisher.publish_batch::<Bulk>(&batch).await;
            result.unwrap_or_else(|e| panic!("publishing the batch from {start}: {e}"));
            assert_eq!(stored, u64::from(BATCH), "the batch from {start} was stored whole");
        }
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut con)
            .await
            .expect("XLEN");
        assert_eq!(len, u64::from(TOTAL), "every message is in the stream");

        let calls = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(std::sync::Mutex::new(vec![false; TOTAL as usize]));
        let (counter, marks) = (calls.clone(), seen.clone());
        let handler = FnHandler::new(move |msg: Msg, _: MessageMetadata| {
            if let Some(slot) = marks.lock().expect("marks").get_mut(msg.n as usize) {
                *slot = true;
            }
            counter.fetch_add(1, Ordering::Relaxed);
            async { Outcome::Ack }
        });
        let mut supervisor = broker.consumer_supervisor();
        supervisor
            .register::<Bulk, _>(handler, ConsumerOptions::new().with_prefetch_count(100))
            .expect("register");
        let running = Running::supervisor(supervisor, DRAIN);
        eventually("every message handled", Duration::from_secs(240), || async {
            calls.load(Ordering::Relaxed) >= u64::from(TOTAL)
        })
        .await;
        assert_eq!(running.stop().await.exit_code(), 0);

        assert_eq!(
            calls.load(Ordering::Relaxed),
            u64::from(TOTAL),
            "no fault, so no redelivery"
        );
        let unseen = seen.lock().expect("marks").iter().filter(|s| !**s).count();
        assert_eq!(unseen, 0, "{unseen} messages were never handled");
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut con)
            .await
            .expect("XLEN");
        assert_eq!(len, 0, "acknowledged entries are deleted: the stream is empty again");
        let groups = info(&mut con, &["GROUPS", &stream]).await;
        let ours = groups
            .iter()
            .find(|g| g.get("name").and_then(text).as_deref() == Some(group.as_str()))
            .unwrap_or_else(|| panic!("XINFO GROUPS {stream} lists no group {group}: {groups:?}"));
        assert_eq!(int(ours.get("pending")), Some(0), "nothing is pending: {ours:?}");
        if let Some(lag) = int(ours.get("lag")) {
            assert_eq!(lag, 0, "nothing is left undelivered: {ours:?}");
        }
        let consumers = info(&mut con, &["CONSUMERS", &stream, &group]).await;
        let left: Vec<String> = consumers.iter().filter_map(|c| c.get("name").and_then(text)).collect();
        assert!(
            left.is_empty(),
            "the stopped consumer's name is still in the group: {left:?}"
        );
        broker.close().await;
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&stream).query_async(&mut con).await;
    }
}

/// A read whose reply the connection loses: the server has moved the entry into the consumer's name, the
/// consumer never saw it. Without recovery it waits out the reclaim idle time (60 s without a handler
/// timeout); the consumer takes it back as soon as it has reconnected.
mod lost_read_reply {
    use redis::streams::StreamInfoGroupsReply;
    use shove::{ConsumerOptions, Outcome, Topic, TopologyBuilder, define_topic};

    use super::RedisHarness;
    use super::conformance::proxy::Proxy;
    use super::conformance::{DRAIN, Harness, Msg, Probe, Running, WAIT, eventually, unique};
    use super::{address, redis_url};

    /// Entries delivered to `stream`'s consumer group and not yet acknowledged.
    async fn pending(con: &mut redis::aio::MultiplexedConnection, stream: &str) -> usize {
        let reply: StreamInfoGroupsReply = redis::AsyncCommands::xinfo_groups(con, stream)
            .await
            .expect("XINFO GROUPS");
        reply.groups.iter().map(|g| g.pending).sum()
    }

    #[tokio::test]
    async fn an_entry_whose_read_reply_was_lost_is_delivered_after_the_reconnect() {
        define_topic!(Lost, Msg, TopologyBuilder::new(unique("lost-reply")).dlq().build());
        let queue = Lost::topology().queue().to_string();
        let proxy = Proxy::start(address()).await;
        let direct = RedisHarness::broker().await;
        direct.topology().declare::<Lost>().await.expect("declare");
        let publisher = direct.publisher().await.expect("publisher");
        let con = redis::Client::open(redis_url())
            .expect("a valid SHOVE_REDIS_URL")
            .get_multiplexed_async_connection()
            .await
            .expect("a plain connection to Redis");
        // The consumer reaches the server through the proxy.
        let broker = RedisHarness::broker_at(proxy.addr()).await;
        let probe = Probe::<Msg>::new();
        let mut sup = broker.consumer_supervisor();
        sup.register::<Lost, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
            .expect("register");
        let running = Running::supervisor(sup, DRAIN);
        publisher.publish::<Lost>(&Msg::new("k", 1)).await.expect("publish");
        probe.live.wait_for("the first message handled", |s| s.len() == 1).await;
        eventually("the first message acknowledged", WAIT, || {
            let mut con = con.clone();
            let queue = queue.clone();
            async move { pending(&mut con, &queue).await == 0 }
        })
        .await;
        // The consumer is blocked in its read; its reply is held, then dropped with the connection.
        proxy.stall(true);
        publisher.publish::<Lost>(&Msg::new("k", 2)).await.expect("publish");
        eventually(
            "the server delivered the second message into the held read",
            WAIT,
            || {
                let mut con = con.clone();
                let queue = queue.clone();
                async move { pending(&mut con, &queue).await == 1 }
            },
        )
        .await;
        proxy.cut();
        proxy.stall(false);
        let seen = probe
            .live
            .wait_for("the second message handled after the reconnect", |s| s.len() >= 2)
            .await;
        assert_eq!(seen[1].msg.n, 2, "{seen:?}");
        assert_eq!(
            seen[1].meta.retry_count, 0,
            "a lost reply is not a failed attempt: {seen:?}"
        );
        let outcome = running.stop().await;
        assert_eq!(outcome.panics, 0, "{outcome:?}");
        broker.close().await;
        direct.close().await;
    }
}

/// Issue 12, item 8: a password in the URL shows in no error and no log line of a failed connection.
mod secrets {
    use shove::redis::{RedisConfig, RedisMode};
    use shove::{Broker, Redis};

    #[tokio::test]
    async fn a_password_in_the_url_never_shows_in_a_connection_error() {
        // Port 1 on loopback: nothing listens there, so the connection is refused.
        for url in ["redis://alice:s3cretpw@127.0.0.1:1/", "redis://:s3cretpw@127.0.0.1:1/0"] {
            let error = match Broker::<Redis>::new(RedisConfig::new(RedisMode::Standalone { url: url.into() })).await {
                Ok(_) => panic!("connected to a closed port ({url})"),
                Err(e) => e,
            };
            for shown in [error.to_string(), format!("{error:?}")] {
                assert!(!shown.contains("s3cretpw"), "the password shows: {shown}");
                assert!(shown.contains("127.0.0.1:1"), "the error names the server: {shown}");
            }
        }
    }
}
