//! Names, defaults, panics and Display strings of the shove 0.11.3 public API (spec sections 3–13, 14.6, 16).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use shove::{
    AutoscalerConfig, Codec, DEFAULT_HANDLER_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING_PER_KEY, JsonCodec,
    MessageMetadata, Outcome, QueueTopology, RawBytesCodec, ScalingDecision, ScalingMetrics, ScalingStrategy,
    SequenceFailure, SequencedTopic, ShoveError, Stabilized, SupervisorOutcome, ThresholdStrategy, Topic,
    TopologyBuilder, define_sequenced_topic, define_topic,
};

const MIB: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: u64,
    pub account: String,
}

define_topic!(Payments, Payment, TopologyBuilder::new("voc-payments").dlq().build());
define_topic!(pub Blobs, Vec<u8>, TopologyBuilder::new("voc-blobs").build(), codec = RawBytesCodec);
define_sequenced_topic!(
    pub Accounts,
    Payment,
    |p| format!("acct:{}", p.account),
    TopologyBuilder::new("voc-accounts").sequenced(SequenceFailure::FailAll).hold_queue(Duration::from_secs(5)).dlq().build()
);
define_sequenced_topic!(
    Loose,
    Payment,
    |p| p.account.clone(),
    TopologyBuilder::new("voc-loose")
        .sequenced(SequenceFailure::Skip)
        .allow_message_loss()
        .build(),
    codec = JsonCodec
);

