//! Contract rules 21–22: invalid configuration is refused up front with a message naming the fix;
//! broker shutdown and connection loss.

use std::collections::BTreeSet;
use std::time::Duration;

use shove::{
    ConsumerOptions, Outcome, SequenceFailure, ShoveError, TopologyBuilder, define_sequenced_topic, define_topic,
};

use super::{DRAIN, GroupSpec, Harness, Msg, Probe, Running, WAIT, expect_panic, ms, panic_message, unique};

/// Rule 21: invalid topologies panic at `build()` with a message that names the fix.
pub async fn invalid_topologies_panic_naming_the_fix<H: Harness>() {
    let q = unique("bad-topology");
    let no_dlq = expect_panic("a sequenced topic without DLQ", || {
        TopologyBuilder::new(q.clone())
            .sequenced(SequenceFailure::FailAll)
            .hold_queue(ms(10))
            .build()
    });
    assert!(
        no_dlq.contains(".dlq()") && no_dlq.contains("allow_message_loss"),
        "the message must name the fix: {no_dlq}"
    );
    let no_hold = expect_panic("a sequenced topic without hold queue", || {
        TopologyBuilder::new(q.clone())
            .sequenced(SequenceFailure::Skip)
            .dlq()
            .build()
    });
    assert!(
        no_hold.contains(".hold_queue()"),
        "the message must name the fix: {no_hold}"
    );
    let zero_shards = expect_panic("zero routing shards", || {
        TopologyBuilder::new(q.clone())
            .sequenced(SequenceFailure::Skip)
            .routing_shards(0)
            .hold_queue(ms(10))
            .dlq()
            .build()
    });
    assert!(
        zero_shards.contains("routing_shards") && zero_shards.contains("greater than 0"),
        "{zero_shards}"
    );
    let empty = expect_panic("an empty queue name", || TopologyBuilder::new("").dlq().build());
    assert!(empty.contains("must not be empty"), "{empty}");
    let own_dlq = expect_panic("a DLQ named like its queue", || {
        TopologyBuilder::new(q.clone()).dlq_named(q.clone()).build()
    });
    assert!(own_dlq.contains(".dlq_named() another name"), "{own_dlq}");
    let unsequenced_shards = expect_panic("routing_shards before sequenced", || {
        TopologyBuilder::new(q.clone()).routing_shards(4)
    });
    assert!(unsequenced_shards.contains("sequenced()"), "{unsequenced_shards}");

    // The explicit opt-out is accepted.
    let lossy = TopologyBuilder::new(q)
        .sequenced(SequenceFailure::Skip)
        .allow_message_loss()
        .build();
    assert!(lossy.sequencing().is_some());
}

/// Rule 21: a consumer group range with min > max (or max 0) is refused when the configuration is built
/// (a panic naming min/max) or when the group is registered (an error) — never later.
pub async fn invalid_group_range_is_refused_at_configuration<H: Harness>() {
    define_topic!(Ranged, Msg, TopologyBuilder::new(unique("bad-range")).dlq().build());
    let broker = H::broker().await;
    broker.topology().declare::<Ranged>().await.expect("declare");
    for (min, max) in [(3u16, 1u16), (0, 0)] {
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            H::group_config(&GroupSpec::new(min, max))
        }));
        match built {
            Err(payload) => {
                let msg = panic_message(payload.as_ref());
                assert!(
                    msg.contains("min") || msg.contains("max"),
                    "{min}..={max}: the panic must say what is wrong with the range: {msg}"
                );
            }
            Ok(config) => {
                let probe = Probe::<Msg>::new();
                let handler = probe.handler(|_, _| Outcome::Ack);
                let mut group = broker.consumer_group();
                let err = group
                    .register::<Ranged, _>(config, move || handler.clone())
                    .await
                    .expect_err("an invalid range must be refused at registration at the latest");
                let text = err.to_string();
                assert!(
                    text.contains("min") || text.contains("max"),
                    "{min}..={max}: the error must say what is wrong with the range: {text}"
                );
            }
        }
    }
}

