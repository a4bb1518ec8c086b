//! Contract rules 1–4: message ids, headers and payloads.

use std::collections::{HashMap, HashSet};

use shove::{ConsumerOptions, Outcome, ShoveError, TopologyBuilder, define_topic};

use super::{DRAIN, Harness, Msg, Probe, Running, headers, ms, unique};

/// Rule 1: `publish`, `publish_with_headers` and `publish_batch` each stamp a UUID message id per
/// message; `delivery_id` reports it, unchanged on the retry and in the DLQ.
pub async fn every_publish_path_stamps_a_stable_uuid_delivery_id<H: Harness>() {
    define_topic!(
        Ids,
        Msg,
        TopologyBuilder::new(unique("ids")).hold_queue(ms(30)).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Ids>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");

    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Ids, _>(
        probe.handler(|_, meta| {
            if meta.retry_count == 0 {
                Outcome::Retry
            } else {
                Outcome::Reject
            }
        }),
        ConsumerOptions::new().with_max_retries(5),
    )
    .expect("register");
    sup.register_dlq::<Ids, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let single = Msg::new("single", 0);
    let with_headers = Msg::new("with-headers", 0);
    let batch = [Msg::new("batch", 0), Msg::new("batch", 1), Msg::new("batch", 2)];
    publisher.publish::<Ids>(&single).await.expect("publish");
    publisher
        .publish_with_headers::<Ids>(&with_headers, headers([("tenant", "acme")]))
        .await
        .expect("publish_with_headers");
    publisher.publish_batch::<Ids>(&batch).await.expect("publish_batch");

    probe.dead.wait_for("all 5 messages in the DLQ", |d| d.len() >= 5).await;

    let mut ids = HashSet::new();
    for msg in [&single, &with_headers, &batch[0], &batch[1], &batch[2]] {
        let calls = probe.calls_of(msg);
        assert_eq!(
            calls.len(),
            2,
            "{msg:?}: expected the first attempt and one retry, got {calls:#?}"
        );
        let id = &calls[0].meta.delivery_id;
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "{msg:?}: delivery_id {id:?} is not a UUID"
        );
        assert_eq!(
            &calls[1].meta.delivery_id, id,
            "{msg:?}: delivery_id changed on the retry"
        );
        let deaths = probe.deaths_of(msg);
        assert_eq!(deaths.len(), 1, "{msg:?}: expected one DLQ delivery, got {deaths:#?}");
        assert_eq!(
            &deaths[0].meta.message.delivery_id, id,
            "{msg:?}: delivery_id changed in the DLQ"
        );
        assert!(
            ids.insert(id.clone()),
            "{msg:?}: delivery_id {id} was given to another message too"
        );
    }
    let _ = running.stop().await;
}

