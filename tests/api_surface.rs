//! Compile-compatibility tests against the public API of shove 0.11.3 (generic API + in-process backend).
//!
//! Every public item of the spec (sections 1–13, 14.6, 15, 16) is named here with its exact path and, where
//! possible, its exact signature: a missing item or a changed signature is a compile error. The runtime tests at
//! the bottom run a short program written in the 0.11.3 style against the in-process backend.

// `fn ... -> impl Future` trait-method forms are written on purpose (the spec allows both forms).
#![allow(
    dead_code,
    unused_imports,
    clippy::type_complexity,
    clippy::manual_async_fn,
    clippy::too_many_arguments
)]

use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use shove::error::Result;
use shove::{
    AuditHandler, AuditRecord, Audited, AutoscaleMetrics, Autoscaler, AutoscalerBackend, AutoscalerConfig, Backend,
    Broker, Codec, ConsumerGroup, ConsumerGroupConfig, ConsumerOptions, ConsumerSupervisor, DeadMessageMetadata,
    HasCoordinatedGroups, HoldQueue, JsonCodec, MessageHandler, MessageHandlerExt, MessageMetadata, Outcome, Publisher,
    QueueTopology, RawBytesCodec, ScalingDecision, ScalingMetrics, ScalingStrategy, SequenceConfig, SequenceFailure,
    SequencedTopic, ShoveError, Stabilized, SupervisorOutcome, ThresholdStrategy, Topic, Topics, TopologyBuilder,
    TopologyDeclarer, define_sequenced_topic, define_topic,
};

// ---------------------------------------------------------------------------------------------------------------
// Trait-impl assertion helpers
// ---------------------------------------------------------------------------------------------------------------

fn is_debug<T: Debug>() {}
fn is_display<T: Display>() {}
fn is_clone<T: Clone>() {}
fn is_copy<T: Copy>() {}
fn is_default<T: Default>() {}
fn is_partial_eq<T: PartialEq>() {}
fn is_eq<T: Eq>() {}
fn is_serialize<T: Serialize>() {}
fn is_deserialize<T: DeserializeOwned>() {}
fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}
fn is_static<T: 'static>() {}
fn is_error<T: std::error::Error + Send + Sync + 'static>() {}
fn is_topic<T: Topic>() {}
fn is_sequenced_topic<T: SequencedTopic>() {}
fn is_topics<T: Topics>() {}
fn is_handler<T: Topic, H: MessageHandler<T>>() {}
fn is_handler_with_ctx<T: Topic, H: MessageHandler<T, Context = C>, C>() {}
fn is_audit_handler<T: Topic, A: AuditHandler<T>>() {}
fn is_autoscaler_backend<B: AutoscalerBackend<GroupId = G>, G>() {}
fn is_scaling_strategy<S: ScalingStrategy>() {}
fn is_codec<C: Codec<M>, M>() {}
fn is_backend<B: Backend>() {}
fn is_coordinated<B: HasCoordinatedGroups>() {}
fn is_send_future<O>(_: &(impl Future<Output = O> + Send)) {}
fn is_future<O>(_: &impl Future<Output = O>) {}

// ---------------------------------------------------------------------------------------------------------------
// Section 2: every root re-export, and the same item through its defining module
// ---------------------------------------------------------------------------------------------------------------

mod root_paths {
    #[cfg(feature = "inmemory")]
    pub use shove::InMemory;
    #[cfg(feature = "protobuf")]
    pub use shove::ProtobufCodec;
    pub use shove::{
        AuditHandler, AuditRecord, Audited, AutoscaleMetrics, Autoscaler, AutoscalerBackend, AutoscalerConfig, Backend,
        Broker, Codec, ConsumerGroup, ConsumerGroupConfig, ConsumerOptions, ConsumerSupervisor,
        DEFAULT_HANDLER_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING_PER_KEY, DeadMessageMetadata,
        HasCoordinatedGroups, HoldQueue, JsonCodec, MessageHandler, MessageHandlerExt, MessageMetadata, Outcome,
        Publisher, QueueTopology, RawBytesCodec, ScalingDecision, ScalingMetrics, ScalingStrategy, SequenceConfig,
        SequenceFailure, SequencedTopic, ShoveError, Stabilized, SupervisorOutcome, ThresholdStrategy, Topic, Topics,
        TopologyBuilder, TopologyDeclarer, define_sequenced_topic, define_topic,
    };
    #[cfg(feature = "audit")]
    pub use shove::{AuditLog, ShoveAuditHandler};
}

mod module_paths {
    pub use shove::audit::{AuditHandler, AuditRecord, Audited};
    #[cfg(feature = "audit")]
    pub use shove::audit::{AuditLog, ShoveAuditHandler};
    pub use shove::autoscale_metrics::AutoscaleMetrics;
    pub use shove::autoscaler::{
        Autoscaler, AutoscalerBackend, AutoscalerConfig, ScalingDecision, ScalingMetrics, ScalingStrategy, Stabilized,
        ThresholdStrategy,
    };
    pub use shove::backend::Backend;
    pub use shove::backend::capability::HasCoordinatedGroups;
    pub use shove::broker::{Broker, DEFAULT_PING_TIMEOUT};
    pub use shove::codec::{Codec, JsonCodec, RawBytesCodec};
    #[cfg(feature = "protobuf")]
    pub use shove::codecs::protobuf::ProtobufCodec;
    pub use shove::consumer::{
        ConsumerOptions, DEFAULT_HANDLER_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING_PER_KEY,
    };
    pub use shove::consumer_group::{ConsumerGroup, ConsumerGroupConfig};
    pub use shove::consumer_supervisor::{ConsumerSupervisor, SupervisorOutcome};
    pub use shove::error::{Result, ShoveError};
    pub use shove::handler::{MessageHandler, MessageHandlerExt};
    #[cfg(feature = "inmemory")]
    pub use shove::markers::InMemory;
    pub use shove::metadata::{DeadMessageMetadata, MessageMetadata};
    pub use shove::metrics::set_prefix;
    pub use shove::outcome::Outcome;
    pub use shove::publisher::Publisher;
    pub use shove::topic::{SequencedTopic, Topic};
    pub use shove::topology::{HoldQueue, QueueTopology, SequenceConfig, SequenceFailure, TopologyBuilder};
    pub use shove::topology_declarer::{Topics, TopologyDeclarer};
}

/// Every public module of section 2 (`macros` is `#[doc(hidden)]` but public).
mod public_modules {
    #[cfg(feature = "protobuf")]
    pub use shove::codecs::protobuf;
    #[cfg(feature = "inmemory")]
    pub use shove::inmemory;
    pub use shove::{
        audit, autoscale_metrics, autoscaler, backend, backend::capability, broker, codec, codecs, consumer,
        consumer_group, consumer_supervisor, error, handler, macros, markers, metadata, metrics, outcome, publisher,
        topic, topology, topology_declarer,
    };
}

/// Supertrait and associated-type bounds that user code relies on.
fn implied_bounds<T: Topic, H: MessageHandler<T>, A: AuditHandler<T>, C: Codec<T::Message>>() {
    fn send_sync_static<X: Send + Sync + 'static>() {}
    fn context<X: Clone + Send + Sync + 'static>() {}
    send_sync_static::<T>();
    send_sync_static::<T::Message>();
    send_sync_static::<H>();
    context::<H::Context>();
    send_sync_static::<A>();
    send_sync_static::<C>();
    fn codec_of_topic<T: Topic>() {
        is_codec::<T::Codec, T::Message>();
    }
    codec_of_topic::<T>();
}
fn implied_strategy_bounds<S: ScalingStrategy, B: AutoscalerBackend>() {
    is_send::<S>();
    is_sync::<S>();
    is_send::<B>();
    is_sync::<B>();
}

/// Root re-exports and module paths name the same types.
macro_rules! same_type {
    ($($a:ty => $b:ty),* $(,)?) => { $( let _: fn($a) -> $b = |x| x; )* };
}

/// Root re-exports and module paths name the same traits (a bound on one satisfies a bound on the other).
macro_rules! same_trait {
    ($($name:ident: $a:path => $b:path;)*) => {
        $( fn $name<X: $a>() { fn inner<Y: $b>() {} inner::<X>() } )*
    };
}

same_trait! {
    same_topic: root_paths::Topic => module_paths::Topic;
    same_topic_rev: module_paths::Topic => root_paths::Topic;
    same_sequenced: root_paths::SequencedTopic => module_paths::SequencedTopic;
    same_backend: root_paths::Backend => module_paths::Backend;
    same_coordinated: root_paths::HasCoordinatedGroups => module_paths::HasCoordinatedGroups;
    same_topics: root_paths::Topics => module_paths::Topics;
    same_scaling_strategy: root_paths::ScalingStrategy => module_paths::ScalingStrategy;
    same_autoscaler_backend: root_paths::AutoscalerBackend => module_paths::AutoscalerBackend;
}

fn same_handler<T: Topic, H: root_paths::MessageHandler<T>>() {
    fn inner<T: Topic, H: module_paths::MessageHandler<T>>() {}
    inner::<T, H>()
}
fn same_handler_ext<T: Topic, H: root_paths::MessageHandlerExt<T>>() {
    fn inner<T: Topic, H: module_paths::MessageHandlerExt<T>>() {}
    inner::<T, H>()
}
fn same_audit_handler<T: Topic, A: root_paths::AuditHandler<T>>() {
    fn inner<T: Topic, A: module_paths::AuditHandler<T>>() {}
    inner::<T, A>()
}
fn same_codec<M, C: root_paths::Codec<M>>() {
    fn inner<M, C: module_paths::Codec<M>>() {}
    inner::<M, C>()
}

#[test]
fn root_and_module_paths_are_the_same_items() {
    same_type! {
        root_paths::AuditRecord<OrderPaid> => module_paths::AuditRecord<OrderPaid>,
        root_paths::Audited<Recorder, MemAudit> => module_paths::Audited<Recorder, MemAudit>,
        root_paths::AutoscaleMetrics => module_paths::AutoscaleMetrics,
        root_paths::Autoscaler<FakeScaler, AlwaysUp> => module_paths::Autoscaler<FakeScaler, AlwaysUp>,
        root_paths::AutoscalerConfig => module_paths::AutoscalerConfig,
        root_paths::ScalingDecision => module_paths::ScalingDecision,
        root_paths::ScalingMetrics => module_paths::ScalingMetrics,
        root_paths::Stabilized<AlwaysUp> => module_paths::Stabilized<AlwaysUp>,
        root_paths::ThresholdStrategy => module_paths::ThresholdStrategy,
        root_paths::JsonCodec => module_paths::JsonCodec,
        root_paths::RawBytesCodec => module_paths::RawBytesCodec,
        root_paths::SupervisorOutcome => module_paths::SupervisorOutcome,
        root_paths::ShoveError => module_paths::ShoveError,
        root_paths::DeadMessageMetadata => module_paths::DeadMessageMetadata,
        root_paths::MessageMetadata => module_paths::MessageMetadata,
        root_paths::Outcome => module_paths::Outcome,
        root_paths::HoldQueue => module_paths::HoldQueue,
        root_paths::QueueTopology => module_paths::QueueTopology,
        root_paths::SequenceConfig => module_paths::SequenceConfig,
        root_paths::SequenceFailure => module_paths::SequenceFailure,
        root_paths::TopologyBuilder => module_paths::TopologyBuilder,
        Result<u8> => std::result::Result<u8, ShoveError>,
        module_paths::Result<()> => std::result::Result<(), module_paths::ShoveError>,
    }
    let _: std::time::Duration = root_paths::DEFAULT_HANDLER_TIMEOUT;
    let _: std::time::Duration = module_paths::DEFAULT_HANDLER_TIMEOUT;
    let _: usize = root_paths::DEFAULT_MAX_MESSAGE_SIZE;
    let _: usize = module_paths::DEFAULT_MAX_MESSAGE_SIZE;
    let _: usize = root_paths::DEFAULT_MAX_PENDING_PER_KEY;
    let _: usize = module_paths::DEFAULT_MAX_PENDING_PER_KEY;
    let _: Duration = module_paths::DEFAULT_PING_TIMEOUT;
    let _: Duration = shove::broker::DEFAULT_PING_TIMEOUT;
    assert_eq!(
        root_paths::DEFAULT_HANDLER_TIMEOUT,
        module_paths::DEFAULT_HANDLER_TIMEOUT
    );
    assert_eq!(
        root_paths::DEFAULT_MAX_MESSAGE_SIZE,
        module_paths::DEFAULT_MAX_MESSAGE_SIZE
    );
    assert_eq!(
        root_paths::DEFAULT_MAX_PENDING_PER_KEY,
        module_paths::DEFAULT_MAX_PENDING_PER_KEY
    );

    same_topic::<Orders>();
    same_topic_rev::<Orders>();
    same_sequenced::<Ledger>();
    same_topics::<(Orders, Refunds)>();
    same_scaling_strategy::<AlwaysUp>();
    same_autoscaler_backend::<FakeScaler>();
    same_handler::<Orders, Recorder>();
    same_handler_ext::<Orders, Recorder>();
    same_audit_handler::<Orders, MemAudit>();
    same_codec::<String, UpperCodec>();
    same_codec::<OrderPaid, JsonCodec>();
    same_codec::<Vec<u8>, RawBytesCodec>();
    implied_bounds::<Orders, Recorder, MemAudit, JsonCodec>();
    implied_strategy_bounds::<AlwaysUp, FakeScaler>();

    #[cfg(feature = "inmemory")]
    {
        same_type! {
            root_paths::InMemory => module_paths::InMemory,
            root_paths::InMemory => shove::inmemory::InMemory,
            root_paths::Broker<shove::InMemory> => module_paths::Broker<shove::InMemory>,
            root_paths::Publisher<shove::InMemory> => module_paths::Publisher<shove::InMemory>,
            root_paths::ConsumerOptions<shove::InMemory> => module_paths::ConsumerOptions<shove::InMemory>,
            root_paths::ConsumerSupervisor<shove::InMemory> => module_paths::ConsumerSupervisor<shove::InMemory, ()>,
            root_paths::ConsumerGroup<shove::InMemory> => module_paths::ConsumerGroup<shove::InMemory, ()>,
            root_paths::ConsumerGroupConfig<shove::InMemory> => module_paths::ConsumerGroupConfig<shove::InMemory>,
            root_paths::TopologyDeclarer<shove::InMemory> => module_paths::TopologyDeclarer<shove::InMemory>,
        }
        same_backend::<shove::InMemory>();
        same_coordinated::<shove::InMemory>();
        let _: shove::InMemory = shove::InMemory;
        let _: shove::markers::InMemory = shove::inmemory::InMemory;
    }
    #[cfg(feature = "audit")]
    {
        same_type! {
            root_paths::AuditLog => module_paths::AuditLog,
        }
        #[cfg(feature = "inmemory")]
        same_type! {
            root_paths::ShoveAuditHandler<shove::InMemory> => module_paths::ShoveAuditHandler<shove::InMemory>,
        }
        let _: shove::AuditLog = shove::audit::AuditLog;
    }
    #[cfg(feature = "protobuf")]
    {
        same_type! {
            root_paths::ProtobufCodec => module_paths::ProtobufCodec,
        }
        let _: shove::ProtobufCodec = shove::codecs::protobuf::ProtobufCodec;
    }
    let _: shove::JsonCodec = shove::codec::JsonCodec;
    let _: shove::RawBytesCodec = shove::codec::RawBytesCodec;
}

