//! The RabbitMQ mapping of a topology: durable queues, TTL hold queues that dead-letter back to their
//! queue, a DLQ, and for sequenced topics a consistent-hash exchange over single-active-consumer shards.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::client::amqp_error;
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

/// Arguments of a queue whose messages wait `ttl_ms`, then go back to `target` through the default exchange.
pub(crate) fn delay_arguments(ttl_ms: u64, target: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
    );
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(target)),
    );
    args
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> Result<()> {
    channel
        .queue_declare(ShortString::from(name), durable(), args)
        .await
        .map(|_| ())
        .map_err(|e| {
            amqp_error(
                &format!(
                    "cannot declare queue '{name}' (if it exists with other arguments, delete it or use another name)"
                ),
                e,
            )
        })
}

async fn holds(channel: &Channel, holds: &[HoldQueue], target: &str) -> Result<()> {
    for h in holds {
        let ttl = u64::try_from(h.delay().as_millis()).unwrap_or(u64::MAX);
        queue(channel, h.name(), delay_arguments(ttl, target)).await?;
    }
    Ok(())
}

/// Declares every queue (and exchange) of `topology`. Idempotent.
pub(crate) async fn declare(channel: &Channel, topology: &QueueTopology) -> Result<()> {
    let main = topology.queue();
    queue(channel, main, FieldTable::default()).await?;
    holds(channel, topology.hold_queues(), main).await?;
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
        holds(channel, &topology.shard_hold_queue_names(i), &shard).await?;
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
