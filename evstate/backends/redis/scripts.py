"""The redis adapter's key layout and its Lua scripts (docs/scaling.md, "Data layout").

Every state change runs as ONE Lua script (:data:`COMMIT`), so Redis applies the hash write,
the revision counter, the stream entry and (for trigger commits) the cursor move
atomically: no client ever sees one without the others. Scripts check everything that can
fail (request already applied, lease lost, compare-and-set mismatch, wrong key type) before
their first write, because Redis does not roll back a script that fails half-way.

Key layout (one logical store per Redis database):

- ``state:<scope>``: hash, field = key, value = compact JSON text (the iii engine's layout);
- ``evstate:meta``: hash ``format``, ``revision``, ``timestamp``, ``horizon``;
- ``evstate:log``: stream, one entry per event, entry ID ``<revision>-0``, fields ``ts``,
  ``type``, ``scope``, ``key``, ``old`` (absent: no old value), ``new`` (absent: deleted),
  ``batch`` (only inside an atomic batch: the batch's first revision; absent on its last);
- ``evstate:req:<id>``: result of an applied write, kept ``REQUEST_TTL_MS`` (retry dedup);
- ``evstate:triggers`` (set of names), ``evstate:trigger:<name>`` (hash: ``cursor``,
  ``hb:<consumer>`` heartbeats, ``holder``), ``evstate:lease:<name>`` (lease token),
  ``evstate:parked:<name>`` (hash revision -> JSON dead letter);
- ``evstate:snaps`` (sorted set of snapshot revisions), ``evstate:snap:<rev>`` (hash:
  ``timestamp``, ``chunks``, ``keys``, ``bytes``, ``crcs``), ``evstate:snapchunk:<rev>:<i>``
  (JSON array of ``[scope, key, value JSON text]``);
- ``evstate:maintenance``: the lock of the process that snapshots and trims.

Key names are never built from two user strings, so trigger names cannot collide.
"""

from __future__ import annotations

__all__ = [
    "BISECT",
    "COMMIT",
    "DELETE_TRIGGER",
    "FORMAT_VERSION",
    "INIT",
    "LEASE",
    "LIVE_STATE",
    "LOCK",
    "LOG",
    "MAINTENANCE_LOCK",
    "META",
    "PUT",
    "REGISTER",
    "REPLAY",
    "REQUEST_TTL_MS",
    "SCOPE_STATE",
    "SCOPES",
    "SNAPSHOTS",
    "STATE_PREFIX",
    "TRIGGERS",
    "TRIM",
    "chunk_key",
    "lease_key",
    "parked_key",
    "request_key",
    "snapshot_key",
    "state_key",
    "trigger_key",
]

FORMAT_VERSION = "1"
STATE_PREFIX = b"state:"
META = "evstate:meta"
LOG = "evstate:log"
TRIGGERS = "evstate:triggers"
SNAPSHOTS = "evstate:snaps"
MAINTENANCE_LOCK = "evstate:maintenance"
REQUEST_TTL_MS = 60_000  # how long a retried write is recognised as already applied


