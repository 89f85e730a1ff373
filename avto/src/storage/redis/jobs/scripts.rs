//! The Lua of [`RedisJobs`](super::RedisJobs): each move of a job is one script, so it is atomic
//! across instances. Arguments: `ARGV[1]` request id, `ARGV[2]` key prefix, then each script's own
//! from `ARGV[3]` (see [`lua`](super::super::lua)).

use std::sync::LazyLock;

use super::super::query::QKEYS;
use super::super::{lua, LuaScript};

/// Retention of a job just written (the shared part of [`INSERT`] and [`WRITE`]), in layout 2:
/// a job that just became terminal gets its removal time in `jobs:expiry` with what the sweep
/// needs to find its index entries in `jobs:expiry:client` (`["client","created_at_ms","blueprint"]`;
/// earlier versions wrote the bare client); its document expires then, by the `PXAT` of the `SET`
/// that writes it ([`expires_at`]: a terminal job written again keeps its expiry with
/// `KEEPTTL`); a job that is no longer terminal leaves the index (and its `SET` without an expiry
/// cleared the document's). `ret` = retention in ms, 0 = keep.
pub(in crate::storage::redis) const RETAIN: &str = r#"
-- Status tests as comparisons, not tables: a table constructor runs on every call of every
-- script that includes this (about 1 us of Redis CPU per call, measured with redis-benchmark).
local function is_terminal_status(s) return s == 'finished' or s == 'failed' or s == 'cancelled' or s == 'quarantined' end
local function is_unsettled_status(s)
  return s == 'pending' or s == 'running' or s == 'awaiting_retry' or s == 'waiting_for_worker'
    or s == 'waiting_for_parallel_tasks' or s == 'waiting_for_sub_job'
end
-- When a job written with status `new` (after `old`; nil for a new job) expires: nil = never
-- (no retention, or not terminal), false = keep the expiry it has (terminal already).
local function expires_at(old, new, now, ret)
  if tonumber(ret) == 0 or not is_terminal_status(new) then return nil end
  if old and is_terminal_status(old) then return false end
  return tonumber(now) + tonumber(ret)
end
-- `SET` of the document with that expiry (`XX` for an existing job: false when it is gone).
local function set_doc(k, json, at, mode)
  if at then return redis.call('SET', k, json, mode, 'PXAT', string.format('%d', at)) end
  if at == false then return redis.call('SET', k, json, mode, 'KEEPTTL') end
  return redis.call('SET', k, json, mode)
end
local function retain(id, client, old, at, created, blueprint)
  local ek = P .. 'jobs:expiry'
  if at then
    redis.call('ZADD', ek, at, id)
    redis.call('HSET', ek .. ':client', id, cjson.encode({client, created, blueprint}))
  elseif at == nil and old and is_terminal_status(old) then
    redis.call('ZREM', ek, id)
    redis.call('HDEL', ek .. ':client', id)
  end
end
"#;

/// `insert(A)` stores a new job (the arguments from `A[3]`: id, document, client, created,
/// status, unsettled, now, token, lease, terminal, retention, hook, blueprint) and, given a token,
/// locks it for that token: 1, 2 when an earlier attempt did (a retry after a lost reply), or 0
/// when the id is taken. Sent with a request id (`once`), a retry takes a job without a lock
/// that it finds as its own: the caller's ids are random (a new job's). The shared part of [`INSERT`] and the
/// insert that queues (`combined.rs`).
pub(in crate::storage::redis) const INSERT_FN: &str = r#"
local function insert(A)
  local id, json, client, created, status, unsettled, now, token, lease, terminal, ret, hook, blueprint =
    A[3], A[4], A[5], A[6], A[7], A[8], A[9], A[10], A[11], A[12], A[13], A[14], A[15]
  local k = P .. 'job:' .. id
  local lk = P .. 'lock:job:' .. id
  local at = expires_at(nil, status, now, ret)
  if not set_doc(k, json, at, 'NX') then
    -- Sent again after a lost reply: the first attempt stored this very document (and took the
    -- lock). Without a lock the job may have moved on since; a retry of an insert sent as one
    -- (`once`, for the random ids of new jobs) finds its own job.
    if AGAIN and token == '' then return 2 end
    if redis.call('GET', k) == json and (token == '' or redis.call('GET', lk) == token) then return 2 end
    return 0
  end
  redis.call('HSET', P .. 'jobstatus', id, status)
  -- The query indexes (see super::query), which the counts are read from.
  redis.call('ZADD', k_all(client), created, id)
  redis.call('ZADD', k_all(nil), created, id)
  if status ~= 'finished' then
    redis.call('ZADD', k_st(status, nil), created, id)
    redis.call('ZADD', k_st(status, client), created, id)
  end
  redis.call('ZADD', k_bp(blueprint, nil), created, id)
  redis.call('ZADD', k_bp(blueprint, client), created, id)
  redis.call('ZADD', P .. 'jobs:ids', 0, id)
  if status == 'quarantined' then redis.call('ZADD', P .. 'jobs:quarantined:' .. client, now, id) end
  if unsettled == '1' then redis.call('ZADD', P .. 'stale', now, id) end
  if token ~= '' then redis.call('SET', lk, token, 'PX', lease) end
  if at then retain(id, client, nil, at, created, blueprint) end
  if terminal == '1' and hook == '1' then redis.call('ZADD', P .. 'webhooks:due', now, id) end
  return 1