// ---------------------------------------------------------------------------------------------------------------
// Section 3: topics and macros, in every form
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: u64,
    pub amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub account_id: String,
    pub seq: u32,
}

fn order(order_id: u64) -> OrderPaid {
    OrderPaid {
        order_id,
        amount_cents: order_id * 100,
    }
}

// `pub`, default codec.
define_topic!(pub Orders, OrderPaid, TopologyBuilder::new("api-orders").dlq().build());
// private, default codec, fully qualified macro path.
shove::define_topic!(Refunds, OrderPaid, TopologyBuilder::new("api-refunds").build());
// restricted visibility, explicit codec.
define_topic!(pub(crate) RawTopic, Vec<u8>, TopologyBuilder::new("api-raw").build(), codec = shove::RawBytesCodec);
// private, user-defined codec.
define_topic!(
    Shouts,
    String,
    TopologyBuilder::new("api-shouts").build(),
    codec = UpperCodec
);
// explicit JsonCodec.
define_topic!(pub JsonOrders, OrderPaid, TopologyBuilder::new("api-json-orders").build(), codec = JsonCodec);

// `pub` sequenced topic, default codec (the closure's parameter type is inferred).
define_sequenced_topic!(
    pub Ledger,
    LedgerEntry,
    |msg| msg.account_id.clone(),
    TopologyBuilder::new("api-ledger")
        .sequenced(SequenceFailure::FailAll)
        .hold_queue(Duration::from_secs(5))
        .dlq()
        .build()
);
// private sequenced topic, explicit codec, fully qualified macro path.
shove::define_sequenced_topic!(
    Journal,
    LedgerEntry,
    |entry| entry.account_id.to_uppercase(),
    TopologyBuilder::new("api-journal")
        .sequenced(SequenceFailure::Skip)
        .routing_shards(4)
        .allow_message_loss()
        .build(),
    codec = shove::JsonCodec
);

#[cfg(feature = "protobuf")]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
}
#[cfg(feature = "protobuf")]
define_topic!(pub Pings, Ping, TopologyBuilder::new("api-pings").build(), codec = shove::ProtobufCodec);

// 16 topics for the widest `Topics` tuple impl.
define_topic!(T01, OrderPaid, TopologyBuilder::new("api-t01").build());
define_topic!(T02, OrderPaid, TopologyBuilder::new("api-t02").build());
define_topic!(T03, OrderPaid, TopologyBuilder::new("api-t03").build());
define_topic!(T04, OrderPaid, TopologyBuilder::new("api-t04").build());
define_topic!(T05, OrderPaid, TopologyBuilder::new("api-t05").build());
define_topic!(T06, OrderPaid, TopologyBuilder::new("api-t06").build());
define_topic!(T07, OrderPaid, TopologyBuilder::new("api-t07").build());
define_topic!(T08, OrderPaid, TopologyBuilder::new("api-t08").build());
define_topic!(T09, OrderPaid, TopologyBuilder::new("api-t09").build());
define_topic!(T10, OrderPaid, TopologyBuilder::new("api-t10").build());
define_topic!(T11, OrderPaid, TopologyBuilder::new("api-t11").build());
define_topic!(T12, OrderPaid, TopologyBuilder::new("api-t12").build());
define_topic!(T13, OrderPaid, TopologyBuilder::new("api-t13").build());
define_topic!(T14, OrderPaid, TopologyBuilder::new("api-t14").build());
define_topic!(T15, OrderPaid, TopologyBuilder::new("api-t15").build());
define_topic!(T16, OrderPaid, TopologyBuilder::new("api-t16").build());

type AllSixteen = (
    T01,
    T02,
    T03,
    T04,
    T05,
    T06,
    T07,
    T08,
    T09,
    T10,
    T11,
    T12,
    T13,
    T14,
    T15,
    T16,
);

/// `Topic` implemented by hand (user-implementable trait, default `SEQUENCE_KEY_FN`).
pub struct ManualTopic;
impl Topic for ManualTopic {
    type Message = OrderPaid;
    type Codec = JsonCodec;
    fn topology() -> &'static QueueTopology {
        static TOPOLOGY: OnceLock<QueueTopology> = OnceLock::new();
        TOPOLOGY.get_or_init(|| TopologyBuilder::new("api-manual").dlq().build())
    }
}

/// `Topic` + `SequencedTopic` implemented by hand.
pub struct ManualSequenced;
impl Topic for ManualSequenced {
    type Message = LedgerEntry;
    type Codec = JsonCodec;
    fn topology() -> &'static QueueTopology {
        static TOPOLOGY: OnceLock<QueueTopology> = OnceLock::new();
        TOPOLOGY.get_or_init(|| {
            TopologyBuilder::new("api-manual-seq")
                .sequenced(SequenceFailure::Skip)
                .hold_queue(Duration::from_millis(1500))
                .dlq_named("api-manual-seq-dead")
                .build()
        })
    }
    const SEQUENCE_KEY_FN: Option<fn(&Self::Message) -> String> = Some(<Self as SequencedTopic>::sequence_key);
}
impl SequencedTopic for ManualSequenced {
    fn sequence_key(message: &LedgerEntry) -> String {
        message.account_id.clone()
    }
}

#[test]
fn topic_trait_shapes() {
    is_topic::<Orders>();
    is_topic::<Refunds>();
    is_topic::<RawTopic>();
    is_topic::<Shouts>();
    is_topic::<JsonOrders>();
    is_topic::<ManualTopic>();
    is_sequenced_topic::<Ledger>();
    is_sequenced_topic::<Journal>();
    is_sequenced_topic::<ManualSequenced>();
    #[cfg(feature = "protobuf")]
    is_topic::<Pings>();

    // Associated types.
    let _: fn(<Orders as Topic>::Message) -> OrderPaid = |m| m;
    let _: fn(<RawTopic as Topic>::Message) -> Vec<u8> = |m| m;
    let _: fn(<Ledger as Topic>::Message) -> LedgerEntry = |m| m;
    let _: fn(<Orders as Topic>::Codec) -> JsonCodec = |c| c;
    let _: fn(<RawTopic as Topic>::Codec) -> RawBytesCodec = |c| c;
    let _: fn(<Shouts as Topic>::Codec) -> UpperCodec = |c| c;
    let _: fn(<Journal as Topic>::Codec) -> JsonCodec = |c| c;
    #[cfg(feature = "protobuf")]
    let _: fn(<Pings as Topic>::Codec) -> shove::ProtobufCodec = |c| c;

    // Associated fns and consts.
    let _: fn() -> &'static QueueTopology = <Orders as Topic>::topology;
    let _: fn() -> &'static QueueTopology = <Ledger as Topic>::topology;
    let _: Option<fn(&OrderPaid) -> String> = <Orders as Topic>::SEQUENCE_KEY_FN;
    let _: Option<fn(&LedgerEntry) -> String> = <Ledger as Topic>::SEQUENCE_KEY_FN;
    let _: fn(&LedgerEntry) -> String = <Ledger as SequencedTopic>::sequence_key;
    let _: fn(&LedgerEntry) -> String = <Journal as SequencedTopic>::sequence_key;

    // The static topology is the same every call.
    assert!(std::ptr::eq(Orders::topology(), Orders::topology()));
    assert!(std::ptr::eq(Ledger::topology(), Ledger::topology()));
    assert!(std::ptr::eq(ManualTopic::topology(), ManualTopic::topology()));
    assert_eq!(Orders::topology().queue(), "api-orders");
    assert_eq!(Refunds::topology().queue(), "api-refunds");
    assert_eq!(Journal::topology().sequencing().map(|s| s.routing_shards()), Some(4));

    let entry = LedgerEntry {
        account_id: "acc-1".into(),
        seq: 1,
    };
    assert_eq!(Ledger::sequence_key(&entry), "acc-1");
    assert_eq!(Journal::sequence_key(&entry), "ACC-1");
    assert_eq!(<Ledger as Topic>::SEQUENCE_KEY_FN.expect("sequenced")(&entry), "acc-1");
    assert_eq!(
        <ManualSequenced as Topic>::SEQUENCE_KEY_FN.expect("sequenced")(&entry),
        "acc-1"
    );
    assert!(<Orders as Topic>::SEQUENCE_KEY_FN.is_none());
    assert!(<ManualTopic as Topic>::SEQUENCE_KEY_FN.is_none());

    // Topics: tuples from 1 to 16.
    is_topics::<(Orders,)>();
    is_topics::<(Orders, Refunds)>();
    is_topics::<(Orders, Refunds, RawTopic, Shouts, Ledger)>();
    is_topics::<AllSixteen>();

    // Topic: Send + Sync + 'static
    is_send::<Orders>();
    is_sync::<Orders>();
    is_static::<Orders>();
}

