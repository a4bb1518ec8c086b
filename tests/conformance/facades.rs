//! Tests of the broker backends' facade types used directly (not through `Broker<B>`), written once.
//!
//! The facade types (`NatsConsumer` / `RedisConsumer` / `RabbitMqConsumer`, the consumer-group registries,
//! the autoscaler backends, the stats providers) are distinct concrete types with the same inherent methods
//! and no common trait, so a test shared between backends is a `macro_rules!` that generates the whole
//! `#[tokio::test]` from the type names, invoked inside a test binary's `mod facade`. What differs in a
//! test between backends is a parameter of its macro; tests only one backend has stay in its binary.
//!
//! The macros call the invoking binary's `connect` path (an `async fn() -> Client` that panics with the
//! way to start the broker), and this module's [`publish`] and [`close`].
//!
//! Not every binary uses every helper and macro here (the in-process binary none), hence the `allow`.
#![allow(dead_code, unused_macros, unused_imports)]

use std::sync::Arc;

use shove::{Backend, Broker, Outcome, QueueTopology, SequenceFailure, SupervisorOutcome, Topic, TopologyBuilder};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{FnHandler, Msg, Probe, Seen, WAIT, ms, unique};

/// A client of `B` for `config`; panics naming the error and `start_hint` when the broker is not there.
pub async fn connect<B: Backend>(config: B::Config, start_hint: &str) -> B::Client {
    match B::connect(config).await {
        Ok(client) => client,
        Err(e) => panic!("cannot connect: {e}. {start_hint}"),
    }
}

/// Closes `client` (cancelling its shutdown token).
pub async fn close<B: Backend>(client: &B::Client) {
    B::close(client).await;
}

/// Publishes `Msg::new(keys[i], i)` for each key, in order, through a publisher on `client`.
pub async fn publish<B: Backend, T: Topic<Message = Msg>>(client: &B::Client, keys: &[&str]) {
    let publisher = Broker::<B>::from_client(client.clone())
        .publisher()
        .await
        .expect("publisher");
    for (i, key) in keys.iter().enumerate() {
        let n = u32::try_from(i).expect("few messages");
        publisher.publish::<T>(&Msg::new(*key, n)).await.expect("publish");
    }
}

/// A sequenced topology named after `name` (made unique) with `shards` routing shards, `Skip` on
/// failure, one 100 ms hold queue and a DLQ.
pub fn sharded(name: &str, shards: u16) -> QueueTopology {
    TopologyBuilder::new(unique(name))
        .sequenced(SequenceFailure::Skip)
        .routing_shards(shards)
        .hold_queue(ms(100))
        .dlq()
        .build()
}