end
"#;

/// Stores a new job and, given a token, locks it for that token (see [`INSERT_FN`]).
pub(super) static INSERT: LazyLock<LuaScript> =
    LazyLock::new(|| lua(&[QKEYS, RETAIN, INSERT_FN], "return insert(ARGV)"));
inventory::submit! { crate::storage::redis::lua::Registered(&INSERT) }

/// `write(ARGV, release)` writes a job held under its lock by a token (the arguments from
/// `ARGV[3]`: id, token, document, status, ...; the shared part of [`SAVE`], [`COMMIT`] and the
/// commit that queues; `release`: the lock is released too, by the `GETDEL` that checks it): the
/// document, the status index entries (the counts are read from them) and `jobstatus`, the stale
/// index (see [`crate::storage::counts_as_activity`]), the retention and, when the job just
/// became terminal with a webhook, its outbox entry (see [`JobStore::claim_webhooks`]). False
/// (nothing written) when the token no longer holds the lock. A job retention removed while it was
/// held (its document is gone) is not written back: the write succeeds as a no-op. `commit(A)` is
/// the write that releases, true also for a retry whose first attempt wrote ([`COMMIT`],
/// [`COMMIT_ALL`]).
///
/// `old` is the status the holder found (or last wrote) under the lock, which no one else can
/// have changed: each move it makes is idempotent, so a save sent again after a lost reply
/// leaves the same entries.
pub(in crate::storage::redis) const WRITE: &str = r#"
local function write(A, release)
  local id, token, json, new, client, unsettled, now, lease, terminal, ret, hook, created, blueprint, old =
    A[3], A[4], A[5], A[6], A[7], A[8], A[9], A[10], A[11], A[12], A[13], A[14], A[15], A[16]
  local lk = P .. 'lock:job:' .. id
  local holder
  if release then holder = redis.call('GETDEL', lk) else holder = redis.call('GET', lk) end
  if holder ~= token then
    -- Another holder's lock, taken off by the GETDEL: put back (with a full lease).
    if release and holder then redis.call('SET', lk, holder, 'PX', lease) end
    return false
  end
  local at = expires_at(old, new, now, ret)
  if not set_doc(P .. 'job:' .. id, json, at, 'XX') then return true end
  if old ~= new then
    redis.call('HSET', P .. 'jobstatus', id, new)
    -- The per-status query indexes follow (`finished` has none).
    if old ~= 'finished' then
      redis.call('ZREM', k_st(old, nil), id)
      redis.call('ZREM', k_st(old, client), id)
    end
    if new ~= 'finished' then
      redis.call('ZADD', k_st(new, nil), created, id)
      redis.call('ZADD', k_st(new, client), created, id)
    end
    if new == 'quarantined' then redis.call('ZADD', P .. 'jobs:quarantined:' .. client, now, id) end
    if terminal == '1' and hook == '1' then redis.call('ZADD', P .. 'webhooks:due', now, id) end
  end
  if unsettled == '1' then
    -- A save that leaves a job waiting for its tasks as it was is no activity (see
    -- `storage::counts_as_activity`): its entry is there since it began to wait.
    if old ~= new or (new ~= 'waiting_for_worker' and new ~= 'waiting_for_parallel_tasks') then
      redis.call('ZADD', P .. 'stale', now, id)
    end
  elseif is_unsettled_status(old) then
    -- A job that was settled already is in no stale entry (claims only move existing ones).
    redis.call('ZREM', P .. 'stale', id)
  end
  if tonumber(ret) > 0 then retain(id, client, old, at, created, blueprint) end
  return true
end
-- Save and release (see COMMIT): true when written now, or when the job holds exactly this
-- document (a retry after a lost reply whose first attempt wrote it).
local function commit(A)
  return write(A, true) or redis.call('GET', P .. 'job:' .. A[3]) == A[5]
end
"#;

pub(super) static SAVE: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS, RETAIN, WRITE],
        r#"
if not write(ARGV, false) then return 0 end
redis.call('PEXPIRE', P .. 'lock:job:' .. ARGV[3], ARGV[10])
return 1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&SAVE) }

