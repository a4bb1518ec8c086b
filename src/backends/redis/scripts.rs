//! Server-side scripts (settling scripts run through [`super::transport`]'s batcher with `EVAL`, which
//! survives a server restart that flushed the script cache). Each settles a delivery and stores what follows from it in one atomic step, so a
//! consumer that dies at any point leaves either the original pending (redelivered later) or the follow-up
//! stored, never both and never neither (contract rule 13).

use std::sync::LazyLock;

use redis::Script;

/// Settles entry `ARGV[2]` of `KEYS[1]` (group `ARGV[1]`) and appends the fields `ARGV[3..]` to stream
/// `KEYS[2]` (a retry without delay, a dead letter, a hand-back). Nothing happens if the entry was already
/// settled. Returns 1 when moved.
pub(crate) const MOVE_TO_STREAM_SRC: &str = r"
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
        redis.call('XDEL', KEYS[1], ARGV[2])
        redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
        return 1
        ";

/// Settles entry `ARGV[2]` of `KEYS[1]` (group `ARGV[1]`) and schedules the fields `ARGV[5..]` for delivery
/// at `ARGV[4]` (ms): they are stored in hash `KEYS[3]..ARGV[3]` and the token `ARGV[3]` (unique per
/// attempt) is added to the due set `KEYS[2]`. Returns 1 when scheduled.
pub(crate) const SCHEDULE_SRC: &str = r"
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
        redis.call('XDEL', KEYS[1], ARGV[2])
        redis.call('HSET', KEYS[3] .. ARGV[3], unpack(ARGV, 5))
        redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
        return 1
        ";

/// Moves up to `ARGV[2]` entries due by `ARGV[1]` (ms) from due set `KEYS[1]` (hashes under prefix
/// `KEYS[3]`) to stream `KEYS[2]`. Returns how many were moved; every consumer of the stream may run it,
/// each entry moves once.
pub(crate) const MOVE_DUE_SRC: &str = r"
        local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
        for _, token in ipairs(due) do
            local fields = redis.call('HGETALL', KEYS[3] .. token)
            if #fields > 0 then
                redis.call('XADD', KEYS[2], '*', unpack(fields))
            end
            redis.call('DEL', KEYS[3] .. token)
            redis.call('ZREM', KEYS[1], token)
        end
        return #due
        ";
pub(crate) static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| Script::new(MOVE_DUE_SRC));

/// Takes or keeps shard lock `KEYS[1]` for owner `ARGV[1]` for `ARGV[2]` ms. Returns 1 when owned.
pub(crate) const CLAIM_SRC: &str = r"
        local owner = redis.call('GET', KEYS[1])
        if owner == false or owner == ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
        end
        return 0
        ";
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_SRC));

/// Releases shard lock `KEYS[1]` if `ARGV[1]` owns it.
pub(crate) const RELEASE_SRC: &str = r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
        return 1
        ";
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_SRC));