/// A stop signal for a `run_*_until_timeout`: the future completes once the sender is used (or dropped).
pub fn stop_signal() -> (oneshot::Sender<()>, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// Sends the stop signal through `tx` and expects `run` to stop within [`WAIT`] with a clean outcome.
pub async fn stop_cleanly(tx: oneshot::Sender<()>, run: JoinHandle<SupervisorOutcome>) {
    let _ = tx.send(());
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("the run stops on its signal")
        .expect("run task");
    assert!(outcome.is_clean(), "{outcome:?}");
}

/// A handler that records each call and acknowledges it only once `gate` is notified while it waits.
pub fn gated(probe: &Probe<Msg>, gate: Arc<Notify>) -> FnHandler<Msg> {
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

/// `consumer_runs_until_its_token_and_reads_the_dlq`: the direct consumer's `run` stops on the options'
/// shutdown token; `run_dlq` receives what was rejected and follows the client, not the other consumer's
/// token. With `declarer`, the topic is declared first; without, the consumer declares it itself.
macro_rules! consumer_runs_until_its_token_and_reads_the_dlq {
    (backend: $b:ty, connect: $connect:path, consumer: $consumer:ty $(, declarer: $declarer:ty)? $(,)?) => {
        #[doc = concat!("`", stringify!($consumer), "::run` stops on the options' shutdown token; `run_dlq` \
            receives what was rejected and follows the client, not the other consumer's token.")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn consumer_runs_until_its_token_and_reads_the_dlq() {
            use $crate::conformance::{Msg, Probe, WAIT, unique};
            use ::shove::{ConsumerOptions, Outcome, TopologyBuilder, define_topic};

            define_topic!(Direct, Msg, TopologyBuilder::new(unique("consumer")).dlq().build());
            let client = $connect().await;
            $(
                <$declarer>::new(client.clone())
                    .declare(<Direct as ::shove::Topic>::topology())
                    .await
                    .expect("declare");
            )?
            let consumer = <$consumer>::new(client.clone());
            let probe = Probe::<Msg>::new();
            let stop = ::tokio_util::sync::CancellationToken::new();
            let run = {
                let consumer = consumer.clone();
                let handler = probe.handler(|m, _| if m.n == 1 { Outcome::Reject } else { Outcome::Ack });
                let options = ConsumerOptions::<$b>::new().with_shutdown(stop.clone());
                tokio::spawn(async move { consumer.run::<Direct, _>(handler, (), options).await })
            };
            let dlq = {
                let consumer = consumer.clone();
                let handler = probe.dead_handler();
                tokio::spawn(async move { consumer.run_dlq::<Direct, _>(handler, ()).await })
            };
            $crate::conformance::facades::publish::<$b, Direct>(&client, &["k", "k", "k"]).await;
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
            $crate::conformance::facades::close::<$b>(&client).await;
            let ended = tokio::time::timeout(WAIT, dlq)
                .await
                .expect("run_dlq stops when the client is closed");
            let _ = ended.expect("run_dlq task");
        }
    };
}
pub(crate) use consumer_runs_until_its_token_and_reads_the_dlq;

/// `registry_registers_starts_and_refuses_misuse`: the registry refuses misregistration with topology
/// errors and declares on registration (`declared`, when given, is an
/// `async fn(&Client, plain_queue: &str, sequenced_queue: &str)` that checks the broker for it); its groups
/// consume once started and stop on `shutdown_all`; closing the client cancels the token that `token`
/// (a closure of the registry and the client) returns. With `publish_before_start`, the plain topic's
/// messages are published before any consumer runs (the broker keeps them).
macro_rules! registry_registers_starts_and_refuses_misuse {
    (
        backend: $b:ty,
        connect: $connect:path,
        registry: $registry:ty,
        config: $config:ty,
        token: $token:expr,
        publish_before_start: $early:expr
        $(, declared: $declared:path)? $(,)?
    ) => {
        /// The registry declares on registration and refuses misregistration with topology errors; its
        /// groups consume once started and stop on `shutdown_all`; closing the client cancels its token.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn registry_registers_starts_and_refuses_misuse() {
            use $crate::conformance::facades::{close, publish, sharded};
            use $crate::conformance::{Msg, Probe, WAIT, ms, unique};
            use ::shove::{Outcome, ShoveError, Topic, TopologyBuilder, define_sequenced_topic, define_topic};

            define_topic!(Plain, Msg, TopologyBuilder::new(unique("reg-plain")).dlq().build());
            define_sequenced_topic!(Ordered, Msg, Msg::key_of, sharded("reg-seq", 2));
            // A sequenced topic type whose topology is not sequenced.
            define_sequenced_topic!(
                Unsequenced,
                Msg,
                Msg::key_of,
                TopologyBuilder::new(unique("reg-unseq")).dlq().build()
            );
            let client = $connect().await;
            let probe = Probe::<Msg>::new();
            let handler = probe.handler(|_, _| Outcome::Ack);
            let factory = move || handler.clone();
            let mut registry = <$registry>::new(client.clone()).with_default_handler_timeout(ms(5_000));
            let config = <$config>::new(1..=2).with_prefetch_count(4);

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
            // Registration declared the topics, before any consumer ran.
            $( $declared(&client, Plain::topology().queue(), Ordered::topology().queue()).await; )?

            assert_eq!(registry.groups().len(), 2);
            assert!(registry.groups().values().all(|g| g.active_consumers() == 0));
            let early: bool = $early;
            if early {
                // Published before any consumer runs: the broker keeps the messages.
                publish::<$b, Plain>(&client, &["a", "b"]).await;
            }
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
            let token = ($token)(&registry, &client);
            assert!(!token.is_cancelled());

            if !early {
                publish::<$b, Plain>(&client, &["a", "b"]).await;
            }
            publish::<$b, Ordered>(&client, &["a", "b"]).await;
            probe
                .live
                .wait_for("4 messages over both groups", |s| s.len() >= 4)
                .await;
            tokio::time::timeout(WAIT, registry.shutdown_all())
                .await
                .expect("shutdown_all drains promptly");
            assert!(registry.groups().values().all(|g| g.active_consumers() == 0));
            close::<$b>(&client).await;
            assert!(token.is_cancelled(), "closing the client cancels its shutdown token");
        }
    };
}
pub(crate) use registry_registers_starts_and_refuses_misuse;

