//! Rule 22 through a proxy the scenario owns ([`Proxy`]): the connection to the broker is cut, stalled,
//! or refused for good, while consumers and publishers run on it. Needs a harness that reaches its broker
//! over the network ([`Harness::address`]).

use std::collections::BTreeMap;
use std::time::Duration;

use shove::{ConsumerOptions, Outcome, TopologyBuilder, define_topic};

use super::proxy::Proxy;
use super::{DRAIN, Harness, Msg, Probe, Running, WAIT, skip, unique};

/// How long a stall lasts.
const STALL: Duration = Duration::from_secs(10);
/// Prefetch of the consumers: messages a consumer holds that a lost connection may deliver again.
const PREFETCH: u16 = 10;

/// A proxy to the harness's broker, or `None` (with a visible skip) when it has no network address.
async fn proxy<H: Harness>(scenario: &str) -> Option<Proxy> {
    match H::address() {
        Some(addr) => Some(Proxy::start(addr).await),
        None => {
            skip::<H>(scenario, "the backend has no network connection to break");
            None
        }
    }
}

/// Publishes `n`, retrying while the connection is being re-established (bounded by [`WAIT`] * 3).
async fn publish_until_stored<B: shove::Backend, T: shove::Topic<Message = Msg>>(
    publisher: &shove::Publisher<B>,
    msg: &Msg,
) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        match publisher.publish::<T>(msg).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.is_retryable(), "a lost connection is a retryable error, got {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publishing {msg:?} still failed after {:?}: {e}", WAIT * 3),
        }
    }
}

/// How many times each number was handled.
fn counts(seen: &[super::Seen<Msg>]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for s in seen {
        *counts.entry(s.msg.n).or_default() += 1;
    }
    counts
}

/// Waits until messages `0..total` were all handled (none lost), then checks the duplicates: a message
/// handled twice is one the broker had handed to the consumer when its connection went, so at most the
/// prefetch window, twice over.
async fn every_message_handled(probe: &Probe<Msg>, total: u32, what: &str) {
    let seen = probe
        .live
        .wait_for_within(what, WAIT * 4, |s| counts(s).len() == total as usize)
        .await;
    let duplicates: usize = counts(&seen).values().map(|c| c - 1).sum();
    assert!(
        duplicates <= 2 * usize::from(PREFETCH),
        "{duplicates} duplicates; at most the prefetch window, twice over, may be delivered again"
    );
}

/// Rule 22: every connection of a consumer and a publisher is cut mid-stream; both reconnect and resume.
/// Every message is handled (none lost); a message handled twice is one the broker had handed to the
/// consumer when its connection went (at most the prefetch window, twice over).
pub async fn a_connection_cut_mid_stream_loses_nothing<H: Harness>() {
    let Some(proxy) = proxy::<H>("a_connection_cut_mid_stream_loses_nothing").await else {
        return;
    };
    define_topic!(Cut, Msg, TopologyBuilder::new(unique("conn-cut")).dlq().build());
    const TOTAL: u32 = 200;
    let broker = H::broker_at(proxy.addr()).await;
    broker.topology().declare::<Cut>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Cut, _>(
        probe.handler(|_, _| Outcome::Ack),
        ConsumerOptions::new().with_prefetch_count(PREFETCH),
    )
    .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    for n in 0..TOTAL / 2 {
        publish_until_stored::<_, Cut>(&publisher, &Msg::new("m", n)).await;
    }
    probe
        .live
        .wait_for("some messages handled before the cut", |s| s.len() >= 20)
        .await;
    proxy.cut();
    for n in TOTAL / 2..TOTAL {
        publish_until_stored::<_, Cut>(&publisher, &Msg::new("m", n)).await;
    }
    every_message_handled(&probe, TOTAL, "every message after the cut").await;
    let outcome = running.stop().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
}

/// Rule 22: the connection carries no byte for 10 s in either direction (a stalled network), then
/// recovers; every message is handled, none lost.
pub async fn a_10s_stall_loses_nothing<H: Harness>() {
    let Some(proxy) = proxy::<H>("a_10s_stall_loses_nothing").await else {
        return;
    };
    define_topic!(Stalled, Msg, TopologyBuilder::new(unique("conn-stall")).dlq().build());
    const TOTAL: u32 = 100;
    // The consumer goes through the proxy; the publisher straight to the broker, so the messages
    // published during the stall are stored.
    let direct = H::broker().await;
    direct.topology().declare::<Stalled>().await.expect("declare");
    let publisher = direct.publisher().await.expect("publisher");
    let broker = H::broker_at(proxy.addr()).await;
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Stalled, _>(
        probe.handler(|_, _| Outcome::Ack),
        ConsumerOptions::new().with_prefetch_count(PREFETCH),
    )
    .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    for n in 0..TOTAL / 2 {
        publisher.publish::<Stalled>(&Msg::new("m", n)).await.expect("publish");
    }
    probe
        .live
        .wait_for("the first half handled", |s| counts(s).len() == (TOTAL / 2) as usize)
        .await;
    proxy.stall(true);
    for n in TOTAL / 2..TOTAL {
        publisher.publish::<Stalled>(&Msg::new("m", n)).await.expect("publish");
    }
    // Waiting out the stall is the point of the scenario: the consumer must come back by itself.
    tokio::time::sleep(STALL).await;
    proxy.stall(false);
    every_message_handled(&probe, TOTAL, "every message after the stall").await;
    let _ = running.stop().await;
}

/// Rule 22: a consumer with `max_reconnect_attempts` whose broker becomes unreachable while it runs (the
/// connection cut, new ones refused) gives up after that many failed reconnects, counted the same way on
/// every backend, and its supervisor reports exit code 1.
pub async fn reconnect_bound_ends_the_consumer_during_a_live_outage<H: Harness>() {
    let Some(proxy) = proxy::<H>("reconnect_bound_ends_the_consumer_during_a_live_outage").await else {
        return;
    };
    define_topic!(Outage, Msg, TopologyBuilder::new(unique("conn-outage")).dlq().build());
    let broker = H::broker_at(proxy.addr()).await;
    broker.topology().declare::<Outage>().await.expect("declare");
    let publisher = broker.publisher().await.expect("publisher");
    let probe = Probe::<Msg>::new();
    let mut sup = broker.consumer_supervisor();
    sup.register::<Outage, _>(
        probe.handler(|_, _| Outcome::Ack),
        ConsumerOptions::new().with_max_reconnect_attempts(3),
    )
    .expect("register");
    let running = Running::supervisor(sup, DRAIN);
    publisher.publish::<Outage>(&Msg::new("m", 1)).await.expect("publish");
    probe
        .live
        .wait_for("the consumer is connected", |s| !s.is_empty())
        .await;
    proxy.refuse();
    let outcome = running
        .ended_within(WAIT * 6, "after its reconnect attempts were used up during the outage")
        .await;
    assert!(
        outcome.errors >= 1,
        "the consumer's failure must be reported: {outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 1, "{outcome:?}");
}