def _name(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def state_key(scope: str) -> bytes:
    """The hash of ``scope`` (``state:<scope>``, as the iii engine names it)."""
    return STATE_PREFIX + _name(scope)


def request_key(request_id: str) -> str:
    """Where the result of write ``request_id`` is remembered for retries."""
    return "evstate:req:" + request_id


def trigger_key(name: str) -> bytes:
    """The hash holding trigger ``name``'s cursor and status."""
    return b"evstate:trigger:" + _name(name)


def lease_key(name: str) -> bytes:
    """The lease of trigger ``name``: the token of the process delivering it."""
    return b"evstate:lease:" + _name(name)


def parked_key(name: str) -> bytes:
    """The dead letters of trigger ``name``."""
    return b"evstate:parked:" + _name(name)


def snapshot_key(revision: int) -> str:
    """The metadata hash of the snapshot at ``revision``."""
    return f"evstate:snap:{revision}"


def chunk_key(revision: int, index: int) -> str:
    """Chunk ``index`` of the snapshot at ``revision``."""
    return f"evstate:snapchunk:{revision}:{index}"


# Lua 5.1 prints large numbers as 1.7e+12 with tostring(): always format with %.0f.
_HELPERS = """
local function num(x) return string.format('%.0f', x) end
"""

# Every state:* hash once (SCAN may return a key twice), in SCAN order.
_EACH_STATE_HASH = """
local function each_state_hash(visit)
  local cursor, seen = '0', {}
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', 'state:*', 'COUNT', 1000, 'TYPE', 'hash')
    cursor = r[1]
    for _, k in ipairs(r[2]) do
      if not seen[k] then
        seen[k] = true
        visit(k)
      end
    end
  until cursor == '0'
end
"""

INIT = (
    "#!lua\n"
    + _HELPERS
    + _EACH_STATE_HASH
    + """
-- KEYS[1] meta, KEYS[2] snapshots zset; ARGV[1] format version, ARGV[2] chunk size.
-- First open of this database: create the meta hash; if iii (or anything) already stored
-- state:* hashes, adopt them as the snapshot at revision 0, so history starts from them.
local fmt = redis.call('HGET', KEYS[1], 'format')
if fmt then return {'exists', fmt} end
local size = tonumber(ARGV[2])
local chunk, n, chunks, total = {}, 0, 0, 0
local function flush()
  if n == 0 then return end
  local body = cjson.encode(chunk)
  redis.call('SET', 'evstate:snapchunk:0:' .. chunks, body)
  chunks = chunks + 1
  chunk, n = {}, 0
end
each_state_hash(function(k)
  local scope = string.sub(k, 7)
  local kv = redis.call('HGETALL', k)
  for j = 1, #kv, 2 do
    n = n + 1
    total = total + 1
    chunk[n] = {scope, kv[j], kv[j + 1]}
    if n >= size then flush() end
  end
end)
flush()
if total > 0 then
  redis.call('HSET', 'evstate:snap:0', 'timestamp', '0', 'chunks', num(chunks),
             'keys', num(total), 'bytes', '0', 'crcs', '')
  redis.call('ZADD', KEYS[2], 0, '0')
end
redis.call('HSET', KEYS[1], 'format', ARGV[1], 'revision', '0', 'timestamp', '0', 'horizon', '0')
return {'created', num(total)}
"""
)

COMMIT = (
    "#!lua\n"
    + _HELPERS
    + """
-- KEYS: [1] meta, [2] log, [3] request key, [4] trigger hash, [5] lease, [6] parked hash,
--       [7..] state hashes (referenced by index below).
-- ARGV: [1] request ttl ms ('' = no dedup), [2] lease token ('' = no lease check),
--       [3] trigger name, [4] cursor ('' = keep), [5] parked mode ('', 'take', 'put'),
--       [6] parked field, [7] parked value, [8] #cas, [9] #writes, [10] '1': the writes
--       are one atomic batch (each entry but the last gets field batch = its first revision),
--       then
--       cas:   key index, field, present ('1'/'0'), expected text
--       write: key index, scope, field, mode ('s' set / 'd' delete), new text
-- Returns {'ok', revision, timestamp, old_1, ...}, {'dup', 'revision:timestamp'}, {'lease'},
-- {'conflict'} or {'gone'}. Nothing is written unless the first element is 'ok'.
local meta, logk = KEYS[1], KEYS[2]
local ncas, nwrites = tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[1] ~= '' then
  local done = redis.call('GET', KEYS[3])
  if done then return {'dup', done} end
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[2] then return {'lease'} end
if ARGV[5] == 'take' and redis.call('HEXISTS', KEYS[6], ARGV[6]) == 0 then return {'gone'} end
local i = 11
for _ = 1, ncas do
  local current = redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  if ARGV[i + 2] == '1' then
    if current ~= ARGV[i + 3] then return {'conflict'} end
  elseif current then
    return {'conflict'}
  end
  i = i + 4
end
local first_write = i
for _ = 1, nwrites do  -- type-check every hash before the first write (WRONGTYPE raises here)
  redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 2])
  i = i + 5
end
local result = {'ok', '', ''}
if nwrites > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('HGET', meta, 'timestamp') or '0')
  if now < last then now = last end
  local ts = num(now)
  local rev = tonumber(redis.call('HGET', meta, 'revision') or '0')
  local first_rev = num(rev + 1)
  i = first_write
  for w = 1, nwrites do
    local hk, scope, field, mode = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local old = redis.call('HGET', hk, field)
    rev = rev + 1
    local etype = 'created'
    if mode == 'd' then etype = 'deleted' elseif old then etype = 'updated' end
    local entry = {logk, num(rev) .. '-0', 'ts', ts, 'type', etype, 'scope', scope, 'key', field}
    if old then table.insert(entry, 'old'); table.insert(entry, old) end
    if mode ~= 'd' then table.insert(entry, 'new'); table.insert(entry, ARGV[i + 4]) end
    if ARGV[10] == '1' and w < nwrites then
      table.insert(entry, 'batch'); table.insert(entry, first_rev)
    end
    redis.call('XADD', unpack(entry))  -- first: it fails on a bad ID before any state change
    if mode == 'd' then
      if old then redis.call('HDEL', hk, field) end
    else
      redis.call('HSET', hk, field, ARGV[i + 4])
    end
    result[3 + w] = old or false
    i = i + 5
  end
  redis.call('HSET', meta, 'revision', num(rev), 'timestamp', ts)
  result[2], result[3] = num(rev), ts
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], 'cursor', ARGV[4]) end
if ARGV[5] == 'take' then redis.call('HDEL', KEYS[6], ARGV[6])
elseif ARGV[5] == 'put' then redis.call('HSET', KEYS[6], ARGV[6], ARGV[7]) end
if ARGV[1] ~= '' then redis.call('SET', KEYS[3], result[2] .. ':' .. result[3], 'PX', ARGV[1]) end
return result
"""
)

PUT = """#!lua
-- The hot path: one key, no trigger parts (what COMMIT does, with fewer arguments).
-- KEYS[1] meta, [2] log, [3] request key, [4] state hash; ARGV[1] request ttl ms,
-- [2] scope, [3] key, [4] new text ('' with [5] = 'd': delete), [5] 's' | 'd',
-- [6] compare-and-set: '' none, '0' the key must be missing, '1' it must hold ARGV[7].
-- Returns {'ok', revision, timestamp, old}, {'dup', 'revision:timestamp', old} or
-- {'conflict'}.
local done = redis.call('GET', KEYS[3])
if done then  -- applied before: answer as then (the old value is in its stream entry)
  local rev = string.match(done, '^(%d+):')
  local found = redis.call('XRANGE', KEYS[2], rev .. '-0', rev .. '-0')
  local was = false
  if found[1] then
    local f = found[1][2]
    for j = 1, #f, 2 do if f[j] == 'old' then was = f[j + 1] end end
  end
  return {'dup', done, was}
end
local old = redis.call('HGET', KEYS[4], ARGV[3])
if ARGV[6] == '1' then
  if old ~= ARGV[7] then return {'conflict'} end
elseif ARGV[6] == '0' and old then
  return {'conflict'}
end
local meta = redis.call('HMGET', KEYS[1], 'revision', 'timestamp')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(meta[2] or '0')
if now < last then now = last end
local ts = string.format('%.0f', now)
local rev = string.format('%.0f', tonumber(meta[1] or '0') + 1)
local etype = 'created'
if ARGV[5] == 'd' then etype = 'deleted' elseif old then etype = 'updated' end
local entry = {KEYS[2], rev .. '-0', 'ts', ts, 'type', etype, 'scope', ARGV[2], 'key', ARGV[3]}
if old then entry[#entry + 1] = 'old'; entry[#entry + 1] = old end
if ARGV[5] ~= 'd' then entry[#entry + 1] = 'new'; entry[#entry + 1] = ARGV[4] end
redis.call('XADD', unpack(entry))  -- first: it fails on a bad ID before any state change
if ARGV[5] == 'd' then
  if old then redis.call('HDEL', KEYS[4], ARGV[3]) end
else
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
end
redis.call('HSET', KEYS[1], 'revision', rev, 'timestamp', ts)
redis.call('SET', KEYS[3], rev .. ':' .. ts, 'PX', ARGV[1])
return {'ok', rev, ts, old}
"""

LOCK = """#!lua
-- KEYS[1] lock; ARGV[1] token, [2] ttl ms, [3] 'acquire' | 'release'. 1 held, 0 not.
local current = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if current == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

LEASE = """#!lua
-- KEYS[1] lease, KEYS[2] trigger hash; ARGV[1] token, [2] ttl ms, [3] mode, [4] holder
-- description, [5] now ms. Modes: 'acquire' (take it if free, or renew it), 'renew' (renew
-- only if held), 'release'. 'acquire' and 'renew' also record this process's heartbeat
-- (field hb:<token>), which tells retention the trigger is registered somewhere; 'renew'
-- drops heartbeats older than 10 leases (processes that died). Returns 1 held, 0 not held,
-- -1 the trigger was deleted (its hash is gone: nothing is written then).
local current = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if current == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if ARGV[3] == 'renew' then
  local fields = redis.call('HGETALL', KEYS[2])
  local oldest = tonumber(ARGV[5]) - 10 * tonumber(ARGV[2])
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 3) == 'hb:' and tonumber(fields[j + 1]) < oldest then
      redis.call('HDEL', KEYS[2], fields[j])
    end
  end