/// `run_fifo_until_timeout_keeps_key_order_and_stops_on_signal`: the direct consumer's
/// `run_fifo_until_timeout` consumes the shards in per-key order until its signal, and reports a clean run.
macro_rules! run_fifo_until_timeout_keeps_key_order_and_stops_on_signal {
    (backend: $b:ty, connect: $connect:path, consumer: $consumer:ty, declarer: $declarer:ty $(,)?) => {
        #[doc = concat!("`", stringify!($consumer), "::run_fifo_until_timeout` consumes the shards in per-key \
            order until its signal, and reports a clean run.")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn run_fifo_until_timeout_keeps_key_order_and_stops_on_signal() {
            use ::shove::{ConsumerOptions, Outcome, Topic, define_sequenced_topic};
            use $crate::conformance::facades::{close, publish, sharded};
            use $crate::conformance::{Msg, Probe, ms};

            define_sequenced_topic!(Ordered, Msg, Msg::key_of, sharded("fifo-run", 2));
            let client = $connect().await;
            <$declarer>::new(client.clone())
                .declare(Ordered::topology())
                .await
                .expect("declare");
            let probe = Probe::<Msg>::new();
            let handler = probe.handler(|_, _| Outcome::Ack);
            let (tx, signal) = $crate::conformance::facades::stop_signal();
            let run = {
                let consumer = <$consumer>::new(client.clone());
                tokio::spawn(async move {
                    consumer
                        .run_fifo_until_timeout::<Ordered, _, _>(handler, (), ConsumerOptions::new(), signal, ms(5_000))
                        .await
                })
            };
            let keys: Vec<&str> = ["a", "b", "c"].iter().cycle().take(12).copied().collect();
            publish::<$b, Ordered>(&client, &keys).await;
            let seen = probe.live.wait_for("12 messages", |s| s.len() >= 12).await;
            for key in ["a", "b", "c"] {
                let order: Vec<u32> = seen
                    .iter()
                    .filter(|s| s.msg.key == key)
                    .map(|s| s.msg.n)
                    .collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(order, sorted, "key {key} out of order");
            }
            $crate::conformance::facades::stop_cleanly(tx, run).await;
            close::<$b>(&client).await;
        }

        #[doc = concat!("`", stringify!($consumer), "::run_fifo_until_timeout` whose options' shutdown token is \
            already cancelled returns at once with a clean outcome, though its signal never fires.")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn run_fifo_until_timeout_returns_when_its_token_is_already_cancelled() {
            use ::shove::{ConsumerOptions, Outcome, Topic, define_sequenced_topic};
            use $crate::conformance::facades::{close, sharded};
            use $crate::conformance::{Msg, Probe, WAIT, ms};

            define_sequenced_topic!(Cancelled, Msg, Msg::key_of, sharded("fifo-cancelled", 2));
            let client = $connect().await;
            <$declarer>::new(client.clone())
                .declare(Cancelled::topology())
                .await
                .expect("declare");
            let probe = Probe::<Msg>::new();
            let token = ::tokio_util::sync::CancellationToken::new();
            token.cancel();
            let consumer = <$consumer>::new(client.clone());
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
            close::<$b>(&client).await;
        }
    };
}
pub(crate) use run_fifo_until_timeout_keeps_key_order_and_stops_on_signal;