/// Save and release in one step. The lock is gone after the first attempt, so a retry after a
/// lost reply cannot tell by the lock that it was applied: it looks at the document instead
/// (the job holding exactly this document means the write happened, or changes nothing). Should
/// another holder have locked and changed the job in between, the retry reports `Conflict` for a
/// write that did happen, as for a lost lease.
pub(super) static COMMIT: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS, RETAIN, WRITE],
        r#"
if commit(ARGV) then return 1 end
return 0
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&COMMIT) }

/// [`COMMIT`] of several jobs (fourteen arguments each from `ARGV[3]`, as `write` takes them from
/// `A[3]`): 1 or 0 per job, as [`COMMIT`] answers.
pub(super) static COMMIT_ALL: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS, RETAIN, WRITE],
        r#"
local out = {}
for i = 3, #ARGV - 13, 14 do
  local A = {}
  for k = 0, 13 do A[3 + k] = ARGV[i + k] end
  if commit(A) then out[#out + 1] = 1 else out[#out + 1] = 0 end
end
return out
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&COMMIT_ALL) }

/// Renews the leases of locks still held by their tokens (`ARGV[3]` the lease in ms, then a lock
/// key and its token per lock): 1 per lock renewed, 0 per lock its token no longer holds.
pub(super) static RENEW_ALL: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
local lease, out = ARGV[3], {}
for i = 4, #ARGV - 1, 2 do
  if redis.call('GET', ARGV[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', ARGV[i], lease)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&RENEW_ALL) }

pub(super) static RELEASE: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
local lk, token = ARGV[3], ARGV[4]
if redis.call('GET', lk) == token then return redis.call('DEL', lk) end
return 0
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&RELEASE) }

pub(super) static CLAIM_STALE: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
local c = cached()
if c then return c end
local cutoff, now, limit = ARGV[3], ARGV[4], tonumber(ARGV[5])
local ids = redis.call('ZRANGEBYSCORE', P .. 'stale', '-inf', cutoff, 'LIMIT', 0, limit)
if #ids == 0 then return ids end
for _, id in ipairs(ids) do redis.call('ZADD', P .. 'stale', 'XX', now, id) end
return answer(ids)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&CLAIM_STALE) }

/// Removes up to `limit` jobs whose retention ended by `now` with their index entries (the
/// counts follow them); returns how many. A job gone already (removed by another instance) is skipped.
pub(super) static REMOVE_EXPIRED: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS],
        r#"
local now, limit = ARGV[3], tonumber(ARGV[4])
local ek = P .. 'jobs:expiry'
local ids = redis.call('ZRANGEBYSCORE', ek, '-inf', now, 'LIMIT', 0, limit)
local removed = 0
for _, id in ipairs(ids) do
  local client = redis.call('HGET', ek .. ':client', id)
  local blueprint = nil
  if client and string.sub(client, 1, 2) == '["' then
    local meta = cjson.decode(client)
    client, blueprint = meta[1], meta[3]
  end
  local status = redis.call('HGET', P .. 'jobstatus', id)
  if status then
    removed = removed + 1
    redis.call('HDEL', P .. 'jobstatus', id)
    redis.call('ZREM', k_st(status, nil), id)
    if client then redis.call('ZREM', k_st(status, client), id) end
  end
  redis.call('ZREM', k_all(nil), id)
  redis.call('ZREM', P .. 'jobs:ids', id)
  if blueprint then
    redis.call('ZREM', k_bp(blueprint, nil), id)
    if client then redis.call('ZREM', k_bp(blueprint, client), id) end
  end
  if client then
    redis.call('ZREM', P .. 'jobs:client:' .. client, id)
    redis.call('ZREM', P .. 'jobs:quarantined:' .. client, id)
  end
  redis.call('ZREM', P .. 'stale', id)
  redis.call('ZREM', P .. 'webhooks:due', id)
  redis.call('DEL', P .. 'job:' .. id)
  redis.call('ZREM', ek, id)
  redis.call('HDEL', ek .. ':client', id)
end
return removed
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&REMOVE_EXPIRED) }

/// Claims outbox entries stamped at or before the cutoff (see [`JobStore::claim_webhooks`]);
/// entries whose job document is gone are dropped. Answers the claimed ids.
pub(super) static CLAIM_WEBHOOKS: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
local c = cached()
if c then return c end
local cutoff, now, limit = ARGV[3], ARGV[4], tonumber(ARGV[5])
local dk = P .. 'webhooks:due'
local ids = redis.call('ZRANGEBYSCORE', dk, '-inf', cutoff, 'LIMIT', 0, limit)
local claimed = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', P .. 'job:' .. id) == 1 then
    redis.call('ZADD', dk, 'XX', now, id)
    claimed[#claimed + 1] = id
  else
    redis.call('ZREM', dk, id)
  end
end
if #claimed == 0 then return claimed end
return answer(claimed)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&CLAIM_WEBHOOKS) }