// ---------------------------------------------------------------------------------------------------------------
// Section 4: topology
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn topology_signatures() {
    let _: fn(&HoldQueue) -> &str = HoldQueue::name;
    let _: fn(&HoldQueue) -> Duration = HoldQueue::delay;
    let _: fn(&SequenceConfig) -> SequenceFailure = SequenceConfig::on_failure;
    let _: fn(&SequenceConfig) -> u16 = SequenceConfig::routing_shards;
    let _: fn(&SequenceConfig) -> &str = SequenceConfig::exchange;
    let _: fn(&QueueTopology) -> &str = QueueTopology::queue;
    let _: fn(&QueueTopology) -> Option<&str> = QueueTopology::dlq;
    let _: fn(&QueueTopology) -> &[HoldQueue] = QueueTopology::hold_queues;
    let _: fn(&QueueTopology) -> Option<&SequenceConfig> = QueueTopology::sequencing;
    let _: fn(&QueueTopology, u16) -> Vec<HoldQueue> = QueueTopology::shard_hold_queue_names;
    let _: fn(&'static str) -> TopologyBuilder = TopologyBuilder::new;
    let _: fn(String) -> TopologyBuilder = TopologyBuilder::new;
    let _: fn(TopologyBuilder, SequenceFailure) -> TopologyBuilder = TopologyBuilder::sequenced;
    let _: fn(TopologyBuilder, u16) -> TopologyBuilder = TopologyBuilder::routing_shards;
    let _: fn(TopologyBuilder, Duration) -> TopologyBuilder = TopologyBuilder::hold_queue;
    let _: fn(TopologyBuilder) -> TopologyBuilder = TopologyBuilder::dlq;
    let _: fn(TopologyBuilder, &'static str) -> TopologyBuilder = TopologyBuilder::dlq_named;
    let _: fn(TopologyBuilder, String) -> TopologyBuilder = TopologyBuilder::dlq_named;
    let _: fn(TopologyBuilder) -> TopologyBuilder = TopologyBuilder::allow_message_loss;
    let _: fn(TopologyBuilder) -> QueueTopology = TopologyBuilder::build;

    is_debug::<HoldQueue>();
    is_clone::<HoldQueue>();
    is_debug::<SequenceFailure>();
    is_clone::<SequenceFailure>();
    is_copy::<SequenceFailure>();
    is_partial_eq::<SequenceFailure>();
    is_eq::<SequenceFailure>();
    is_debug::<SequenceConfig>();
    is_clone::<SequenceConfig>();
    is_debug::<QueueTopology>();
    is_clone::<QueueTopology>();

    // SequenceFailure has exactly these variants.
    for f in [SequenceFailure::Skip, SequenceFailure::FailAll] {
        match f {
            SequenceFailure::Skip | SequenceFailure::FailAll => {}
        }
    }

    let topology: QueueTopology = TopologyBuilder::new(String::from("api-topo"))
        .sequenced(SequenceFailure::Skip)
        .routing_shards(2)
        .hold_queue(Duration::from_secs(1))
        .dlq_named(String::from("api-topo-dead"))
        .build();
    let seq: &SequenceConfig = topology.sequencing().expect("sequenced");
    assert_eq!(seq.on_failure(), SequenceFailure::Skip);
    assert_eq!(seq.routing_shards(), 2);
    assert_eq!(topology.dlq(), Some("api-topo-dead"));
    let copy = topology.clone();
    assert_eq!(copy.queue(), "api-topo");
    assert!(!format!("{topology:?}").is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Section 5: codecs (user-implementable `Codec`)
// ---------------------------------------------------------------------------------------------------------------

/// A user codec: upper-cases on encode, decodes UTF-8.
pub struct UpperCodec;
impl Codec<String> for UpperCodec {
    const NAME: &'static str = "upper";
    fn encode(value: &String) -> Result<Vec<u8>> {
        Ok(value.to_uppercase().into_bytes())
    }
    fn decode(bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| ShoveError::Codec {
            codec: Self::NAME,
            source: Box::new(e),
        })
    }
}

#[test]
fn codec_signatures() {
    is_codec::<UpperCodec, String>();
    is_codec::<JsonCodec, OrderPaid>();
    is_codec::<JsonCodec, serde_json::Value>();
    is_codec::<RawBytesCodec, Vec<u8>>();
    let _: &'static str = <JsonCodec as Codec<OrderPaid>>::NAME;
    let _: &'static str = <RawBytesCodec as Codec<Vec<u8>>>::NAME;
    let _: fn(&OrderPaid) -> Result<Vec<u8>> = <JsonCodec as Codec<OrderPaid>>::encode;
    let _: fn(&[u8]) -> Result<OrderPaid> = <JsonCodec as Codec<OrderPaid>>::decode;
    let _: fn(&OrderPaid) -> Result<String> = <JsonCodec as Codec<OrderPaid>>::encode_to_string;
    let _: fn(&Vec<u8>) -> Result<Vec<u8>> = <RawBytesCodec as Codec<Vec<u8>>>::encode;
    let _: fn(&[u8]) -> Result<Vec<u8>> = <RawBytesCodec as Codec<Vec<u8>>>::decode;
    let _: fn(&Vec<u8>) -> Result<String> = <RawBytesCodec as Codec<Vec<u8>>>::encode_to_string;
    // The provided `encode_to_string` is available on user codecs.
    let _: fn(&String) -> Result<String> = <UpperCodec as Codec<String>>::encode_to_string;
    assert_eq!(UpperCodec::encode_to_string(&"abc".to_string()).unwrap(), "ABC");
    // Codecs are unit structs.
    let _ = (JsonCodec, RawBytesCodec, UpperCodec);
    #[cfg(feature = "protobuf")]
    {
        is_codec::<shove::ProtobufCodec, Ping>();
        let _: &'static str = <shove::ProtobufCodec as Codec<Ping>>::NAME;
        let _: fn(&Ping) -> Result<Vec<u8>> = <shove::ProtobufCodec as Codec<Ping>>::encode;
        let _: fn(&[u8]) -> Result<Ping> = <shove::codecs::protobuf::ProtobufCodec as Codec<Ping>>::decode;
        let _ = shove::ProtobufCodec;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Section 6: handler, outcome, metadata, error
// ---------------------------------------------------------------------------------------------------------------

/// Handler implemented with `async fn`.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<std::sync::Mutex<Vec<(OrderPaid, MessageMetadata)>>>,
}
impl Recorder {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.seen.lock().unwrap().iter().map(|(m, _)| m.order_id).collect();
        ids.sort_unstable();
        ids
    }
}
impl MessageHandler<Orders> for Recorder {
    type Context = ();
    async fn handle(&self, message: OrderPaid, metadata: MessageMetadata, _ctx: &()) -> Outcome {
        self.seen.lock().unwrap().push((message, metadata));
        Outcome::Ack
    }
}

/// Handler implemented with `fn ... -> impl Future`, overriding `handle_dead` the same way.
#[derive(Clone, Default)]
pub struct FutureRecorder {
    seen: Arc<std::sync::Mutex<Vec<OrderPaid>>>,
    dead: Arc<std::sync::Mutex<Vec<(OrderPaid, DeadMessageMetadata)>>>,
}
impl MessageHandler<Refunds> for FutureRecorder {
    type Context = ();
    fn handle(
        &self,
        message: OrderPaid,
        _metadata: MessageMetadata,
        _ctx: &(),
    ) -> impl Future<Output = Outcome> + Send {
        let seen = self.seen.clone();
        async move {
            seen.lock().unwrap().push(message);
            Outcome::Ack
        }
    }
    fn handle_dead(
        &self,
        message: OrderPaid,
        metadata: DeadMessageMetadata,
        _ctx: &(),
    ) -> impl Future<Output = ()> + Send {
        let dead = self.dead.clone();
        async move {
            dead.lock().unwrap().push((message, metadata));
        }
    }
}

/// Rejects every message; records DLQ deliveries via an `async fn handle_dead`.
#[derive(Clone, Default)]
pub struct Rejecter {
    handled: Arc<AtomicUsize>,
    dead: Arc<std::sync::Mutex<Vec<(OrderPaid, DeadMessageMetadata)>>>,
}
impl MessageHandler<Orders> for Rejecter {
    type Context = ();
    async fn handle(&self, _message: OrderPaid, _metadata: MessageMetadata, _ctx: &()) -> Outcome {
        self.handled.fetch_add(1, Ordering::SeqCst);
        Outcome::Reject
    }
    async fn handle_dead(&self, message: OrderPaid, metadata: DeadMessageMetadata, _ctx: &()) {
        self.dead.lock().unwrap().push((message, metadata));
    }
}

/// Generic handler for any topic.
#[derive(Clone, Default)]
pub struct Counter {
    n: Arc<AtomicUsize>,
}
impl Counter {
    fn get(&self) -> usize {
        self.n.load(Ordering::SeqCst)
    }
}
impl<T: Topic> MessageHandler<T> for Counter {
    type Context = ();
    async fn handle(&self, _message: T::Message, _metadata: MessageMetadata, _ctx: &()) -> Outcome {
        self.n.fetch_add(1, Ordering::SeqCst);
        Outcome::Ack
    }
}

/// Handler with a non-unit context.
#[derive(Clone, Copy, Default)]
pub struct CtxHandler;
impl MessageHandler<Orders> for CtxHandler {
    type Context = Arc<AtomicUsize>;
    async fn handle(&self, _message: OrderPaid, _metadata: MessageMetadata, ctx: &Arc<AtomicUsize>) -> Outcome {
        ctx.fetch_add(1, Ordering::SeqCst);
        Outcome::Ack
    }
}
impl MessageHandler<Ledger> for CtxHandler {
    type Context = Arc<AtomicUsize>;
    async fn handle(&self, _message: LedgerEntry, _metadata: MessageMetadata, ctx: &Arc<AtomicUsize>) -> Outcome {
        ctx.fetch_add(1, Ordering::SeqCst);
        Outcome::Ack
    }
}

/// Records ledger entries in arrival order.
#[derive(Clone, Default)]
pub struct LedgerRecorder {
    seen: Arc<std::sync::Mutex<Vec<LedgerEntry>>>,
}
impl LedgerRecorder {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn seqs_for(&self, account: &str) -> Vec<u32> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.account_id == account)
            .map(|e| e.seq)
            .collect()
    }
}
impl MessageHandler<Ledger> for LedgerRecorder {
    type Context = ();
    async fn handle(&self, message: LedgerEntry, _metadata: MessageMetadata, _ctx: &()) -> Outcome {
        self.seen.lock().unwrap().push(message);
        Outcome::Ack
    }
}

/// Strings from the user codec topic.
#[derive(Clone, Default)]
pub struct StringRecorder {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}
impl MessageHandler<Shouts> for StringRecorder {
    type Context = ();
    async fn handle(&self, message: String, _metadata: MessageMetadata, _ctx: &()) -> Outcome {
        self.seen.lock().unwrap().push(message);
        Outcome::Ack
    }
}

/// Bytes from the raw topic.
#[derive(Clone, Default)]
pub struct BytesRecorder {
    seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}
impl MessageHandler<RawTopic> for BytesRecorder {
    type Context = ();
    async fn handle(&self, message: Vec<u8>, _metadata: MessageMetadata, _ctx: &()) -> Outcome {
        self.seen.lock().unwrap().push(message);
        Outcome::Ack
    }
}

#[test]
fn handler_and_metadata_shapes() {
    is_handler::<Orders, Recorder>();
    is_handler::<Refunds, FutureRecorder>();
    is_handler::<Orders, Rejecter>();
    is_handler::<Ledger, LedgerRecorder>();
    is_handler::<Orders, Counter>();
    is_handler::<Ledger, Counter>();
    is_handler_with_ctx::<Orders, CtxHandler, Arc<AtomicUsize>>();
    is_handler_with_ctx::<Orders, Recorder, ()>();
    // impl MessageHandler<T> for Arc<H>, with H's context.
    is_handler_with_ctx::<Orders, Arc<Recorder>, ()>();
    is_handler_with_ctx::<Orders, Arc<CtxHandler>, Arc<AtomicUsize>>();
    // MessageHandlerExt for every handler.
    fn is_handler_ext<T: Topic, H: MessageHandlerExt<T>>() {}
    is_handler_ext::<Orders, Recorder>();
    is_handler_ext::<Orders, Arc<Recorder>>();
    let _: fn(Recorder, MemAudit) -> Audited<Recorder, MemAudit> = <Recorder as MessageHandlerExt<Orders>>::audited;

    // Outcome: exactly four variants, not non_exhaustive.
    for outcome in [Outcome::Ack, Outcome::Retry, Outcome::Reject, Outcome::Defer] {
        match outcome {
            Outcome::Ack | Outcome::Retry | Outcome::Reject | Outcome::Defer => {}
        }
    }
    is_debug::<Outcome>();
    is_clone::<Outcome>();
    is_serialize::<Outcome>();
    is_deserialize::<Outcome>();

    // MessageMetadata / DeadMessageMetadata are literal-constructible with public fields.
    let mut headers = HashMap::new();
    headers.insert("tenant".to_string(), "acme".to_string());
    let metadata = MessageMetadata {
        retry_count: 2u32,
        delivery_id: String::from("d-1"),
        redelivered: true,
        headers: Arc::new(headers),
    };
    let dead = DeadMessageMetadata {
        message: metadata.clone(),
        reason: Some(String::from("rejected")),
        original_queue: Some(String::from("api-orders")),
        death_count: 1u32,
    };
    let DeadMessageMetadata {
        message,
        reason,
        original_queue,
        death_count,
    } = dead.clone();
    let MessageMetadata {
        retry_count,
        delivery_id,
        redelivered,
        headers,
    } = message;
    let _: (u32, String, bool, Arc<HashMap<String, String>>) = (retry_count, delivery_id, redelivered, headers);
    let _: (Option<String>, Option<String>, u32) = (reason, original_queue, death_count);
    is_debug::<MessageMetadata>();
    is_clone::<MessageMetadata>();
    is_serialize::<MessageMetadata>();
    is_deserialize::<MessageMetadata>();
    is_debug::<DeadMessageMetadata>();
    is_clone::<DeadMessageMetadata>();
    assert!(!format!("{dead:?}").is_empty());

    // ShoveError: non_exhaustive enum with these variants, Debug + Display + Error + From<serde_json::Error>.
    let json_err = serde_json::from_str::<u32>("nope").unwrap_err();
    let errors: Vec<ShoveError> = vec![
        ShoveError::Serialization(serde_json::from_str::<u32>("nope").unwrap_err()),
        ShoveError::from(json_err),
        ShoveError::Connection(String::from("c")),
        ShoveError::Topology(String::from("t")),
        ShoveError::Validation(String::from("v")),
        ShoveError::Codec {
            codec: "json",
            source: Box::<dyn std::error::Error + Send + Sync>::from("boom"),
        },
        ShoveError::Unknown(String::from("u")),
    ];
    for e in &errors {
        #[allow(unreachable_patterns)]
        let _: bool = match e {
            ShoveError::Serialization(inner) => {
                let _: &serde_json::Error = inner;
                false
            }
            ShoveError::Connection(s)
            | ShoveError::Topology(s)
            | ShoveError::Validation(s)
            | ShoveError::Unknown(s) => {
                let _: &String = s;
                false
            }
            ShoveError::Codec { codec, source } => {
                let _: &&'static str = codec;
                #[allow(clippy::borrowed_box)]
                let _: &Box<dyn std::error::Error + Send + Sync> = source;
                false
            }
            _ => true,
        };
    }
    let _: fn(&ShoveError) -> bool = ShoveError::is_retryable;
    is_debug::<ShoveError>();
    is_display::<ShoveError>();
    is_error::<ShoveError>();
    fn from_json<E: From<serde_json::Error>>() {}
    from_json::<ShoveError>();
    // `?` converts serde_json errors.
    fn parse(s: &str) -> Result<u32> {
        Ok(serde_json::from_str(s)?)
    }
    assert!(matches!(parse("x"), Err(ShoveError::Serialization(_))));
}

// ---------------------------------------------------------------------------------------------------------------
// Section 8: ConsumerOptions
// ---------------------------------------------------------------------------------------------------------------

/// All public fields, with their exact types, readable and writable for every backend.
fn consumer_option_fields<B: Backend>(mut o: ConsumerOptions<B>) -> ConsumerOptions<B> {
    let _: u32 = o.max_retries;
    let _: u16 = o.prefetch_count;
    let _: bool = o.concurrent_processing;
    let _: Option<Duration> = o.handler_timeout;
    let _: Option<usize> = o.max_pending_per_key;
    let _: Option<usize> = o.max_message_size;
    let _: Option<u32> = o.max_reconnect_attempts;
    o.max_retries = 1;
    o.prefetch_count = 1;
    o.concurrent_processing = false;
    o.handler_timeout = Some(Duration::from_secs(1));
    o.max_pending_per_key = None;
    o.max_message_size = Some(1);
    o.max_reconnect_attempts = Some(1);
    o
}

fn consumer_option_methods<B: Backend>(token: CancellationToken) -> ConsumerOptions<B> {
    let _: ConsumerOptions<B> = ConsumerOptions::<B>::new();
    let o: ConsumerOptions<B> = ConsumerOptions::<B>::preset(5u16)
        .with_max_retries(3u32)
        .with_prefetch_count(4u16)
        .with_concurrent_processing(true)
        .with_handler_timeout(Duration::from_secs(2))
        .without_handler_timeout()
        .with_max_pending_per_key(10usize)
        .without_max_pending_per_key()
        .with_max_message_size(1024usize)
        .without_message_size_limit()
        .with_max_reconnect_attempts(7u32)
        .with_shutdown(token)
        .with_consumer_group("group")
        .with_consumer_group(String::from("group"))
        .with_consumer_group(Arc::<str>::from("group"));
    let _: Arc<AtomicBool> = o.processing_handle();
    let _: ConsumerOptions<B> = o.clone();
    let _: ConsumerOptions<B> = ConsumerOptions::default();
    consumer_option_fields(o)
}

// ---------------------------------------------------------------------------------------------------------------
// Section 7 + 9: broker, publisher, declarer, supervisor, consumer group (generic over the backend)
// ---------------------------------------------------------------------------------------------------------------

async fn broker_api<B: Backend>(config: B::Config, client: B::Client) -> Result<()> {
    let broker: Broker<B> = Broker::<B>::new(config).await?;
    let _other: Broker<B> = Broker::<B>::from_client(client);
    let publisher: Publisher<B> = broker.publisher().await?;
    let _: Publisher<B> = publisher.clone();
    let msg = order(1);
    publisher.publish::<Orders>(&msg).await?;
    let headers: HashMap<String, String> = HashMap::new();
    publisher.publish_with_headers::<Orders>(&msg, headers).await?;
    let batch: Vec<OrderPaid> = vec![order(2), order(3)];
    let _: Result<()> = publisher.publish_batch::<Orders>(&batch).await;
    let _: Result<()> = publisher.publish_batch::<Orders>(&batch[..]).await;
    let _: ConsumerSupervisor<B> = broker.consumer_supervisor();
    let _: ConsumerSupervisor<B, ()> = broker.consumer_supervisor();
    let declarer: TopologyDeclarer<B> = broker.topology();
    declarer.declare::<Orders>().await?;
    declarer.declare_all::<(Orders, Ledger)>().await?;
    declarer.declare_all::<AllSixteen>().await?;
    <(Orders, Refunds) as Topics>::declare_all::<B>(&declarer).await?;
    let _: Result<()> = broker.ping().await;
    let _: Result<()> = broker.ping_with_timeout(Duration::from_secs(1)).await;
    let _: B::QueueStatsImpl = broker.queue_stats_provider();
    let _: B::AutoscalerImpl = broker.autoscaler();
    broker.close().await;
    Ok(())
}

async fn publish_example<B: Backend>(p: &Publisher<B>, m: &OrderPaid) -> Result<()> {
    p.publish::<Orders>(m).await
}

fn topics_future_is_send<B: Backend, X: Topics>(declarer: &TopologyDeclarer<B>) {
    is_send_future::<Result<()>>(&X::declare_all(declarer));
}

async fn supervisor_api<B: Backend>(broker: &Broker<B>) -> Result<SupervisorOutcome> {
    let supervisor: ConsumerSupervisor<B> = broker.consumer_supervisor();
    let mut supervisor: ConsumerSupervisor<B, Arc<AtomicUsize>> =
        supervisor.with_context::<Arc<AtomicUsize>>(Arc::new(AtomicUsize::new(0)));
    let _: CancellationToken = supervisor.cancellation_token();
    let r: Result<()> = supervisor.register::<Orders, CtxHandler>(CtxHandler, ConsumerOptions::<B>::new());
    r?;
    supervisor
        .register_fifo::<Ledger, CtxHandler>(CtxHandler, ConsumerOptions::<B>::preset(1))
        .await?;
    let signal = async {};
    let outcome: SupervisorOutcome = supervisor.run_until_timeout(signal, Duration::from_secs(1)).await;
    Ok(outcome)
}

fn supervisor_register_generic<B, Ctx, T, H>(
    s: &mut ConsumerSupervisor<B, Ctx>,
    handler: H,
    options: ConsumerOptions<B>,
) -> Result<()>
where
    B: Backend,
    Ctx: Clone + Send + Sync + 'static,
    T: Topic,
    H: MessageHandler<T, Context = Ctx>,
{
    s.register::<T, H>(handler, options)
}

async fn supervisor_register_fifo_generic<B, Ctx, T, H>(
    s: &mut ConsumerSupervisor<B, Ctx>,
    handler: H,
    options: ConsumerOptions<B>,
) -> Result<()>
where
    B: Backend,
    Ctx: Clone + Send + Sync + 'static,
    T: SequencedTopic,
    H: MessageHandler<T, Context = Ctx>,
{
    s.register_fifo::<T, H>(handler, options).await
}

async fn supervisor_run_generic<B, Ctx, S>(s: ConsumerSupervisor<B, Ctx>, signal: S) -> SupervisorOutcome
where
    B: Backend,
    Ctx: Clone + Send + Sync + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    s.run_until_timeout(signal, Duration::from_millis(10)).await
}

