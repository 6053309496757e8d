"""The queue's Lua scripts: each state change of a job is one atomic script.

Scripts take no ``KEYS``; key names arrive in ``ARGV`` from :mod:`mimir.core.queue.keys`
(job records are addressed by id under ``job_prefix``), so they target one Redis, not a
cluster. Worker-side scripts share a context block at fixed positions::

    ARGV[1] job_prefix   ARGV[2] done_prefix  ARGV[3] events channel  ARGV[4] totals hash
    ARGV[5] rate hash    ARGV[6] dead stream  ARGV[7] now (ISO)       ARGV[8] now (ms)
    ARGV[9] job ttl (s)  ARGV[10] group       ARGV[11] worker id

Each script writes the record, moves the stream entry, adds one to the record's
``version`` and publishes a JSON event (the record but its result, with that version) on
the events channel. A worker's writes are *fenced*: they apply only while the record
still names that worker and that attempt, so a worker that lost its lease cannot
overwrite the outcome of the worker that took the job over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from mimir.core.queue.keys import GROUP, QueueKeys
from mimir.core.queue.models import iso, utc_now


def context_args(keys: QueueKeys, job_ttl: int, worker_id: str = "") -> list[Any]:
    """The shared context block (``ARGV[1..11]`` above), stamped with the current time."""
    now = utc_now()
    return [
        keys.job_prefix,
        keys.done_prefix,
        keys.events,
        keys.totals,
        keys.rate(int(now.timestamp())),
        keys.dead,
        iso(now),
        int(now.timestamp() * 1000),
        job_ttl,
        GROUP,
        worker_id,
    ]


__all__ = [
    "CANCEL",
    "DELETE_DEAD",
    "ENQUEUE",
    "FETCH",
    "FINISH",
    "MOVE_DUE",
    "PROGRESS",
    "RENEW",
    "RETRY_DEAD",
    "Script",
    "run_scripts",
]

_PRELUDE = r"""
local JP, DP, EVENTS, TOTALS, RATE, DEAD = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local NOW_ISO, NOW_MS, TTL, G, W = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], ARGV[11]

local function nul(x) if x then return x end return cjson.null end

-- Every change of a job record ends here: its version grows by one and the change is
-- published with it. Readers (the console's live table) keep the highest version they
-- have seen, so a record read before a change can never overwrite the change's event.
-- The event carries every record field but the result (which may be large); a field
-- that is unset is sent as null, so a reader clears it too (a retry unsets the times).
local function publish(jk, jobid)
  local version = redis.call('HINCRBY', jk, 'version', 1)
  local f = redis.call('HMGET', jk, 'status', 'type', 'priority', 'queue', 'attempts',
    'worker_id', 'pipeline', 'error', 'progress', 'finished_at', 'enqueued_at', 'started_at',
    'scheduled_for', 'max_retries', 'timeout', 'cancel_requested', 'idempotency_key')
  local progress = cjson.null
  if f[9] then progress = cjson.decode(f[9]) end
  redis.call('PUBLISH', EVENTS, cjson.encode({job_id = jobid, version = version,
    status = nul(f[1]), type = nul(f[2]), priority = nul(f[3]), queue = nul(f[4]),
    attempts = tonumber(f[5]) or 0, worker_id = nul(f[6]), pipeline = nul(f[7]),
    error = nul(f[8]), progress = progress, finished_at = nul(f[10]),
    enqueued_at = nul(f[11]), started_at = nul(f[12]), scheduled_for = nul(f[13]),
    max_retries = tonumber(f[14]) or cjson.null, timeout = tonumber(f[15]) or cjson.null,
    cancel_requested = f[16] == '1', idempotency_key = nul(f[17])}))
end

-- Hash fields that are not part of the job record.
local HIDDEN = {payload = true, stream = true, entry = true, dead_entry = true,
  retry_backoff = true}

local function finalize(jk, jobid, status, err)
  redis.call('HSET', jk, 'status', status, 'finished_at', NOW_ISO)
  if err and err ~= '' then redis.call('HSET', jk, 'error', err) end
  if status == 'failed' or status == 'dead' then
    local eid = redis.call('XADD', DEAD, '*', 'job_id', jobid, 'status', status,
      'error', err or '', 'at', NOW_ISO)
    redis.call('HSET', jk, 'dead_entry', eid)
    redis.call('XTRIM', DEAD, 'MINID', '~', tostring(NOW_MS - TTL * 1000))
  end
  redis.call('EXPIRE', jk, TTL)
  redis.call('HINCRBY', TOTALS, status, 1)
  redis.call('HINCRBY', RATE, status, 1)
  redis.call('EXPIRE', RATE, 120)
  publish(jk, jobid)  -- first: the record waiters get below carries the new version
  -- Wake waiters with the record itself (one round trip for them), unless it is large.
  local flat = redis.call('HGETALL', jk)
  local record = {}
  for i = 1, #flat, 2 do
    if not HIDDEN[flat[i]] then record[flat[i]] = flat[i + 1] end
  end
  local text = cjson.encode(record)
  if #text > 65536 then text = status end
  local dk = DP .. jobid
  redis.call('DEL', dk)
  redis.call('RPUSH', dk, text)
  redis.call('EXPIRE', dk, TTL)
end

-- Redis's clock as ISO 8601 UTC and epoch ms (days to civil date: H. Hinnant's method).
local function iso_now()
  local t = redis.call('TIME')
  local secs, us = tonumber(t[1]), tonumber(t[2])
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
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, us),
    secs * 1000 + math.floor(us / 1000)