fn payment(id: u64, account: &str) -> Payment {
    Payment {
        id,
        account: account.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// ShoveError
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn shove_error_display_strings() {
    assert_eq!(
        ShoveError::Connection("channel closed".into()).to_string(),
        "connection error: channel closed"
    );
    assert_eq!(
        ShoveError::Topology("missing exchange".into()).to_string(),
        "topology error: missing exchange"
    );
    assert_eq!(
        ShoveError::Validation("bad header".into()).to_string(),
        "validation error: bad header"
    );
    assert_eq!(
        ShoveError::Unknown("weird".into()).to_string(),
        "unknown backend error: weird"
    );
    assert_eq!(
        ShoveError::Codec {
            codec: "json",
            source: "unexpected end of input".into()
        }
        .to_string(),
        "codec error in json: unexpected end of input"
    );
    assert_eq!(
        ShoveError::Codec {
            codec: "protobuf",
            source: Box::new(std::fmt::Error)
        }
        .to_string(),
        format!("codec error in protobuf: {}", std::fmt::Error)
    );
    let json_err = serde_json::from_str::<u32>("not json").unwrap_err();
    let json_msg = json_err.to_string();
    assert_eq!(
        ShoveError::Serialization(json_err).to_string(),
        format!("serialization error: {json_msg}")
    );
    let from: ShoveError = serde_json::from_str::<u32>("not json").unwrap_err().into();
    assert!(matches!(from, ShoveError::Serialization(_)));
    assert_eq!(from.to_string(), format!("serialization error: {json_msg}"));
}

#[test]
fn shove_error_sources() {
    use std::error::Error as _;
    let codec = ShoveError::Codec {
        codec: "raw",
        source: "inner failure".into(),
    };
    assert_eq!(codec.source().map(|s| s.to_string()).as_deref(), Some("inner failure"));
    let ser = ShoveError::Serialization(serde_json::from_str::<u32>("x").unwrap_err());
    assert!(ser.source().is_some());
    assert!(ShoveError::Connection("c".into()).source().is_none());
    assert!(ShoveError::Topology("t".into()).source().is_none());
    assert!(!format!("{codec:?}").is_empty());
}

#[test]
fn only_connection_errors_are_retryable() {
    assert!(ShoveError::Connection("reset".into()).is_retryable());
    assert!(!ShoveError::Topology("t".into()).is_retryable());
    assert!(!ShoveError::Validation("v".into()).is_retryable());
    assert!(!ShoveError::Unknown("u".into()).is_retryable());
    assert!(
        !ShoveError::Codec {
            codec: "json",
            source: "x".into()
        }
        .is_retryable()
    );
    assert!(!ShoveError::Serialization(serde_json::from_str::<u32>("x").unwrap_err()).is_retryable());
}

// ---------------------------------------------------------------------------------------------------------------
// Topology names
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn dlq_names() {
    assert_eq!(TopologyBuilder::new("orders").dlq().build().dlq(), Some("orders-dlq"));
    assert_eq!(
        TopologyBuilder::new("orders")
            .dlq_named("orders-graveyard")
            .build()
            .dlq(),
        Some("orders-graveyard")
    );
    assert_eq!(TopologyBuilder::new("orders").build().dlq(), None);
    let plain = TopologyBuilder::new("orders").build();
    assert_eq!(plain.queue(), "orders");
    assert!(plain.hold_queues().is_empty());
    assert!(plain.sequencing().is_none());
}

#[test]
fn hold_queue_names() {
    let t = TopologyBuilder::new("q")
        .hold_queue(Duration::from_secs(5))
        .hold_queue(Duration::from_millis(1500))
        .hold_queue(Duration::ZERO)
        .hold_queue(Duration::from_millis(2000))
        .hold_queue(Duration::from_secs(60))
        .hold_queue(Duration::from_millis(250))
        .dlq()
        .build();
    let names: Vec<&str> = t.hold_queues().iter().map(|h| h.name()).collect();
    // Whole seconds -> "{secs}s", otherwise "{millis}ms"; appended in call order.
    assert_eq!(
        names,
        vec![
            "q-hold-5s",
            "q-hold-1500ms",
            "q-hold-0s",
            "q-hold-2s",
            "q-hold-60s",
            "q-hold-250ms"
        ]
    );
    let delays: Vec<Duration> = t.hold_queues().iter().map(|h| h.delay()).collect();
    assert_eq!(
        delays,
        vec![
            Duration::from_secs(5),
            Duration::from_millis(1500),
            Duration::ZERO,
            Duration::from_secs(2),
            Duration::from_secs(60),
            Duration::from_millis(250),
        ]
    );
}

#[test]
fn sequencing_names_and_defaults() {
    let t = TopologyBuilder::new("ledger")
        .sequenced(SequenceFailure::FailAll)
        .hold_queue(Duration::from_secs(5))
        .hold_queue(Duration::from_millis(1500))
        .dlq()
        .build();
    let seq = t.sequencing().expect("sequenced");
    assert_eq!(seq.on_failure(), SequenceFailure::FailAll);
    assert_eq!(seq.routing_shards(), 8);
    assert_eq!(seq.exchange(), "ledger-seq-hash");
    assert_eq!(t.dlq(), Some("ledger-dlq"));

    let shard3: Vec<(String, Duration)> = t
        .shard_hold_queue_names(3)
        .iter()
        .map(|h| (h.name().to_string(), h.delay()))
        .collect();
    assert_eq!(
        shard3,
        vec![
            ("ledger-seq-3-hold-5s".to_string(), Duration::from_secs(5)),
            ("ledger-seq-3-hold-1500ms".to_string(), Duration::from_millis(1500)),
        ]
    );
    let shard0: Vec<String> = t
        .shard_hold_queue_names(0)
        .iter()
        .map(|h| h.name().to_string())
        .collect();
    assert_eq!(shard0, vec!["ledger-seq-0-hold-5s", "ledger-seq-0-hold-1500ms"]);

    let custom = TopologyBuilder::new("acct")
        .sequenced(SequenceFailure::Skip)
        .routing_shards(3)
        .hold_queue(Duration::from_secs(1))
        .dlq_named("acct-dead")
        .build();
    let seq = custom.sequencing().expect("sequenced");
    assert_eq!(seq.on_failure(), SequenceFailure::Skip);
    assert_eq!(seq.routing_shards(), 3);
    assert_eq!(seq.exchange(), "acct-seq-hash");
    assert_eq!(custom.dlq(), Some("acct-dead"));

    // allow_message_loss() waives the DLQ and hold-queue requirements.
    let lossy = TopologyBuilder::new("lossy")
        .sequenced(SequenceFailure::Skip)
        .allow_message_loss()
        .build();
    assert_eq!(lossy.dlq(), None);
    assert!(lossy.hold_queues().is_empty());
    assert!(lossy.shard_hold_queue_names(1).is_empty());
    assert_eq!(lossy.sequencing().map(|s| s.routing_shards()), Some(8));
    let lossy_with_dlq = TopologyBuilder::new("l2")
        .sequenced(SequenceFailure::Skip)
        .dlq()
        .allow_message_loss()
        .build();
    assert_eq!(lossy_with_dlq.dlq(), Some("l2-dlq"));
    let lossy_with_hold = TopologyBuilder::new("l3")
        .sequenced(SequenceFailure::Skip)
        .hold_queue(Duration::from_secs(2))
        .allow_message_loss()
        .build();
    assert_eq!(lossy_with_hold.hold_queues()[0].name(), "l3-hold-2s");
}

#[test]
#[should_panic(expected = "routing_shards must be greater than 0 when sequencing is enabled")]
fn zero_routing_shards_panics() {
    let _ = TopologyBuilder::new("q")
        .sequenced(SequenceFailure::Skip)
        .routing_shards(0)
        .hold_queue(Duration::from_secs(1))
        .dlq()
        .build();
}

#[test]
#[should_panic(
    expected = "sequenced topics require a DLQ — call .dlq() or .dlq_named() or .allow_message_loss() before .build()"
)]
fn sequenced_without_dlq_panics() {
    let _ = TopologyBuilder::new("q")
        .sequenced(SequenceFailure::FailAll)
        .hold_queue(Duration::from_secs(1))
        .build();
}

