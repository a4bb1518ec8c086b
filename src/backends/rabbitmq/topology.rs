//! The RabbitMQ mapping of a topology: durable queues, TTL hold queues (quorum queues) that dead-letter
//! back to their queue at least once, a DLQ, and for sequenced topics a consistent-hash exchange over
//! single-active-consumer shards.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::client::{RabbitMqClient, amqp_error};
use crate::error::{Result, ShoveError};
use crate::topology::{HoldQueue, QueueTopology, shard_queue_name};

/// The exchange type of sequenced topics (plugin `rabbitmq_consistent_hash_exchange`).
const CONSISTENT_HASH: &str = "x-consistent-hash";

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Arguments of a classic queue whose messages wait `ttl_ms`, then go back to `target` through the
/// default exchange. RabbitMQ dead-letters from classic queues at most once: a copy that falls due while
/// the node stops can land in neither queue.
fn classic_hold_arguments(ttl_ms: u64, target: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
    );
    args.insert(ShortString::from("x-dead-letter-exchange"), text(""));
    args.insert(ShortString::from("x-dead-letter-routing-key"), text(target));
    args
}

/// Arguments of a hold queue: a quorum queue whose messages wait `ttl_ms`, then go back to `target`
/// through the default exchange, dead-lettered **at least once** (the hold queue keeps a due copy until
/// `target` has confirmed it, across a broker restart too). RabbitMQ 3.10+; at-least-once dead-lettering
/// requires `overflow: reject-publish`.
pub(crate) fn hold_arguments(ttl_ms: u64, target: &str) -> FieldTable {
    let mut args = classic_hold_arguments(ttl_ms, target);
    args.insert(ShortString::from("x-queue-type"), text("quorum"));
    args.insert(ShortString::from("x-dead-letter-strategy"), text("at-least-once"));
    args.insert(ShortString::from("x-overflow"), text("reject-publish"));
    args
}

/// A hold (or delay) queue to declare: its name, how long copies wait in it, and the queue they return to.
pub(crate) struct Hold {
    pub(crate) name: String,
    pub(crate) ttl_ms: u64,
    pub(crate) target: String,
}

impl Hold {
    fn of(hold: &HoldQueue, target: &str) -> Self {
        Hold {
            name: hold.name().to_string(),
            ttl_ms: u64::try_from(hold.delay().as_millis()).unwrap_or(u64::MAX),
            target: target.to_string(),
        }
    }
}

/// Every hold queue of `topology` (the main queue's, and each shard's for a sequenced topic).
pub(crate) fn holds_of(topology: &QueueTopology) -> Vec<Hold> {
    let main = topology.queue();
    let mut holds: Vec<Hold> = topology.hold_queues().iter().map(|h| Hold::of(h, main)).collect();
    if let Some(seq) = topology.sequencing() {
        for i in 0..seq.routing_shards() {
            let shard = shard_queue_name(main, i);
            holds.extend(topology.shard_hold_queue_names(i).iter().map(|h| Hold::of(h, &shard)));
        }
    }
    holds
}

/// Whether the broker refused a declaration because the queue exists with other arguments, or because it
/// does not support them (`PRECONDITION_FAILED`).
fn precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 406)
}

async fn declare_on(channel: &Channel, name: &str, args: FieldTable) -> std::result::Result<(), lapin::Error> {
    channel
        .queue_declare(ShortString::from(name), durable(), args)
        .await
        .map(|_| ())
}

/// Declares `hold` as a quorum queue on `channel`. A refusal closes the channel.
async fn quorum_hold(channel: &Channel, hold: &Hold) -> Result<()> {
    declare_on(channel, &hold.name, hold_arguments(hold.ttl_ms, &hold.target))
        .await
        .map_err(|e| {
            amqp_error(
                &format!(
                    "cannot declare hold queue '{}' as a quorum queue (RabbitMQ 3.10+; a classic queue of that name, \
                     e.g. from shove 0.11, must be deleted first, or declare through `Broker::topology()`, which \
                     keeps it)",
                    hold.name
                ),
                e,
            )
        })
}