/// Rule 21: zero timeouts panic with a message naming the setting.
pub async fn zero_timeouts_panic_naming_the_fix<H: Harness>() {
    let broker = H::broker().await;
    let msg = expect_panic("a zero handler timeout", || {
        ConsumerOptions::<H::B>::new().with_handler_timeout(Duration::ZERO)
    });
    assert!(msg.contains("handler_timeout must be positive"), "{msg}");
    let group = broker.consumer_group();
    let msg = expect_panic("a zero default handler timeout", move || {
        group.with_default_handler_timeout(Duration::ZERO)
    });
    assert!(msg.contains("default_handler_timeout must be positive"), "{msg}");
    // A per-key buffer of 0 would hand every later message of a busy key back forever.
    let msg = expect_panic("a zero max_pending_per_key", || {
        ConsumerOptions::<H::B>::new().with_max_pending_per_key(0)
    });
    assert!(msg.contains("without_max_pending_per_key()"), "{msg}");
}

fn topology_error(result: shove::error::Result<()>, what: &str) -> String {
    match result {
        Err(ShoveError::Topology(msg)) => msg,
        other => panic!("{what}: expected ShoveError::Topology, got {other:?}"),
    }
}

/// Rule 21: registering a topic the wrong way is refused at registration with a `Topology` error that
/// names the fix; the supervisor's valid registrations keep working.
pub async fn misregistration_is_refused_with_topology_errors<H: Harness>() {
    define_topic!(Plain, Msg, TopologyBuilder::new(unique("misreg-plain")).dlq().build());
    define_topic!(NoDlq, Msg, TopologyBuilder::new(unique("misreg-nodlq")).build());
    // Implements SequencedTopic, but its topology is not sequenced.
    define_sequenced_topic!(
        Unsequenced,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("misreg-unseq")).dlq().build()
    );
    define_sequenced_topic!(
        Seq,
        Msg,
        Msg::key_of,
        TopologyBuilder::new(unique("misreg-seq"))
            .sequenced(SequenceFailure::Skip)
            .hold_queue(ms(10))
            .dlq()
            .build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Plain>().await.expect("declare");
    broker.topology().declare::<Seq>().await.expect("declare");
    broker.topology().declare::<NoDlq>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let h = || probe.handler(|_, _| Outcome::Ack);

    let mut sup = broker.consumer_supervisor();
    sup.register::<Plain, _>(h(), ConsumerOptions::new())
        .expect("a valid registration");
    let msg = topology_error(
        sup.register::<Seq, _>(h(), ConsumerOptions::new()),
        "register of a sequenced topic",
    );
    assert!(msg.contains("register_fifo"), "{msg}");
    let msg = topology_error(
        sup.register_fifo::<Unsequenced, _>(h(), ConsumerOptions::new()).await,
        "register_fifo of an unsequenced topic",
    );
    assert!(msg.contains("register"), "{msg}");
    topology_error(
        sup.register::<Plain, _>(h(), ConsumerOptions::new()),
        "registering one queue twice on a supervisor",
    );
    let msg = topology_error(
        sup.register_dlq::<NoDlq, _>(h(), ConsumerOptions::new()),
        "register_dlq of a topic without DLQ",
    );
    assert!(msg.contains("dlq"), "{msg}");

    let mut group = broker.consumer_group();
    let gh = h();
    let gh2 = gh.clone();
    let gh3 = gh.clone();
    topology_error(
        group
            .register::<Seq, _>(H::group_config(&GroupSpec::new(1, 1)), move || gh.clone())
            .await,
        "group register of a sequenced topic",
    );
    topology_error(
        group
            .register_fifo::<Unsequenced, _>(H::group_config(&GroupSpec::new(1, 1)), move || gh2.clone())
            .await,
        "group register_fifo of an unsequenced topic",
    );
    group
        .register_fifo::<Seq, _>(H::group_config(&GroupSpec::new(1, 1)), {
            let gh = gh3.clone();
            move || gh.clone()
        })
        .await
        .expect("a valid group registration");
    topology_error(
        group
            .register_fifo::<Seq, _>(H::group_config(&GroupSpec::new(1, 1)), move || gh3.clone())
            .await,
        "registering one queue twice on a group",
    );

    // The refused registrations did not disturb the valid ones.
    let running = Running::supervisor(sup, DRAIN);
    let running_group = Running::group(group, DRAIN);
    publisher
        .publish::<Plain>(&Msg::new("plain", 0))
        .await
        .expect("publish");
    publisher.publish::<Seq>(&Msg::new("seq", 0)).await.expect("publish");
    probe
        .live
        .wait_for("both valid consumers working", |s| {
            s.iter().map(|s| s.msg.key.clone()).collect::<BTreeSet<_>>().len() == 2
        })
        .await;
    let _ = running.stop().await;
    let _ = running_group.stop().await;
}

