"""The queue's Lua scripts: each state change of a job is one atomic script.

Each script's calling convention (its ``KEYS`` and ``ARGV`` by name, with encodings) is
declared in :mod:`mimir.core.queue.protocol`, and its source starts with the same names
as locals (``local scheduled = KEYS[1]`` …); :meth:`Script.call` builds a call from
names. Every key a caller can name is in ``KEYS`` (see the protocol module for the keys a
script learns from Redis as it runs). Times come from the caller (``now_ms``, epoch ms,
which also names the ``rate`` key's second); the stored times are ISO 8601 UTC made from it.

Each script writes the record, moves the stream entry, adds one to the record's
``version`` and publishes a JSON event (the record but its result, with that version) on
the events channel. A worker's writes are *fenced*: they apply only while the record
still names that worker and that attempt, so a worker that lost its lease cannot
overwrite the outcome of the worker that took the job over.

Scripts run by SHA (``EVALSHA``) and are loaded again when Redis answers ``NOSCRIPT``
(after a restart).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from mimir.core.queue.connection import NotReplicatedError, replication_wait
from mimir.core.queue.keys import OUTCOMES_MAXLEN
from mimir.core.queue.protocol import (
    DELIVERY_FIELDS,
    INTERNAL_FIELDS,
    RECORD_FIELDS,
    SCRIPTS,
    ScriptSpec,
    event_fields,
)

__all__ = [
    "CANCEL",
    "DELETE_DEAD",
    "ENQUEUE",
    "FETCH",
    "FINISH",
    "MOVE_DUE",
    "PROGRESS",
    "RECONCILE",
    "RELEASE",
    "RENEW",
    "RETRY_DEAD",
    "UNDECLARED_KEYS_FLAG",
    "Script",
    "run_scripts",
]


def _lua_list(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{name}'" for name in names) + "}"


def _publish_lua() -> str:
    """``event(jobid, version, t)``: a ``job`` event's JSON from ``t`` (the record's
    fields by name, as stored; unset ones absent), its fields from the protocol's
    declaration; and ``publish(events, jk, jobid)``, which raises the stored version and
    publishes the record as it stands."""
    names = event_fields()
    parts = []
    for name in names:
        encoding = RECORD_FIELDS[name]
        field = f"t.{name}"
        if encoding == "json":
            value = f"(({field} or '') ~= '' and cjson.decode({field}) or cjson.null)"
        elif encoding in ("int", "float"):
            value = f"(tonumber({field}) or cjson.null)"
        elif encoding == "flag":
            value = f"{field} == '1'"
        else:
            value = f"nul({field})"
        parts.append(f"    {name} = {value},")
    return (
        "local EVENT_FIELDS = " + _lua_list(names) + "\n"
        "local function event(jobid, version, t)\n"
        "  return cjson.encode({job_id = jobid, version = version,\n"
        + "\n".join(parts)
        + "\n  })\nend\n"
        "local function publish(events, jk, jobid)\n"
        "  local version = redis.call('HINCRBY', jk, 'version', 1)\n"
        "  local f = redis.call('HMGET', jk, unpack(EVENT_FIELDS))\n"
        "  local t = {}\n"
        "  for i, name in ipairs(EVENT_FIELDS) do if f[i] then t[name] = f[i] end end\n"
        "  redis.call('PUBLISH', events, event(jobid, version, t))\n"
        "end\n"
    )


# Functions every script may call; they take what they need as parameters, so each
# script's own header (its named KEYS and ARGV) stays the only place positions appear.
_LIB = (
    r"""
local function nul(x) if x then return x end return cjson.null end