#[test]
#[should_panic(
    expected = "sequenced topics require at least one hold queue — call .hold_queue() or .allow_message_loss() before .build()"
)]
fn sequenced_without_hold_queue_panics() {
    let _ = TopologyBuilder::new("q")
        .sequenced(SequenceFailure::FailAll)
        .dlq()
        .build();
}

#[test]
#[should_panic(
    expected = "sequenced topics require at least one hold queue — call .hold_queue() or .allow_message_loss() before .build()"
)]
fn sequenced_with_named_dlq_without_hold_queue_panics() {
    let _ = TopologyBuilder::new("q")
        .sequenced(SequenceFailure::Skip)
        .dlq_named("dead")
        .build();
}

#[test]
#[should_panic(expected = "routing_shards() called before sequenced()")]
fn routing_shards_before_sequenced_panics() {
    let _ = TopologyBuilder::new("q")
        .routing_shards(4)
        .sequenced(SequenceFailure::Skip)
        .allow_message_loss()
        .build();
}

#[test]
fn unsequenced_topologies_need_nothing() {
    // DLQ and hold-queue requirements apply only to sequenced topologies.
    let t: QueueTopology = TopologyBuilder::new("plain").hold_queue(Duration::from_secs(1)).build();
    assert_eq!(t.dlq(), None);
    assert_eq!(t.hold_queues().len(), 1);
    assert!(t.sequencing().is_none());
}

// ---------------------------------------------------------------------------------------------------------------
// Topics and macros
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn sequence_key_functions() {
    let p = payment(1, "alice");
    assert_eq!(Accounts::sequence_key(&p), "acct:alice");
    assert_eq!(
        <Accounts as Topic>::SEQUENCE_KEY_FN.expect("sequenced topic has a key fn")(&p),
        "acct:alice"
    );
    assert_eq!(Loose::sequence_key(&p), "alice");
    assert_eq!(
        <Loose as Topic>::SEQUENCE_KEY_FN.expect("sequenced topic has a key fn")(&p),
        "alice"
    );
    assert!(<Payments as Topic>::SEQUENCE_KEY_FN.is_none());
    assert!(<Blobs as Topic>::SEQUENCE_KEY_FN.is_none());
    assert_eq!(Accounts::topology().queue(), "voc-accounts");
    assert_eq!(Accounts::topology().dlq(), Some("voc-accounts-dlq"));
    assert_eq!(Accounts::topology().hold_queues()[0].name(), "voc-accounts-hold-5s");
    assert_eq!(Payments::topology().dlq(), Some("voc-payments-dlq"));
    assert!(std::ptr::eq(Payments::topology(), Payments::topology()));
    assert_eq!(<<Payments as Topic>::Codec as Codec<Payment>>::NAME, "json");
    assert_eq!(<<Blobs as Topic>::Codec as Codec<Vec<u8>>>::NAME, "raw");
}