end
redis.call('HSET', KEYS[2], 'hb:' .. ARGV[1], ARGV[5])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current or ARGV[3] == 'renew' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'holder', ARGV[4])
return 1
"""

REGISTER = (
    "#!lua\n"
    + _HELPERS
    + """
-- KEYS[1] trigger hash, [2] meta, [3] (unused), [4] trigger set; ARGV[1] name, [2] start
-- ('latest', 'earliest' or a revision >= 1), [3] now ms, [4] the registering consumer.
-- Returns {'existing' | 'created', cursor, horizon} or {'compacted', horizon}.
local horizon = tonumber(redis.call('HGET', KEYS[2], 'horizon') or '0')
local cursor = redis.call('HGET', KEYS[1], 'cursor')
local state = 'existing'
if cursor then
  cursor = tonumber(cursor)
else
  state = 'created'
  if ARGV[2] == 'latest' then
    cursor = tonumber(redis.call('HGET', KEYS[2], 'revision') or '0')
  elseif ARGV[2] == 'earliest' then
    cursor = horizon
  else
    cursor = tonumber(ARGV[2]) - 1
    if cursor < horizon then return {'compacted', num(horizon)} end
  end
  redis.call('HSET', KEYS[1], 'cursor', num(cursor), 'created', ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[1])