-- Epoch ms as ISO 8601 UTC with ms (days to civil date: H. Hinnant's method).
local function iso(ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, ms - secs * 1000)
end

-- Redis's clock in epoch ms.
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Every change of a job record ends in publish: its version grows by one and the change
-- is published with it. Readers (the console's live table) keep the highest version they
-- have seen, so a record read before a change can never overwrite the change's event.
-- The event carries every record field but the result (which may be large); a field
-- that is unset is sent as null, so a reader clears it too (a retry unsets the times).
"""
    + _publish_lua()
    + f"""
-- Approximate cap of the outcome stream (entries).
local OUTCOMES_MAXLEN = {OUTCOMES_MAXLEN}

-- Hash fields that are not part of the job record.
local HIDDEN = {{{", ".join(f"{name} = true" for name in INTERNAL_FIELDS)}}}
"""
    + r"""
-- The job hash as a table (field -> text), or nil when there is none: one read that
-- serves the fence, the checks, the event and the waiters' token.
local function load(jk)
  local flat = redis.call('HGETALL', jk)
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Tally a job ended with status in q.counts, written once per script by flush(q).
local function tally(q, status)
  q.counts[status] = (q.counts[status] or 0) + 1
end

-- The totals and this second's rate, once for every job the script ended.
local function flush(q)
  local any = false
  for status, n in pairs(q.counts) do
    redis.call('HINCRBY', q.totals, status, n)
    redis.call('HINCRBY', q.rate, status, n)
    any = true
  end
  if any then redis.call('EXPIRE', q.rate, 120) end
end

-- End a job: q = {events, dead, totals, rate, outcomes, ttl, now_ms, counts}; dk is its
-- done list; t its record as loaded (kept current here); extra: more fields to write
-- (result, progress); detail: the worker's steps, logs and artifacts (JSON text) or ''.
local function finalize(q, jk, dk, jobid, t, status, err, extra, detail)
  local now_iso = iso(q.now_ms)
  local version = (tonumber(t.version) or 0) + 1
  t.status, t.finished_at, t.version = status, now_iso, tostring(version)
  local w = {'version', version}
  if err and err ~= '' then
    redis.call('HSET', jk, 'error', err)
    t.error = err
  end
  for k, v in pairs(extra or {}) do
    w[#w + 1] = k
    w[#w + 1] = v
    t[k] = v
  end
  if status == 'failed' or status == 'dead' then
    local eid = redis.call('XADD', q.dead, '*', 'job_id', jobid, 'status', status,
      'error', err or '', 'at', now_iso)
    w[#w + 1] = 'dead_entry'
    w[#w + 1] = eid
    t.dead_entry = eid
    redis.call('XTRIM', q.dead, 'MINID', '~', string.format('%d', q.now_ms - q.ttl * 1000))
  end
  redis.call('HSET', jk, 'status', status, 'finished_at', now_iso, unpack(w))
  redis.call('EXPIRE', jk, q.ttl)
  tally(q, status)
  -- The event first: the record waiters get below carries the new version.
  redis.call('PUBLISH', q.events, event(jobid, version, t))
  -- Wake waiters with the record itself (one round trip for them), unless it is large.
  local record = {}
  for k, v in pairs(t) do
    if not HIDDEN[k] then record[k] = v end
  end
  local text = cjson.encode(record)
  -- The run store's copy: the record whole, and what the worker saw, in the same step.
  redis.call('XADD', q.outcomes, 'MAXLEN', '~', OUTCOMES_MAXLEN, '*', 'job', jobid,
    'record', text, 'detail', detail or '')
  if #text > 65536 then text = status end
  redis.call('DEL', dk)
  redis.call('RPUSH', dk, text)
  redis.call('EXPIRE', dk, q.ttl)
end

local function drop_entry(stream, group, eid)
  redis.call('XACK', stream, group, eid)
  redis.call('XDEL', stream, eid)
end
"""
)

#: First line of the scripts that touch keys they learn as they run (see
#: :mod:`mimir.core.queue.protocol`): Dragonfly's flag allowing it (it refuses undeclared
#: keys otherwise); a Lua comment for Redis and Valkey, whose scripts without a ``#!``
#: line may touch any key of the slot they run in (every key of a prefix with a hash tag).
UNDECLARED_KEYS_FLAG = "--!df flags=allow-undeclared-keys"  # the source goes on with "\n"

ENQUEUE = (
    r"""
local index = KEYS[1]
local scheduled = KEYS[2]
local queues = KEYS[3]
-- KEYS[4..]: job, stream, idem per job
local now_ms = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local events = ARGV[3]
local jobs = ARGV[4]
"""
    + _LIB
    + r"""
-- jobs: JSON array, each {queue, idem: 1 when its idem key counts, due: ms or 0,
-- f: {hash fields, job_id among them}}. Answers {job id, 1} per job created,
-- {existing job id, 0} per idempotency-key hit. A new record is written whole by one
-- HSET (its stream entry and version 1 in it) and its event is made from what was sent.
local out = {}
local pools = {}
for i, job in ipairs(cjson.decode(jobs)) do
  local base = 4 + (i - 1) * 3
  local jk, stream, ik = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local f = job.f
  local id, created = f.job_id, 1
  if job.idem == 1 then
    local existing = redis.call('GET', ik)
    if existing then
      id, created = existing, 0
    else
      redis.call('SET', ik, id, 'EX', ttl)
    end
  end
  if created == 1 then
    if job.due > 0 then
      redis.call('ZADD', scheduled, job.due, id)
    else
      f.entry = redis.call('XADD', stream, '*', 'job', id)
    end
    local fields = {}
    for k, v in pairs(f) do
      fields[#fields + 1] = k
      fields[#fields + 1] = v
    end
    redis.call('HSET', jk, 'version', 1, unpack(fields))
    redis.call('EXPIRE', jk, ttl)
    redis.call('ZADD', index, now_ms, id)
    pools[job.queue] = true
    redis.call('PUBLISH', events, event(id, 1, f))
  end
  out[#out + 1] = id
  out[#out + 1] = created
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now_ms - ttl * 1000)
for pool in pairs(pools) do redis.call('SADD', queues, pool) end
return out
"""
)

FETCH = (
    UNDECLARED_KEYS_FLAG
    + r"""
local dead = KEYS[1]
local totals = KEYS[2]
local rate = KEYS[3]
local outcomes = KEYS[4]
-- KEYS[5..]: stream per stream
local now_ms = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local group = ARGV[3]
local worker = ARGV[4]
local events = ARGV[5]
local job_prefix = ARGV[6]
local done_prefix = ARGV[7]
local mode = ARGV[8]
local count = tonumber(ARGV[9])
local min_idle_ms = tonumber(ARGV[10])
-- ARGV[11..]: cap per stream
"""
    + _LIB
    + f"""
local DELIVERY = {_lua_list(DELIVERY_FIELDS)}
"""
    + r"""
-- mode 'read': new entries, each stream in turn up to its cap (and `count` in all);
-- 'pending': what a blocking XREADGROUP sent just before in the same pipeline delivered
-- to this consumer (its pending entries whose job is not running yet); 'reclaim': entries
-- idle (their lease run out) for min_idle_ms. Answers {stream, entry id, {name, value …}
-- (the DELIVERY fields that are set)} per job started.
local q = {events = events, dead = dead, totals = totals, rate = rate, outcomes = outcomes,
  ttl = ttl, now_ms = now_ms, counts = {}}
local out = {}

-- One read of the record, one write, one event per job started. not_running: leave a job
-- already running alone (the caller's own pending list holds its running jobs too).
local function start(stream, eid, jobid, not_running)
  local jk = job_prefix .. jobid
  local t = load(jk)
  local st = t and t.status
  if not_running and st == 'running' then return end
  if (not st) or (st ~= 'queued' and st ~= 'running') or (t.entry and t.entry ~= eid) then
    drop_entry(stream, group, eid)  -- expired, already ended, or a stale duplicate entry
    return
  end
  if t.cancel_requested == '1' then
    drop_entry(stream, group, eid)
    finalize(q, jk, done_prefix .. jobid, jobid, t, 'cancelled', '')
    return
  end
  local attempts = (tonumber(t.attempts) or 0) + 1
  local max_retries = tonumber(t.max_retries) or 0
  if attempts > max_retries + 1 then
    drop_entry(stream, group, eid)
    local why = 'delivered ' .. attempts .. ' times without finishing (max_retries=' ..
      max_retries .. '): its workers died or lost their lease'
    if t.error then why = why .. '; last error: ' .. t.error end
    finalize(q, jk, done_prefix .. jobid, jobid, t, 'dead', why)
    return
  end
  local now_iso = iso(q.now_ms)
  local version = (tonumber(t.version) or 0) + 1
  redis.call('HSET', jk, 'status', 'running', 'worker_id', worker, 'started_at', now_iso,
    'attempts', attempts, 'version', version)
  t.status, t.worker_id, t.started_at = 'running', worker, now_iso
  t.attempts, t.version = tostring(attempts), tostring(version)
  redis.call('PUBLISH', events, event(jobid, version, t))
  local named = {}
  for _, name in ipairs(DELIVERY) do
    if t[name] then
      named[#named + 1] = name
      named[#named + 1] = t[name]
    end
  end
  out[#out + 1] = {stream, eid, named}
  count = count - 1
end

local function read_group(stream, n)
  local res = redis.pcall('XREADGROUP', 'GROUP', group, worker, 'COUNT', n, 'STREAMS', stream,
    '>')
  if type(res) == 'table' and res.err then
    if string.find(res.err, 'NOGROUP') then
      redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
      return nil
    end
    return redis.error_reply(res.err)
  end
  return res
end

if mode == 'read' then
  for i = 5, #KEYS do
    if count <= 0 then break end
    local cap = math.min(tonumber(ARGV[i + 6]), count)
    local res = read_group(KEYS[i], cap)
    if res then
      for _, entry in ipairs(res[1][2]) do
        start(KEYS[i], entry[1], entry[2][2])
      end
    end
  end
elseif mode == 'pending' then
  -- The caller's time is from before the block: take the time now.
  q.now_ms = clock_ms()
  for i = 5, #KEYS do
    -- This consumer's whole pending list: its running jobs are in it too (skipped).
    local res = redis.pcall('XPENDING', KEYS[i], group, '-', '+', 1000, worker)
    if not (type(res) == 'table' and res.err) then
      for _, p in ipairs(res) do
        local entry = redis.call('XRANGE', KEYS[i], p[1], p[1])[1]
        if entry then
          start(KEYS[i], p[1], entry[2][2], true)
        else
          -- Deleted since the read delivered it (a cancel of the queued job): nothing to
          -- run, so it leaves the pending list now (it counted as running until reclaimed).
          redis.call('XACK', KEYS[i], group, p[1])
        end
      end
    end
  end
elseif mode == 'reclaim' then
  for i = 5, #KEYS do
    if count <= 0 then break end
    local res = redis.pcall('XAUTOCLAIM', KEYS[i], group, worker, min_idle_ms, '0-0', 'COUNT',
      count)
    if not (type(res) == 'table' and res.err) then
      for _, entry in ipairs(res[2]) do
        if entry[2] then start(KEYS[i], entry[1], entry[2][2])
        else redis.call('XACK', KEYS[i], group, entry[1]) end
      end
    end
  end
end
flush(q)
return out
"""
)

FINISH = (
    r"""
local scheduled = KEYS[1]
local duration = KEYS[2]
local dead = KEYS[3]
local totals = KEYS[4]
local rate = KEYS[5]
local outcomes = KEYS[6]
-- KEYS[7..]: job, done, stream per outcome
local now_ms = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local group = ARGV[3]
local worker = ARGV[4]
local events = ARGV[5]
local entries = ARGV[6]
"""
    + _LIB
    + r"""
-- entries: JSON array, each {e: entry id, j: job id, a: attempt (text), k: 'succeeded' |
-- 'failed' | 'cancelled' | 'retry' | 'requeue', r: result JSON or '', err: error or '',
-- due: retry due (ms), b: duration bucket field or '', d: duration (s), p: progress JSON
-- or '', x: detail JSON or '' (onto the outcome stream with a final status)}. Answers 1
-- (written) or 0 (fenced off) per outcome.
-- The totals, rate and duration histogram are written once per call, for all its jobs.
local q = {events = events, dead = dead, totals = totals, rate = rate, outcomes = outcomes,
  ttl = ttl, now_ms = now_ms, counts = {}}
local out = {}
local buckets, seconds, timed = {}, 0, 0
for i, o in ipairs(cjson.decode(entries)) do
  local base = 7 + (i - 1) * 3
  local jk, dk, stream = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local t = load(jk)
  if (not t) or t.worker_id ~= worker or t.attempts ~= o.a or t.status ~= 'running' then
    out[i] = 0
  elseif o.k ~= 'retry' and o.k ~= 'requeue' then
    out[i] = 1
    drop_entry(stream, group, o.e)
    local extra = {}
    if o.r ~= '' then extra.result = o.r end
    if o.p ~= '' then extra.progress = o.p end
    finalize(q, jk, dk, o.j, t, o.k, o.err, extra, o.x)
    if o.b ~= '' then
      buckets[o.b] = (buckets[o.b] or 0) + 1
      seconds = seconds + o.d
      timed = timed + 1
    end
  else
    out[i] = 1
    drop_entry(stream, group, o.e)
    if o.r ~= '' then redis.call('HSET', jk, 'result', o.r) end
    if o.p ~= '' then redis.call('HSET', jk, 'progress', o.p) end
    if o.k == 'retry' then
      redis.call('HSET', jk, 'status', 'scheduled', 'scheduled_for', iso(o.due), 'error', o.err)
      redis.call('ZADD', scheduled, o.due, o.j)
      publish(events, jk, o.j)
    elseif o.k == 'requeue' then
      local neid = redis.call('XADD', stream, '*', 'job', o.j)
      redis.call('HSET', jk, 'status', 'queued', 'entry', neid)
      redis.call('HINCRBY', jk, 'attempts', -1)
      publish(events, jk, o.j)
    end
  end
end
flush(q)
if timed > 0 then
  for b, n in pairs(buckets) do redis.call('HINCRBY', duration, b, n) end
  redis.call('HINCRBYFLOAT', duration, 'sum', seconds)
  redis.call('HINCRBY', duration, 'count', timed)
end
return out
"""
)

PROGRESS = (
    r"""
local job = KEYS[1]
local worker = ARGV[1]
local attempt = tonumber(ARGV[2])
local progress = ARGV[3]
local events = ARGV[4]
local job_id = ARGV[5]
"""
    + _LIB
    + r"""
local f = redis.call('HMGET', job, 'worker_id', 'attempts', 'status')
if f[1] ~= worker or tonumber(f[2]) ~= attempt or f[3] ~= 'running' then return 0 end
redis.call('HSET', job, 'progress', progress)
publish(events, job, job_id)
return 1
"""
)

RENEW = (
    r"""
-- KEYS[1..]: job, stream per job
local group = ARGV[1]
local worker = ARGV[2]
-- ARGV[3..]: entry, attempt per job
"""
    + r"""
-- Resets the idle time of each entry this worker still holds (the lease); answers 'ok',
-- 'cancel' (cancellation requested) or 'lost' per job.
local out = {}
for i = 1, #KEYS, 2 do
  local jk, stream = KEYS[i], KEYS[i + 1]
  local eid, attempt = ARGV[i + 2], ARGV[i + 3]
  local f = redis.call('HMGET', jk, 'worker_id', 'attempts', 'status', 'cancel_requested')
  if f[1] == worker and f[2] == attempt and f[3] == 'running' then
    redis.call('XCLAIM', stream, group, worker, 0, eid, 'JUSTID')
    if f[4] == '1' then out[#out + 1] = 'cancel' else out[#out + 1] = 'ok' end
  else
    out[#out + 1] = 'lost'
  end
end
return out
"""
)

MOVE_DUE = (
    UNDECLARED_KEYS_FLAG
    + r"""
local scheduled = KEYS[1]
local now_ms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local job_prefix = ARGV[3]
local events = ARGV[4]
"""
    + _LIB
    + r"""
-- Moves due jobs into their streams; answers {moved, next due score or false}.
local ids = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now_ms, 'LIMIT', 0, limit)
for _, jobid in ipairs(ids) do
  redis.call('ZREM', scheduled, jobid)
  local jk = job_prefix .. jobid
  local f = redis.call('HMGET', jk, 'status', 'stream')
  if f[1] == 'scheduled' and f[2] then
    local eid = redis.call('XADD', f[2], '*', 'job', jobid)
    redis.call('HSET', jk, 'status', 'queued', 'entry', eid)
    publish(events, jk, jobid)
  end
end
local nxt = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
return {#ids, nxt[2] or false}
"""
)

CANCEL = (
    r"""
local job = KEYS[1]
local done = KEYS[2]
local scheduled = KEYS[3]
local dead = KEYS[4]
local totals = KEYS[5]
local rate = KEYS[6]
local outcomes = KEYS[7]
local stream = KEYS[8]
local now_ms = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local events = ARGV[3]
local cancel = ARGV[4]
local job_id = ARGV[5]
"""
    + _LIB
    + r"""
local q = {events = events, dead = dead, totals = totals, rate = rate, outcomes = outcomes,
  ttl = ttl, now_ms = now_ms, counts = {}}
-- stream: the record's `stream` as the caller read it just before ('moved': it read
-- another, so it reads again; a job's stream never changes, so this does not happen).
local t = load(job)
if not t then return 'missing' end
if t.stream and t.stream ~= stream then return 'moved' end
if t.status == 'queued' then
  if t.stream and t.entry then redis.call('XDEL', stream, t.entry) end
  finalize(q, job, done, job_id, t, 'cancelled', '')
  flush(q)
  return 'cancelled'
elseif t.status == 'scheduled' then
  redis.call('ZREM', scheduled, job_id)
  finalize(q, job, done, job_id, t, 'cancelled', '')
  flush(q)
  return 'cancelled'
elseif t.status == 'running' then
  redis.call('HSET', job, 'cancel_requested', '1')
  redis.call('PUBLISH', cancel, job_id)
  publish(events, job, job_id)
  return 'cancelling'
end
return 'ended:' .. t.status
"""
)

RETRY_DEAD = (
    r"""
local job = KEYS[1]
local done = KEYS[2]
local dead = KEYS[3]
local stream = KEYS[4]
local ttl = tonumber(ARGV[1])
local events = ARGV[2]
local job_id = ARGV[3]
"""
    + _LIB
    + r"""
-- Answers the record (flat HGETALL) as re-queued, or why not ('moved': the caller read
-- another `stream` than the record's; it reads again).
local f = redis.call('HMGET', job, 'status', 'stream', 'dead_entry')
if not f[1] then return 'missing' end
if f[1] ~= 'failed' and f[1] ~= 'dead' then return f[1] end
if f[2] ~= stream then return 'moved' end
if f[3] then redis.call('XDEL', dead, f[3]) end
redis.call('HDEL', job, 'dead_entry', 'error', 'result', 'finished_at', 'started_at',
  'worker_id', 'progress', 'cancel_requested', 'scheduled_for')
local eid = redis.call('XADD', stream, '*', 'job', job_id)
redis.call('HSET', job, 'status', 'queued', 'attempts', 0, 'entry', eid)
redis.call('DEL', done)
redis.call('EXPIRE', job, ttl)
publish(events, job, job_id)
return redis.call('HGETALL', job)
"""
)

DELETE_DEAD = (
    r"""
local job = KEYS[1]
local done = KEYS[2]
local dead = KEYS[3]
local index = KEYS[4]
local idem = KEYS[5]
local events = ARGV[1]
local idem_prefix = ARGV[2]
local job_id = ARGV[3]
"""
    + r"""
-- Removes a failed or dead job for good: its dead-letter entry, record, done list, index
-- entry and idempotency key (when it still names this job). Publishes `deleted: true`
-- with the next version. Answers 'deleted', 'missing', or the status that forbids it;
-- 'moved' when idem is not the record's idempotency key as the caller read it (it reads
-- again; the key never changes, so this does not happen).
local f = redis.call('HMGET', job, 'status', 'dead_entry', 'idempotency_key', 'version')
if not f[1] then return 'missing' end
if f[1] ~= 'failed' and f[1] ~= 'dead' then return f[1] end
if f[3] and idem_prefix .. f[3] ~= idem then return 'moved' end
if f[2] then redis.call('XDEL', dead, f[2]) end
if f[3] and redis.call('GET', idem) == job_id then redis.call('DEL', idem) end
redis.call('DEL', job, done)
redis.call('ZREM', index, job_id)
redis.call('PUBLISH', events, cjson.encode({job_id = job_id, status = f[1],
  version = (tonumber(f[4]) or 0) + 1, deleted = true}))
return 'deleted'
"""
)

RELEASE = (
    r"""
local index = KEYS[1]
-- KEYS[2..]: job, done, log per job
-- ARGV[1..]: job_id per job
"""
    + r"""
-- Once a run is stored, drops what only the run needed from each ended job: its record,
-- its live log stream and its index entry. Its done list keeps one token, the status
-- (with the TTL it had), so a later wait answers at once; the idempotency key stays.
-- A job not ended (or gone) is left alone. Answers how many were released.
local released = 0
for i = 2, #KEYS, 3 do
  local jk, dk, lk = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local jobid = ARGV[(i + 1) / 3]
  local status = redis.call('HGET', jk, 'status')
  if status == 'succeeded' or status == 'failed' or status == 'cancelled'
      or status == 'dead' then
    local left = redis.call('PTTL', dk)
    if left <= 0 then left = redis.call('PTTL', jk) end
    redis.call('DEL', jk, dk, lk)
    if left > 0 then
      redis.call('RPUSH', dk, status)
      redis.call('PEXPIRE', dk, left)
    end
    redis.call('ZREM', index, jobid)
    released = released + 1
  end
end
return released
"""
)

RECONCILE = (
    r"""
local scheduled = KEYS[1]
local dead = KEYS[2]
-- KEYS[3..]: job, done, stream per job
local now_ms = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local group = ARGV[3]
local events = ARGV[4]
-- ARGV[5..]: job_id, final per job
"""
    + _LIB
    + r"""
-- After a restore of a Redis snapshot older than the run store's, with no worker running:
-- final: the status of the job's run in the run store when it has ended there, else ''.
-- A job not ended here that has ended there is ended here the same way (its stream entry
-- acknowledged and deleted, out of the scheduled set, the done list filled, failed/dead
-- into the dead letter), without an outcome (the run is stored already) nor a tally. A
-- job a worker of the old host held (running, or its entry delivered and not yet
-- started) goes back to its stream under a fresh entry, its interrupted attempt not
-- counted; the rest is left alone. Answers per job: 'finalised', 'requeued', 'untouched'
-- or 'skipped' (no record, or ended already).
local function settle(jk, dk, stream, jobid, t, status)
  if t.stream and t.entry then
    redis.pcall('XACK', stream, group, t.entry)
    redis.call('XDEL', stream, t.entry)
  end
  redis.call('ZREM', scheduled, jobid)
  local now_iso = iso(now_ms)
  local version = (tonumber(t.version) or 0) + 1
  t.status, t.finished_at, t.version = status, now_iso, tostring(version)
  local w = {'status', status, 'finished_at', now_iso, 'version', version}
  if status == 'failed' or status == 'dead' then
    if (t.error or '') == '' then
      t.error = 'ended ' .. status .. ' before the restored backup was taken (see its run)'
      w[#w + 1] = 'error'
      w[#w + 1] = t.error
    end
    local eid = redis.call('XADD', dead, '*', 'job_id', jobid, 'status', status,
      'error', t.error, 'at', now_iso)
    w[#w + 1] = 'dead_entry'
    w[#w + 1] = eid
    t.dead_entry = eid
  end
  redis.call('HSET', jk, unpack(w))
  redis.call('EXPIRE', jk, ttl)
  redis.call('PUBLISH', events, event(jobid, version, t))
  local record = {}
  for k, v in pairs(t) do
    if not HIDDEN[k] then record[k] = v end
  end
  local text = cjson.encode(record)
  if #text > 65536 then text = status end
  redis.call('DEL', dk)
  redis.call('RPUSH', dk, text)
  redis.call('EXPIRE', dk, ttl)
end

local ENDED = {succeeded = true, failed = true, cancelled = true, dead = true}
local out = {}
-- stream: the record's `stream` as the caller read it ('moved' if the record names
-- another: a job's stream never changes, so this does not happen).
for i = 3, #KEYS, 3 do
  local jk, dk, stream = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local n = (i - 3) / 3
  local jobid, final = ARGV[5 + 2 * n], ARGV[6 + 2 * n]
  local t = load(jk)
  local st = t and t.status
  if (not st) or ENDED[st] then
    out[#out + 1] = 'skipped'
  elseif t.stream and t.stream ~= stream then
    out[#out + 1] = 'moved'
  elseif final ~= '' then
    settle(jk, dk, stream, jobid, t, final)
    out[#out + 1] = 'finalised'
  else
    local held = false
    if t.stream and t.entry then
      local p = redis.pcall('XPENDING', stream, group, t.entry, t.entry, 1)
      held = type(p) == 'table' and p.err == nil and #p > 0
    end
    if t.stream and (held or st == 'running') then
      if t.entry then
        redis.pcall('XACK', stream, group, t.entry)
        redis.call('XDEL', stream, t.entry)
      end
      local eid = redis.call('XADD', stream, '*', 'job', jobid)
      local attempts = tonumber(t.attempts) or 0
      -- FETCH counted the interrupted attempt when it started the job: it does not count.
      if st == 'running' and attempts > 0 then attempts = attempts - 1 end
      redis.call('HDEL', jk, 'worker_id', 'started_at')
      redis.call('HSET', jk, 'status', 'queued', 'entry', eid, 'attempts', attempts)
      publish(events, jk, jobid)
      out[#out + 1] = 'requeued'
    else
      out[#out + 1] = 'untouched'
    end
  end
end
return out
"""
)


class Script:
    """A Lua script with its declared convention, run by SHA and loaded on first use
    and again after a Redis restart (``NOSCRIPT``)."""

    def __init__(self, spec: ScriptSpec, source: str) -> None:
        self.spec = spec
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def call(
        self,
        keys: Mapping[str, str],
        argv: Mapping[str, Any],
        each: Sequence[tuple[Sequence[str], Sequence[Any]]] = (),
    ) -> Call:
        """A call of this script, built from names (see :meth:`ScriptSpec.call`)."""
        key_list, arg_list = self.spec.call(keys, argv, each)
        return Call(self, key_list, arg_list)

    async def run(self, redis: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


class Call:
    """One script call with its ``KEYS`` and ``ARGV``; ``await call.run(redis)``."""

    __slots__ = ("args", "keys", "script")

    def __init__(self, script: Script, keys: list[str], args: list[Any]) -> None:
        self.script = script
        self.keys = keys
        self.args = args

    async def run(self, redis: Redis) -> Any:
        return await self.script.run(redis, self.keys, self.args)

    def queue_on(self, pipe: Any) -> None:
        """Add this call to a pipeline (by SHA; see :func:`run_scripts` for NOSCRIPT).
        Sent as a plain command: a Redis Cluster pipeline refuses ``pipe.evalsha`` but
        routes ``EVALSHA`` by its keys (all in the prefix's one slot)."""
        pipe.execute_command("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


async def run_scripts(
    redis: Redis, calls: Sequence[Call], *, durable: str = "", raise_on_error: bool = True
) -> list[Any]:
    """Run several script calls in one round trip; answers their results in order.

    Calls that found their script missing (Redis restarted) are loaded and run again;
    any other error is raised after the batch (``raise_on_error=False``: left in the
    results, for a caller that tells which call failed). ``durable`` (what the writes are, for the
    message): when ``redis`` was connected with ``min_replicas`` (see
    :func:`~mimir.core.queue.connection.replication_wait`), ``WAIT`` follows the calls
    on the same connection and fewer replicas than required raise
    :class:`~mimir.core.queue.connection.NotReplicatedError` (the writes were made on
    the primary: the caller retries them, which every durable call allows).
    """
    if not calls:
        return []
    replicas, timeout_ms = replication_wait(redis) if durable else (0, 0)
    if len(calls) == 1 and not replicas and raise_on_error:  # cheaper than a pipeline
        return [await calls[0].run(redis)]
    async with redis.pipeline(transaction=False) as pipe:
        for call in calls:
            call.queue_on(pipe)
        if replicas:
            pipe.wait(replicas, timeout_ms)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    # WAIT answers for the writes on its own connection: each pipeline has its own.
    acks: list[Any] = [results.pop()] if replicas else []
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for source in {calls[i].script.source for i in missing}:
            await redis.script_load(source)
        async with redis.pipeline(transaction=False) as pipe:
            for i in missing:
                calls[i].queue_on(pipe)
            if replicas:
                pipe.wait(replicas, timeout_ms)
            again = await pipe.execute(raise_on_error=False)
        if replicas:
            acks.append(again.pop())
        for i, result in zip(missing, again, strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception) and raise_on_error:
            raise result
    for ack in acks:
        if isinstance(ack, Exception):
            raise ack
    if acks and min(int(ack) for ack in acks) < replicas:
        acknowledged = min(int(ack) for ack in acks)
        raise NotReplicatedError(durable, acknowledged, replicas, timeout_ms)
    return results


#: Source of each script, by the name its convention is declared under.
SOURCES: dict[str, str] = {
    "ENQUEUE": ENQUEUE,
    "FETCH": FETCH,
    "FINISH": FINISH,
    "PROGRESS": PROGRESS,
    "RENEW": RENEW,
    "MOVE_DUE": MOVE_DUE,
    "CANCEL": CANCEL,
    "RETRY_DEAD": RETRY_DEAD,
    "DELETE_DEAD": DELETE_DEAD,
    "RELEASE": RELEASE,
    "RECONCILE": RECONCILE,
}

ENQUEUE_SCRIPT = Script(SCRIPTS["ENQUEUE"], ENQUEUE)
FETCH_SCRIPT = Script(SCRIPTS["FETCH"], FETCH)
FINISH_SCRIPT = Script(SCRIPTS["FINISH"], FINISH)
PROGRESS_SCRIPT = Script(SCRIPTS["PROGRESS"], PROGRESS)
RENEW_SCRIPT = Script(SCRIPTS["RENEW"], RENEW)
MOVE_DUE_SCRIPT = Script(SCRIPTS["MOVE_DUE"], MOVE_DUE)
CANCEL_SCRIPT = Script(SCRIPTS["CANCEL"], CANCEL)
RETRY_DEAD_SCRIPT = Script(SCRIPTS["RETRY_DEAD"], RETRY_DEAD)
DELETE_DEAD_SCRIPT = Script(SCRIPTS["DELETE_DEAD"], DELETE_DEAD)
RELEASE_SCRIPT = Script(SCRIPTS["RELEASE"], RELEASE)
RECONCILE_SCRIPT = Script(SCRIPTS["RECONCILE"], RECONCILE)
