//! Job queries in Redis (see [`crate::storage::JobQuery`]): sorted sets scored by
//! `created_at_ms` (Redis orders equal scores by member, i.e. by id, so `ZREVRANGEBYSCORE` walks
//! exactly the query order), kept by the job scripts of [`super::jobs`] in the writes they do
//! anyway (no extra round trip):
//!
//! | key | members |
//! |---|---|
//! | `{p}jobs:all`, `{p}jobs:client:{c}` | every job; one client's (the list's index) |
//! | `{p}jobs:st:{status}`, `{p}jobs:cst:{status}:{c}` | jobs in a status (every status but `finished`); one client's |
//! | `{p}jobs:bp:{blueprint}`, `{p}jobs:cbp:{len(c)}:{c}:{blueprint}` | jobs of a blueprint; one client's |
//! | `{p}jobs:ids` | every job id, score 0 (lexical order: id prefixes) |
//!
//! The counts per status (overall and per client) are the sizes of these indexes (`finished`,
//! which has none, is what the other statuses leave of `jobs:all` / `jobs:client:{c}`): a
//! status change moves two index entries and nothing else.
//!
//! One script answers a page (index choice, the walk in bounded chunks, the other filters by
//! `HGET {p}jobstatus` / `ZSCORE`, and the documents by `MGET`): one round trip per page.

use std::sync::LazyLock;

use super::{from_json, lua, reply, LuaScript, RedisConn};
use crate::job::Job;
use crate::storage::{
    CheckedQuery, JobCursor, JobPage, JobQuery, StorageError, JOB_QUERY_COUNT_LIMIT, JOB_QUERY_PREFIX_CANDIDATES,
    JOB_QUERY_SCAN_LIMIT,
};

/// Key names of the query indexes (shared by the job scripts and [`QUERY`]).
pub(super) const QKEYS: &str = r#"
local function k_st(status, client)
  if client then return P .. 'jobs:cst:' .. status .. ':' .. client end
  return P .. 'jobs:st:' .. status
end
local function k_bp(blueprint, client)
  if client then return P .. 'jobs:cbp:' .. #client .. ':' .. client .. ':' .. blueprint end
  return P .. 'jobs:bp:' .. blueprint
end
local function k_all(client)
  if client then return P .. 'jobs:client:' .. client end
  return P .. 'jobs:all'
end
-- Every status but `finished`, each with its index (layout 2 reads the counts from them).
local INDEXED = {'pending', 'running', 'waiting_for_worker', 'waiting_for_human', 'waiting_for_parallel_tasks',
  'waiting_for_sub_job', 'awaiting_retry', 'failed', 'cancelled', 'quarantined'}
-- Jobs in `status` (overall or one client's): its index's size; `finished`, which has none,
-- is what the others leave of every job.
local function status_count(status, client)
  if status ~= 'finished' then return redis.call('ZCARD', k_st(status, client)) end
  local n = redis.call('ZCARD', k_all(client))
  for _, s in ipairs(INDEXED) do n = n - redis.call('ZCARD', k_st(s, client)) end
  return math.max(0, n)
end
"#;

/// {status, number, ...} of every status with jobs, overall or (`ARGV[3]`, '' = all) one
/// client's: [`crate::storage::JobStore::counts`].
pub(super) static COUNTS: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS],
        r#"
local client = ARGV[3]
if client == '' then client = nil end
local out = {}
for _, s in ipairs(INDEXED) do
  local n = redis.call('ZCARD', k_st(s, client))
  if n > 0 then table.insert(out, s); table.insert(out, n) end
end
local f = status_count('finished', client)
if f > 0 then table.insert(out, 'finished'); table.insert(out, f) end
return out
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&COUNTS) }

/// Scores are doubles: positions beyond 2^53 ms (year 287,000) are clamped.
const MAX_SCORE: u64 = 1 << 53;

/// Answers a page (`mode` = `page`: `{next_ms, next_id, doc...}`, empty next = the end) or a
/// count (`count`: an integer). See the module docs and [`crate::storage::JobQuery`].
static QUERY: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS],
        r#"
local mode, client, blueprint, statuses, from, to, prefix, after_ms, after_id, limit, budget, maxcand =
  ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], ARGV[10], ARGV[11],
  tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