/// Rule 2: `publish_with_headers` refuses keys starting with a reserved prefix (`x-retry-count`,
/// `x-message-id`, `x-death`, `x-sequence-key`, and `x-original-queue` as the crate's contract docs
/// add), and every other name some backend writes on the wire (RabbitMQ's `x-first-death-*` and
/// `x-last-death-*`, NATS's `Shove-*` and `Nats-*`), on every backend, whatever their case, with
/// `ShoveError::Validation` and the documented message; nothing of a refused publish is stored, and
/// names that only resemble a reserved prefix are accepted.
pub async fn reserved_header_prefixes_are_rejected_case_insensitively<H: Harness>() {
    define_topic!(Reserved, Msg, TopologyBuilder::new(unique("reserved")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<Reserved>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");

    let refused = [
        "X-Retry-Count",
        "x-retry-count",
        "x-message-id",
        "X-MESSAGE-ID",
        "x-message-id-2",
        "x-death",
        "X-Death-Reason",
        "x-death-count",
        "x-sequence-key",
        "X-Sequence-Key",
        "x-original-queue",
        "X-Original-Queue-Name",
        "x-first-death-queue",
        "X-Last-Death-Reason",
        "Shove-Message-Id",
        "shove-retry-count",
        "Nats-Msg-Id",
        "NATS-Expected-Stream",
    ];
    for (i, key) in refused.iter().enumerate() {
        let result = publisher
            .publish_with_headers::<Reserved>(
                &Msg::new("refused", i as u32),
                headers([("tenant", "acme"), (*key, "1")]),
            )
            .await;
        match result {
            Err(err @ ShoveError::Validation(_)) => assert_eq!(
                err.to_string(),
                format!("validation error: header '{key}' uses a reserved prefix"),
                "the Display of the validation error for {key:?}"
            ),
            other => panic!("header {key:?}: expected ShoveError::Validation, got {other:?}"),
        }
    }

    let accepted = [
        "x-trace-id",
        "x-retry",
        "retry-count",
        "X-Custom",
        "death",
        "x-original",
        "shove",
        "natsy",
        "x-first",
    ];
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Reserved, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    for (i, key) in accepted.iter().enumerate() {
        publisher
            .publish_with_headers::<Reserved>(&Msg::new("accepted", i as u32), headers([(*key, "v")]))
            .await
            .unwrap_or_else(|e| panic!("header {key:?} is not reserved but was refused: {e}"));
    }
    let seen = probe
        .live
        .wait_for("every accepted message", |s| {
            s.iter().filter(|s| s.msg.key == "accepted").count() >= accepted.len()
        })
        .await;
    let stored_refused: Vec<_> = seen.iter().filter(|s| s.msg.key == "refused").collect();
    assert!(
        stored_refused.is_empty(),
        "messages whose publish was refused were delivered: {stored_refused:#?}"
    );
    for s in seen.iter().filter(|s| s.msg.key == "accepted") {
        let key = accepted[s.msg.n as usize];
        assert_eq!(
            s.meta.headers.get(key).map(String::as_str),
            Some("v"),
            "header {key:?} did not arrive: {:?}",
            s.meta.headers
        );
    }
    let _ = running.stop().await;
}

/// Rule 2 (and the delivery metadata contract): `MessageMetadata::headers` holds exactly the user's
/// headers — none of shove's own `x-` headers — with names and values unchanged; a message published
/// without headers has none.
pub async fn metadata_headers_hold_exactly_the_user_headers<H: Harness>() {
    define_topic!(Exact, Msg, TopologyBuilder::new(unique("exact-headers")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<Exact>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Exact, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register");
    let running = Running::supervisor(sup, DRAIN);

    let sent = headers([
        ("tenant", "acme"),
        ("Mixed-Case", "Value With Spaces"),
        ("unicode", "ünïcødé ✓"),
        ("empty", ""),
    ]);
    publisher
        .publish_with_headers::<Exact>(&Msg::new("with", 0), sent.clone())
        .await
        .expect("publish_with_headers");
    publisher
        .publish::<Exact>(&Msg::new("without", 0))
        .await
        .expect("publish");

    probe.live.wait_for("both messages", |s| s.len() >= 2).await;
    let with = &probe.calls_of(&Msg::new("with", 0))[0];
    assert_eq!(*with.meta.headers, sent, "headers of a message published with headers");
    let without = &probe.calls_of(&Msg::new("without", 0))[0];
    assert_eq!(
        *without.meta.headers,
        HashMap::new(),
        "a message published without headers must expose no headers"
    );
    let _ = running.stop().await;
}

/// Rule 3: user headers survive main → hold → main → DLQ.
pub async fn user_headers_survive_hold_queue_and_dlq<H: Harness>() {
    define_topic!(
        Hops,
        Msg,
        TopologyBuilder::new(unique("header-hops"))
            .hold_queue(ms(20))
            .hold_queue(ms(40))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Hops>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Hops, _>(
        probe.handler(|_, _| Outcome::Retry),
        ConsumerOptions::new().with_max_retries(2),
    )
    .expect("register");
    sup.register_dlq::<Hops, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let sent = headers([("tenant", "acme"), ("trace", "t-42"), ("Case-Kept", "Yes")]);
    publisher
        .publish_with_headers::<Hops>(&Msg::new("h", 1), sent.clone())
        .await
        .expect("publish_with_headers");

    let dead = probe.dead.wait_for("the message in the DLQ", |d| !d.is_empty()).await;
    let calls = probe.live.snapshot();
    assert_eq!(calls.len(), 3, "expected 3 attempts (max_retries 2): {calls:#?}");
    for c in &calls {
        assert_eq!(
            *c.meta.headers, sent,
            "headers on attempt with retry_count {}",
            c.meta.retry_count
        );
    }
    assert_eq!(*dead[0].meta.message.headers, sent, "headers in the DLQ");
    let _ = running.stop().await;
}

/// Rule 4: a binary payload with every byte value arrives unchanged at the handler, after a hold queue,
/// and in the DLQ.
pub async fn raw_bytes_survive_every_hop<H: Harness>() {
    define_topic!(
        Raw,
        Vec<u8>,
        TopologyBuilder::new(unique("raw-bytes"))
            .hold_queue(ms(20))
            .dlq()
            .build(),
        codec = shove::RawBytesCodec
    );
    let broker = H::broker().await;
    broker.topology().declare::<Raw>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Vec<u8>>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Raw, _>(
        probe.handler(|_, meta| {
            if meta.retry_count == 0 {
                Outcome::Retry
            } else {
                Outcome::Reject
            }
        }),
        ConsumerOptions::new().with_max_retries(3),
    )
    .expect("register");
    sup.register_dlq::<Raw, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let every_byte: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = (0..=255u8).rev().chain([0, 0, 0xff, b'=', b'\n']).collect();
    let empty: Vec<u8> = Vec::new();
    for payload in [&every_byte, &reversed, &empty] {
        publisher.publish::<Raw>(payload).await.expect("publish");
    }

    probe.dead.wait_for("3 payloads in the DLQ", |d| d.len() >= 3).await;
    for payload in [&every_byte, &reversed, &empty] {
        let calls = probe.calls_of(payload);
        assert_eq!(
            calls.len(),
            2,
            "payload of {} bytes: expected it unchanged on the first attempt and after the hold queue, \
             got {} matching calls among {:?}",
            payload.len(),
            calls.len(),
            probe.live.snapshot().iter().map(|s| s.msg.len()).collect::<Vec<_>>()
        );
        assert_eq!(
            probe.deaths_of(payload).len(),
            1,
            "payload of {} bytes did not arrive unchanged in the DLQ",
            payload.len()
        );
    }
    let _ = running.stop().await;
}

#[cfg(feature = "protobuf")]
mod proto {
    /// A hand-written protobuf message for rule 4.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reading {
        /// Which sensor.
        #[prost(string, tag = "1")]
        pub sensor: String,
        /// A signed value.
        #[prost(sint64, tag = "2")]
        pub value: i64,
        /// Opaque bytes, every value.
        #[prost(bytes = "vec", tag = "3")]
        pub blob: Vec<u8>,
        /// Repeated numbers.
        #[prost(uint32, repeated, tag = "4")]
        pub samples: Vec<u32>,
    }
}

/// Rule 4: a protobuf message survives the first delivery, a hold queue and the DLQ.
#[cfg(feature = "protobuf")]
pub async fn protobuf_payload_round_trips<H: Harness>() {
    use proto::Reading;

    define_topic!(
        Readings,
        Reading,
        TopologyBuilder::new(unique("protobuf"))
            .hold_queue(ms(20))
            .dlq()
            .build(),
        codec = shove::ProtobufCodec
    );
    let broker = H::broker().await;
    broker.topology().declare::<Readings>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Reading>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Readings, _>(
        probe.handler(|_, meta| {
            if meta.retry_count == 0 {
                Outcome::Retry
            } else {
                Outcome::Reject
            }
        }),
        ConsumerOptions::new().with_max_retries(3),
    )
    .expect("register");
    sup.register_dlq::<Readings, _>(probe.dead_handler(), ConsumerOptions::new())
        .expect("register_dlq");
    let running = Running::supervisor(sup, DRAIN);

    let reading = Reading {
        sensor: "thermo-7 ✓".into(),
        value: -1_234_567_890_123,
        blob: (0..=255u8).collect(),
        samples: vec![0, 1, u32::MAX],
    };
    publisher.publish::<Readings>(&reading).await.expect("publish");

    let dead = probe.dead.wait_for("the reading in the DLQ", |d| !d.is_empty()).await;
    let calls = probe.live.snapshot();
    assert_eq!(calls.len(), 2, "expected two attempts: {calls:#?}");
    for c in &calls {
        assert_eq!(c.msg, reading, "decoded reading on attempt {}", c.meta.retry_count);
    }
    assert_eq!(dead[0].msg, reading, "decoded reading in the DLQ");
    let _ = running.stop().await;
}

/// Rule 1 (issue 12, item 3): a publish to a topic the broker does not have — never declared, by no
/// one — is never `Ok` with the message dropped. Either it fails (NATS: no stream takes the subject),
/// or the publisher declared the topic first (RabbitMQ's publisher, Redis, the in-process broker), and
/// then a consumer registered later handles the message.
pub async fn publish_to_an_undeclared_topic_is_an_error_or_kept<H: Harness>() {
    define_topic!(Nowhere, Msg, TopologyBuilder::new(unique("undeclared")).dlq().build());
    let broker = H::broker().await;
    let publisher = broker.publisher().await.expect("publisher");
    if publisher.publish::<Nowhere>(&Msg::new("m", 1)).await.is_err() {
        return;
    }
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Nowhere, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    probe
        .live
        .wait_for("the message published before the topic existed", |s| !s.is_empty())
        .await;
    let _ = running.stop().await;
}
