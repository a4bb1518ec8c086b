//! The conformance suite (`tests/conformance/`) on Redis Streams, plus tests of the `shove::redis` facade
//! types used directly.
//!
//! Needs a Redis-compatible server at `$SHOVE_REDIS_URL` (default `redis://127.0.0.1:6379/`);
//! `scripts/test.sh` starts Redis on 6379, and runs this binary a second time against Valkey on 6380.
//! Every scenario uses its own stream names, so the tests run in parallel against one server.
//!
//! Capabilities: `durable_delays` — retry and defer delays are held in the server (a sorted set per hold
//! queue), so a message waiting out its delay survives the consumer's connection. `restart` is not
//! claimed: the harness does not own the server process.
#![cfg(feature = "redis-streams")]

mod conformance;

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
            restart: false,
        }
    }

    async fn broker() -> Broker<Redis> {
        match Broker::<Redis>::new(config()).await {
            Ok(broker) => broker,
            Err(e) => panic!("cannot connect to Redis: {e}. {}", start_hint()),
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
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use redis::AsyncCommands;
    use redis::streams::{StreamInfoGroupsReply, StreamRangeReply};
    use shove::redis::{
        RedisAutoscalerBackend, RedisClient, RedisConsumer, RedisConsumerGroup, RedisConsumerGroupConfig,
        RedisConsumerGroupRegistry, RedisMode, RedisQueueStats, RedisQueueStatsProvider, RedisTopologyDeclarer,
        XlenStatsProvider, spawn_reaper,
    };
    use shove::{
        AutoscalerBackend, AutoscalerConfig, Backend, Broker, ConsumerOptions, Outcome, Redis, ScalingDecision,
        SequenceFailure, ShoveError, Topic, TopologyBuilder, define_sequenced_topic, define_topic,
    };
    use tokio::sync::{Mutex, Notify, oneshot};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::conformance::{FnHandler, Msg, Probe, Seen, WAIT, eventually, ms, unique};
    use super::{config, redis_url, start_hint};

    async fn client_with(config: shove::redis::RedisConfig) -> RedisClient {
        match <Redis as Backend>::connect(config).await {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to Redis: {e}. {}", start_hint()),
        }
    }

    async fn client() -> RedisClient {
        client_with(config()).await
    }

    async fn close(client: &RedisClient) {
        <Redis as Backend>::close(client).await;
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

    async fn publish<T: Topic<Message = Msg>>(client: &RedisClient, keys: &[&str]) {
        let publisher = Broker::<Redis>::from_client(client.clone())
            .publisher()
            .await
            .expect("publisher");
        for (i, key) in keys.iter().enumerate() {
            let n = u32::try_from(i).expect("few messages");
            publisher.publish::<T>(&Msg::new(*key, n)).await.expect("publish");
        }
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

    /// The declarer creates each stream with the consumer group (idempotently), names shard streams as
    /// documented, and publishing stores the payload in the field `payload`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn declarer_creates_streams_with_the_consumer_group() {
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
        let mut con = raw().await;
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        let factory = move || handler.clone();
        let mut registry = RedisConsumerGroupRegistry::new(client.clone()).with_default_handler_timeout(ms(5_000));
        let config = RedisConsumerGroupConfig::new(1..=2).with_prefetch_count(4);

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
        assert_eq!(groups_of(&mut con, Plain::topology().queue()).await, vec!["shove"]);
        let shard = RedisTopologyDeclarer::shard_stream_name(Ordered::topology().queue(), 1);
        assert_eq!(groups_of(&mut con, &shard).await, vec!["shove"]);

        assert_eq!(registry.groups().len(), 2);
        assert!(registry.groups().values().all(|g| g.active_consumers() == 0));
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
        assert!(!registry.broker_shutdown_token().is_cancelled());

        publish::<Plain>(&client, &["a", "b"]).await;
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
        assert!(registry.broker_shutdown_token().is_cancelled());
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

    /// `RedisConsumer::run` stops on the options' shutdown token; `run_dlq` receives what was rejected
    /// and follows the client, not the other consumer's token.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_runs_until_its_token_and_reads_the_dlq() {
        define_topic!(Direct, Msg, TopologyBuilder::new(unique("consumer")).dlq().build());
        let client = client().await;
        RedisTopologyDeclarer::new(client.clone())
            .declare(Direct::topology())
            .await
            .expect("declare");
        let consumer = RedisConsumer::new(client.clone());
        let probe = Probe::<Msg>::new();
        let stop = CancellationToken::new();
        let run = {
            let consumer = consumer.clone();
            let handler = probe.handler(|m, _| if m.n == 1 { Outcome::Reject } else { Outcome::Ack });
            let options = ConsumerOptions::<Redis>::new().with_shutdown(stop.clone());
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

    /// `run_fifo_until_timeout` consumes the shard streams in per-key order until its signal, and
    /// reports a clean run.
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
        RedisTopologyDeclarer::new(client.clone())
            .declare(Ordered::topology())
            .await
            .expect("declare");
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        let (tx, rx) = oneshot::channel::<()>();
        let run = {
            let consumer = RedisConsumer::new(client.clone());
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

    /// `XlenStatsProvider` (and `Broker::queue_stats_provider`) counts entries not yet delivered as ready
    /// and delivered-unacknowledged entries as in flight; a sequenced topic's main name sums its shards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_provider_counts_ready_and_in_flight() {
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
        let declarer = RedisTopologyDeclarer::new(client.clone());
        declarer.declare(Counted::topology()).await.expect("declare");
        declarer.declare(Sharded::topology()).await.expect("declare");
        let stats = XlenStatsProvider::new(client.clone());
        let read = |s: RedisQueueStats| (s.messages_ready, s.messages_in_flight);

        assert_eq!(read(stats.get_queue_stats(queue).await.expect("stats")), (0, 0));
        publish::<Counted>(&client, &["a", "b", "c"]).await;
        assert_eq!(read(stats.clone().get_queue_stats(queue).await.expect("stats")), (3, 0));
        let bridge = Broker::<Redis>::from_client(client.clone())
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

        // A consumer holding all three entries in its handlers: none ready, three in flight.
        let probe = Probe::<Msg>::new();
        let gate = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let run = {
            let consumer = RedisConsumer::new(client.clone());
            let handler = gated(&probe, gate.clone());
            let options = ConsumerOptions::<Redis>::new().with_shutdown(stop.clone());
            tokio::spawn(async move { consumer.run::<Counted, _>(handler, (), options).await })
        };
        probe.live.wait_for("3 handler calls", |s| s.len() >= 3).await;
        eventually("0 ready and 3 in flight", WAIT, || async {
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

    impl RedisQueueStatsProvider for FixedStats {
        async fn get_queue_stats(&self, _queue: &str) -> shove::error::Result<RedisQueueStats> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(RedisQueueStats {
                messages_ready: 42,
                messages_in_flight: 7,
            })
        }
    }

    /// `RedisAutoscalerBackend` lists a registry's groups, measures them and scales them; with another
    /// stats provider it reports that provider's numbers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn autoscaler_backend_lists_measures_and_scales() {
        define_topic!(Scaled, Msg, TopologyBuilder::new(unique("scaled")).dlq().build());
        let queue = Scaled::topology().queue().to_string();
        let client = client().await;
        let registry = Arc::new(Mutex::new(RedisConsumerGroupRegistry::new(client.clone())));
        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        registry
            .lock()
            .await
            .register::<Scaled, _>(
                RedisConsumerGroupConfig::new(1..=3).with_prefetch_count(6),
                move || handler.clone(),
                (),
            )
            .await
            .expect("register");
        publish::<Scaled>(&client, &["a", "b"]).await;

        let scaler = RedisAutoscalerBackend::new(client.clone(), registry.clone());
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
        let fixed = RedisAutoscalerBackend::with_stats_provider(FixedStats(calls.clone()), registry.clone());
        let metrics = fixed.fetch_metrics(&queue).await.expect("fetch_metrics");
        assert_eq!((metrics.messages_ready, metrics.messages_in_flight), (42, 7));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The ready-made autoscaler over the same registry builds without touching the server.
        let _autoscaler =
            RedisAutoscalerBackend::autoscaler(client.clone(), registry.clone(), AutoscalerConfig::default());

        registry.lock().await.shutdown_all().await;
        close(&client).await;
    }

    /// The registry's own `run_until_timeout`: starts every group, stops on the signal and reports a
    /// clean run; a handler outliving the drain deadline makes it report a timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registry_run_until_timeout_drains_and_reports() {
        define_topic!(Quick, Msg, TopologyBuilder::new(unique("run-quick")).dlq().build());
        define_topic!(Slow, Msg, TopologyBuilder::new(unique("run-slow")).dlq().build());
        let client = client().await;

        let probe = Probe::<Msg>::new();
        let handler = probe.handler(|_, _| Outcome::Ack);
        let mut registry = RedisConsumerGroupRegistry::new(client.clone());
        registry
            .register::<Quick, _>(RedisConsumerGroupConfig::new(1..=1), move || handler.clone(), ())
            .await
            .expect("register");
        let (tx, rx) = oneshot::channel::<()>();
        let run = tokio::spawn(registry.run_until_timeout(
            async move {
                let _ = rx.await;
            },
            ms(5_000),
        ));
        publish::<Quick>(&client, &["a", "b"]).await;
        probe.live.wait_for("2 messages", |s| s.len() >= 2).await;
        let _ = tx.send(());
        let outcome = tokio::time::timeout(WAIT, run)
            .await
            .expect("the run stops on its signal")
            .expect("run task");
        assert!(outcome.is_clean(), "{outcome:?}");

        // A handler that never finishes: the drain gives up at its deadline.
        let probe = Probe::<Msg>::new();
        let stuck = gated(&probe, Arc::new(Notify::new()));
        let mut registry = RedisConsumerGroupRegistry::new(client.clone());
        registry
            .register::<Slow, _>(RedisConsumerGroupConfig::new(1..=1), move || stuck.clone(), ())
            .await
            .expect("register");
        let (tx, rx) = oneshot::channel::<()>();
        let run = tokio::spawn(registry.run_until_timeout(
            async move {
                let _ = rx.await;
            },
            ms(300),
        ));
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
        let handler = probe.handler(|_, _| Outcome::Ack);
        let mut registry = RedisConsumerGroupRegistry::new(client.clone());
        registry
            .register::<Closing, _>(RedisConsumerGroupConfig::new(1..=2), move || handler.clone(), ())
            .await
            .expect("register");
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
