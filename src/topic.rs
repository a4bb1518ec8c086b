//! A topic: a message type bound to its queues and its codec. Define one with
//! [`define_topic!`](crate::define_topic) or [`define_sequenced_topic!`](crate::define_sequenced_topic).

use crate::codec::Codec;
use crate::topology::QueueTopology;

/// A message type plus where it lives and how it is encoded.
pub trait Topic: Send + Sync + 'static {
    /// The message type carried by this topic.
    type Message: Send + Sync + 'static;
    /// How messages are turned into bytes and back.
    type Codec: Codec<Self::Message>;
    /// The topic's queues. Must return the same static every call.
    fn topology() -> &'static QueueTopology;
    /// For sequenced topics, the function that extracts a message's ordering key.
    const SEQUENCE_KEY_FN: Option<fn(&Self::Message) -> String> = None;
}

/// A topic whose messages are handled one at a time per key, in publish order.
pub trait SequencedTopic: Topic {
    /// The ordering key of `message`.
    fn sequence_key(message: &Self::Message) -> String;
}