end
redis.call('HSET', KEYS[1], 'hb:' .. ARGV[4], ARGV[3])
return {state, num(cursor), num(horizon)}
"""
)

REPLAY = (
    "#!lua\n"
    + _HELPERS
    + """
-- KEYS[1] trigger hash, [2] meta, [3] (unused), [4] lease; ARGV[1] name, [2] from revision.
-- Moves the cursor to from - 1 and revokes the lease, so the holder's next commit is
-- fenced off, it drops what it has in hand, and delivery resumes there.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local horizon = tonumber(redis.call('HGET', KEYS[2], 'horizon') or '0')
local from = tonumber(ARGV[2])
if from <= horizon then return {'compacted', num(horizon)} end
local head = tonumber(redis.call('HGET', KEYS[2], 'revision') or '0')
local cursor = math.min(from - 1, head)
redis.call('HSET', KEYS[1], 'cursor', num(cursor))
redis.call('DEL', KEYS[4])
return {'ok', num(cursor)}
"""
)

DELETE_TRIGGER = """#!lua
-- KEYS[1] trigger hash, [2] lease, [3] parked, [4] (unused), [5] trigger set; ARGV[1] name.
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return redis.call('SREM', KEYS[5], ARGV[1])
"""

TRIM = (
    "#!lua\n"
    + _HELPERS
    + """
-- KEYS[1] meta, [2] log; ARGV[1] new horizon. Moves the horizon forward (never back) and
-- drops the stream entries at or below it, in one step: readers see both or neither.
local horizon = tonumber(redis.call('HGET', KEYS[1], 'horizon') or '0')
local base = tonumber(ARGV[1])
if base <= horizon then return {num(horizon), 0} end
redis.call('HSET', KEYS[1], 'horizon', num(base))
local removed = redis.call('XTRIM', KEYS[2], 'MINID', num(base + 1) .. '-0')
return {num(base), removed}
"""
)

BISECT = (
    "#!lua flags=no-writes\n"
    + _HELPERS
    + """
-- KEYS[1] log; ARGV[1] low, [2] high revision, [3] ms, [4] 'first_from' | 'last_at'.
-- Timestamps never decrease with revisions, so a binary search over entry IDs works.
-- first_from: the oldest revision in [low, high] at or after ms, else high + 1.
-- last_at:    the newest revision in [low, high] at or before ms, else low - 1.
-- Returns -1 if an entry vanished (compacted) during the search.
local low, high, ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local strict = ARGV[4] == 'last_at'
local function after(rev)  -- first_from: ts >= ms;  last_at: ts > ms
  local e = redis.call('XRANGE', KEYS[1], num(rev) .. '-0', num(rev) .. '-0')
  if #e == 0 then return nil end
  local f = e[1][2]
  for j = 1, #f, 2 do
    if f[j] == 'ts' then
      local ts = tonumber(f[j + 1])
      if strict then return ts > ms end
      return ts >= ms
    end
  end
  return nil
end
local lo, hi = low, high + 1
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local a = after(mid)
  if a == nil then return -1 end
  if a then hi = mid else lo = mid + 1 end
end
if strict then return lo - 1 end
return lo
"""
)

LIVE_STATE = (
    "#!lua flags=no-writes\n"
    + _EACH_STATE_HASH
    + """
-- KEYS[1] meta. The revision and every state:* hash, read in one atomic step (for verify).
local out = {redis.call('HGET', KEYS[1], 'revision') or '0'}
each_state_hash(function(k)
  table.insert(out, k)
  table.insert(out, redis.call('HGETALL', k))
end)
return out
"""
)

SCOPE_STATE = """#!lua flags=no-writes
-- KEYS[1] meta, [2] one state hash. The revision and that scope, read in one atomic step
-- (the first page of a list_entries listing).
return {redis.call('HGET', KEYS[1], 'revision') or '0', redis.call('HGETALL', KEYS[2])}
"""

SCOPES = (
    "#!lua flags=no-writes\n"
    + _EACH_STATE_HASH
    + """
-- The name of every state:* hash, in one atomic step: a batch that empties one scope and
-- fills another is never seen half done (SCAN from a client spans several calls).
local out = {}
each_state_hash(function(k) table.insert(out, k) end)
return out
"""
)