end

local function drop_entry(stream, eid)
  redis.call('XACK', stream, G, eid)
  redis.call('XDEL', stream, eid)
end
"""

# ARGV[12] mode ('read' | 'start' | 'pending' | 'reclaim'), ARGV[13] max jobs, ARGV[14]
# min idle ms, then: read -> (stream, cap) pairs; start -> (stream, entry id, job id)
# triples; pending -> streams (start this consumer's delivered, still queued entries);
# reclaim -> streams. Returns {stream, entry id, {job_id, attempts, type, payload, timeout,
# max_retries, retry_backoff, pipeline, queue, priority}} per job started.
FETCH = (
    _PRELUDE
    + r"""
local mode, n, min_idle = ARGV[12], tonumber(ARGV[13]), ARGV[14]
local out = {}

local function start(stream, eid, jobid)
  local jk = JP .. jobid
  local f = redis.call('HMGET', jk, 'status', 'cancel_requested', 'max_retries', 'attempts',
    'entry', 'error')
  local st = f[1]
  if (not st) or (st ~= 'queued' and st ~= 'running') or (f[5] and f[5] ~= eid) then
    drop_entry(stream, eid)  -- expired, already ended, or a stale duplicate entry
    return
  end
  if f[2] == '1' then
    drop_entry(stream, eid)
    finalize(jk, jobid, 'cancelled', '')
    return
  end
  local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
  local max_retries = tonumber(f[3]) or 0
  if attempts > max_retries + 1 then
    drop_entry(stream, eid)
    local why = 'delivered ' .. attempts .. ' times without finishing (max_retries=' ..
      max_retries .. '): its workers died or lost their lease'
    if f[6] then why = why .. '; last error: ' .. f[6] end
    redis.call('HINCRBY', jk, 'attempts', -1)
    finalize(jk, jobid, 'dead', why)
    return
  end
  redis.call('HSET', jk, 'status', 'running', 'worker_id', W, 'started_at', NOW_ISO)
  publish(jk, jobid)
  out[#out + 1] = {stream, eid, redis.call('HMGET', jk, 'job_id', 'attempts', 'type', 'payload',
    'timeout', 'max_retries', 'retry_backoff', 'pipeline', 'queue', 'priority')}
  n = n - 1
end

local function read_group(stream, count)
  local res = redis.pcall('XREADGROUP', 'GROUP', G, W, 'COUNT', count, 'STREAMS', stream, '>')
  if type(res) == 'table' and res.err then
    if string.find(res.err, 'NOGROUP') then
      redis.call('XGROUP', 'CREATE', stream, G, '0', 'MKSTREAM')
      return nil
    end
    return redis.error_reply(res.err)
  end
  return res
end

