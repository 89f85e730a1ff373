//! The Lua scripts of [`RedisWorkers`](super::RedisWorkers): every move of a task or worker is
//! one script, so it is atomic across instances. Each starts with the shared prelude
//! ([`LUA_PRELUDE`]: prefix, request id, kept answers) and the task helpers ([`TASKS`]).
//!
//! Arguments: `ARGV[1]` request id, `ARGV[2]` key prefix, then each script's own from `ARGV[3]`.

use std::sync::LazyLock;

use crate::storage::redis::lua::{lua, LuaScript};

/// Lua helpers of the task scripts: key names, detaching a task from wherever it is, running a
/// queued task, the kept answers of pops and steals, draining a departing worker.
pub(in crate::storage::redis) const TASKS: &str = r#"
local function tkey(tid) return P .. 't:' .. tid end
local function qkey(w) return P .. 'w:q:' .. w end
-- A queued task handed back: its arrival order (the member's 20 digits) then its JSON.
local function queued(member, data) return string.sub(member, 1, 20) .. data end
-- Removes a task from wherever it is and forgets it; returns its location and worker. `t`:
-- its fields DETACH_FIELDS, when the caller has read them already.
local DETACH_FIELDS = {'loc', 'worker', 'member', 'type', 'timeout', 'deadline'}
local function detach(tid, t)
  t = t or redis.call('HMGET', tkey(tid), unpack(DETACH_FIELDS))
  local loc, w, member, ty = t[1], t[2], t[3], t[4]
  if loc == 'q' then
    redis.call('ZREM', qkey(w), member)
    redis.call('HINCRBY', P .. 'w:qt:' .. w, ty, -1)
  elseif loc == 'r' then
    redis.call('SREM', P .. 'w:r:' .. w, tid)
  elseif loc == 'p' then
    redis.call('ZREM', P .. 'parked', tid)
  end
  -- A queued or parked task has only a dispatch deadline, a running one only run deadlines
  -- (entries left behind otherwise are dropped by the overdue script).
  if loc ~= 'r' then redis.call('ZREM', P .. 'due:q', tid) end
  if loc == 'r' then
    -- Only the run deadlines `run` gave it (see there).
    local timeout, deadline = t[5], t[6]
    if not timeout or timeout ~= '' or deadline ~= '' then redis.call('ZREM', P .. 'due:run', tid) end
    if not timeout or timeout == '' then redis.call('ZREM', P .. 'due:rund', tid) end
  elseif loc ~= 'q' and loc ~= 'p' then
    redis.call('ZREM', P .. 'due:run', tid)
    redis.call('ZREM', P .. 'due:rund', tid)
  end
  redis.call('DEL', tkey(tid))
  return loc, w
end
-- Takes a queued member off worker w's queue (`popped`: taken off already) and records it as
-- running on `runner`; returns the task as `queued()` hands it back, and its job id.
local function run(w, member, runner, now, popped)
  local tid = string.sub(member, 22)
  if not popped then redis.call('ZREM', qkey(w), member) end
  local t = redis.call('HMGET', tkey(tid), 'type', 'data', 'timeout', 'deadline', 'job')
  if not t[2] then return nil end
  redis.call('HINCRBY', P .. 'w:qt:' .. w, t[1], -1)
  redis.call('ZREM', P .. 'due:q', tid)
  redis.call('HSET', tkey(tid), 'loc', 'r', 'worker', runner, 'picked', now, 'member', '')
  redis.call('SADD', P .. 'w:r:' .. runner, tid)
  local due = nil
  if t[3] ~= '' then due = now + tonumber(t[3]) end
  if t[4] ~= '' then
    local d = tonumber(t[4])
    if due == nil or d < due then due = d end
  end
  if due ~= nil then redis.call('ZADD', P .. 'due:run', due, tid) end
  if t[3] == '' then redis.call('ZADD', P .. 'due:rund', now, tid) end
  return queued(member, t[2]), t[5]
end
-- The answer of a pop or steal kept for a retry after a lost reply is the member only ('m' ..
-- member; '' answers as `answer('')` keeps them): the task's JSON is already in its hash, so a
-- retry reads it there, and only while the task still runs on `runner` (if the watcher moved
-- it meanwhile, the retry gets nothing, as the system has moved on).
local function cached_run(runner)
  if RID == '' or not AGAIN then return nil end
  local c = redis.call('GET', RID)
  if not c then return nil end
  if string.sub(c, 1, 1) ~= 'm' then return '' end
  local member = string.sub(c, 2)
  local t = redis.call('HMGET', tkey(string.sub(member, 22)), 'loc', 'worker', 'data')
  if t[1] == 'r' and t[2] == runner and t[3] then return queued(member, t[3]) end
  return ''
end
local function answer_run(member, res)
  if RID ~= '' then redis.call('SET', RID, 'm' .. member, 'PX', 60000) end
  return res
end
-- Removes worker w with everything it holds; returns {queued tasks}, {task id, job id, ...}.
local function drain(w)
  local qs, rs = {}, {}
  for _, member in ipairs(redis.call('ZRANGE', qkey(w), 0, -1)) do
    local tid = string.sub(member, 22)
    local d = redis.call('HGET', tkey(tid), 'data')
    if d then table.insert(qs, queued(member, d)) end
    redis.call('DEL', tkey(tid))
    redis.call('ZREM', P .. 'due:q', tid)
  end
  for _, tid in ipairs(redis.call('SMEMBERS', P .. 'w:r:' .. w)) do
    local j = redis.call('HGET', tkey(tid), 'job')
    if j and redis.call('HGET', tkey(tid), 'worker') == w then
      table.insert(rs, tid)
      table.insert(rs, j)
      redis.call('DEL', tkey(tid))
      redis.call('ZREM', P .. 'due:run', tid)
      redis.call('ZREM', P .. 'due:rund', tid)
    end
  end
  redis.call('DEL', qkey(w), P .. 'w:qt:' .. w, P .. 'w:r:' .. w, P .. 'w:c:' .. w, P .. 'w:info:' .. w)
  redis.call('ZREM', P .. 'w:all', w)
  redis.call('HDEL', P .. 'w:rep', w)
  return qs, rs
end
"#;

/// A script from the task helpers and `body`.
fn script(body: &str) -> LuaScript {
    lua(&[TASKS], body)
}

pub(super) static REGISTER: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local w, info, expiry, rep = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
redis.call('SET', P .. 'w:info:' .. w, info)
redis.call('ZADD', P .. 'w:all', expiry, w)
redis.call('HSETNX', P .. 'w:rep', w, rep)
return 1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&REGISTER) }