async fn consumer_group_api<B: HasCoordinatedGroups>(
    broker: &Broker<B>,
    inner: B::ConsumerGroupConfig,
) -> Result<SupervisorOutcome> {
    let group: ConsumerGroup<B> = broker.consumer_group();
    let group: ConsumerGroup<B, ()> = group;
    let mut group: ConsumerGroup<B, Arc<AtomicUsize>> = group.with_context(Arc::new(AtomicUsize::new(0)));
    let _: CancellationToken = group.cancellation_token();
    let config: ConsumerGroupConfig<B> = ConsumerGroupConfig::<B>::new(inner.clone());
    group.register::<Orders, CtxHandler>(config, || CtxHandler).await?;
    group
        .register_fifo::<Ledger, CtxHandler>(ConsumerGroupConfig::new(inner), || CtxHandler)
        .await?;
    let group: ConsumerGroup<B, Arc<AtomicUsize>> = group.with_default_handler_timeout(Duration::from_secs(3));
    let outcome: SupervisorOutcome = group.run_until_timeout(async {}, Duration::from_secs(1)).await;
    Ok(outcome)
}

fn coordinated_config_bounds<B: HasCoordinatedGroups>(client: &B::Client) -> B::RegistryImpl {
    fn bounds<C: Default + Clone + Send + 'static>() {}
    bounds::<B::ConsumerGroupConfig>();
    let _: B::ConsumerGroupConfig = Default::default();
    B::make_registry(client)
}

// ---------------------------------------------------------------------------------------------------------------
// Section 13: Backend trait
// ---------------------------------------------------------------------------------------------------------------

fn backend_assoc_bounds<B: Backend>() {
    fn send<T: Send>() {}
    fn clone_ss<T: Clone + Send + Sync + 'static>() {}
    fn ss<T: Send + Sync + 'static>() {}
    send::<B::Config>();
    clone_ss::<B::Client>();
    clone_ss::<B::PublisherImpl>();
    clone_ss::<B::ConsumerImpl>();
    ss::<B::TopologyImpl>();
    ss::<B::AutoscalerImpl>();
    ss::<B::QueueStatsImpl>();
    // Backend: Sized + Send + Sync + 'static
    ss::<B>();
    // The autoscaler impl is a public AutoscalerBackend.
    fn autoscaler_backend<A: AutoscalerBackend>() {}
    autoscaler_backend::<B::AutoscalerImpl>();
}

fn backend_sync_fns<B: Backend>(client: &B::Client) {
    let _: B::ConsumerImpl = B::make_consumer(client);
    let _: B::TopologyImpl = B::make_declarer(client);
    let _: B::AutoscalerImpl = B::make_autoscaler(client);
    let _: B::QueueStatsImpl = B::make_stats_provider(client);
}

async fn backend_async_fns<B: Backend>(config: B::Config) -> Result<()> {
    let client: B::Client = B::connect(config).await?;
    let _: B::PublisherImpl = B::make_publisher(&client).await?;
    let _: Result<()> = B::ping(&client, Duration::from_secs(1)).await;
    B::close(&client).await;
    Ok(())
}

fn backend_futures_are_send<B: Backend>(config: B::Config, client: &B::Client) {
    is_send_future::<Result<B::Client>>(&B::connect(config));
    is_send_future::<Result<B::PublisherImpl>>(&B::make_publisher(client));
    is_send_future::<()>(&B::close(client));
    is_send_future::<Result<()>>(&B::ping(client, Duration::from_secs(1)));
}

// ---------------------------------------------------------------------------------------------------------------
// Section 10: autoscaler (user-implementable `AutoscalerBackend`, `ScalingStrategy`)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
pub struct FakeScaler {
    scaled: Arc<std::sync::Mutex<Vec<(String, ScalingDecision)>>>,
    listed: Arc<AtomicUsize>,
}
impl AutoscalerBackend for FakeScaler {
    type GroupId = String;
    async fn list_groups(&self) -> Result<Vec<Self::GroupId>> {
        self.listed.fetch_add(1, Ordering::SeqCst);
        Ok(vec![String::from("g1")])
    }
    async fn fetch_metrics(&self, _group: &Self::GroupId) -> Result<ScalingMetrics> {
        Ok(ScalingMetrics::new(100, 0, 1, 1))
    }
    async fn scale(&self, group: &Self::GroupId, decision: ScalingDecision) -> Result<()> {
        self.scaled.lock().unwrap().push((group.clone(), decision));
        Ok(())
    }
}

