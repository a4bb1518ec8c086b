//! The envelope as AMQP properties: shove's reserved headers, the user's headers, the message id.

use std::collections::HashMap;
use std::sync::Arc;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::engine::envelope::new_message_id;
use crate::engine::router::reasons;
use crate::transport::{Death, Envelope, MessageId, headers};

/// The header carrying the message id (also sent as the AMQP `message_id` property).
pub const MESSAGE_ID_KEY: &str = headers::MESSAGE_ID;

/// Headers RabbitMQ itself adds when a message is dead-lettered through a TTL queue; never user headers.
const BROKER_PREFIXES: [&str; 3] = ["x-death", "x-first-death", "x-last-death"];

/// Persistent delivery mode.
const PERSISTENT: u8 = 2;

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The AMQP properties that carry `env`.
pub(crate) fn properties(env: &Envelope) -> BasicProperties {
    let id = env.message_id.to_text();
    let mut headers = FieldTable::default();
    for (k, v) in env.headers.iter() {
        headers.insert(ShortString::from(k.as_str()), text(v));
    }
    headers.insert(ShortString::from(MESSAGE_ID_KEY), text(&id));
    headers.insert(
        ShortString::from(headers::RETRY_COUNT),
        AMQPValue::LongLongInt(i64::from(env.retry_count)),
    );
    if let Some(key) = &env.sequence_key {
        headers.insert(ShortString::from(headers::SEQUENCE_KEY), text(key));
    }
    if let Some(death) = &env.death {
        headers.insert(ShortString::from(headers::DEATH_REASON), text(death.reason));
        headers.insert(
            ShortString::from(headers::DEATH_COUNT),
            AMQPValue::LongLongInt(i64::from(death.count)),
        );
        headers.insert(ShortString::from(headers::ORIGINAL_QUEUE), text(&death.original_queue));
    }
    BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers)
}

fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        other => as_u64(other).map(|n| n.to_string()),
    }
}

fn as_u64(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

/// Rebuilds the envelope of a delivered message.
pub(crate) fn envelope(properties: &BasicProperties, payload: Vec<u8>) -> Envelope {
    let empty = FieldTable::default();
    let table = properties.headers().as_ref().unwrap_or(&empty).inner();
    let get = |k: &str| table.get(k);
    let message_id = get(MESSAGE_ID_KEY)
        .and_then(as_string)
        .or_else(|| properties.message_id().as_ref().map(|s| s.as_str().to_string()))
        .map(|s| MessageId::parse(&s))
        // A message from another publisher without an id gets one now; its retries keep it.
        .unwrap_or_else(new_message_id);
    let retry_count = get(headers::RETRY_COUNT)
        .and_then(as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let sequence_key = get(headers::SEQUENCE_KEY).and_then(as_string).map(Arc::from);
    let death = get(headers::DEATH_REASON).and_then(as_string).map(|r| {
        Box::new(Death {
            reason: reasons::parse(&r),
            original_queue: Arc::from(get(headers::ORIGINAL_QUEUE).and_then(as_string).unwrap_or_default()),
            count: get(headers::DEATH_COUNT)
                .and_then(as_u64)
                .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        })
    });
    let user: HashMap<String, String> = table
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str().to_ascii_lowercase();
            !headers::RESERVED_PREFIXES
                .iter()
                .chain(BROKER_PREFIXES.iter())
                .any(|p| k.starts_with(p))
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), as_string(v)?)))
        .collect();
    Envelope {
        payload,
        message_id,
        retry_count,
        sequence_key,
        headers: Arc::new(user),
        death,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_through_properties() {
        let env = Envelope {
            payload: vec![0, 159, 146, 150],
            message_id: new_message_id(),
            retry_count: 3,
            sequence_key: Some(Arc::from("acct-7")),
            headers: Arc::new(HashMap::from([("tenant".to_string(), "acme".to_string())])),
            death: Some(Box::new(Death {
                reason: reasons::REJECTED,
                original_queue: Arc::from("orders"),
                count: 2,
            })),
        };
        let back = envelope(&properties(&env), env.payload.clone());
        assert_eq!(back.message_id, env.message_id);
        assert_eq!(back.retry_count, 3);
        assert_eq!(back.sequence_key.as_deref(), Some("acct-7"));
        assert_eq!(*back.headers, *env.headers);
        assert_eq!(back.death, env.death);
        assert_eq!(back.payload, env.payload);
    }

    #[test]
    fn broker_death_headers_are_not_user_headers() {
        let mut table = FieldTable::default();
        table.insert(ShortString::from("x-death"), AMQPValue::FieldArray(Default::default()));
        table.insert(ShortString::from("x-first-death-queue"), text("orders-hold-1s"));
        table.insert(ShortString::from("tenant"), text("acme"));
        let env = envelope(&BasicProperties::default().with_headers(table), Vec::new());
        assert_eq!(env.headers.len(), 1);
        assert_eq!(env.retry_count, 0);
    }
}
