//! The envelope as AMQP properties: shove's reserved headers, the user's headers, the message id.

use std::borrow::Cow;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, MAX_SHORT_STRING_LENGTH, ShortString};

use crate::error::{Result, ShoveError};
use crate::transport::wire::{WireValue, X_NAMES};
use crate::transport::{Envelope, is_reserved};

/// The header carrying the message id (also sent as the AMQP `message_id` property).
pub const MESSAGE_ID_KEY: &str = X_NAMES.message_id;

/// Persistent delivery mode.
const PERSISTENT: u8 = 2;

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Refuses an envelope AMQP cannot carry: a user header name over 255 bytes (a short string on the
/// wire). Checked at publish, before anything is sent.
pub(crate) fn fits_amqp(env: &Envelope) -> Result<()> {
    match env.headers.keys().find(|k| k.len() > MAX_SHORT_STRING_LENGTH) {
        Some(k) => Err(ShoveError::Validation(format!(
            "header name '{}…' is {} bytes; AMQP allows at most {MAX_SHORT_STRING_LENGTH} bytes in a header name, so \
             nothing was published: use a shorter name",
            k.chars().take(32).collect::<String>(),
            k.len()
        ))),
        None => Ok(()),
    }
}

/// The AMQP properties that carry `env`. Never panics: a header name AMQP cannot carry (refused at
/// publish by [`fits_amqp`], so only possible for a copy) is left out with a warning, and a message id
/// longer than a short string (a foreign message's `x-message-id`) travels in its header alone.
pub(crate) fn properties(env: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in env.headers.iter() {
        match ShortString::try_new(k.as_str()) {
            Ok(name) => {
                headers.insert(name, text(v));
            }
            Err(_) => {
                tracing::warn!(header = %k.chars().take(32).collect::<String>(), "a header name over 255 bytes cannot travel over AMQP; left out")
            }
        }
    }
    let mut id = None;
    X_NAMES.encode(env, false, |name, value| {
        let value = match value {
            WireValue::Text(t) => {
                if name == MESSAGE_ID_KEY {
                    id = ShortString::try_new(t).ok();
                }
                text(t)
            }
            WireValue::Count(n) => AMQPValue::LongLongInt(i64::from(n)),
        };
        headers.insert(ShortString::from(name), value);
    });
    let mut props = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    if let Some(id) = id {
        props = props.with_message_id(id);
    }
    props
}

fn as_string(v: &AMQPValue) -> Option<Cow<'_, str>> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(Cow::Borrowed(s.as_str())),
        AMQPValue::ShortShortUInt(n) => Some(Cow::Owned(n.to_string())),
        AMQPValue::ShortUInt(n) => Some(Cow::Owned(n.to_string())),
        AMQPValue::LongUInt(n) => Some(Cow::Owned(n.to_string())),
        AMQPValue::ShortShortInt(n) => Some(Cow::Owned(n.to_string())),
        AMQPValue::ShortInt(n) => Some(Cow::Owned(n.to_string())),
        AMQPValue::LongInt(n) => Some(Cow::Owned(n.to_string())),
        AMQPValue::LongLongInt(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Rebuilds the envelope of a delivered message. Headers RabbitMQ adds itself (`x-death`,
/// `x-first-death-*`, `x-last-death-*` on a copy a hold queue dead-lettered) are reserved names, never
/// user headers.
pub(crate) fn envelope(properties: &BasicProperties, payload: Vec<u8>) -> Envelope {
    let mut decoder = X_NAMES.decoder();
    // A message from another publisher may carry its id only in the AMQP property; the header, read
    // next, wins.
    if let Some(id) = properties.message_id().as_ref() {
        decoder.field(MESSAGE_ID_KEY, || Cow::Borrowed(id.as_str()));
    }
    if let Some(table) = properties.headers().as_ref() {
        for (k, v) in table.inner().iter() {
            let Some(value) = as_string(v) else { continue };
            let name = k.as_str();
            if decoder.field(name, || value.clone()) || is_reserved(name) {
                continue;
            }
            decoder.user(name.to_string(), value.into_owned());
        }
    }
    decoder.finish(payload)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::transport::{Death, new_message_id, reasons};

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