/// Rule 22 (explicit shutdown): closing the broker stops its consumers (supervisors and groups end
/// without their signals), refuses publishes with a retryable `Connection` error, fails `ping`, and a
/// second close is harmless.
pub async fn broker_close_stops_consumers_and_refuses_publishes<H: Harness>() {
    define_topic!(Closing, Msg, TopologyBuilder::new(unique("close")).dlq().build());
    define_topic!(
        ClosingGroup,
        Msg,
        TopologyBuilder::new(unique("close-group")).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Closing>().await.expect("declare");
    broker.topology().declare::<ClosingGroup>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Closing, _>(probe.handler(|_, _| Outcome::Ack), ConsumerOptions::new())
        .expect("register");
    let mut group = broker.consumer_group();
    let gh = probe.handler(|_, _| Outcome::Ack);
    group
        .register::<ClosingGroup, _>(H::group_config(&GroupSpec::new(1, 2)), move || gh.clone())
        .await
        .expect("register group");
    let running = Running::supervisor(sup, DRAIN);
    let running_group = Running::group(group, DRAIN);
    publisher
        .publish::<Closing>(&Msg::new("before", 0))
        .await
        .expect("publish");
    publisher
        .publish::<ClosingGroup>(&Msg::new("before", 1))
        .await
        .expect("publish");
    probe.live.wait_for("both consumers running", |s| s.len() >= 2).await;
    broker.ping().await.expect("ping before close");

    broker.close().await;
    let outcome = running.ended_within(WAIT, "after broker.close()").await;
    assert!(!outcome.timed_out, "{outcome:?}");
    let outcome = running_group.ended_within(WAIT, "after broker.close()").await;
    assert!(!outcome.timed_out, "{outcome:?}");

    let refused = [
        publisher.publish::<Closing>(&Msg::new("after", 0)).await,
        publisher
            .publish_with_headers::<Closing>(&Msg::new("after", 1), super::headers([("a", "b")]))
            .await,
        publisher.publish_batch::<Closing>(&[Msg::new("after", 2)]).await,
    ];
    for result in refused {
        match result {
            Err(e @ ShoveError::Connection(_)) => assert!(e.is_retryable()),
            other => panic!("publishing after close: expected ShoveError::Connection, got {other:?}"),
        }
    }
    match broker.ping().await {
        Err(ShoveError::Connection(_)) => {}
        other => panic!("ping after close: expected ShoveError::Connection, got {other:?}"),
    }
    broker.close().await;
}

/// Rules 22 and 18: a consumer that cannot connect gives up after `max_reconnect_attempts` and the run
/// reports the error (exit code 1) instead of hanging.
pub async fn reconnect_attempts_are_bounded_when_set<H: Harness>() {
    define_topic!(
        Unreachable,
        Msg,
        TopologyBuilder::new(unique("reconnect-bound")).dlq().build()
    );
    let broker = H::broker().await;
    broker.topology().declare::<Unreachable>().await.expect("declare");
    broker.close().await;
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Unreachable, _>(
        probe.handler(|_, _| Outcome::Ack),
        ConsumerOptions::new().with_max_reconnect_attempts(2),
    )
    .expect("registration itself does not connect");
    let running = Running::supervisor(sup, DRAIN);
    let outcome = running
        .ended_within(WAIT, "after its reconnect attempts were used up")
        .await;
    assert!(
        outcome.errors >= 1,
        "the consumer's failure must be reported: {outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 1, "{outcome:?}");
}