/// A test named `$name`: the stats provider (and `Broker::queue_stats_provider`) counts messages not yet
/// delivered as `$waiting` and delivered-unacknowledged ones as `$held` (the `QueueStats` fields), also
/// before any consumer has run; a sequenced topic's main name sums its shards.
macro_rules! stats_provider_counts {
    (
        $name:ident,
        backend: $b:ty,
        connect: $connect:path,
        consumer: $consumer:ty,
        declarer: $declarer:ty,
        provider: $provider:ty,
        stats: $stats:ty { $waiting:ident, $held:ident } $(,)?
    ) => {
        #[doc = concat!("`", stringify!($provider), "` (and `Broker::queue_stats_provider`) counts messages not \
            yet delivered as `", stringify!($waiting), "` and delivered-unacknowledged ones as `",
                    stringify!($held), "`, also before any consumer has run; a sequenced topic's main name sums its \
            shards.")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            use std::sync::Arc;

            use ::shove::{Broker, ConsumerOptions, Topic, TopologyBuilder, define_sequenced_topic, define_topic};
            use $crate::conformance::facades::{close, gated, publish, sharded};
            use $crate::conformance::{Msg, Probe, WAIT, eventually, unique};

            define_topic!(Counted, Msg, TopologyBuilder::new(unique("stats")).dlq().build());
            define_sequenced_topic!(Sharded, Msg, Msg::key_of, sharded("stats-seq", 3));
            let queue = Counted::topology().queue();
            let client = $connect().await;
            let declarer = <$declarer>::new(client.clone());
            declarer.declare(Counted::topology()).await.expect("declare");
            declarer.declare(Sharded::topology()).await.expect("declare");
            let stats = <$provider>::new(client.clone());
            let read = |s: $stats| (s.$waiting, s.$held);

            assert_eq!(read(stats.get_queue_stats(queue).await.expect("stats")), (0, 0));
            publish::<$b, Counted>(&client, &["a", "b", "c"]).await;
            assert_eq!(
                read(stats.clone().get_queue_stats(queue).await.expect("stats")),
                (3, 0)
            );
            let bridge = Broker::<$b>::from_client(client.clone())
                .queue_stats_provider()
                .get_queue_stats(queue)
                .await
                .expect("stats through the broker");
            assert_eq!(read(bridge), (3, 0));

            publish::<$b, Sharded>(&client, &["a", "b", "c", "d", "e"]).await;
            let sharded = stats
                .get_queue_stats(Sharded::topology().queue())
                .await
                .expect("stats of a sequenced topic");
            assert_eq!(read(sharded), (5, 0));

            // A consumer holding all three messages in its handlers: none waiting, three held.
            let probe = Probe::<Msg>::new();
            let gate = Arc::new(::tokio::sync::Notify::new());
            let stop = ::tokio_util::sync::CancellationToken::new();
            let run = {
                let consumer = <$consumer>::new(client.clone());
                let handler = gated(&probe, gate.clone());
                let options = ConsumerOptions::<$b>::new().with_shutdown(stop.clone());
                tokio::spawn(async move { consumer.run::<Counted, _>(handler, (), options).await })
            };
            probe.live.wait_for("3 handler calls", |s| s.len() >= 3).await;
            let what = concat!("0 ", stringify!($waiting), " and 3 ", stringify!($held));
            eventually(what, WAIT, || async {
                read(stats.get_queue_stats(queue).await.expect("stats")) == (0, 3)
            })
            .await;
            eventually("every acknowledgement to be counted", WAIT, || async {
                gate.notify_waiters();
                read(stats.get_queue_stats(queue).await.expect("stats")) == (0, 0)
            })
            .await;
            stop.cancel();
            let ended = tokio::time::timeout(WAIT, run)
                .await
                .expect("run stops on its token");
            ended.expect("run task").expect("run ends cleanly");
            close::<$b>(&client).await;
        }
    };
}
pub(crate) use stats_provider_counts;