if mode == 'read' then
  for i = 15, #ARGV, 2 do
    if n <= 0 then break end
    local cap = math.min(tonumber(ARGV[i + 1]), n)
    local res = read_group(ARGV[i], cap)
    if res then
      for _, entry in ipairs(res[1][2]) do
        start(ARGV[i], entry[1], entry[2][2])
      end
    end
  end
elseif mode == 'start' then
  for i = 15, #ARGV, 3 do
    start(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
elseif mode == 'pending' then
  -- Sent right behind a blocking XREADGROUP in the same pipeline: start what that read
  -- just delivered to this consumer (its entries whose job is still queued), so a
  -- waking worker needs no second round trip. The context's time is from before the
  -- block, so take the time now.
  NOW_ISO, NOW_MS = iso_now()
  for i = 15, #ARGV do
    -- This consumer's whole pending list: its running jobs are in it too (skipped).
    local res = redis.pcall('XPENDING', ARGV[i], G, '-', '+', 1000, W)
    if not (type(res) == 'table' and res.err) then
      for _, p in ipairs(res) do
        local entry = redis.call('XRANGE', ARGV[i], p[1], p[1])[1]
        if entry then
          local jobid = entry[2][2]
          local st = redis.call('HGET', JP .. jobid, 'status')
          if st ~= 'running' then start(ARGV[i], p[1], jobid) end
        end
      end
    end
  end
elseif mode == 'reclaim' then
  for i = 15, #ARGV do
    if n <= 0 then break end
    local res = redis.pcall('XAUTOCLAIM', ARGV[i], G, W, min_idle, '0-0', 'COUNT', n)
    if not (type(res) == 'table' and res.err) then
      for _, entry in ipairs(res[2]) do
        if entry[2] then start(ARGV[i], entry[1], entry[2][2])
        else redis.call('XACK', ARGV[i], G, entry[1]) end
      end
    end
  end
end
return out
"""
)

# ARGV[12] scheduled zset, [13] duration hash, [14] JSON array of outcomes, each
# {s: stream, e: entry id, j: job id, a: attempt (text), k: 'succeeded' | 'failed' |
# 'cancelled' | 'retry' | 'requeue', r: result JSON or '', err: error or '', due: retry
# due (ms), due_iso, b: duration bucket field or '', d: duration (s), p: progress JSON or ''}.
# Answers 1 (written) or 0 (fenced off) per outcome.
FINISH = (
    _PRELUDE
    + r"""
local sched, dur = ARGV[12], ARGV[13]
local out = {}
for i, o in ipairs(cjson.decode(ARGV[14])) do
  local jk = JP .. o.j
  local f = redis.call('HMGET', jk, 'worker_id', 'attempts', 'status')
  if f[1] ~= W or f[2] ~= o.a or f[3] ~= 'running' then
    out[i] = 0
  else
    out[i] = 1
    drop_entry(o.s, o.e)
    if o.r ~= '' then redis.call('HSET', jk, 'result', o.r) end
    if o.p ~= '' then redis.call('HSET', jk, 'progress', o.p) end
    if o.k == 'retry' then
      redis.call('HSET', jk, 'status', 'scheduled', 'scheduled_for', o.due_iso, 'error', o.err)
      redis.call('ZADD', sched, o.due, o.j)
      publish(jk, o.j)
    elseif o.k == 'requeue' then
      local neid = redis.call('XADD', o.s, '*', 'job', o.j)
      redis.call('HSET', jk, 'status', 'queued', 'entry', neid)
      redis.call('HINCRBY', jk, 'attempts', -1)
      publish(jk, o.j)
    else
      finalize(jk, o.j, o.k, o.err)
      if o.b ~= '' then
        redis.call('HINCRBY', dur, o.b, 1)
        redis.call('HINCRBYFLOAT', dur, 'sum', o.d)
        redis.call('HINCRBY', dur, 'count', 1)
      end
    end
  end
end
return out
"""
)

# ARGV[12] job id, [13] attempt, [14] progress JSON.
PROGRESS = (
    _PRELUDE
    + r"""
local jk = JP .. ARGV[12]
local f = redis.call('HMGET', jk, 'worker_id', 'attempts', 'status')
if f[1] ~= W or f[2] ~= ARGV[13] or f[3] ~= 'running' then return 0 end
redis.call('HSET', jk, 'progress', ARGV[14])
publish(jk, ARGV[12])
return 1
"""
)

# ARGV[12..] (stream, entry id, job id, attempt) quadruples. Resets the idle time of
# each entry this worker still holds (the lease); answers 'ok' | 'cancel' | 'lost' each.
RENEW = (
    _PRELUDE
    + r"""
local out = {}
for i = 12, #ARGV, 4 do
  local jk = JP .. ARGV[i + 2]
  local f = redis.call('HMGET', jk, 'worker_id', 'attempts', 'status', 'cancel_requested')
  if f[1] == W and f[2] == ARGV[i + 3] and f[3] == 'running' then
    redis.call('XCLAIM', ARGV[i], G, W, 0, ARGV[i + 1], 'JUSTID')
    if f[4] == '1' then out[#out + 1] = 'cancel' else out[#out + 1] = 'ok' end
  else
    out[#out + 1] = 'lost'
  end
end
return out
"""
)

# ARGV[12] scheduled zset, [13] max jobs. Moves due jobs into their streams; answers
# {moved, next due score or false}.
MOVE_DUE = (
    _PRELUDE
    + r"""
local ids = redis.call('ZRANGEBYSCORE', ARGV[12], '-inf', NOW_MS, 'LIMIT', 0, tonumber(ARGV[13]))
for _, jobid in ipairs(ids) do
  redis.call('ZREM', ARGV[12], jobid)
  local jk = JP .. jobid
  local f = redis.call('HMGET', jk, 'status', 'stream')
  if f[1] == 'scheduled' and f[2] then
    local eid = redis.call('XADD', f[2], '*', 'job', jobid)
    redis.call('HSET', jk, 'status', 'queued', 'entry', eid)
    publish(jk, jobid)
  end
end
local nxt = redis.call('ZRANGE', ARGV[12], 0, 0, 'WITHSCORES')
return {#ids, nxt[2] or false}
"""
)

# ARGV[12] job id, [13] scheduled zset, [14] cancel channel.
CANCEL = (
    _PRELUDE
    + r"""
local jobid = ARGV[12]
local jk = JP .. jobid
local f = redis.call('HMGET', jk, 'status', 'stream', 'entry')
if not f[1] then return 'missing' end
if f[1] == 'queued' then
  if f[2] and f[3] then redis.call('XDEL', f[2], f[3]) end
  finalize(jk, jobid, 'cancelled', '')
  return 'cancelled'
elseif f[1] == 'scheduled' then
  redis.call('ZREM', ARGV[13], jobid)
  finalize(jk, jobid, 'cancelled', '')
  return 'cancelled'
elseif f[1] == 'running' then
  redis.call('HSET', jk, 'cancel_requested', '1')
  redis.call('PUBLISH', ARGV[14], jobid)
  publish(jk, jobid)
  return 'cancelling'
end
return 'ended:' .. f[1]
"""
)

# ARGV[12] job id. Answers the record (flat HGETALL) as re-queued, or why not.
RETRY_DEAD = (
    _PRELUDE
    + r"""
local jobid = ARGV[12]
local jk = JP .. jobid
local f = redis.call('HMGET', jk, 'status', 'stream', 'dead_entry')
if not f[1] then return 'missing' end
if f[1] ~= 'failed' and f[1] ~= 'dead' then return f[1] end
if f[3] then redis.call('XDEL', DEAD, f[3]) end
redis.call('HDEL', jk, 'dead_entry', 'error', 'result', 'finished_at', 'started_at',
  'worker_id', 'progress', 'cancel_requested', 'scheduled_for')
local eid = redis.call('XADD', f[2], '*', 'job', jobid)
redis.call('HSET', jk, 'status', 'queued', 'attempts', 0, 'entry', eid)
redis.call('DEL', DP .. jobid)
redis.call('EXPIRE', jk, TTL)
publish(jk, jobid)
return redis.call('HGETALL', jk)
"""
)

# ARGV[12] job id, [13] index zset, [14] idempotency key prefix. Removes a failed or dead
# job for good: its dead-letter entry, record, done list, index entry and idempotency key
# (when it still names this job). Publishes ``deleted: true`` with the next version.
# Answers 'deleted', 'missing', or the status that forbids it.
DELETE_DEAD = (
    _PRELUDE
    + r"""
local jobid = ARGV[12]
local jk = JP .. jobid
local f = redis.call('HMGET', jk, 'status', 'dead_entry', 'idempotency_key', 'version')
if not f[1] then return 'missing' end
if f[1] ~= 'failed' and f[1] ~= 'dead' then return f[1] end
if f[2] then redis.call('XDEL', DEAD, f[2]) end
if f[3] then
  local ik = ARGV[14] .. f[3]
  if redis.call('GET', ik) == jobid then redis.call('DEL', ik) end
end
redis.call('DEL', jk, DP .. jobid)
redis.call('ZREM', ARGV[13], jobid)
redis.call('PUBLISH', EVENTS, cjson.encode({job_id = jobid, status = f[1],
  version = (tonumber(f[4]) or 0) + 1, deleted = true}))
return 'deleted'
"""
)

# ARGV[12] index zset, [13] scheduled zset, [14] queues set, [15] JSON array of jobs, each
# {id, stream, queue, idem: idempotency key name or '', due: ms or 0, f: {record fields}}.
# Answers {job id, 1} per job created, {existing job id, 0} per idempotency-key hit.
ENQUEUE = (
    _PRELUDE
    + r"""
local out = {}
local pools = {}
for _, job in ipairs(cjson.decode(ARGV[15])) do
  local id, created = job.id, 1
  if job.idem ~= '' then
    local existing = redis.call('GET', job.idem)
    if existing then
      id, created = existing, 0
    else
      redis.call('SET', job.idem, id, 'EX', TTL)
    end
  end
  if created == 1 then
    local jk = JP .. id
    local fields = {}
    for k, v in pairs(job.f) do
      fields[#fields + 1] = k
      fields[#fields + 1] = v
    end
    redis.call('HSET', jk, unpack(fields))
    if job.due > 0 then
      redis.call('ZADD', ARGV[13], job.due, id)
    else
      local eid = redis.call('XADD', job.stream, '*', 'job', id)
      redis.call('HSET', jk, 'entry', eid)
    end
    redis.call('EXPIRE', jk, TTL)
    redis.call('ZADD', ARGV[12], NOW_MS, id)
    pools[job.queue] = true
    publish(jk, id)
  end
  out[#out + 1] = id
  out[#out + 1] = created
end
redis.call('ZREMRANGEBYSCORE', ARGV[12], '-inf', NOW_MS - TTL * 1000)
for pool in pairs(pools) do redis.call('SADD', ARGV[14], pool) end
return out
"""
)


class Script:
    """A Lua script run by SHA, loaded on first use and again after a Redis restart."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Redis, args: Sequence[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, 0, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, 0, *args)


async def run_scripts(redis: Redis, calls: Sequence[tuple[Script, Sequence[Any]]]) -> list[Any]:
    """Run several script calls in one round trip; answers their results in order.

    Calls that found their script missing (Redis restarted) are loaded and run again;
    any other error is raised after the batch.
    """
    if not calls:
        return []
    if len(calls) == 1:  # a plain call costs less than a one-command pipeline
        script, args = calls[0]
        return [await script(redis, args)]
    async with redis.pipeline(transaction=False) as pipe:
        for script, args in calls:
            pipe.evalsha(script.sha, 0, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for source in {calls[i][0].source for i in missing}:
            await redis.script_load(source)
        async with redis.pipeline(transaction=False) as pipe:
            for i in missing:
                pipe.evalsha(calls[i][0].sha, 0, *calls[i][1])
            again = await pipe.execute(raise_on_error=False)
        for i, result in zip(missing, again, strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


#: Script objects, one per source.
ENQUEUE_SCRIPT = Script(ENQUEUE)
FETCH_SCRIPT = Script(FETCH)
FINISH_SCRIPT = Script(FINISH)
PROGRESS_SCRIPT = Script(PROGRESS)
RENEW_SCRIPT = Script(RENEW)
MOVE_DUE_SCRIPT = Script(MOVE_DUE)
CANCEL_SCRIPT = Script(CANCEL)
RETRY_DEAD_SCRIPT = Script(RETRY_DEAD)
DELETE_DEAD_SCRIPT = Script(DELETE_DEAD)