/// Same trait, implemented with explicit `impl Future` returns and a non-String group id.
pub struct NumericScaler;
impl AutoscalerBackend for NumericScaler {
    type GroupId = u32;
    fn list_groups(&self) -> impl Future<Output = Result<Vec<u32>>> + Send {
        async { Ok(vec![1, 2]) }
    }
    fn fetch_metrics(&self, group: &u32) -> impl Future<Output = Result<ScalingMetrics>> + Send {
        let g = u64::from(*group);
        async move { Ok(ScalingMetrics::new(g, 0, 1, 10)) }
    }
    fn scale(&self, _group: &u32, _decision: ScalingDecision) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

#[derive(Default)]
pub struct AlwaysUp {
    gc_seen: usize,
}
impl ScalingStrategy for AlwaysUp {
    fn evaluate(&mut self, _group: &str, _metrics: &ScalingMetrics) -> ScalingDecision {
        ScalingDecision::ScaleUp(2)
    }
    fn gc(&mut self, active: &[impl AsRef<str>]) {
        self.gc_seen += active.iter().map(|a| a.as_ref().len()).sum::<usize>();
    }
}

/// Uses the provided no-op `gc`.
pub struct NeverScales;
impl ScalingStrategy for NeverScales {
    fn evaluate(&mut self, _group: &str, metrics: &ScalingMetrics) -> ScalingDecision {
        let _ = metrics.capacity();
        ScalingDecision::Hold
    }
}

#[test]
fn autoscaler_shapes() {
    is_autoscaler_backend::<FakeScaler, String>();
    is_autoscaler_backend::<NumericScaler, u32>();
    fn group_id_bounds<G: Clone + Eq + Hash + Display + Send + Sync>() {}
    group_id_bounds::<<FakeScaler as AutoscalerBackend>::GroupId>();
    is_scaling_strategy::<AlwaysUp>();
    is_scaling_strategy::<NeverScales>();
    is_scaling_strategy::<ThresholdStrategy>();
    is_scaling_strategy::<Stabilized<ThresholdStrategy>>();
    is_scaling_strategy::<Stabilized<AlwaysUp>>();

    let mut always = AlwaysUp::default();
    always.gc(&["ab", "c"]);
    always.gc(&[String::from("xyz")]);
    assert_eq!(always.gc_seen, 6);
    let mut never = NeverScales;
    never.gc(&["a"]);
    let m = ScalingMetrics::new(1, 2, 3, 4);
    assert_eq!(never.evaluate("g", &m), ScalingDecision::Hold);
    assert_eq!(always.evaluate("g", &m), ScalingDecision::ScaleUp(2));

    let config = AutoscalerConfig {
        poll_interval: Duration::from_millis(10),
        scale_up_multiplier: 3.0f64,
        scale_down_multiplier: 0.25f64,
        hysteresis_duration: Duration::ZERO,
        cooldown_duration: Duration::from_secs(1),
    };
    let AutoscalerConfig {
        poll_interval,
        scale_up_multiplier,
        scale_down_multiplier,
        hysteresis_duration,
        cooldown_duration,
    } = config.clone();
    let _: (Duration, f64, f64, Duration, Duration) = (
        poll_interval,
        scale_up_multiplier,
        scale_down_multiplier,
        hysteresis_duration,
        cooldown_duration,
    );
    is_debug::<AutoscalerConfig>();
    is_clone::<AutoscalerConfig>();
    is_default::<AutoscalerConfig>();

    let _: fn(u64, u64, u16, u16) -> ScalingMetrics = ScalingMetrics::new;
    let _: fn(&ScalingMetrics) -> u64 = ScalingMetrics::capacity;
    let m = ScalingMetrics::new(1, 2, 3, 4);
    let _: (u64, u64, u16, u16) = (
        m.messages_ready,
        m.messages_in_flight,
        m.active_consumers,
        m.prefetch_count,
    );
    is_debug::<ScalingMetrics>();
    is_clone::<ScalingMetrics>();

    for d in [
        ScalingDecision::ScaleUp(1u16),
        ScalingDecision::ScaleDown(1u16),
        ScalingDecision::Hold,
    ] {
        match d {
            ScalingDecision::ScaleUp(n) | ScalingDecision::ScaleDown(n) => {
                let _: u16 = n;
            }
            ScalingDecision::Hold => {}
        }
    }
    is_debug::<ScalingDecision>();
    is_clone::<ScalingDecision>();
    is_partial_eq::<ScalingDecision>();
    is_eq::<ScalingDecision>();

    let t = ThresholdStrategy {
        scale_up_multiplier: 2.0,
        scale_down_multiplier: 0.5,
    };
    let _: (f64, f64) = (t.scale_up_multiplier, t.scale_down_multiplier);
    is_default::<ThresholdStrategy>();
    let _: fn(ThresholdStrategy, Duration, Duration) -> Stabilized<ThresholdStrategy> = Stabilized::new;
    let _stabilized = Stabilized::new(t, Duration::from_secs(10), Duration::from_secs(30));

    let _: fn(FakeScaler, AlwaysUp, Duration) -> Autoscaler<FakeScaler, AlwaysUp> = Autoscaler::new;
    let _: Autoscaler<NumericScaler, Stabilized<ThresholdStrategy>> = Autoscaler::new(
        NumericScaler,
        Stabilized::new(ThresholdStrategy::default(), Duration::ZERO, Duration::ZERO),
        Duration::from_secs(1),
    );

    let metrics = AutoscaleMetrics {
        backlog: Some(1u64),
        inflight: None::<u64>,
        throughput_per_sec: Some(1.5f64),
        processing_latency: Some(Duration::from_millis(3)),
    };
    let AutoscaleMetrics {
        backlog,
        inflight,
        throughput_per_sec,
        processing_latency,
    } = metrics;
    let _: (Option<u64>, Option<u64>, Option<f64>, Option<Duration>) =
        (backlog, inflight, throughput_per_sec, processing_latency);
    assert_eq!(
        AutoscaleMetrics::default(),
        AutoscaleMetrics {
            backlog: None,
            inflight: None,
            throughput_per_sec: None,
            processing_latency: None
        }
    );
    let copied: AutoscaleMetrics = metrics;
    assert_eq!(copied, metrics);
    is_debug::<AutoscaleMetrics>();
    is_clone::<AutoscaleMetrics>();
    is_copy::<AutoscaleMetrics>();
    is_default::<AutoscaleMetrics>();
    is_partial_eq::<AutoscaleMetrics>();
}

async fn autoscaler_async_api<B: AutoscalerBackend, S: ScalingStrategy>(a: &mut Autoscaler<B, S>) {
    a.poll_and_scale().await;
    a.run(CancellationToken::new()).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Section 11: audit (user-implementable `AuditHandler`)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
pub struct MemAudit {
    records: Arc<std::sync::Mutex<Vec<AuditRecord<OrderPaid>>>>,
}
impl AuditHandler<Orders> for MemAudit {
    async fn audit(&self, record: &AuditRecord<OrderPaid>) -> Result<()> {
        self.records.lock().unwrap().push(record.clone());
        Ok(())
    }
}

/// Same trait via `fn ... -> impl Future`, generic over every topic.
pub struct NullAudit;
impl<T: Topic> AuditHandler<T> for NullAudit {
    fn audit(&self, record: &AuditRecord<T::Message>) -> impl Future<Output = Result<()>> + Send {
        let _ = record.duration_ms;
        async { Ok(()) }
    }
}

#[test]
fn audit_shapes() {
    is_audit_handler::<Orders, MemAudit>();
    is_audit_handler::<Ledger, NullAudit>();
    let record = AuditRecord {
        trace_id: String::from("trace"),
        topic: String::from("api-orders"),
        payload: order(1),
        metadata: MessageMetadata {
            retry_count: 0,
            delivery_id: String::from("d"),
            redelivered: false,
            headers: Arc::new(HashMap::new()),
        },
        outcome: Outcome::Ack,
        duration_ms: 3u64,
        timestamp: chrono::Utc::now(),
    };
    let _: chrono::DateTime<chrono::Utc> = record.timestamp;
    is_debug::<AuditRecord<OrderPaid>>();
    is_clone::<AuditRecord<OrderPaid>>();
    is_serialize::<AuditRecord<OrderPaid>>();
    is_deserialize::<AuditRecord<OrderPaid>>();
    let json = serde_json::to_string(&record).unwrap();
    let back: AuditRecord<OrderPaid> = serde_json::from_str(&json).unwrap();
    assert_eq!(back.payload, order(1));
    assert_eq!(back.trace_id, "trace");

    let _: fn(Recorder, MemAudit) -> Audited<Recorder, MemAudit> = Audited::new;
    let _: fn(Audited<Recorder, MemAudit>, Duration) -> Audited<Recorder, MemAudit> = Audited::with_audit_timeout;
    is_handler_with_ctx::<Orders, Audited<Recorder, MemAudit>, ()>();
    is_handler_with_ctx::<Orders, Audited<CtxHandler, NullAudit>, Arc<AtomicUsize>>();
    let audited: Audited<Recorder, MemAudit> = Recorder::default().audited(MemAudit::default());
    let _ = audited.with_audit_timeout(Duration::from_secs(1));

    #[cfg(feature = "audit")]
    {
        is_topic::<shove::AuditLog>();
        let _: fn(<shove::AuditLog as Topic>::Message) -> AuditRecord<serde_json::Value> = |m| m;
        let _: fn(<shove::AuditLog as Topic>::Codec) -> JsonCodec = |c| c;
        fn shove_audit_generic<B: Backend, T: Topic>(p: &Publisher<B>) -> ShoveAuditHandlerOf<B>
        where
            T::Message: Serialize,
        {
            is_audit_handler::<T, shove::ShoveAuditHandler<B>>();
            let _: fn(Publisher<B>) -> shove::ShoveAuditHandler<B> = shove::ShoveAuditHandler::new;
            let _: fn(&Publisher<B>) -> shove::ShoveAuditHandler<B> = shove::ShoveAuditHandler::for_publisher;
            shove::audit::ShoveAuditHandler::for_publisher(p)
        }
        #[cfg(feature = "inmemory")]
        let _ = shove_audit_generic::<shove::InMemory, Orders>;
    }
}

#[cfg(feature = "audit")]
type ShoveAuditHandlerOf<B> = shove::ShoveAuditHandler<B>;

// ---------------------------------------------------------------------------------------------------------------
// Section 9: SupervisorOutcome, Section 12: metrics
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn supervisor_outcome_and_metrics_shapes() {
    let outcome = SupervisorOutcome {
        errors: 1usize,
        panics: 0usize,
        timed_out: false,
    };
    let SupervisorOutcome {
        errors,
        panics,
        timed_out,
    } = outcome;
    let _: (usize, usize, bool) = (errors, panics, timed_out);
    let _: fn(&SupervisorOutcome) -> i32 = SupervisorOutcome::exit_code;
    let _: fn(&SupervisorOutcome) -> bool = SupervisorOutcome::is_clean;
    is_debug::<SupervisorOutcome>();
    is_clone::<SupervisorOutcome>();
    is_copy::<SupervisorOutcome>();
    is_default::<SupervisorOutcome>();
    is_partial_eq::<SupervisorOutcome>();
    is_eq::<SupervisorOutcome>();
    assert_eq!(outcome.exit_code(), 1);

    // Exists with and without the `metrics` feature; never called here (global state).
    let _: fn(String) = shove::metrics::set_prefix;
    let _: fn(&'static str) = shove::metrics::set_prefix;
    let _: fn(String) = module_paths::set_prefix;
}

// ---------------------------------------------------------------------------------------------------------------
// Section 14.6: in-process backend, its Backend bindings, and concrete signatures
// ---------------------------------------------------------------------------------------------------------------

#[cfg(feature = "inmemory")]
mod inmemory_surface {
    use super::*;
    use shove::InMemory;
    use shove::inmemory::{
        BrokerStatsProvider, DEFAULT_QUEUE_CAPACITY, InMemoryAutoscalerBackend, InMemoryBroker, InMemoryConfig,
        InMemoryConsumer, InMemoryConsumerGroup, InMemoryConsumerGroupConfig, InMemoryConsumerGroupRegistry,
        InMemoryPublisher, InMemoryQueueStats, InMemoryQueueStatsProvider, InMemoryTopologyDeclarer,
    };
    use std::num::NonZeroUsize;
    use std::ops::RangeInclusive;
    use tokio::sync::Mutex;

    fn stats_provider_bounds<P: InMemoryQueueStatsProvider>() {
        is_send::<P>();
        is_sync::<P>();
    }

    #[test]
    fn stats_providers() {
        stats_provider_bounds::<BrokerStatsProvider>();
        stats_provider_bounds::<FixedStats>();
        stats_provider_bounds::<EmptyStats>();
    }

    /// A user stats provider (user-implementable trait).
    pub struct FixedStats(pub u64);
    impl InMemoryQueueStatsProvider for FixedStats {
        async fn get_queue_stats(&self, _queue: &str) -> Result<InMemoryQueueStats> {
            Ok(InMemoryQueueStats {
                messages_ready: self.0,
                messages_in_flight: 0,
            })
        }
    }

    /// Same trait via `fn ... -> impl Future`.
    pub struct EmptyStats;
    impl InMemoryQueueStatsProvider for EmptyStats {
        fn get_queue_stats(&self, _queue: &str) -> impl Future<Output = Result<InMemoryQueueStats>> + Send {
            async { Ok(InMemoryQueueStats::default()) }
        }
    }

    type Registry = InMemoryConsumerGroupRegistry;
    type GroupConfig = InMemoryConsumerGroupConfig;

    #[test]
    fn backend_bindings() {
        is_backend::<InMemory>();
        is_coordinated::<InMemory>();
        backend_assoc_bounds::<InMemory>();
        same_type! {
            <InMemory as Backend>::Config => InMemoryConfig,
            <InMemory as Backend>::Client => InMemoryBroker,
            <InMemory as Backend>::PublisherImpl => InMemoryPublisher,
            <InMemory as Backend>::ConsumerImpl => InMemoryConsumer,
            <InMemory as Backend>::TopologyImpl => InMemoryTopologyDeclarer,
            <InMemory as Backend>::AutoscalerImpl => InMemoryAutoscalerBackend<BrokerStatsProvider>,
            <InMemory as Backend>::AutoscalerImpl => InMemoryAutoscalerBackend,
            <InMemory as Backend>::QueueStatsImpl => BrokerStatsProvider,
            <InMemory as HasCoordinatedGroups>::ConsumerGroupConfig => InMemoryConsumerGroupConfig,
            <InMemory as HasCoordinatedGroups>::RegistryImpl => InMemoryConsumerGroupRegistry,
        }
        let _: fn(&InMemoryBroker) -> InMemoryConsumer = <InMemory as Backend>::make_consumer;
        let _: fn(&InMemoryBroker) -> InMemoryTopologyDeclarer = <InMemory as Backend>::make_declarer;
        let _: fn(&InMemoryBroker) -> InMemoryAutoscalerBackend = <InMemory as Backend>::make_autoscaler;
        let _: fn(&InMemoryBroker) -> BrokerStatsProvider = <InMemory as Backend>::make_stats_provider;
        let _: fn(&InMemoryBroker) -> InMemoryConsumerGroupRegistry = <InMemory as HasCoordinatedGroups>::make_registry;
        let _ = coordinated_config_bounds::<InMemory>;
        let _ = backend_sync_fns::<InMemory>;
        let _ = backend_async_fns::<InMemory>;
        let _ = backend_futures_are_send::<InMemory>;
        let _ = broker_api::<InMemory>;
        let _ = supervisor_api::<InMemory>;
        let _ = consumer_group_api::<InMemory>;
        let _ = consumer_option_methods::<InMemory>;
        let _ = topics_future_is_send::<InMemory, AllSixteen>;
        let _ = supervisor_register_generic::<InMemory, (), Orders, Recorder>;
        let _ = supervisor_register_fifo_generic::<InMemory, (), Ledger, LedgerRecorder>;
        let _ = supervisor_run_generic::<InMemory, (), std::future::Ready<()>>;
        let _ = autoscaler_async_api::<InMemoryAutoscalerBackend, Stabilized<ThresholdStrategy>>;
        let _ = publish_example::<InMemory>;
    }

    #[test]
    fn broker_concrete_signatures() {
        let _: fn(InMemoryBroker) -> Broker<InMemory> = Broker::<InMemory>::from_client;
        let _: fn(&Broker<InMemory>) -> ConsumerSupervisor<InMemory> = Broker::consumer_supervisor;
        let _: fn(&Broker<InMemory>) -> TopologyDeclarer<InMemory> = Broker::topology;
        let _: fn(&Broker<InMemory>) -> BrokerStatsProvider = Broker::queue_stats_provider;
        let _: fn(&Broker<InMemory>) -> InMemoryAutoscalerBackend = Broker::autoscaler;
        let _: fn(&Broker<InMemory>) -> ConsumerGroup<InMemory> = Broker::consumer_group;
        let _: fn(&Publisher<InMemory>) -> Publisher<InMemory> = Clone::clone;
        let _: fn(InMemoryConsumerGroupConfig) -> ConsumerGroupConfig<InMemory> = ConsumerGroupConfig::new;
        let _: fn(ConsumerSupervisor<InMemory>, u8) -> ConsumerSupervisor<InMemory, u8> =
            ConsumerSupervisor::with_context;
        let _: fn(&ConsumerSupervisor<InMemory, u8>) -> CancellationToken = ConsumerSupervisor::cancellation_token;
        let _: fn(ConsumerGroup<InMemory>, u8) -> ConsumerGroup<InMemory, u8> = ConsumerGroup::with_context;
        let _: fn(&ConsumerGroup<InMemory, u8>) -> CancellationToken = ConsumerGroup::cancellation_token;
        let _: fn(ConsumerGroup<InMemory, u8>, Duration) -> ConsumerGroup<InMemory, u8> =
            ConsumerGroup::with_default_handler_timeout;

        // ConsumerOptions<InMemory>
        type O = ConsumerOptions<InMemory>;
        let _: fn() -> O = O::new;
        let _: fn() -> O = O::default;
        let _: fn(u16) -> O = O::preset;
        let _: fn(O, u32) -> O = O::with_max_retries;
        let _: fn(O, u16) -> O = O::with_prefetch_count;
        let _: fn(O, bool) -> O = O::with_concurrent_processing;
        let _: fn(O, Duration) -> O = O::with_handler_timeout;
        let _: fn(O) -> O = O::without_handler_timeout;
        let _: fn(O, usize) -> O = O::with_max_pending_per_key;
        let _: fn(O) -> O = O::without_max_pending_per_key;
        let _: fn(O, usize) -> O = O::with_max_message_size;
        let _: fn(O) -> O = O::without_message_size_limit;
        let _: fn(O, u32) -> O = O::with_max_reconnect_attempts;
        let _: fn(O, CancellationToken) -> O = O::with_shutdown;
        let _: fn(O, &'static str) -> O = O::with_consumer_group;
        let _: fn(O, String) -> O = O::with_consumer_group;
        let _: fn(O, Arc<str>) -> O = O::with_consumer_group;
        let _: fn(&O) -> Arc<AtomicBool> = O::processing_handle;
        let _: fn(&O) -> O = O::clone;
        is_default::<O>();
        is_clone::<O>();
        is_send::<O>();
        is_sync::<O>();

        // Thread-safety needed to share these across tasks.
        is_send::<Broker<InMemory>>();
        is_sync::<Broker<InMemory>>();
        is_send::<Publisher<InMemory>>();
        is_sync::<Publisher<InMemory>>();
        is_send::<ConsumerSupervisor<InMemory>>();
        is_send::<ConsumerGroup<InMemory>>();
        is_send::<InMemoryConsumerGroupRegistry>();
        is_send::<InMemoryConsumerGroup>();
        is_sync::<Arc<Mutex<InMemoryConsumerGroupRegistry>>>();
    }

    #[test]
    fn inmemory_concrete_signatures() {
        let _: usize = DEFAULT_QUEUE_CAPACITY;

        let _: fn(InMemoryBroker) -> BrokerStatsProvider = BrokerStatsProvider::new;

        let _: fn(InMemoryBroker, Arc<Mutex<Registry>>) -> InMemoryAutoscalerBackend =
            InMemoryAutoscalerBackend::<BrokerStatsProvider>::new;
        let _: fn(
            InMemoryBroker,
            Arc<Mutex<Registry>>,
            AutoscalerConfig,
        ) -> Autoscaler<InMemoryAutoscalerBackend, Stabilized<ThresholdStrategy>> =
            InMemoryAutoscalerBackend::autoscaler;
        let _: fn(FixedStats, Arc<Mutex<Registry>>) -> InMemoryAutoscalerBackend<FixedStats> =
            InMemoryAutoscalerBackend::with_stats_provider;
        let _: fn(BrokerStatsProvider, Arc<Mutex<Registry>>) -> InMemoryAutoscalerBackend =
            InMemoryAutoscalerBackend::with_stats_provider;
        is_autoscaler_backend::<InMemoryAutoscalerBackend, String>();
        is_autoscaler_backend::<InMemoryAutoscalerBackend<FixedStats>, String>();
        is_autoscaler_backend::<InMemoryAutoscalerBackend<EmptyStats>, String>();

        let _: fn() -> InMemoryBroker = InMemoryBroker::new;
        let _: fn(InMemoryConfig) -> InMemoryBroker = InMemoryBroker::with_config;
        let _: fn(&InMemoryBroker) -> &CancellationToken = InMemoryBroker::shutdown_token;
        let _: fn(&InMemoryBroker) = InMemoryBroker::shutdown;
        is_clone::<InMemoryBroker>();
        is_default::<InMemoryBroker>();

        let config = InMemoryConfig {
            default_capacity: 16usize,
        };
        let InMemoryConfig { default_capacity } = config.clone();
        let _: usize = default_capacity;
        let _: fn(InMemoryConfig, NonZeroUsize) -> InMemoryConfig = InMemoryConfig::with_default_capacity;
        is_debug::<InMemoryConfig>();
        is_clone::<InMemoryConfig>();
        is_default::<InMemoryConfig>();

        let _: fn(InMemoryBroker) -> InMemoryConsumer = InMemoryConsumer::new;
        is_clone::<InMemoryConsumer>();

        let _: fn(&mut InMemoryConsumerGroup) = InMemoryConsumerGroup::start;
        let _: fn(&mut InMemoryConsumerGroup) -> bool = InMemoryConsumerGroup::scale_up;
        let _: fn(&mut InMemoryConsumerGroup) -> bool = InMemoryConsumerGroup::scale_down;
        let _: fn(&InMemoryConsumerGroup) -> usize = InMemoryConsumerGroup::active_consumers;
        let _: fn(&InMemoryConsumerGroup) -> &str = InMemoryConsumerGroup::queue;
        let _: fn(&InMemoryConsumerGroup) -> &InMemoryConsumerGroupConfig = InMemoryConsumerGroup::config;

        let _: fn(RangeInclusive<u16>) -> GroupConfig = GroupConfig::new;
        let _: fn(GroupConfig, u16) -> GroupConfig = GroupConfig::with_prefetch_count;
        let _: fn(GroupConfig, u32) -> GroupConfig = GroupConfig::with_max_retries;
        let _: fn(GroupConfig, Duration) -> GroupConfig = GroupConfig::with_handler_timeout;
        let _: fn(GroupConfig, usize) -> GroupConfig = GroupConfig::with_max_message_size;
        let _: fn(GroupConfig) -> GroupConfig = GroupConfig::without_message_size_limit;
        let _: fn(GroupConfig, usize) -> GroupConfig = GroupConfig::with_max_pending_per_key;
        let _: fn(GroupConfig) -> GroupConfig = GroupConfig::without_max_pending_per_key;
        let _: fn(&GroupConfig) -> u16 = GroupConfig::prefetch_count;
        let _: fn(&GroupConfig) -> u16 = GroupConfig::min_consumers;
        let _: fn(&GroupConfig) -> u16 = GroupConfig::max_consumers;
        let _: fn(&GroupConfig) -> u32 = GroupConfig::max_retries;
        let _: fn(&GroupConfig) -> Option<Duration> = GroupConfig::handler_timeout;
        let _: fn(&GroupConfig) -> Option<usize> = GroupConfig::max_pending_per_key;
        let _: fn(&GroupConfig) -> Option<usize> = GroupConfig::max_message_size;
        is_clone::<GroupConfig>();
        is_default::<GroupConfig>();

        let _: fn(InMemoryBroker) -> Registry = Registry::new;
        let _: fn(Registry, Duration) -> Registry = Registry::with_default_handler_timeout;
        let _: fn(&mut Registry) = Registry::start_all;
        let _: fn(&Registry) -> &HashMap<String, InMemoryConsumerGroup> = Registry::groups;
        let _: fn(&mut Registry) -> &mut HashMap<String, InMemoryConsumerGroup> = Registry::groups_mut;

        let _: fn(InMemoryBroker) -> InMemoryPublisher = InMemoryPublisher::new;
        is_clone::<InMemoryPublisher>();

        let stats = InMemoryQueueStats {
            messages_ready: 1u64,
            messages_in_flight: 2u64,
        };
        let InMemoryQueueStats {
            messages_ready,
            messages_in_flight,
        } = stats.clone();
        let _: (u64, u64) = (messages_ready, messages_in_flight);
        is_debug::<InMemoryQueueStats>();
        is_clone::<InMemoryQueueStats>();
        is_default::<InMemoryQueueStats>();

        let _: fn(InMemoryBroker) -> InMemoryTopologyDeclarer = InMemoryTopologyDeclarer::new;
        let _: fn(&str, u16) -> String = InMemoryTopologyDeclarer::shard_queue_name;

        let _ = inmemory_async_api;
        let _ = inmemory_consumer_futures;
        let _ = inmemory_group_constructors;
        let _ = inmemory_futures_are_send;
    }

    async fn inmemory_async_api(
        stats: &BrokerStatsProvider,
        user_stats: &FixedStats,
        group: &mut InMemoryConsumerGroup,
        registry: &mut Registry,
        publisher: &InMemoryPublisher,
        declarer: &InMemoryTopologyDeclarer,
        backend: &InMemoryAutoscalerBackend,
        msg: &OrderPaid,
    ) -> Result<()> {
        let _: InMemoryQueueStats = stats.get_queue_stats("q").await?;
        let _: InMemoryQueueStats = user_stats.get_queue_stats("q").await?;
        group.shutdown().await;
        let r: Result<()> = registry
            .register::<Orders, Recorder>(GroupConfig::default(), Recorder::default, ())
            .await;
        r?;
        registry
            .register::<Orders, CtxHandler>(GroupConfig::new(1..=2), || CtxHandler, Arc::new(AtomicUsize::new(0)))
            .await?;
        registry
            .register_fifo::<Ledger, LedgerRecorder>(GroupConfig::default(), LedgerRecorder::default, ())
            .await?;
        registry.shutdown_all().await;
        publisher.publish::<Orders>(msg).await?;
        publisher
            .publish_with_headers::<Orders>(msg, HashMap::<String, String>::new())
            .await?;
        let (n, r): (u64, Result<()>) = publisher.publish_batch::<Orders>(std::slice::from_ref(msg)).await;
        let _ = (n, r);
        declarer.declare(Orders::topology()).await?;
        let groups: Vec<String> = backend.list_groups().await?;
        let _: ScalingMetrics = backend.fetch_metrics(&groups[0]).await?;
        backend.scale(&groups[0], ScalingDecision::Hold).await?;
        Ok(())
    }

    fn inmemory_consumer_futures(c: &InMemoryConsumer, options: ConsumerOptions<InMemory>) {
        let f = c.run::<Orders, Recorder>(Recorder::default(), (), options.clone());
        is_send_future::<Result<()>>(&f);
        let f = c.run::<Orders, CtxHandler>(CtxHandler, Arc::new(AtomicUsize::new(0)), options.clone());
        is_send_future::<Result<()>>(&f);
        let f = c.run_fifo::<Ledger, LedgerRecorder>(LedgerRecorder::default(), (), options.clone());
        is_send_future::<Result<()>>(&f);
        let f = c.run_dlq::<Orders, Rejecter>(Rejecter::default(), ());
        is_send_future::<Result<()>>(&f);
        let f = c.run_fifo_until_timeout::<Ledger, LedgerRecorder, _>(
            LedgerRecorder::default(),
            (),
            options,
            async {},
            Duration::from_secs(1),
        );
        is_future::<SupervisorOutcome>(&f);
    }

    fn inmemory_group_constructors(broker: InMemoryBroker, token: CancellationToken) -> [InMemoryConsumerGroup; 3] {
        let a = InMemoryConsumerGroup::new::<Orders, Recorder>(
            "q",
            GroupConfig::default(),
            broker.clone(),
            token.clone(),
            Recorder::default,
            (),
        );
        let b = InMemoryConsumerGroup::new::<Orders, CtxHandler>(
            String::from("q"),
            GroupConfig::new(1..=3),
            broker.clone(),
            token.clone(),
            || CtxHandler,
            Arc::new(AtomicUsize::new(0)),
        );
        // Note the parameter order of new_fifo: queue, broker, config.
        let c = InMemoryConsumerGroup::new_fifo::<Ledger, LedgerRecorder>(
            "q-seq",
            broker,
            GroupConfig::default(),
            token,
            LedgerRecorder::default,
            (),
        );
        [a, b, c]
    }

    fn inmemory_futures_are_send(
        broker: &Broker<InMemory>,
        publisher: &Publisher<InMemory>,
        supervisor: ConsumerSupervisor<InMemory>,
        group: ConsumerGroup<InMemory>,
        registry: &mut Registry,
        msg: &OrderPaid,
    ) {
        is_send_future::<Result<Broker<InMemory>>>(&Broker::<InMemory>::new(InMemoryConfig::default()));
        is_send_future::<Result<Publisher<InMemory>>>(&broker.publisher());
        is_send_future::<()>(&broker.close());
        is_send_future::<Result<()>>(&broker.ping());
        is_send_future::<Result<()>>(&broker.ping_with_timeout(Duration::from_secs(1)));
        is_send_future::<Result<()>>(&publisher.publish::<Orders>(msg));
        is_send_future::<Result<()>>(&publisher.publish_with_headers::<Orders>(msg, HashMap::new()));
        is_send_future::<Result<()>>(&publisher.publish_batch::<Orders>(std::slice::from_ref(msg)));
        let declarer = broker.topology();
        is_send_future::<Result<()>>(&declarer.declare::<Orders>());
        is_send_future::<Result<()>>(&declarer.declare_all::<(Orders, Refunds)>());
        is_send_future::<SupervisorOutcome>(&supervisor.run_until_timeout(async {}, Duration::from_secs(1)));
        is_send_future::<SupervisorOutcome>(&group.run_until_timeout(async {}, Duration::from_secs(1)));
        is_send_future::<Result<()>>(&registry.register::<Orders, Recorder>(
            GroupConfig::default(),
            Recorder::default,
            (),
        ));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Runtime: a short 0.11.3-style program on the in-process backend
// ---------------------------------------------------------------------------------------------------------------

#[cfg(feature = "inmemory")]
mod runtime {
    use super::inmemory_surface::FixedStats;
    use super::*;
    use shove::InMemory;
    use shove::inmemory::{
        BrokerStatsProvider, InMemoryAutoscalerBackend, InMemoryBroker, InMemoryConfig, InMemoryConsumer,
        InMemoryConsumerGroup, InMemoryConsumerGroupConfig, InMemoryConsumerGroupRegistry, InMemoryPublisher,
        InMemoryQueueStatsProvider, InMemoryTopologyDeclarer,
    };
    use tokio::sync::Mutex;

    const WAIT: Duration = Duration::from_secs(10);
    const DRAIN: Duration = Duration::from_secs(5);

    /// Polls `cond` until it holds; panics after a bounded timeout.
    async fn wait_until(what: &'static str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A `'static + Send` shutdown signal that resolves once `cond` holds (or after the bounded timeout).
    fn signal_when(
        what: &'static str,
        cond: impl FnMut() -> bool + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move { wait_until(what, cond).await }
    }

    async fn bounded<F: Future>(what: &'static str, f: F) -> F::Output {
        tokio::time::timeout(WAIT, f)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    #[tokio::test]
    async fn supervisor_program() -> Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare::<Orders>().await?;
        broker.topology().declare_all::<(Refunds, Shouts)>().await?;
        broker.topology().declare_all::<(RawTopic,)>().await?;
        broker.ping().await?;
        broker.ping_with_timeout(Duration::from_secs(1)).await?;

        let publisher = broker.publisher().await?;
        for id in 1..=3 {
            publisher.publish::<Orders>(&order(id)).await?;
        }
        publisher.publish_batch::<Orders>(&[order(4), order(5)]).await?;
        let mut headers = HashMap::new();
        headers.insert("tenant".to_string(), "acme".to_string());
        publisher.publish_with_headers::<Orders>(&order(6), headers).await?;
        publisher.publish::<Refunds>(&order(7)).await?;
        publisher.publish::<Shouts>(&"hello".to_string()).await?;
        publisher.clone().publish::<RawTopic>(&vec![0u8, 159, 146, 150]).await?;

        let recorder = Recorder::default();
        let refunds = FutureRecorder::default();
        let shouts = StringRecorder::default();
        let bytes = BytesRecorder::default();
        let mut supervisor = broker.consumer_supervisor();
        let _token: CancellationToken = supervisor.cancellation_token();
        supervisor.register::<Orders, _>(recorder.clone(), ConsumerOptions::<InMemory>::preset(5))?;
        supervisor.register::<Refunds, _>(refunds.clone(), ConsumerOptions::new())?;
        supervisor.register::<Shouts, _>(shouts.clone(), ConsumerOptions::default())?;
        supervisor.register::<RawTopic, _>(bytes.clone(), ConsumerOptions::<InMemory>::new().with_max_retries(1))?;

        let signal = {
            let (recorder, refunds, shouts, bytes) = (recorder.clone(), refunds.clone(), shouts.clone(), bytes.clone());
            signal_when("all supervisor messages", move || {
                recorder.count() == 6
                    && refunds.seen.lock().unwrap().len() == 1
                    && shouts.seen.lock().unwrap().len() == 1
                    && bytes.seen.lock().unwrap().len() == 1
            })
        };
        let outcome = bounded("run_until_timeout", supervisor.run_until_timeout(signal, DRAIN)).await;
        assert_eq!(
            outcome,
            SupervisorOutcome {
                errors: 0,
                panics: 0,
                timed_out: false
            }
        );
        assert_eq!(outcome.exit_code(), 0);
        assert!(outcome.is_clean());

        assert_eq!(recorder.ids(), vec![1, 2, 3, 4, 5, 6]);
        let seen = recorder.seen.lock().unwrap().clone();
        let (_, tenant_meta) = seen.iter().find(|(m, _)| m.order_id == 6).expect("order 6");
        assert_eq!(tenant_meta.headers.get("tenant").map(String::as_str), Some("acme"));
        for (_, meta) in &seen {
            assert_eq!(meta.retry_count, 0);
            assert!(!meta.delivery_id.is_empty());
        }
        assert_eq!(*refunds.seen.lock().unwrap(), vec![order(7)]);
        assert!(refunds.dead.lock().unwrap().is_empty());
        // UpperCodec upper-cases on encode; decode keeps the bytes.
        assert_eq!(*shouts.seen.lock().unwrap(), vec!["HELLO".to_string()]);
        assert_eq!(*bytes.seen.lock().unwrap(), vec![vec![0u8, 159, 146, 150]]);

        broker.close().await;
        Ok(())
    }

    #[tokio::test]
    async fn supervisor_with_context_and_fifo() -> Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare_all::<(Orders, Ledger)>().await?;
        let publisher = broker.publisher().await?;

        // Context supervisor.
        let ctx = Arc::new(AtomicUsize::new(0));
        let mut supervisor = broker.consumer_supervisor().with_context(ctx.clone());
        supervisor.register::<Orders, _>(CtxHandler, ConsumerOptions::<InMemory>::preset(2))?;
        supervisor
            .register_fifo::<Ledger, _>(CtxHandler, ConsumerOptions::<InMemory>::new())
            .await?;
        for id in 0..4 {
            publisher.publish::<Orders>(&order(id)).await?;
        }
        for seq in 0..4 {
            publisher
                .publish::<Ledger>(&LedgerEntry {
                    account_id: "a".into(),
                    seq,
                })
                .await?;
        }
        let signal = {
            let ctx = ctx.clone();
            signal_when("context handler", move || ctx.load(Ordering::SeqCst) == 8)
        };
        let outcome = bounded("ctx supervisor", supervisor.run_until_timeout(signal, DRAIN)).await;
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(ctx.load(Ordering::SeqCst), 8);

        // FIFO supervisor: per-key order is preserved.
        let ledger = LedgerRecorder::default();
        let mut supervisor = broker.consumer_supervisor();
        supervisor
            .register_fifo::<Ledger, _>(ledger.clone(), ConsumerOptions::<InMemory>::preset(5))
            .await?;
        for seq in 0..20 {
            let account_id = if seq % 2 == 0 { "even" } else { "odd" };
            publisher
                .publish::<Ledger>(&LedgerEntry {
                    account_id: account_id.into(),
                    seq,
                })
                .await?;
        }
        let signal = {
            let ledger = ledger.clone();
            signal_when("fifo messages", move || ledger.count() == 20)
        };
        let outcome = bounded("fifo supervisor", supervisor.run_until_timeout(signal, DRAIN)).await;
        assert!(outcome.is_clean(), "{outcome:?}");
        assert_eq!(
            ledger.seqs_for("even"),
            (0..20).filter(|s| s % 2 == 0).collect::<Vec<_>>()
        );
        assert_eq!(
            ledger.seqs_for("odd"),
            (0..20).filter(|s| s % 2 == 1).collect::<Vec<_>>()
        );
        Ok(())
    }

    #[tokio::test]
    async fn consumer_group_program() -> Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare_all::<(Orders, Ledger)>().await?;
        let publisher = broker.publisher().await?;

        let counter = Counter::default();
        let ledger = LedgerRecorder::default();
        let mut group = broker.consumer_group();
        let _token: CancellationToken = group.cancellation_token();
        {
            let counter = counter.clone();
            group
                .register::<Orders, _>(
                    ConsumerGroupConfig::new(InMemoryConsumerGroupConfig::new(1..=2)),
                    move || counter.clone(),
                )
                .await?;
        }
        {
            let ledger = ledger.clone();
            group
                .register_fifo::<Ledger, _>(
                    ConsumerGroupConfig::new(InMemoryConsumerGroupConfig::default()),
                    move || ledger.clone(),
                )
                .await?;
        }
        for id in 0..10 {
            publisher.publish::<Orders>(&order(id)).await?;
        }
        for seq in 0..6 {
            publisher
                .publish::<Ledger>(&LedgerEntry {
                    account_id: "k".into(),
                    seq,
                })
                .await?;
        }
        let signal = {
            let (counter, ledger) = (counter.clone(), ledger.clone());
            signal_when("consumer group messages", move || {
                counter.get() == 10 && ledger.count() == 6
            })
        };
        let group = group.with_default_handler_timeout(Duration::from_secs(5));
        let outcome = bounded("consumer group", group.run_until_timeout(signal, DRAIN)).await;
        assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
        assert_eq!(counter.get(), 10);
        assert_eq!(ledger.seqs_for("k"), (0..6).collect::<Vec<_>>());

        // A context group.
        let ctx = Arc::new(AtomicUsize::new(0));
        let mut group = broker.consumer_group().with_context(ctx.clone());
        group
            .register::<Orders, _>(
                ConsumerGroupConfig::new(InMemoryConsumerGroupConfig::new(1..=1)),
                || CtxHandler,
            )
            .await?;
        publisher.publish::<Orders>(&order(99)).await?;
        let signal = {
            let ctx = ctx.clone();
            signal_when("context group", move || ctx.load(Ordering::SeqCst) == 1)
        };
        let outcome = bounded("context group", group.run_until_timeout(signal, DRAIN)).await;
        assert!(outcome.is_clean());
        Ok(())
    }

    fn find_group<'a>(registry: &'a InMemoryConsumerGroupRegistry, queue: &str) -> &'a InMemoryConsumerGroup {
        registry
            .groups()
            .values()
            .find(|g| g.queue() == queue)
            .expect("group for queue")
    }

    #[tokio::test]
    async fn registry_and_autoscaler_program() -> Result<()> {
        let memory = InMemoryBroker::new();
        let broker = Broker::<InMemory>::from_client(memory.clone());
        broker.topology().declare::<Orders>().await?;
        InMemoryTopologyDeclarer::new(memory.clone())
            .declare(Ledger::topology())
            .await?;

        let recorder = Recorder::default();
        let mut registry = InMemoryConsumerGroupRegistry::new(memory.clone());
        {
            let recorder = recorder.clone();
            registry
                .register::<Orders, _>(
                    InMemoryConsumerGroupConfig::new(1..=3).with_prefetch_count(1),
                    move || recorder.clone(),
                    (),
                )
                .await?;
        }
        registry
            .register_fifo::<Ledger, _>(
                InMemoryConsumerGroupConfig::default().with_prefetch_count(7),
                LedgerRecorder::default,
                (),
            )
            .await?;
        registry.start_all();
        assert_eq!(registry.groups().len(), 2);
        {
            let group = find_group(&registry, "api-orders");
            assert_eq!(group.active_consumers(), 1);
            assert_eq!(group.config().min_consumers(), 1);
            assert_eq!(group.config().max_consumers(), 3);
            assert_eq!(group.config().prefetch_count(), 1);
        }

        let publisher = InMemoryPublisher::new(memory.clone());
        for id in 0..5 {
            publisher.publish::<Orders>(&order(id)).await?;
        }
        let (published, result) = publisher.publish_batch::<Orders>(&[order(5), order(6)]).await;
        assert_eq!(published, 2);
        result?;
        publisher
            .publish_with_headers::<Orders>(&order(7), HashMap::new())
            .await?;
        wait_until("registry group handles messages", || recorder.count() == 8).await;
        assert_eq!(recorder.ids(), (0..8).collect::<Vec<_>>());

        // Scale the group by hand.
        {
            let group = registry
                .groups_mut()
                .values_mut()
                .find(|g| g.queue() == "api-orders")
                .expect("orders group");
            assert!(group.scale_up());
            assert_eq!(group.active_consumers(), 2);
            assert!(group.scale_up());
            assert!(!group.scale_up(), "cannot exceed max_consumers");
            assert_eq!(group.active_consumers(), 3);
            assert!(group.scale_down());
            assert!(group.scale_down());
            assert!(!group.scale_down(), "cannot go below min_consumers");
            assert_eq!(group.active_consumers(), 1);
        }

        // Autoscaler over the registry.
        let registry = Arc::new(Mutex::new(registry));
        let mut autoscaler =
            InMemoryAutoscalerBackend::autoscaler(memory.clone(), registry.clone(), AutoscalerConfig::default());
        bounded("poll_and_scale", autoscaler.poll_and_scale()).await;

        let backend = InMemoryAutoscalerBackend::new(memory.clone(), registry.clone());
        let groups: Vec<String> = backend.list_groups().await?;
        assert_eq!(groups.len(), 2);
        // Identify the orders group by its metrics (prefetch 1; the ledger group has prefetch 7).
        let mut orders_group = None;
        for id in &groups {
            let metrics = backend.fetch_metrics(id).await?;
            if metrics.prefetch_count == 1 {
                assert_eq!(metrics.active_consumers, 1);
                orders_group = Some(id.clone());
            } else {
                assert_eq!(metrics.prefetch_count, 7);
            }
        }
        let orders_group = orders_group.expect("a group with prefetch 1");
        backend.scale(&orders_group, ScalingDecision::ScaleUp(1)).await?;
        assert_eq!(find_group(&*registry.lock().await, "api-orders").active_consumers(), 2);
        backend.scale(&orders_group, ScalingDecision::ScaleDown(1)).await?;
        assert_eq!(find_group(&*registry.lock().await, "api-orders").active_consumers(), 1);
        backend.scale(&orders_group, ScalingDecision::Hold).await?;
        assert_eq!(find_group(&*registry.lock().await, "api-orders").active_consumers(), 1);

        // A backend with a user stats provider reports its numbers.
        let custom = InMemoryAutoscalerBackend::with_stats_provider(FixedStats(42), registry.clone());
        let custom_metrics = custom.fetch_metrics(&orders_group).await?;
        assert_eq!(custom_metrics.messages_ready, 42);

        // Stats provider of the broker.
        let stats = BrokerStatsProvider::new(memory.clone());
        let s = stats.get_queue_stats("api-orders").await?;
        assert_eq!(s.messages_ready, 0);

        // The autoscaler loop stops on its shutdown token.
        let token = CancellationToken::new();
        token.cancel();
        bounded("autoscaler run", autoscaler.run(token)).await;

        bounded("shutdown_all", async { registry.lock().await.shutdown_all().await }).await;
        Ok(())
    }

    #[tokio::test]
    async fn inmemory_consumer_program() -> Result<()> {
        let memory = InMemoryBroker::with_config(InMemoryConfig::default());
        let broker = Broker::<InMemory>::from_client(memory.clone());
        broker.topology().declare_all::<(Orders, Ledger)>().await?;
        let publisher = broker.publisher().await?;
        for id in 0..5 {
            publisher.publish::<Orders>(&order(id)).await?;
        }

        // run(): the returned future borrows the consumer, so keep it alive while awaiting.
        let consumer = InMemoryConsumer::new(memory.clone());
        let recorder = Recorder::default();
        let token = CancellationToken::new();
        let options = ConsumerOptions::<InMemory>::new()
            .with_prefetch_count(2)
            .with_shutdown(token.clone());
        let processing = options.processing_handle();
        let run = consumer.run::<Orders, _>(recorder.clone(), (), options);
        let stop = async {
            wait_until("consumer.run handles messages", || recorder.count() == 5).await;
            token.cancel();
        };
        let (result, ()) = bounded("consumer.run", async { tokio::join!(run, stop) }).await;
        result?;
        assert_eq!(recorder.ids(), vec![0, 1, 2, 3, 4]);
        assert!(
            !processing.load(Ordering::SeqCst),
            "no message in flight after shutdown"
        );

        // run_dlq(): rejected messages go to the DLQ; the DLQ consumer calls handle_dead.
        let rejecter = Rejecter::default();
        let token = CancellationToken::new();
        for id in 10..13 {
            publisher.publish::<Orders>(&order(id)).await?;
        }
        let run = consumer.run::<Orders, _>(
            rejecter.clone(),
            (),
            ConsumerOptions::<InMemory>::new().with_shutdown(token.clone()),
        );
        let stop = async {
            wait_until("rejects", || rejecter.handled.load(Ordering::SeqCst) == 3).await;
            token.cancel();
        };
        let (result, ()) = bounded("reject run", async { tokio::join!(run, stop) }).await;
        result?;

        let dlq_consumer = consumer.clone();
        let dlq = dlq_consumer.run_dlq::<Orders, _>(rejecter.clone(), ());
        tokio::select! {
            r = dlq => panic!("run_dlq returned before the DLQ was drained: {r:?}"),
            () = wait_until("handle_dead", || rejecter.dead.lock().unwrap().len() == 3) => {}
        }
        let mut dead: Vec<(OrderPaid, DeadMessageMetadata)> = rejecter.dead.lock().unwrap().clone();
        dead.sort_by_key(|(m, _)| m.order_id);
        assert_eq!(
            dead.iter().map(|(m, _)| m.order_id).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );

        // run_fifo_until_timeout(): per-key order with a shutdown signal.
        let ledger = LedgerRecorder::default();
        for seq in 0..9 {
            let account_id = ["x", "y", "z"][seq as usize % 3];
            publisher
                .publish::<Ledger>(&LedgerEntry {
                    account_id: account_id.into(),
                    seq,
                })
                .await?;
        }
        let signal = {
            let ledger = ledger.clone();
            signal_when("fifo until timeout", move || ledger.count() == 9)
        };
        let outcome: SupervisorOutcome = bounded(
            "run_fifo_until_timeout",
            consumer.run_fifo_until_timeout::<Ledger, _, _>(
                ledger.clone(),
                (),
                ConsumerOptions::<InMemory>::preset(3),
                signal,
                DRAIN,
            ),
        )
        .await;
        assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
        assert_eq!(ledger.seqs_for("x"), vec![0, 3, 6]);
        assert_eq!(ledger.seqs_for("y"), vec![1, 4, 7]);
        assert_eq!(ledger.seqs_for("z"), vec![2, 5, 8]);

        // run_fifo() with a shutdown token.
        let ledger = LedgerRecorder::default();
        for seq in 0..4 {
            publisher
                .publish::<Ledger>(&LedgerEntry {
                    account_id: "w".into(),
                    seq,
                })
                .await?;
        }
        let token = CancellationToken::new();
        let run = consumer.run_fifo::<Ledger, _>(
            ledger.clone(),
            (),
            ConsumerOptions::<InMemory>::new().with_shutdown(token.clone()),
        );
        let stop = async {
            wait_until("run_fifo", || ledger.count() == 4).await;
            token.cancel();
        };
        let (result, ()) = bounded("run_fifo", async { tokio::join!(run, stop) }).await;
        result?;
        assert_eq!(ledger.seqs_for("w"), vec![0, 1, 2, 3]);

        memory.shutdown();
        assert!(memory.shutdown_token().is_cancelled());
        Ok(())
    }

    #[tokio::test]
    async fn broker_stats_and_sixteen_topics() -> Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare_all::<AllSixteen>().await?;
        <(Orders, Refunds) as Topics>::declare_all(&broker.topology()).await?;
        let publisher = broker.publisher().await?;
        for id in 0..3 {
            publisher.publish::<Orders>(&order(id)).await?;
        }
        publisher.publish::<T16>(&order(16)).await?;
        let stats = broker.queue_stats_provider();
        let orders = stats.get_queue_stats("api-orders").await?;
        assert_eq!(orders.messages_ready, 3);
        assert_eq!(orders.messages_in_flight, 0);
        assert_eq!(stats.get_queue_stats("api-t16").await?.messages_ready, 1);

        // The backend autoscaler from the broker is usable through its public trait.
        let autoscaler_backend = broker.autoscaler();
        let groups: Vec<String> = autoscaler_backend.list_groups().await?;
        assert!(groups.is_empty(), "no consumer group was registered: {groups:?}");

        // A handler that drains them.
        let counter = Counter::default();
        let mut supervisor = broker.consumer_supervisor();
        supervisor.register::<T16, _>(counter.clone(), ConsumerOptions::<InMemory>::new())?;
        let signal = {
            let counter = counter.clone();
            signal_when("T16 message", move || counter.get() == 1)
        };
        let outcome = bounded("sixteen", supervisor.run_until_timeout(signal, DRAIN)).await;
        assert!(outcome.is_clean());
        broker.close().await;
        Ok(())
    }

    #[tokio::test]
    async fn audited_handler_program() -> Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare::<Orders>().await?;
        let publisher = broker.publisher().await?;
        let recorder = Recorder::default();
        let audit = MemAudit::default();
        let mut supervisor = broker.consumer_supervisor();
        supervisor.register::<Orders, _>(
            recorder
                .clone()
                .audited(audit.clone())
                .with_audit_timeout(Duration::from_secs(5)),
            ConsumerOptions::<InMemory>::new(),
        )?;
        publisher.publish::<Orders>(&order(1)).await?;
        publisher.publish::<Orders>(&order(2)).await?;
        let signal = {
            let audit = audit.clone();
            signal_when("audit records", move || audit.records.lock().unwrap().len() == 2)
        };
        let outcome = bounded("audited", supervisor.run_until_timeout(signal, DRAIN)).await;
        assert!(outcome.is_clean());
        assert_eq!(recorder.ids(), vec![1, 2]);
        let records = audit.records.lock().unwrap().clone();
        let mut payload_ids: Vec<u64> = records.iter().map(|r| r.payload.order_id).collect();
        payload_ids.sort_unstable();
        assert_eq!(payload_ids, vec![1, 2]);
        for r in &records {
            assert!(matches!(r.outcome, Outcome::Ack), "{:?}", r.outcome);
        }
        Ok(())
    }

    #[cfg(feature = "audit")]
    #[derive(Clone, Default)]
    struct AuditLogRecorder {
        seen: Arc<std::sync::Mutex<Vec<AuditRecord<serde_json::Value>>>>,
    }
    #[cfg(feature = "audit")]
    impl MessageHandler<shove::AuditLog> for AuditLogRecorder {
        type Context = ();
        async fn handle(&self, message: AuditRecord<serde_json::Value>, _m: MessageMetadata, _c: &()) -> Outcome {
            self.seen.lock().unwrap().push(message);
            Outcome::Ack
        }
    }

    #[cfg(feature = "audit")]
    #[tokio::test]
    async fn shove_audit_handler_publishes_to_audit_log() -> Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare_all::<(Orders, shove::AuditLog)>().await?;
        let publisher = broker.publisher().await?;
        let log = AuditLogRecorder::default();
        let mut supervisor = broker.consumer_supervisor();
        supervisor.register::<Orders, _>(
            Recorder::default().audited(shove::ShoveAuditHandler::for_publisher(&publisher)),
            ConsumerOptions::<InMemory>::new(),
        )?;
        supervisor.register::<shove::AuditLog, _>(log.clone(), ConsumerOptions::<InMemory>::new())?;
        let _second: shove::ShoveAuditHandler<InMemory> = shove::ShoveAuditHandler::new(publisher.clone());
        publisher.publish::<Orders>(&order(5)).await?;
        let signal = {
            let log = log.clone();
            signal_when("audit log record", move || !log.seen.lock().unwrap().is_empty())
        };
        let outcome = bounded("audit log", supervisor.run_until_timeout(signal, DRAIN)).await;
        assert!(outcome.is_clean());
        let seen = log.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].payload, serde_json::to_value(order(5)).unwrap());
        assert!(matches!(seen[0].outcome, Outcome::Ack));
        Ok(())
    }

    #[cfg(feature = "protobuf")]
    #[derive(Clone, Default)]
    struct PingRecorder {
        seen: Arc<std::sync::Mutex<Vec<Ping>>>,
    }
    #[cfg(feature = "protobuf")]
    impl MessageHandler<Pings> for PingRecorder {
        type Context = ();
        async fn handle(&self, message: Ping, _m: MessageMetadata, _c: &()) -> Outcome {
            self.seen.lock().unwrap().push(message);
            Outcome::Ack
        }
    }

    #[cfg(feature = "protobuf")]
    #[tokio::test]
    async fn protobuf_topic_round_trip() -> Result<()> {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await?;
        broker.topology().declare::<Pings>().await?;
        let publisher = broker.publisher().await?;
        let ping = Ping { name: "p".into(), n: 7 };
        publisher.publish::<Pings>(&ping).await?;
        let rec = PingRecorder::default();
        let mut supervisor = broker.consumer_supervisor();
        supervisor.register::<Pings, _>(rec.clone(), ConsumerOptions::<InMemory>::new())?;
        let signal = {
            let rec = rec.clone();
            signal_when("protobuf message", move || rec.seen.lock().unwrap().len() == 1)
        };
        let outcome = bounded("protobuf", supervisor.run_until_timeout(signal, DRAIN)).await;
        assert!(outcome.is_clean());
        assert_eq!(*rec.seen.lock().unwrap(), vec![ping]);
        Ok(())
    }

    #[tokio::test]
    async fn autoscaler_with_user_backend_and_strategy() {
        let backend = FakeScaler::default();
        let mut autoscaler = Autoscaler::new(backend.clone(), AlwaysUp::default(), Duration::from_millis(10));
        bounded("poll_and_scale", autoscaler.poll_and_scale()).await;
        assert_eq!(
            *backend.scaled.lock().unwrap(),
            vec![(String::from("g1"), ScalingDecision::ScaleUp(2))]
        );

        // A strategy that always holds.
        let quiet = FakeScaler::default();
        let mut autoscaler = Autoscaler::new(quiet.clone(), NeverScales, Duration::from_millis(10));
        bounded("poll_and_scale hold", autoscaler.poll_and_scale()).await;
        assert!(quiet.listed.load(Ordering::SeqCst) >= 1);
        assert!(
            quiet
                .scaled
                .lock()
                .unwrap()
                .iter()
                .all(|(_, d)| *d == ScalingDecision::Hold)
        );

        // run() polls until its token is cancelled.
        let looping = FakeScaler::default();
        let mut autoscaler = Autoscaler::new(looping.clone(), AlwaysUp::default(), Duration::from_millis(5));
        let token = CancellationToken::new();
        let run = autoscaler.run(token.clone());
        let stop = async {
            let listed = looping.listed.clone();
            wait_until("autoscaler polls", move || listed.load(Ordering::SeqCst) >= 2).await;
            token.cancel();
        };
        bounded("autoscaler run", async { tokio::join!(run, stop) }).await;
        assert!(looping.scaled.lock().unwrap().len() >= 2);
    }

    #[tokio::test]
    async fn handler_defaults_and_arc_delegation() {
        let metadata = MessageMetadata {
            retry_count: 0,
            delivery_id: "d-1".into(),
            redelivered: false,
            headers: Arc::new(HashMap::new()),
        };
        let dead = DeadMessageMetadata {
            message: metadata.clone(),
            reason: Some("rejected".into()),
            original_queue: Some("api-orders".into()),
            death_count: 1,
        };
        // The provided handle_dead (logs only) can be awaited.
        let recorder = Recorder::default();
        MessageHandler::<Orders>::handle_dead(&recorder, order(1), dead.clone(), &()).await;
        // Arc<H> delegates handle and handle_dead to H.
        let shared = Arc::new(recorder.clone());
        let outcome = MessageHandler::<Orders>::handle(&shared, order(2), metadata.clone(), &()).await;
        assert!(matches!(outcome, Outcome::Ack));
        assert_eq!(recorder.ids(), vec![2]);
        let rejecter = Rejecter::default();
        let shared = Arc::new(rejecter.clone());
        let outcome = MessageHandler::<Orders>::handle(&shared, order(3), metadata.clone(), &()).await;
        assert!(matches!(outcome, Outcome::Reject));
        MessageHandler::<Orders>::handle_dead(&shared, order(3), dead.clone(), &()).await;
        assert_eq!(rejecter.dead.lock().unwrap().len(), 1);
        assert_eq!(rejecter.dead.lock().unwrap()[0].1.death_count, 1);
        // The `fn -> impl Future` form.
        let refunds = FutureRecorder::default();
        let outcome = MessageHandler::<Refunds>::handle(&refunds, order(4), metadata, &()).await;
        assert!(matches!(outcome, Outcome::Ack));
        MessageHandler::<Refunds>::handle_dead(&refunds, order(5), dead, &()).await;
        assert_eq!(*refunds.seen.lock().unwrap(), vec![order(4)]);
        assert_eq!(refunds.dead.lock().unwrap()[0].0, order(5));
        // Audited delegates to the inner handler and audits the outcome.
        let audit = MemAudit::default();
        let audited = Audited::new(Recorder::default(), audit.clone());
        let outcome = MessageHandler::<Orders>::handle(
            &audited,
            order(6),
            MessageMetadata {
                retry_count: 0,
                delivery_id: "d-6".into(),
                redelivered: false,
                headers: Arc::new(HashMap::new()),
            },
            &(),
        )
        .await;
        assert!(matches!(outcome, Outcome::Ack));
        let records = audit.records.lock().unwrap().clone();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].payload, order(6));
        assert!(matches!(records[0].outcome, Outcome::Ack));
    }

    #[tokio::test]
    async fn standalone_consumer_group() -> Result<()> {
        let memory = InMemoryBroker::new();
        InMemoryTopologyDeclarer::new(memory.clone())
            .declare(Orders::topology())
            .await?;
        let counter = Counter::default();
        let token = CancellationToken::new();
        let mut group = {
            let counter = counter.clone();
            InMemoryConsumerGroup::new::<Orders, Counter>(
                "api-orders",
                InMemoryConsumerGroupConfig::new(2..=4),
                memory.clone(),
                token.clone(),
                move || counter.clone(),
                (),
            )
        };
        assert_eq!(group.queue(), "api-orders");
        assert_eq!(group.config().min_consumers(), 2);
        assert_eq!(group.config().max_consumers(), 4);
        group.start();
        assert_eq!(group.active_consumers(), 2);
        let publisher = InMemoryPublisher::new(memory.clone());
        for id in 0..6 {
            publisher.publish::<Orders>(&order(id)).await?;
        }
        wait_until("standalone group handles messages", || counter.get() == 6).await;
        assert!(group.scale_up());
        assert_eq!(group.active_consumers(), 3);
        bounded("group shutdown", group.shutdown()).await;
        Ok(())
    }

    #[tokio::test]
    async fn default_broker_handles() -> Result<()> {
        let memory = InMemoryBroker::default();
        let declarer = InMemoryTopologyDeclarer::new(memory.clone());
        declarer.declare(Orders::topology()).await?;
        declarer.declare(Ledger::topology()).await?;
        let broker = Broker::<InMemory>::from_client(memory.clone());
        let publisher: Publisher<InMemory> = broker.publisher().await?;
        publisher.publish::<Orders>(&order(1)).await?;
        assert_eq!(
            broker
                .queue_stats_provider()
                .get_queue_stats("api-orders")
                .await?
                .messages_ready,
            1
        );
        let _ = InMemoryAutoscalerBackend::<BrokerStatsProvider>::new(
            memory.clone(),
            Arc::new(Mutex::new(InMemoryConsumerGroupRegistry::new(memory.clone()))),
        );
        Ok(())
    }
}
