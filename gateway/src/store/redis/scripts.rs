//! The Lua scripts of the Redis store. Each touches the keys of one user only (one hash tag),
//! so on Redis Cluster each runs on the shard that holds the user.

use redis::Script;
use std::sync::LazyLock;

/// Lua numbers are doubles, exact only up to 2^53, and hybrid-clock times are larger: times are
/// kept as decimal strings and compared and incremented as two exact halves of ten digits.
const HLC_LUA: &str = r"
local function halves(s)
  local n = #s
  if n <= 10 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 10)), tonumber(string.sub(s, n - 9))
end
local function later(proposed, last)
  local phi, plo = halves(proposed)
  local lhi, llo = halves(last)
  llo = llo + 1
  if llo == 1e10 then lhi, llo = lhi + 1, 0 end
  if lhi > phi or (lhi == phi and llo > plo) then phi, plo = lhi, llo end
  if phi == 0 then return string.format('%d', plo) end
  return string.format('%d%010d', phi, plo)
end
";

/// Milliseconds since the Unix epoch by Redis's clock, which every node shares: the windows of
/// idempotency keys are timed by it, so that a node whose clock is ahead never ends one early.
const NOW_LUA: &str = r"
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
";

/// Appends one message, unless its idempotency key is marked in the log within its window.
/// KEYS: head, log, markers, marker expiry. ARGV: the node's clock time, an epoch for a new log,
/// the sealed record, the retention count, the key's marker name (empty for none), its window
/// in milliseconds, the message id, the id of the data key the record is sealed under. Returns
/// `{seq, hlc, false, false}` for an entry appended now; for a marked one `{seq, hlc, id,
/// record}` of the entry marked, its record `false` when the log no longer holds it; `{0, 0,
/// false, false}` when the record is not sealed under the user's data key, whose id the head
/// keeps (see [`MAKE_DATA_KEY`]; the user was deleted since the key was read): it is sealed
/// again and sent again. The head is read and written once. The markers are a hash (name →
/// `seq hlc id`) and a sorted set (name → end of window), which the sweeper prunes.
pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{HLC_LUA}{NOW_LUA}{}",
        r"
local head, log, markers, expiries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local name, now = ARGV[5], 0
if name ~= '' then
  now = now_ms()
  local expiry = redis.call('ZSCORE', expiries, name)
  local marker = redis.call('HGET', markers, name)
  if expiry and marker and tonumber(expiry) > now then
    local seq, hlc, id = string.match(marker, '^(%d+) (%d+) (.*)$')
    local record = false
    local found = redis.call('XRANGE', log, seq .. '-0', seq .. '-0')
    if found[1] then
      local fields = found[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'r' then record = fields[i + 1] end
      end
    end
    return {seq, hlc, id, record}
  end
end
local state = redis.call('HMGET', head, 'last_seq', 'last_hlc', 'first_seq', 'kid')
if state[4] ~= ARGV[8] then
  return {0, 0, false, false}
end
local seq, last_hlc, first = 1, '0', 1
if state[1] then
  seq, last_hlc, first = tonumber(state[1]) + 1, state[2], tonumber(state[3])
else
  redis.call('HSET', head, 'epoch', ARGV[2])
end
local hlc = later(ARGV[1], last_hlc)
redis.call('XADD', log, string.format('%d-0', seq), 'h', hlc, 'r', ARGV[3])
local retention = tonumber(ARGV[4])
if seq + 1 - first > retention then
  first = seq + 1 - retention
  redis.call('XTRIM', log, 'MINID', string.format('%d-0', first))
end
redis.call('HSET', head, 'last_seq', string.format('%d', seq), 'last_hlc', hlc,
  'first_seq', string.format('%d', first))
if name ~= '' then
  redis.call('HSET', markers, name, string.format('%d %s %s', seq, hlc, ARGV[7]))
  redis.call('ZADD', expiries, string.format('%d', now + tonumber(ARGV[6])), name)
end
return {seq, hlc, false, false}
"
    ))
});

/// Stores a user's new data key, wrapped, unless the user has one, and its id in the head of
/// the user's log, which the append script checks every record against. KEYS: data key, head.
/// ARGV: the wrapped key, its id. Returns `{1, false}` when stored, else `{0, the wrapped key
/// there}`.
pub(super) static MAKE_DATA_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('HSET', KEYS[2], 'kid', ARGV[2])
  return {1, false}
end
return {0, redis.call('GET', KEYS[1])}
",
    )
});

/// Replaces a user's wrapped data key by the same key wrapped again, unless it changed
/// meanwhile. KEYS: data key. ARGV: the wrapped key as read, rewrapped.
pub(super) static REWRAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Removes up to a page of the idempotency markers whose window has ended. KEYS: markers,
/// marker expiry. ARGV: the page size. Returns how many were removed.
pub(super) static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{}",
        r"
local ended = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now_ms()),
  'LIMIT', 0, tonumber(ARGV[1]))
if #ended > 0 then
  redis.call('HDEL', KEYS[1], unpack(ended))
  redis.call('ZREM', KEYS[2], unpack(ended))
end
return #ended
"
    ))
});

/// Moves a cursor forward, never back and never past the log's end. KEYS: head, cursors.
/// ARGV: device, sequence. Returns the cursor.
pub(super) static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local new = math.min(tonumber(ARGV[2]), last)
if new > old then
  redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', new))
  return new
end
return old
",
    )
});

/// Hides a contact's direct messages up to the log's end. KEYS: head, forgotten. ARGV: contact.
pub(super) static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = redis.call('HGET', KEYS[1], 'last_seq')
if not last then return 0 end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old or tonumber(last) > tonumber(old) then
  redis.call('HSET', KEYS[2], ARGV[1], last)
end
return 1
",
    )
});

/// Cuts a log up to a sequence, unless the log was recreated since the sweeper looked at it.
/// KEYS: head, log. ARGV: epoch, first sequence to keep. Returns how many entries were cut.
pub(super) static CUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
local cut = redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2] .. '-0')
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'first_seq')) then
  redis.call('HSET', KEYS[1], 'first_seq', ARGV[2])
end
return cut
",
    )
});

/// Drops a purged contact entry, unless the contact was forgotten again further meanwhile.
/// KEYS: forgotten. ARGV: contact, the sequence purged up to.
pub(super) static PURGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
",
    )
});
