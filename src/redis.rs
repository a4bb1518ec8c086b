//! The Redis Streams backend (Redis 7 or Valkey), feature `redis-streams`.
//!
//! # Mapping
//!
//! | shove concept | Redis |
//! |---|---|
//! | topic queue | a stream named as the topology's queue, read through one consumer group (`shove` unless [`RedisConfig::with_group`]); fields `payload`, `x-message-id`, `x-retry-count` (absent on a first attempt: 0), `x-sequence-key`, the death headers, and user headers as `h:{name}` |
//! | ack | `XACK` and `XDEL` in one script: fully acknowledged entries are removed, so a stream's length returns to zero once everything is handled |
//! | hold queue (retry / defer delay) | a due set (sorted set `"{hold queue}:due"`, scored by due time) with one hash per attempt; one script acknowledges the original and schedules the copy, another moves due copies back to the stream: **held by the server**, atomic at both ends |
//! | DLQ | a stream; one script acknowledges the original and appends the dead letter |
//! | sequenced topic | `routing_shards` streams `"{queue}-seq-{i}"`; each is read by one consumer at a time, which holds a lock key `"{stream}:owner"` renewed every 2 s (expires after 10 s) |
//! | crash recovery | every consumer reclaims (`XAUTOCLAIM`) entries idle for twice the handler timeout (60 s without one); an entry whose consumer died (delivery count 2 or more once reclaimed) is reported to the engine as a lost attempt, which counts against the retry budget |
//! | hand back (drain) | the entry stays pending and is marked long idle with its delivery count reset to 0, so the next reclaim pass of any consumer takes it in stream order and does not count it as an attempt |
//! | queue depth (autoscaling) | the group's `lag` (entries not yet delivered) and `pending` from `XINFO GROUPS` |
//!
//! Connection loss: the shared connection and each consumer's reading connection reconnect by themselves;
//! entries delivered to a consumer that loses its connection stay pending and are reclaimed.
//! Redis Cluster is not supported by this build ([`RedisMode::Cluster`] fails to connect with a message
//! saying so).

#[doc(hidden)]
pub use crate::backends::redis::spawn_reaper;
pub use crate::backends::redis::{
    RedisAutoscalerBackend, RedisClient, RedisConfig, RedisConsumer, RedisConsumerGroup, RedisConsumerGroupConfig,
    RedisConsumerGroupRegistry, RedisMode, RedisPublisher, RedisQueueStats, RedisQueueStatsProvider,
    RedisTopologyDeclarer, XlenStatsProvider,
};
pub use crate::markers::Redis;