/// {0} unknown worker, else {1, task ids to cancel...}.
pub(super) static HEARTBEAT: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local w, info, expiry, now, has_body = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if redis.call('EXISTS', P .. 'w:info:' .. w) == 0 then return {0} end
if info ~= '' then redis.call('SET', P .. 'w:info:' .. w, info) end
redis.call('ZADD', P .. 'w:all', expiry, w)
local out = {1}
if has_body == '1' then
  local c = P .. 'w:c:' .. w
  redis.call('ZREMRANGEBYSCORE', c, '-inf', now)
  for i = 8, #ARGV do
    if redis.call('ZSCORE', c, ARGV[i]) then table.insert(out, ARGV[i]) end
  end
end
return out
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&HEARTBEAT) }

/// {info, reputation} or {}.
pub(super) static WORKER: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local w = ARGV[3]
local info = redis.call('GET', P .. 'w:info:' .. w)
if not info then return {} end
return {info, redis.call('HGET', P .. 'w:rep', w) or '1'}
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&WORKER) }

/// {id, info, reputation, queued, running, ...} of live workers.
pub(super) static LIVE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local now = ARGV[3]
local out = {}
for _, w in ipairs(redis.call('ZRANGEBYSCORE', P .. 'w:all', '(' .. now, '+inf')) do
  local info = redis.call('GET', P .. 'w:info:' .. w)
  if info then
    table.insert(out, w)
    table.insert(out, info)
    table.insert(out, redis.call('HGET', P .. 'w:rep', w) or '1')
    table.insert(out, redis.call('ZCARD', qkey(w)))
    table.insert(out, redis.call('SCARD', P .. 'w:r:' .. w))
  end
end
return out
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&LIVE) }

pub(super) static DEPTH: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local n = redis.call('ZCARD', P .. 'parked')
for _, w in ipairs(redis.call('ZRANGE', P .. 'w:all', 0, -1)) do n = n + redis.call('ZCARD', qkey(w)) end
return n
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&DEPTH) }

/// Lua: `enqueue(w, tid, job, ty, data, score, timeout, deadline, due, wake, new)` stamps the
/// arrival order, queues, and wakes the worker's long-polls on every other instance (publishes
/// `wake`, unless empty); 0 when the worker is gone. `new`: the task's job was stored by the
/// calling script itself, so the task is nowhere yet (no lookup). `enqueue_all(A, from, out,
/// new)` queues each task of an argument list.
/// (Also part of the job store's commit that queues: `combined.rs`.)
pub(in crate::storage::redis) const ENQUEUE_FN: &str = r#"
local function enqueue(w, tid, job, ty, data, score, timeout, deadline, due, wake, new)
  if redis.call('EXISTS', P .. 'w:info:' .. w) == 0 then return 0 end
  -- Sent again after a lost reply, the task keeps its place in the queue. A task of a job this
  -- very script stored (`new`) is nowhere yet: nothing to look up.
  local cur = {}
  if not new then cur = redis.call('HMGET', tkey(tid), 'loc', 'worker', 'member') end
  local member = cur[3]
  if cur[1] ~= 'q' or cur[2] ~= w then
    member = string.format('%020d', redis.call('INCR', P .. 'seq')) .. ':' .. tid
  end
  if cur[1] then detach(tid) end
  redis.call('ZADD', qkey(w), score, member)
  redis.call('HINCRBY', P .. 'w:qt:' .. w, ty, 1)
  redis.call('HSET', tkey(tid), 'job', job, 'type', ty, 'data', data, 'loc', 'q', 'worker', w, 'member', member,
    'timeout', timeout, 'deadline', deadline)
  if due ~= '' then redis.call('ZADD', P .. 'due:q', due, tid) end
  -- '': no other instance listens (see `bus::Peers`).
  if wake ~= '' then redis.call('PUBLISH', P .. 'bus', wake) end
  return 1