/// Declares `hold` through `client`: as a quorum queue, or, when RabbitMQ refuses that (a classic hold
/// queue of that name exists, e.g. declared by shove 0.11, or the broker is older than 3.10), as the
/// classic queue it accepts, with a warning that its returns are at most once. Uses `channel` (opening one
/// when it is `None`) and leaves an open channel there; a refusal closes the channel it happens on.
pub(crate) async fn declare_hold(client: &RabbitMqClient, channel: &mut Option<Channel>, hold: &Hold) -> Result<()> {
    let current = match channel.take() {
        Some(c) => c,
        None => client.create_channel().await?,
    };
    let refusal = match declare_on(&current, &hold.name, hold_arguments(hold.ttl_ms, &hold.target)).await {
        Ok(()) => {
            *channel = Some(current);
            return Ok(());
        }
        Err(e) if precondition_failed(&e) => e,
        Err(e) => return Err(amqp_error(&format!("cannot declare hold queue '{}'", hold.name), e)),
    };
    let fresh = client.create_channel().await?;
    if let Err(e) = declare_on(&fresh, &hold.name, classic_hold_arguments(hold.ttl_ms, &hold.target)).await {
        return Err(amqp_error(
            &format!(
                "cannot declare hold queue '{}' (refused as a quorum queue: {refusal}; as a classic queue)",
                hold.name
            ),
            e,
        ));
    }
    *channel = Some(fresh);
    tracing::warn!(
        queue = %hold.name,
        "hold queue '{}' is a classic queue (RabbitMQ refused it as a quorum queue: {refusal}); a retry that \
         falls due while the broker stops can be lost. On RabbitMQ 3.10+ delete the queue once it is empty, and \
         shove declares it again as a quorum queue with at-least-once dead-lettering",
        hold.name
    );
    Ok(())
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> Result<()> {
    declare_on(channel, name, args).await.map_err(|e| {
        amqp_error(
            &format!(
                "cannot declare queue '{name}' (if it exists with other arguments, delete it or use another name)"
            ),
            e,
        )
    })
}

/// Declares every queue (and exchange) of `topology` on `channel`, hold queues as quorum queues.
/// Idempotent.
pub(crate) async fn declare(channel: &Channel, topology: &QueueTopology) -> Result<()> {
    declare_all_but_holds(channel, topology).await?;
    for hold in holds_of(topology) {
        quorum_hold(channel, &hold).await?;
    }
    Ok(())
}

/// Declares the queues (and exchange) of `topology` other than its hold queues. Idempotent.
pub(crate) async fn declare_all_but_holds(channel: &Channel, topology: &QueueTopology) -> Result<()> {
    let main = topology.queue();
    queue(channel, main, FieldTable::default()).await?;
    if let Some(dlq) = topology.dlq() {
        queue(channel, dlq, FieldTable::default()).await?;
    }
    let Some(seq) = topology.sequencing() else {
        return Ok(());
    };
    channel
        .exchange_declare(
            ShortString::from(seq.exchange()),
            ExchangeKind::Custom(CONSISTENT_HASH.into()),
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            ShoveError::Topology(format!(
                "cannot declare the consistent-hash exchange '{}' of sequenced topic '{main}': {e}; enable the \
                 plugin with `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`",
                seq.exchange()
            ))
        })?;
    for i in 0..seq.routing_shards() {
        let shard = shard_queue_name(main, i);
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-single-active-consumer"), AMQPValue::Boolean(true));
        queue(channel, &shard, args).await?;
        // Equal weights: each shard gets the same share of the hash ring.
        channel
            .queue_bind(
                ShortString::from(shard.as_str()),
                ShortString::from(seq.exchange()),
                ShortString::from("1"),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("cannot bind shard '{shard}'"), e))?;
    }
    Ok(())
}

/// Ready messages and consumers of an existing queue (a passive declare).
pub(crate) async fn passive_counts(channel: &Channel, name: &str) -> Result<(u64, u64)> {
    let q = channel
        .queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            amqp_error(
                &format!("queue '{name}' is not declared on RabbitMQ; declare its topic first"),
                e,
            )
        })?;
    Ok((u64::from(q.message_count()), u64::from(q.consumer_count())))
}
