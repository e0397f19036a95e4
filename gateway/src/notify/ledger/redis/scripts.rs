//! The Redis ledger's Lua scripts.

use redis::Script;
use std::sync::LazyLock;

/// Claims a dedup key and indexes the claim under its user. KEYS: claim, claims index.
/// ARGV: window (ms), dedup key, claiming notification. Returns 1 for the claim, 0 when it is
/// held.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[1]) then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
redis.call('ZADD', KEYS[2], string.format('%d', now + window), ARGV[2])
if redis.call('PTTL', KEYS[2]) < window then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return 1
",
    )
});

/// Gives up a dedup claim if the notification that took it still holds it. KEYS: claim, claims
/// index. ARGV: claiming notification, dedup key.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
",
    )
});

/// Takes due jobs and leases them. KEYS: queue, jobs, aggregates, aggregated. ARGV: now, limit,
/// end of the lease. Returns `{due, job}` of each, oldest first.
pub(super) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local taken = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  local key = due[i]
  local job = redis.call('HGET', KEYS[2], key)
  if job then
    redis.call('ZADD', KEYS[1], ARGV[3], key)
    taken[#taken + 1] = {due[i + 1], job}
    local slot = redis.call('HGET', KEYS[4], key)
    if slot then
      redis.call('HDEL', KEYS[3], slot)
      redis.call('HDEL', KEYS[4], key)
    end
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return taken
",
    )
});

/// Writes a record if it is still the one read. KEYS: record. ARGV: the record read, the new
/// record. Returns 0 when the record changed (or is gone).
pub(super) static REWRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
",
    )
});

/// Queues a job (again), or takes it out of the queue with its aggregate slot. KEYS (one queue
/// shard): queue, jobs, the user's jobs, aggregates, aggregated. ARGV: `queue` or `dequeue`,
/// job key, and to queue: due, job.
pub(super) static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] == 'queue' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  local slot = redis.call('HGET', KEYS[5], ARGV[2])
  if slot then
    redis.call('HDEL', KEYS[4], slot)
    redis.call('HDEL', KEYS[5], ARGV[2])
  end
end
return 1
",
    )
});

/// Joins the pending aggregated job of a user and kind, or starts one. KEYS: aggregates,
/// aggregated, queue, jobs, the user's jobs. ARGV: slot, new job key, due, new job.
/// Returns `{1, job}` for a new job, `{0, job}` for the joined one.
pub(super) static AGGREGATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = redis.call('HGET', KEYS[1], ARGV[1])
if key then
  local job = redis.call('HGET', KEYS[4], key)
  if job then
    local joined = cjson.decode(job)
    joined.count = (joined.count or 0) + 1
    job = cjson.encode(joined)
    redis.call('HSET', KEYS[4], key, job)
    return {0, job}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[2])
return {1, ARGV[4]}
",
    )
});

/// Counts one send unless the limit is reached. KEYS: quota. ARGV: limit, expiry (seconds).
/// Returns 1 when counted.
pub(super) static QUOTA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
if used == 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
",
    )
});

/// Removes a user's queued jobs and their aggregate slots. KEYS: the user's jobs, queue, jobs,
/// aggregates, aggregated.
pub(super) static DELETE_JOBS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('ZREM', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
  local slot = redis.call('HGET', KEYS[5], key)
  if slot then
    redis.call('HDEL', KEYS[4], slot)
    redis.call('HDEL', KEYS[5], key)
  end
end
redis.call('DEL', KEYS[1])
return 0
",
    )
});