end
-- Queues the tasks given as ten arguments each (as `enqueue` takes them) from A[from]: `out`
-- with each one's answer appended. `new`: tasks of a job the calling script just stored.
local function enqueue_all(A, from, out, new)
  for i = from, #A - 9, 10 do
    table.insert(out, enqueue(A[i], A[i + 1], A[i + 2], A[i + 3], A[i + 4], A[i + 5], A[i + 6], A[i + 7], A[i + 8],
      A[i + 9], new))
  end
  return out
end
"#;

/// Stamps the arrival order, queues, and wakes the worker's long-polls on every instance.
pub(super) static ENQUEUE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(&format!(
        "{ENQUEUE_FN}\nreturn enqueue(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12])"
    ))
});
inventory::submit! { crate::storage::redis::lua::Registered(&ENQUEUE) }

/// The popped task (see `queued`), or ''.
pub(super) static POP: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local w, now = ARGV[3], tonumber(ARGV[4])
local c = cached_run(w)
if c then return c end
while true do
  local m = redis.call('ZPOPMIN', qkey(w))
  if #m == 0 then return '' end
  local data = run(w, m[1], w, now, true)
  if data then return answer_run(m[1], data) end
end
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&POP) }

/// Steals the victim's second task (in pop order) among the thief's skills (see `queued`), or ''.
pub(super) static STEAL: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local thief, now = ARGV[3], tonumber(ARGV[4])
local c = cached_run(thief)
if c then return c end
if redis.call('EXISTS', P .. 'w:info:' .. thief) == 0 then return '' end
local skills = {}
for i = 5, #ARGV do skills[ARGV[i]] = true end
local best, bestn = nil, 1
for _, w in ipairs(redis.call('ZRANGEBYSCORE', P .. 'w:all', '(' .. now, '+inf')) do
  if w ~= thief then
    local n = 0
    for sk, _ in pairs(skills) do n = n + (tonumber(redis.call('HGET', P .. 'w:qt:' .. w, sk)) or 0) end
    if n > bestn or (n == bestn and best ~= nil and w < best) then best, bestn = w, n end
  end
end
if best == nil then return '' end
local found = 0
for _, member in ipairs(redis.call('ZRANGE', qkey(best), 0, -1)) do
  local ty = redis.call('HGET', tkey(string.sub(member, 22)), 'type')
  if ty and skills[ty] then
    found = found + 1
    if found == 2 then
      local data = run(best, member, thief, now)
      if data then return answer_run(member, data) end
      return answer('')
    end
  end
end
return answer('')
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&STEAL) }

pub(super) static FINISHED: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local w, tid = ARGV[3], ARGV[4]
local t = redis.call('HMGET', tkey(tid), 'loc', 'worker')
if t[1] == 'r' and t[2] == w then detach(tid) end
return 1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&FINISHED) }

pub(super) static CANCEL: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local tid, w, untl = ARGV[3], ARGV[4], ARGV[5]
local t = redis.call('HMGET', tkey(tid), 'loc', 'worker')
if t[1] == 'p' then detach(tid) end
if w == '' or redis.call('EXISTS', P .. 'w:info:' .. w) == 0 then return 0 end
if t[1] == 'q' and t[2] == w then
  detach(tid)
  return 0
end
if t[1] == 'r' and t[2] == w then detach(tid) end
redis.call('ZADD', P .. 'w:c:' .. w, untl, tid)
return 1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&CANCEL) }

pub(super) static PARK: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local tid, job, ty, data, parked, due = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if redis.call('HGET', tkey(tid), 'loc') == 'p' then return 0 end
detach(tid)
redis.call('HSET', tkey(tid), 'job', job, 'type', ty, 'data', data, 'loc', 'p')
redis.call('ZADD', P .. 'parked', parked, tid)
if due ~= '' then redis.call('ZADD', P .. 'due:q', due, tid) end
return 1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&PARK) }