/// `autoscaler_backend_lists_measures_and_scales`: the autoscaler backend lists a registry's groups,
/// measures them and scales them; with another stats provider (one of `$provider_trait`, reporting
/// `$stats { $waiting: 42, $held: 7 }`) it reports that provider's numbers.
macro_rules! autoscaler_backend_lists_measures_and_scales {
    (
        backend: $b:ty,
        connect: $connect:path,
        autoscaler: $autoscaler:ident,
        registry: $registry:ty,
        config: $config:ty,
        provider_trait: $provider_trait:path,
        stats: $stats:ident { $waiting:ident, $held:ident } $(,)?
    ) => {
        #[doc = concat!("`", stringify!($autoscaler), "` lists a registry's groups, measures them and scales \
            them; with another stats provider it reports that provider's numbers.")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn autoscaler_backend_lists_measures_and_scales() {
            use std::sync::Arc;
            use std::sync::atomic::{AtomicU32, Ordering};

            use ::shove::{
                AutoscalerBackend, AutoscalerConfig, Outcome, ScalingDecision, ShoveError, Topic, TopologyBuilder,
                define_topic,
            };
            use ::tokio::sync::Mutex;
            use $crate::conformance::facades::{close, publish};
            use $crate::conformance::{Msg, Probe, WAIT, eventually, unique};

            /// Fixed numbers, to see how the autoscaler backend passes them on.
            struct FixedStats(Arc<AtomicU32>);

            impl $provider_trait for FixedStats {
                async fn get_queue_stats(&self, _queue: &str) -> ::shove::error::Result<$stats> {
                    self.0.fetch_add(1, Ordering::SeqCst);
                    Ok($stats {
                        $waiting: 42,
                        $held: 7,
                    })
                }
            }

            define_topic!(Scaled, Msg, TopologyBuilder::new(unique("scaled")).dlq().build());
            let queue = Scaled::topology().queue().to_string();
            let client = $connect().await;
            let registry = Arc::new(Mutex::new(<$registry>::new(client.clone())));
            let probe = Probe::<Msg>::new();
            let handler = probe.handler(|_, _| Outcome::Ack);
            registry
                .lock()
                .await
                .register::<Scaled, _>(
                    <$config>::new(1..=3).with_prefetch_count(6),
                    move || handler.clone(),
                    (),
                )
                .await
                .expect("register");
            publish::<$b, Scaled>(&client, &["a", "b"]).await;

            let scaler = $autoscaler::new(client.clone(), registry.clone());
            assert_eq!(
                scaler.list_groups().await.expect("list_groups"),
                vec![queue.clone()]
            );
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
            assert_eq!(
                scaler
                    .fetch_metrics(&queue)
                    .await
                    .expect("metrics")
                    .active_consumers,
                3
            );
            eventually("scale-down to the minimum", WAIT, || async {
                scaler
                    .scale(&queue, ScalingDecision::ScaleDown(5))
                    .await
                    .expect("scale down");
                scaler
                    .fetch_metrics(&queue)
                    .await
                    .expect("metrics")
                    .active_consumers
                    == 1
            })
            .await;

            let calls = Arc::new(AtomicU32::new(0));
            let fixed = $autoscaler::with_stats_provider(FixedStats(calls.clone()), registry.clone());
            let metrics = fixed.fetch_metrics(&queue).await.expect("fetch_metrics");
            assert_eq!((metrics.messages_ready, metrics.messages_in_flight), (42, 7));
            assert_eq!(calls.load(Ordering::SeqCst), 1);

            // The ready-made autoscaler over the same registry builds without touching the server.
            let _autoscaler = $autoscaler::autoscaler(client.clone(), registry.clone(), AutoscalerConfig::default());

            registry.lock().await.shutdown_all().await;
            close::<$b>(&client).await;
        }
    };
}
pub(crate) use autoscaler_backend_lists_measures_and_scales;