#[cfg(feature = "audit")]
#[test]
fn audit_log_topic() {
    let t = shove::AuditLog::topology();
    assert_eq!(t.queue(), "shove-audit-log");
    assert_eq!(t.dlq(), Some("shove-audit-log-dlq"));
    assert!(t.sequencing().is_none());
    assert!(t.hold_queues().is_empty());
    assert!(<shove::AuditLog as Topic>::SEQUENCE_KEY_FN.is_none());
    assert_eq!(
        <<shove::AuditLog as Topic>::Codec as Codec<shove::AuditRecord<serde_json::Value>>>::NAME,
        "json"
    );
    assert!(std::ptr::eq(
        shove::audit::AuditLog::topology(),
        shove::AuditLog::topology()
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// Codecs
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn codec_names() {
    assert_eq!(<JsonCodec as Codec<Payment>>::NAME, "json");
    assert_eq!(<JsonCodec as Codec<serde_json::Value>>::NAME, "json");
    assert_eq!(<RawBytesCodec as Codec<Vec<u8>>>::NAME, "raw");
    #[cfg(feature = "protobuf")]
    assert_eq!(<shove::ProtobufCodec as Codec<Ping>>::NAME, "protobuf");
}

#[test]
fn json_codec_round_trip_and_errors() {
    let p = payment(7, "bob");
    let bytes = JsonCodec::encode(&p).unwrap();
    assert_eq!(bytes, serde_json::to_vec(&p).unwrap());
    let back: Payment = JsonCodec::decode(&bytes).unwrap();
    assert_eq!(back, p);
    assert_eq!(
        <JsonCodec as Codec<Payment>>::encode_to_string(&p).unwrap(),
        serde_json::to_string(&p).unwrap()
    );
    assert_eq!(
        <JsonCodec as Codec<Payment>>::encode_to_string(&p).unwrap(),
        r#"{"id":7,"account":"bob"}"#
    );
    let err = <JsonCodec as Codec<Payment>>::decode(b"{not json").unwrap_err();
    assert!(matches!(err, ShoveError::Serialization(_)), "{err:?}");
    assert!(err.to_string().starts_with("serialization error: "), "{err}");
    let err = <JsonCodec as Codec<Payment>>::decode(br#"{"id":"seven"}"#).unwrap_err();
    assert!(matches!(err, ShoveError::Serialization(_)), "{err:?}");
}

#[test]
fn raw_codec_round_trip_and_encode_to_string() {
    let data = vec![0u8, 1, 2, 255];
    assert_eq!(RawBytesCodec::encode(&data).unwrap(), data);
    assert_eq!(RawBytesCodec::decode(&data).unwrap(), data);
    assert_eq!(RawBytesCodec::decode(&[]).unwrap(), Vec::<u8>::new());
    assert_eq!(RawBytesCodec::encode_to_string(&b"hello".to_vec()).unwrap(), "hello");
    // Non-UTF-8 output: the provided encode_to_string reports a Codec error named after the codec.
    let err = RawBytesCodec::encode_to_string(&vec![0xff, 0xfe]).unwrap_err();
    match &err {
        ShoveError::Codec { codec, .. } => assert_eq!(*codec, "raw"),
        other => panic!("expected ShoveError::Codec, got {other:?}"),
    }
    assert!(err.to_string().starts_with("codec error in raw: "), "{err}");
}

/// A user codec whose output is not UTF-8, to check the provided `encode_to_string`.
struct Latin1Codec;
impl Codec<String> for Latin1Codec {
    const NAME: &'static str = "latin1";
    fn encode(value: &String) -> shove::error::Result<Vec<u8>> {
        Ok(value.chars().map(|c| c as u8).collect())
    }
    fn decode(bytes: &[u8]) -> shove::error::Result<String> {
        Ok(bytes.iter().map(|&b| b as char).collect())
    }
}

#[test]
fn provided_encode_to_string_uses_codec_name() {
    assert_eq!(Latin1Codec::encode_to_string(&"abc".to_string()).unwrap(), "abc");
    let err = Latin1Codec::encode_to_string(&"é".to_string()).unwrap_err();
    assert!(matches!(err, ShoveError::Codec { codec: "latin1", .. }), "{err:?}");
    assert!(err.to_string().starts_with("codec error in latin1: "), "{err}");
}

#[cfg(feature = "protobuf")]
#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "2")]
    count: u64,
}

#[cfg(feature = "protobuf")]
#[test]
fn protobuf_codec_round_trip_and_errors() {
    use shove::codecs::protobuf::ProtobufCodec;
    let ping = Ping {
        name: "hi".into(),
        count: 42,
    };
    let bytes = ProtobufCodec::encode(&ping).unwrap();
    assert_eq!(bytes, prost::Message::encode_to_vec(&ping));
    let back: Ping = ProtobufCodec::decode(&bytes).unwrap();
    assert_eq!(back, ping);
    let empty: Ping = ProtobufCodec::decode(&[]).unwrap();
    assert_eq!(empty, Ping::default());
    // Field 1, length-delimited, claims 5 bytes but only 1 follows.
    let err = <ProtobufCodec as Codec<Ping>>::decode(&[0x0a, 0x05, b'a']).unwrap_err();
    assert!(matches!(err, ShoveError::Codec { codec: "protobuf", .. }), "{err:?}");
    assert!(err.to_string().starts_with("codec error in protobuf: "), "{err}");
    assert!(!err.is_retryable());
}

// ---------------------------------------------------------------------------------------------------------------
// Outcome and metadata serde
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn outcome_serde_representation() {
    assert_eq!(serde_json::to_string(&Outcome::Ack).unwrap(), "\"Ack\"");
    assert_eq!(serde_json::to_string(&Outcome::Retry).unwrap(), "\"Retry\"");
    assert_eq!(serde_json::to_string(&Outcome::Reject).unwrap(), "\"Reject\"");
    assert_eq!(serde_json::to_string(&Outcome::Defer).unwrap(), "\"Defer\"");
    for name in ["Ack", "Retry", "Reject", "Defer"] {
        let o: Outcome = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(format!("{o:?}"), name);
    }
    assert!(serde_json::from_str::<Outcome>("\"ack\"").is_err());
}

#[test]
fn message_metadata_serde_round_trip() {
    let mut headers = HashMap::new();
    headers.insert("tenant".to_string(), "acme".to_string());
    let m = MessageMetadata {
        retry_count: 3,
        delivery_id: "d-9".into(),
        redelivered: true,
        headers: Arc::new(headers),
    };
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["retry_count"], 3);
    assert_eq!(json["delivery_id"], "d-9");
    assert_eq!(json["redelivered"], true);
    assert_eq!(json["headers"]["tenant"], "acme");
    let back: MessageMetadata = serde_json::from_value(json).unwrap();
    assert_eq!(back.retry_count, 3);
    assert_eq!(back.delivery_id, "d-9");
    assert!(back.redelivered);
    assert_eq!(back.headers.get("tenant").map(String::as_str), Some("acme"));
}

// ---------------------------------------------------------------------------------------------------------------
// ConsumerOptions and constants
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn constants() {
    assert_eq!(DEFAULT_MAX_MESSAGE_SIZE, 10 * MIB);
    assert_eq!(DEFAULT_HANDLER_TIMEOUT, Duration::from_secs(30));
    assert_eq!(DEFAULT_MAX_PENDING_PER_KEY, 1_000);
    assert_eq!(shove::consumer::DEFAULT_MAX_MESSAGE_SIZE, 10_485_760);
    assert_eq!(shove::broker::DEFAULT_PING_TIMEOUT, Duration::from_secs(5));
    #[cfg(feature = "inmemory")]
    assert_eq!(shove::inmemory::DEFAULT_QUEUE_CAPACITY, 10_000);
}

#[cfg(feature = "inmemory")]
mod consumer_options {
    use super::*;
    use shove::{ConsumerOptions, InMemory};
    use std::sync::atomic::Ordering;
    use tokio_util::sync::CancellationToken;

    type Options = ConsumerOptions<InMemory>;

    fn assert_defaults(o: &Options) {
        assert_eq!(o.max_retries, 10);
        assert_eq!(o.prefetch_count, 10);
        assert!(o.concurrent_processing);
        assert_eq!(o.handler_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.handler_timeout, Some(DEFAULT_HANDLER_TIMEOUT));
        assert_eq!(o.max_pending_per_key, Some(1000));
        assert_eq!(o.max_pending_per_key, Some(DEFAULT_MAX_PENDING_PER_KEY));
        assert_eq!(o.max_message_size, Some(10 * MIB));
        assert_eq!(o.max_message_size, Some(DEFAULT_MAX_MESSAGE_SIZE));
        assert_eq!(o.max_reconnect_attempts, None);
    }

    #[test]
    fn defaults() {
        assert_defaults(&Options::new());
        assert_defaults(&Options::default());
        assert_defaults(&Options::new().clone());
        let preset = Options::preset(5);
        assert_eq!(preset.prefetch_count, 5);
        assert_eq!(preset.max_retries, 10);
        assert!(preset.concurrent_processing);
        assert_eq!(preset.handler_timeout, Some(DEFAULT_HANDLER_TIMEOUT));
        assert_eq!(preset.max_pending_per_key, Some(DEFAULT_MAX_PENDING_PER_KEY));
        assert_eq!(preset.max_message_size, Some(DEFAULT_MAX_MESSAGE_SIZE));
        assert_eq!(preset.max_reconnect_attempts, None);
    }

    #[test]
    fn builders_set_fields() {
        let o = Options::new()
            .with_max_retries(3)
            .with_prefetch_count(7)
            .with_concurrent_processing(false)
            .with_handler_timeout(Duration::from_millis(250))
            .with_max_pending_per_key(5)
            .with_max_message_size(4096)
            .with_max_reconnect_attempts(9)
            .with_shutdown(CancellationToken::new())
            .with_consumer_group("workers");
        assert_eq!(o.max_retries, 3);
        assert_eq!(o.prefetch_count, 7);
        assert!(!o.concurrent_processing);
        assert_eq!(o.handler_timeout, Some(Duration::from_millis(250)));
        assert_eq!(o.max_pending_per_key, Some(5));
        assert_eq!(o.max_message_size, Some(4096));
        assert_eq!(o.max_reconnect_attempts, Some(9));

        let o = o
            .without_handler_timeout()
            .without_max_pending_per_key()
            .without_message_size_limit();
        assert_eq!(o.handler_timeout, None);
        assert_eq!(o.max_pending_per_key, None);
        assert_eq!(o.max_message_size, None);
        assert_eq!(o.max_retries, 3);
    }

    #[test]
    fn clone_shares_processing_flag() {
        let o = Options::new();
        let handle = o.processing_handle();
        assert!(!handle.load(Ordering::SeqCst), "nothing is processing yet");
        let c = o.clone();
        assert!(Arc::ptr_eq(&handle, &c.processing_handle()));
        assert!(Arc::ptr_eq(&handle, &o.processing_handle()));
        assert!(!Arc::ptr_eq(&handle, &Options::new().processing_handle()));
    }

    #[test]
    #[should_panic(expected = "handler_timeout must be positive")]
    fn zero_handler_timeout_panics() {
        let _ = Options::new().with_handler_timeout(Duration::ZERO);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// In-process backend vocabulary
// ---------------------------------------------------------------------------------------------------------------

#[cfg(feature = "inmemory")]
mod inmemory {
    use super::*;
    use shove::inmemory::{
        DEFAULT_QUEUE_CAPACITY, InMemoryBroker, InMemoryConfig, InMemoryConsumerGroupConfig, InMemoryQueueStats,
        InMemoryTopologyDeclarer,
    };
    use shove::{Broker, ConsumerOptions, InMemory, MessageHandler};
    use std::num::NonZeroUsize;

    #[test]
    fn config_defaults() {
        assert_eq!(InMemoryConfig::default().default_capacity, DEFAULT_QUEUE_CAPACITY);
        assert_eq!(InMemoryConfig::default().default_capacity, 10_000);
        let c = InMemoryConfig::default().with_default_capacity(NonZeroUsize::new(64).unwrap());
        assert_eq!(c.default_capacity, 64);
        let s = InMemoryQueueStats::default();
        assert_eq!((s.messages_ready, s.messages_in_flight), (0, 0));
    }

    #[test]
    fn consumer_group_config() {
        let d = InMemoryConsumerGroupConfig::default();
        assert_eq!(d.min_consumers(), 1);
        assert_eq!(d.max_consumers(), 1);
        let n = InMemoryConsumerGroupConfig::new(1..=1);
        assert_eq!(
            (
                d.prefetch_count(),
                d.max_retries(),
                d.handler_timeout(),
                d.max_pending_per_key(),
                d.max_message_size()
            ),
            (
                n.prefetch_count(),
                n.max_retries(),
                n.handler_timeout(),
                n.max_pending_per_key(),
                n.max_message_size()
            )
        );

        let c = InMemoryConsumerGroupConfig::new(2..=5)
            .with_prefetch_count(4)
            .with_max_retries(6)
            .with_handler_timeout(Duration::from_secs(7))
            .with_max_message_size(1024)
            .with_max_pending_per_key(12);
        assert_eq!(c.min_consumers(), 2);
        assert_eq!(c.max_consumers(), 5);
        assert_eq!(c.prefetch_count(), 4);
        assert_eq!(c.max_retries(), 6);
        assert_eq!(c.handler_timeout(), Some(Duration::from_secs(7)));
        assert_eq!(c.max_message_size(), Some(1024));
        assert_eq!(c.max_pending_per_key(), Some(12));
        let c = c.without_message_size_limit().without_max_pending_per_key();
        assert_eq!(c.max_message_size(), None);
        assert_eq!(c.max_pending_per_key(), None);
        let same = InMemoryConsumerGroupConfig::new(3..=3);
        assert_eq!((same.min_consumers(), same.max_consumers()), (3, 3));
    }

    #[test]
    #[should_panic]
    fn consumer_group_config_inverted_range_panics() {
        #[allow(clippy::reversed_empty_ranges)]
        let _ = InMemoryConsumerGroupConfig::new(3..=1);
    }

    #[test]
    fn shard_queue_name() {
        assert_eq!(InMemoryTopologyDeclarer::shard_queue_name("ledger", 0), "ledger-seq-0");
        assert_eq!(InMemoryTopologyDeclarer::shard_queue_name("ledger", 7), "ledger-seq-7");
    }

    #[test]
    fn broker_shutdown_token() {
        let broker = InMemoryBroker::new();
        assert!(!broker.shutdown_token().is_cancelled());
        broker.shutdown();
        assert!(broker.shutdown_token().is_cancelled());
        let other = InMemoryBroker::with_config(InMemoryConfig { default_capacity: 8 });
        let clone = other.clone();
        other.shutdown();
        assert!(clone.shutdown_token().is_cancelled(), "clones share the broker");
    }

    #[tokio::test]
    #[should_panic(expected = "default_handler_timeout must be positive")]
    async fn consumer_group_zero_default_timeout_panics() {
        let broker = Broker::<InMemory>::from_client(InMemoryBroker::new());
        let _ = broker.consumer_group().with_default_handler_timeout(Duration::ZERO);
    }

    /// Rule 21: a queue capacity of 0 (every publish would wait forever) is refused when the broker is
    /// built, with a message naming the fix.
    #[tokio::test]
    async fn zero_queue_capacity_is_refused_naming_the_fix() {
        let config = InMemoryConfig { default_capacity: 0 };
        let Some(err) = Broker::<InMemory>::new(config).await.err() else {
            panic!("a capacity of 0 must be refused");
        };
        assert!(
            matches!(&err, ShoveError::Validation(m) if m.contains("with_default_capacity")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn reserved_header_prefixes_are_rejected() {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await.unwrap();
        broker.topology().declare::<Payments>().await.unwrap();
        let publisher = broker.publisher().await.unwrap();
        let p = payment(1, "a");

        let headers = HashMap::from([("x-death-reason".to_string(), "manual".to_string())]);
        let err = publisher
            .publish_with_headers::<Payments>(&p, headers)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "validation error: header 'x-death-reason' uses a reserved prefix"
        );
        assert!(matches!(err, ShoveError::Validation(_)));

        for key in [
            "x-retry-count",
            "X-Retry-Count",
            "x-message-id",
            "X-MESSAGE-ID-extra",
            "x-death",
            "x-sequence-key",
        ] {
            let headers = HashMap::from([(key.to_string(), "v".to_string())]);
            let err = publisher
                .publish_with_headers::<Payments>(&p, headers)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ShoveError::Validation(msg) if msg.contains("reserved prefix")),
                "{key}: {err:?}"
            );
            assert!(!err.is_retryable());
        }
        for key in ["x-tenant", "tenant", "retry-count", "x-messageid"] {
            let headers = HashMap::from([(key.to_string(), "v".to_string())]);
            publisher
                .publish_with_headers::<Payments>(&p, headers)
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    /// Handler usable on every topic.
    #[derive(Clone, Default)]
    struct Noop;
    impl<T: Topic> MessageHandler<T> for Noop {
        type Context = ();
        async fn handle(&self, _m: T::Message, _md: MessageMetadata, _c: &()) -> Outcome {
            Outcome::Ack
        }
    }

    #[tokio::test]
    async fn supervisor_registration_errors() {
        let broker = Broker::<InMemory>::new(InMemoryConfig::default()).await.unwrap();
        broker.topology().declare_all::<(Payments, Accounts)>().await.unwrap();
        let mut supervisor = broker.consumer_supervisor();

        // register() on a sequenced topology.
        let err = supervisor
            .register::<Accounts, _>(Noop, ConsumerOptions::<InMemory>::new())
            .unwrap_err();
        assert!(matches!(err, ShoveError::Topology(_)), "{err:?}");
        // register_fifo() on an unsequenced topology.
        let err = supervisor_register_fifo_unsequenced(&mut supervisor).await;
        assert!(matches!(err, ShoveError::Topology(_)), "{err:?}");
        // The same queue twice.
        supervisor
            .register::<Payments, _>(Noop, ConsumerOptions::<InMemory>::new())
            .unwrap();
        let err = supervisor
            .register::<Payments, _>(Noop, ConsumerOptions::<InMemory>::new())
            .unwrap_err();
        assert!(matches!(err, ShoveError::Topology(_)), "{err:?}");

        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            supervisor.run_until_timeout(async {}, Duration::from_secs(5)),
        )
        .await
        .expect("supervisor stops");
        assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    }

    /// `register_fifo` requires `T: SequencedTopic`; an unsequenced topology behind a `SequencedTopic` impl is
    /// rejected at runtime.
    async fn supervisor_register_fifo_unsequenced(supervisor: &mut shove::ConsumerSupervisor<InMemory>) -> ShoveError {
        supervisor
            .register_fifo::<FakeSequenced, _>(Noop, ConsumerOptions::<InMemory>::new())
            .await
            .unwrap_err()
    }

    /// A `SequencedTopic` whose topology is not sequenced.
    struct FakeSequenced;
    impl Topic for FakeSequenced {
        type Message = Payment;
        type Codec = JsonCodec;
        fn topology() -> &'static QueueTopology {
            static T: std::sync::OnceLock<QueueTopology> = std::sync::OnceLock::new();
            T.get_or_init(|| TopologyBuilder::new("voc-fake-sequenced").build())
        }
    }
    impl SequencedTopic for FakeSequenced {
        fn sequence_key(message: &Payment) -> String {
            message.account.clone()
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// SupervisorOutcome
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn supervisor_outcome_exit_codes() {
    let o = |errors, panics, timed_out| SupervisorOutcome {
        errors,
        panics,
        timed_out,
    };
    let table = [
        (o(0, 0, false), 0),
        (o(1, 0, false), 1),
        (o(5, 0, false), 1),
        (o(0, 1, false), 2),
        (o(3, 2, false), 2),
        (o(0, 0, true), 3),
        (o(1, 0, true), 3),
        (o(0, 1, true), 3),
        (o(4, 4, true), 3),
    ];
    for (outcome, code) in table {
        assert_eq!(outcome.exit_code(), code, "{outcome:?}");
        assert_eq!(outcome.is_clean(), code == 0, "{outcome:?}");
    }
    assert_eq!(SupervisorOutcome::default(), o(0, 0, false));
    assert!(SupervisorOutcome::default().is_clean());
    assert_eq!(SupervisorOutcome::default().exit_code(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Autoscaler vocabulary
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn autoscaler_config_defaults() {
    let c = AutoscalerConfig::default();
    assert_eq!(c.poll_interval, Duration::from_secs(5));
    assert_eq!(c.scale_up_multiplier, 2.0);
    assert_eq!(c.scale_down_multiplier, 0.5);
    assert_eq!(c.hysteresis_duration, Duration::from_secs(10));
    assert_eq!(c.cooldown_duration, Duration::from_secs(30));
}

#[test]
fn scaling_metrics_capacity() {
    let m = ScalingMetrics::new(7, 3, 4, 25);
    assert_eq!(
        (
            m.messages_ready,
            m.messages_in_flight,
            m.active_consumers,
            m.prefetch_count
        ),
        (7, 3, 4, 25)
    );
    assert_eq!(m.capacity(), 100);
    assert_eq!(ScalingMetrics::new(0, 0, 0, 10).capacity(), 0);
    assert_eq!(
        ScalingMetrics::new(0, 0, u16::MAX, u16::MAX).capacity(),
        u64::from(u16::MAX) * u64::from(u16::MAX)
    );
}

#[test]
fn threshold_strategy() {
    let t = ThresholdStrategy::default();
    assert_eq!(t.scale_up_multiplier, 2.0);
    assert_eq!(t.scale_down_multiplier, 0.5);
    let mut t = t;
    // A large backlog scales up by one, an idle group scales down by one, a backlog equal to capacity holds.
    assert_eq!(
        t.evaluate("g", &ScalingMetrics::new(10_000, 0, 1, 10)),
        ScalingDecision::ScaleUp(1)
    );
    assert_eq!(
        t.evaluate("g", &ScalingMetrics::new(0, 0, 4, 10)),
        ScalingDecision::ScaleDown(1)
    );
    assert_eq!(
        t.evaluate("g", &ScalingMetrics::new(40, 0, 4, 10)),
        ScalingDecision::Hold
    );
    t.gc(&["g"]);
}

#[test]
fn stabilized_strategy_is_a_strategy() {
    let mut s = Stabilized::new(
        ThresholdStrategy::default(),
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    );
    // A fresh condition must persist for the hysteresis duration before acting.
    assert_eq!(
        s.evaluate("g", &ScalingMetrics::new(10_000, 0, 1, 10)),
        ScalingDecision::Hold
    );
    assert_eq!(
        s.evaluate("g", &ScalingMetrics::new(40, 0, 4, 10)),
        ScalingDecision::Hold
    );
    s.gc(&[String::from("g")]);
}

#[test]
fn scaling_decision_equality() {
    assert_eq!(ScalingDecision::ScaleUp(2), ScalingDecision::ScaleUp(2));
    assert_ne!(ScalingDecision::ScaleUp(2), ScalingDecision::ScaleDown(2));
    assert_ne!(ScalingDecision::ScaleUp(1), ScalingDecision::ScaleUp(2));
    assert_ne!(ScalingDecision::Hold, ScalingDecision::ScaleDown(1));
}

#[test]
fn autoscale_metrics_default() {
    let d = shove::AutoscaleMetrics::default();
    assert_eq!(d.backlog, None);
    assert_eq!(d.inflight, None);
    assert_eq!(d.throughput_per_sec, None);
    assert_eq!(d.processing_latency, None);
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn metrics_set_prefix_exists() {
    // Not called: the prefix is process-global and may be set only once.
    let _: fn(String) = shove::metrics::set_prefix;
    let _: fn(&'static str) = shove::metrics::set_prefix;
}