pub(super) static PARKED: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for _, tid in ipairs(redis.call('ZRANGE', P .. 'parked', 0, -1)) do
  local d = redis.call('HGET', tkey(tid), 'data')
  if d then table.insert(out, d) end
end
return out
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&PARKED) }

pub(super) static CLAIM_PARKED: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local c = cached()
if c then return c end
local tid = ARGV[3]
if redis.call('HGET', tkey(tid), 'loc') == 'p' then
  detach(tid)
  return answer(1)
end
return 0
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&CLAIM_PARKED) }

/// {{queued task (see `queued`)...}, {task id, job id, ...}}
pub(super) static REMOVE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local c = cached()
if c then return c end
local qs, rs = drain(ARGV[3])
return answer({qs, rs})
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&REMOVE) }

/// {queued task (see `queued`)...} of worker ARGV[3], taken off its queue (highest priority first).
pub(super) static TAKE_QUEUE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local c = cached()
if c then return c end
local w = ARGV[3]
local qs = {}
for _, member in ipairs(redis.call('ZRANGE', qkey(w), 0, -1)) do
  local tid = string.sub(member, 22)
  local d = redis.call('HGET', tkey(tid), 'data')
  if d then table.insert(qs, queued(member, d)) end
  redis.call('DEL', tkey(tid))
  redis.call('ZREM', P .. 'due:q', tid)
end
redis.call('DEL', qkey(w), P .. 'w:qt:' .. w)
return answer(qs)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&TAKE_QUEUE) }

/// Replaces worker ARGV[3]'s record with ARGV[5] if it is still ARGV[4]: 1, else 0.
pub(super) static SWAP_INFO: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local c = cached()
if c then return c end
local k = P .. 'w:info:' .. ARGV[3]
if redis.call('GET', k) ~= ARGV[4] then return answer(0) end
redis.call('SET', k, ARGV[5])
return answer(1)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&SWAP_INFO) }

pub(super) static REPUTATION: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local c = cached()
if c then return c end
local w, delta = ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', P .. 'w:info:' .. w) == 0 then return 0 end
local r = tonumber(redis.call('HGET', P .. 'w:rep', w) or '1') + delta
if r < 0 then r = 0 end
if r > 1 then r = 1 end
redis.call('HSET', P .. 'w:rep', w, string.format('%.17g', r))
return answer(1)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&REPUTATION) }

/// {task id, job id, worker or '', 'D' | 'E', ...}: at most ARGV[6] tasks.
pub(super) static OVERDUE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local c = cached()
if c then return c end
local now, default_exec, untl, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local out = {}
local function room() return limit - #out / 4 end
for _, tid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'due:q', '-inf', now, 'LIMIT', 0, room())) do
  local t = redis.call('HMGET', tkey(tid), 'loc', 'worker', 'job')
  if t[1] == 'q' or t[1] == 'p' then
    local w = ''
    if t[1] == 'q' then w = t[2] end
    table.insert(out, tid); table.insert(out, t[3]); table.insert(out, w); table.insert(out, 'D')
    detach(tid)
  else
    redis.call('ZREM', P .. 'due:q', tid)
  end
end
local function expired(tid)
  local t = redis.call('HMGET', tkey(tid), 'loc', 'worker', 'job')
  if t[1] == 'r' then
    table.insert(out, tid); table.insert(out, t[3]); table.insert(out, t[2]); table.insert(out, 'E')
    detach(tid)
    if redis.call('EXISTS', P .. 'w:info:' .. t[2]) == 1 then redis.call('ZADD', P .. 'w:c:' .. t[2], untl, tid) end
  else
    redis.call('ZREM', P .. 'due:run', tid)
    redis.call('ZREM', P .. 'due:rund', tid)
  end
end
if room() > 0 then
  for _, tid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'due:run', '-inf', now, 'LIMIT', 0, room())) do expired(tid) end
end
if room() > 0 then
  for _, tid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'due:rund', '-inf', now - default_exec, 'LIMIT', 0, room())) do
    expired(tid)
  end
end
if #out == 0 then return out end
return answer(out)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&OVERDUE) }

/// {{worker ids}, {queued task (see `queued`)...}, {task id, job id, worker id, ...}}
pub(super) static EXPIRE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local c = cached()
if c then return c end
local now = ARGV[3]
local ids, qs, rs = {}, {}, {}
local dead = redis.call('ZRANGEBYSCORE', P .. 'w:all', '-inf', now, 'LIMIT', 0, 1000)
if #dead == 0 then return {ids, qs, rs} end
for _, w in ipairs(dead) do
  table.insert(ids, w)
  local q, r = drain(w)
  for _, d in ipairs(q) do table.insert(qs, d) end
  for i = 1, #r, 2 do
    table.insert(rs, r[i]); table.insert(rs, r[i + 1]); table.insert(rs, w)
  end
end
return answer({ids, qs, rs})
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&EXPIRE) }