if client == '' then client = nil end
if blueprint == '' then blueprint = nil end
if after_ms == '' then after_ms = nil else after_ms = tonumber(after_ms) end
local want = {}
local slist = {}
for s in string.gmatch(statuses, '[^,]+') do want[s] = true; slist[#slist + 1] = s end
-- Byte order (Lua's own string comparison follows the locale).
local function bytes_gt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local function gt(a_ms, a_id, b_ms, b_id)
  if a_ms ~= b_ms then return a_ms > b_ms end
  return bytes_gt(a_id, b_id)
end
local function finish(out, next_ms, next_id)
  local res = {next_ms and string.format('%d', next_ms) or '', next_id or ''}
  if #out > 0 then
    local keys = {}
    for i, id in ipairs(out) do keys[i] = P .. 'job:' .. id end
    local docs = redis.call('MGET', unpack(keys))
    for i = 1, #out do
      if docs[i] then res[#res + 1] = docs[i] end
    end
  end
  return res
end
if from > to then
  if mode == 'count' then return 0 end
  return finish({}, nil, nil)
end
-- The per-status counts decide a count by statuses alone.
if mode == 'count' and #slist > 0 and not blueprint and prefix == '' and from <= 0 and to >= 9007199254740992 then
  local n = 0
  for _, s in ipairs(slist) do n = n + status_count(s, client) end
  return n
end
local bpk = blueprint and k_bp(blueprint, client)
local base = k_all(client)
local function status_ok(id)
  return want[redis.call('HGET', P .. 'jobstatus', id)] == true
end
local function bp_ok(id)
  return redis.call('ZSCORE', bpk, id) ~= false
end

-- An id prefix few ids share: from the id index, exactly.
if prefix ~= '' then
  local lo, hi = '[' .. prefix, '(' .. prefix .. '\255'
  if redis.call('ZLEXCOUNT', P .. 'jobs:ids', lo, hi) <= maxcand then
    local found = {}
    for _, id in ipairs(redis.call('ZRANGEBYLEX', P .. 'jobs:ids', lo, hi)) do
      local ms = redis.call('ZSCORE', base, id)
      if ms then
        ms = tonumber(ms)
        if ms >= from and ms <= to and (not after_ms or gt(after_ms, after_id, ms, id))
          and (#slist == 0 or status_ok(id)) and (not blueprint or bp_ok(id)) then
          found[#found + 1] = {ms, id}
        end
      end
    end
    if mode == 'count' then return #found end
    table.sort(found, function(a, b) return gt(a[1], a[2], b[1], b[2]) end)
    local out = {}
    for i = 1, math.min(limit, #found) do out[i] = found[i][2] end
    if #found > limit then return finish(out, found[limit][1], found[limit][2]) end
    return finish(out, nil, nil)
  end
end

-- The smallest index (or union of per-status indexes) that covers the filters.
local sources, by = {base}, 'all'
local best = redis.call('ZCARD', base)
if #slist > 0 and not want['finished'] then
  local keys, n = {}, 0
  for i, s in ipairs(slist) do keys[i] = k_st(s, client); n = n + redis.call('ZCARD', keys[i]) end
  if n <= best then sources, by, best = keys, 'status', n end
end
if blueprint then
  local n = redis.call('ZCARD', bpk)
  if n <= best then sources, by, best = {bpk}, 'blueprint', n end
end
local check_status = #slist > 0 and by ~= 'status'
local check_bp = blueprint ~= nil and by ~= 'blueprint'
local function passes(id)
  if prefix ~= '' and string.sub(id, 1, #prefix) ~= prefix then return false end
  if check_status and not status_ok(id) then return false end
  if check_bp and not bp_ok(id) then return false end
  return true
end
local lo, hi = string.format('%d', from), string.format('%d', to)
local function in_range(key)
  return redis.call('ZCOUNT', key, lo, hi)
end
if mode == 'count' and not check_status and not check_bp and prefix == '' then
  local n = 0
  for _, key in ipairs(sources) do n = n + in_range(key) end
  return n
end

-- Up to n entries of `key` strictly after the position (pms, pid) (nil: from the top of the
-- range), as {ms, id} pairs; and whether there may be more.
local function fetch(key, pms, pid, n)
  local max, off = to, 0
  if pms then
    max = math.min(pms, to)
    if pms <= to then
      -- Skip the entries at the cursor's ms whose id is not below the cursor's.
      local r = redis.call('ZREVRANK', key, pid)
      local sc = r and redis.call('ZSCORE', key, pid)
      if sc and tonumber(sc) == pms then
        off = r - redis.call('ZCOUNT', key, '(' .. string.format('%d', pms), '+inf') + 1
      else
        while true do
          local tie = redis.call('ZREVRANGEBYSCORE', key, pms, pms, 'LIMIT', off, 256)
          local stop = #tie < 256
          for _, m in ipairs(tie) do
            if bytes_gt(pid, m) then stop = true; break end
            off = off + 1
          end
          if stop then break end
        end
      end
    end
  end
  local raw = redis.call('ZREVRANGEBYSCORE', key, string.format('%d', max), lo, 'WITHSCORES', 'LIMIT', off, n)
  local list = {}
  for i = 1, #raw, 2 do list[#list + 1] = {tonumber(raw[i + 1]), raw[i]} end
  return list, #list == n
end

local out, seen, matched = {}, 0, 0
local pms, pid = after_ms, after_id
local chunk = math.max(limit, 32)
if by ~= 'all' or check_status or check_bp or prefix ~= '' then chunk = math.max(chunk, 256) end
local ended = false
while true do
  local cands, frontier, any_full = {}, nil, false
  for _, key in ipairs(sources) do
    local list, full = fetch(key, pms, pid, chunk)
    for _, c in ipairs(list) do cands[#cands + 1] = c end
    if full then
      any_full = true
      local last = list[#list]
      if not frontier or gt(last[1], last[2], frontier[1], frontier[2]) then frontier = last end
    end
  end
  if #sources > 1 then table.sort(cands, function(a, b) return gt(a[1], a[2], b[1], b[2]) end) end
  local stopped = false
  local i = 0
  while i < #cands do
    i = i + 1
    local c = cands[i]
    if frontier and gt(frontier[1], frontier[2], c[1], c[2]) then break end
    seen = seen + 1
    pms, pid = c[1], c[2]
    if passes(c[2]) then
      matched = matched + 1
      if mode ~= 'count' then out[#out + 1] = c[2] end
    end
    if (mode ~= 'count' and #out >= limit) or seen >= budget then stopped = true; break end
  end
  if stopped then
    ended = (not any_full) and i >= #cands
    break
  end
  if not any_full then ended = true; break end
  chunk = math.min(chunk * 2, 4096)
end
if mode == 'count' then
  if ended or seen == 0 then return matched end
  local total = 0
  for _, key in ipairs(sources) do total = total + in_range(key) end
  return math.floor(matched * total / seen + 0.5)
end
if ended then return finish(out, nil, nil) end
return finish(out, pms, pid)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&QUERY) }

/// Runs [`QUERY`] for `q` in `mode`.
async fn run_query(conn: &RedisConn, mode: &str, q: &CheckedQuery<'_>) -> Result<redis::Value, StorageError> {
    let score = |v: u64| v.min(MAX_SCORE);
    let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
    let (after_ms, after_id) = match q.after.filter(|_| mode == "page") {
        Some(c) => (score(c.created_at_ms).to_string(), c.id.as_str()),
        None => (String::new(), ""),
    };
    let budget = if mode == "count" { JOB_QUERY_COUNT_LIMIT } else { JOB_QUERY_SCAN_LIMIT };
    conn.script(
        &QUERY,
        false,
        &[
            &mode,
            &q.client.unwrap_or(""),
            &q.blueprint.unwrap_or(""),
            &statuses.join(","),
            &score(q.from_ms),
            &score(q.to_ms),
            &q.id_prefix.unwrap_or(""),
            &after_ms,
            &after_id,
            &(q.limit as u64),
            &(budget as u64),
            &(JOB_QUERY_PREFIX_CANDIDATES as u64),
        ],
    )
    .await
}

/// [`crate::storage::JobStore::query`].
pub(super) async fn query_page(conn: &RedisConn, query: &JobQuery) -> Result<JobPage, StorageError> {
    let q = query.checked()?;
    let parts = reply::array(run_query(conn, "page", &q).await?)?;
    let (next_ms, next_id) =
        (parts.first().and_then(reply::string), parts.get(1).and_then(reply::string).unwrap_or_default());
    let next = match next_ms.filter(|ms| !ms.is_empty()) {
        Some(ms) => Some(JobCursor {
            created_at_ms: ms.parse().map_err(|_| StorageError::Corrupt(format!("query cursor {ms}")))?,
            id: next_id,
        }),
        None => None,
    };
    let mut jobs = Vec::with_capacity(parts.len().saturating_sub(2));
    for doc in parts.iter().skip(2).filter_map(reply::string) {
        match from_json::<Job>("job", &doc) {
            Ok(job) => jobs.push(job),
            // As in the lists: an unreadable record must not take the page with it.
            Err(e) => tracing::warn!(error = %e, "job record cannot be read; left out of the page"),
        }
    }
    Ok(JobPage { jobs, next })
}

/// [`crate::storage::JobStore::count`].
pub(super) async fn count_jobs(conn: &RedisConn, query: &JobQuery) -> Result<u64, StorageError> {
    let q = query.checked()?;
    let v = run_query(conn, "count", &q).await?;
    reply::int(&v).map(|n| n.max(0) as u64).ok_or_else(|| StorageError::Corrupt(format!("count reply {v:?}")))
}

#[cfg(test)]
mod tests {
    use crate::job::JobStatus;

    /// The Lua list of indexed statuses is every status but `finished`.
    #[test]
    fn indexed_statuses_are_every_status_but_finished() {
        let want: Vec<String> =
            JobStatus::ALL.iter().filter(|s| **s != JobStatus::Finished).map(|s| format!("'{}'", s.as_str())).collect();
        let list = super::QKEYS.split("local INDEXED = {").nth(1).unwrap().split('}').next().unwrap();
        let got: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
        assert_eq!(got, want);
    }
}
