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
- ``evstate:maintenance``: the lock of the process that snapshots and trims;
- ``evstate:ttl``: sorted set of the keys with a time-to-live, member
  ``<bytes of scope>:<scope><key>``, score = deadline (ms since the epoch, Redis's clock).

Key names are never built from two user strings, so trigger names cannot collide.
"""

from __future__ import annotations

__all__ = [
    "COMMIT",
    "FORMAT_VERSION",
    "EXPIRE",
    "INIT",
    "LOG",
    "LUA_EACH_STATE_HASH",
    "LUA_HELPERS",
    "LUA_TTL",
    "MAINTENANCE_LOCK",
    "META",
    "PUT",
    "REQUEST_TTL_MS",
    "SNAPSHOTS",
    "STATE_PREFIX",
    "TRIGGERS",
    "TRIM",
    "TTL",
    "chunk_key",
    "lease_key",
    "parked_key",
    "request_key",
    "snapshot_key",
    "state_key",
    "trigger_key",
    "ttl_member",
]

FORMAT_VERSION = "1"
STATE_PREFIX = b"state:"
META = "evstate:meta"
LOG = "evstate:log"
TRIGGERS = "evstate:triggers"
SNAPSHOTS = "evstate:snaps"
MAINTENANCE_LOCK = "evstate:maintenance"
TTL = "evstate:ttl"  # sorted set: member ttl_member(scope, key), score = deadline ms
REQUEST_TTL_MS = 60_000  # how long a retried write is recognised as already applied


def _name(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def state_key(scope: str) -> bytes:
    """The hash of ``scope`` (``state:<scope>``, as the iii engine names it)."""
    return STATE_PREFIX + _name(scope)


def ttl_member(scope: str, key: str) -> bytes:
    """The member of ``evstate:ttl`` for ``scope/key``: ``<len(scope)>:<scope><key>``."""
    name = _name(scope)
    return str(len(name)).encode() + b":" + name + _name(key)


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
LUA_HELPERS = """
local function num(x) return string.format('%.0f', x) end
"""

# Every state:* hash once (SCAN may return a key twice), in SCAN order.
LUA_EACH_STATE_HASH = """
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

# Time-to-live: the member of a key in evstate:ttl, and the expiry of a due key.
LUA_TTL = """
local function ttl_member(scope, key) return #scope .. ':' .. scope .. key end
local function ttl_parse(m)
  local n, rest = string.match(m, '^(%d+):(.*)$')
  n = tonumber(n)
  return string.sub(rest, 1, n), string.sub(rest, n + 1)
end
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The store's revision, and the time for the next entries (never before the last write's)
-- as a number and as text.
local function head_and_time(meta, now)
  local found = redis.call('HMGET', meta, 'revision', 'timestamp')
  local last = tonumber(found[2] or '0')
  if now < last then now = last end
  return tonumber(found[1] or '0'), now, num(now)
end
-- The deleted entry of a key whose deadline passed, with its old value.
local function log_expiry(log, rev, ts, scope, key, old)
  redis.call('XADD', log, num(rev) .. '-0', 'ts', ts, 'type', 'deleted', 'scope', scope,
             'key', key, 'old', old, 'reason', 'expired')
end
-- Key ARGV[3] of scope ARGV[2] (KEYS[4] its scope's hash, [5] evstate:ttl) as a write finds
-- it: its ttl member, its stored text and deadline, and 'gone' (the old text of a key past
-- its deadline, which then counts as missing: old and deadline false), else false.
local function load_key(KEYS, ARGV, now)
  local member = ttl_member(ARGV[2], ARGV[3])
  local old = redis.call('HGET', KEYS[4], ARGV[3])
  local dl = redis.call('ZSCORE', KEYS[5], member)
  if old and dl and tonumber(dl) <= now then return member, false, false, old end
  return member, old, dl, false
end
-- The revision of a write to key ARGV[3] of scope ARGV[2] (KEYS[1] meta, [2] log), now and
-- its text; a key past its deadline ('gone': its old value) has its expiry entry first.
local function write_revision(KEYS, ARGV, now, gone)
  local rev, ts
  rev, now, ts = head_and_time(KEYS[1], now)
  if gone then
    rev = rev + 1
    log_expiry(KEYS[2], rev, ts, ARGV[2], ARGV[3], gone)
  end
  return rev + 1, now, ts
end
"""

INIT = (
    "#!lua\n"
    + LUA_HELPERS
    + LUA_EACH_STATE_HASH
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
    + LUA_HELPERS
    + LUA_TTL
    + """
-- KEYS: [1] meta, [2] log, [3] request key, [4] trigger hash, [5] lease, [6] parked hash,
--       [7] evstate:ttl, [8..] state hashes (referenced by index below).
-- ARGV: [1] request ttl ms ('' = no dedup), [2] lease token ('' = no lease check),
--       [3] trigger name, [4] cursor ('' = keep), [5] parked mode ('', 'take', 'put'),
--       [6] parked field, [7] parked value, [8] #cas, [9] #writes, [10] '1': the writes
--       are one atomic batch (each entry but the last gets field batch = its first revision),
--       then
--       cas:   key index, field, present ('1'/'0'), expected text
--       write: key index, scope, field, mode ('s' set / 'd' delete), new text,
--              ttl ('' none, 'k' keep the key's deadline, else ms from now)
-- A key past its deadline counts as missing: its expiry entry (deleted, reason expired)
-- is written before the first write to it.
-- Returns {'ok', revision, timestamp, 'rev_1,rev_2,...' (each write's revision), old_1, ...},
-- {'dup', 'revision:timestamp:revisions'}, {'lease'}, {'conflict'} or {'gone'}. Nothing is
-- written unless the first element is 'ok'.
local meta, logk, ttlk = KEYS[1], KEYS[2], KEYS[7]
local ncas, nwrites = tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[1] ~= '' then
  local done = redis.call('GET', KEYS[3])
  if done then return {'dup', done} end
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[2] then return {'lease'} end
if ARGV[5] == 'take' and redis.call('HEXISTS', KEYS[6], ARGV[6]) == 0 then return {'gone'} end
local now = clock_ms()
local function due(hk, field)  -- the key's deadline if it has passed, else nil
  local dl = redis.call('ZSCORE', ttlk, ttl_member(string.sub(hk, 7), field))
  if dl and tonumber(dl) <= now then return dl end
  return nil
end
local i = 11
for _ = 1, ncas do
  local hk, field = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
  local current = redis.call('HGET', hk, field)
  if current and due(hk, field) then current = false end
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
  i = i + 6
end
local result = {'ok', '', '', ''}
if nwrites > 0 then
  local rev, ts
  rev, now, ts = head_and_time(meta, now)
  local first_rev = num(rev + 1)
  local atomic = ARGV[10] == '1'
  local seen, written = {}, {}
  local function append(etype, scope, field, old, new, extra, final)
    rev = rev + 1
    local entry = {logk, num(rev) .. '-0', 'ts', ts, 'type', etype, 'scope', scope, 'key', field}
    if old then table.insert(entry, 'old'); table.insert(entry, old) end
    if new then table.insert(entry, 'new'); table.insert(entry, new) end
    for _, v in ipairs(extra) do table.insert(entry, v) end
    if atomic and not final then
      table.insert(entry, 'batch'); table.insert(entry, first_rev)
    end
    redis.call('XADD', unpack(entry))  -- first: it fails on a bad ID before any state change
  end
  i = first_write
  for w = 1, nwrites do
    local hk, scope, field, mode = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local member = ttl_member(scope, field)
    local old = redis.call('HGET', hk, field)
    local dl = redis.call('ZSCORE', ttlk, member)
    if old and dl and tonumber(dl) <= now and not seen[member] then
      append('deleted', scope, field, old, false, {'reason', 'expired'}, false)
      redis.call('HDEL', hk, field)
      redis.call('ZREM', ttlk, member)
      old, dl = false, false
    end
    seen[member] = true
    local etype = 'created'
    if mode == 'd' then etype = 'deleted' elseif old then etype = 'updated' end
    local deadline = false
    if mode ~= 'd' then
      if ARGV[i + 5] == 'k' then deadline = dl
      elseif ARGV[i + 5] ~= '' then deadline = num(now + tonumber(ARGV[i + 5])) end
    end
    local new = false
    if mode ~= 'd' then new = ARGV[i + 4] end
    local extra = {}
    if deadline then extra = {'expires', num(tonumber(deadline))} end
    append(etype, scope, field, old, new, extra, w == nwrites)
    written[w] = num(rev)
    if mode == 'd' then
      if old then redis.call('HDEL', hk, field) end
      redis.call('ZREM', ttlk, member)
    else
      redis.call('HSET', hk, field, ARGV[i + 4])
      if deadline then
        redis.call('ZADD', ttlk, tonumber(deadline), member)
      else
        redis.call('ZREM', ttlk, member)
      end
    end
    result[4 + w] = old or false
    i = i + 6
  end
  redis.call('HSET', meta, 'revision', num(rev), 'timestamp', ts)
  result[2], result[3], result[4] = num(rev), ts, table.concat(written, ',')
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], 'cursor', ARGV[4]) end
if ARGV[5] == 'take' then redis.call('HDEL', KEYS[6], ARGV[6])
elseif ARGV[5] == 'put' then redis.call('HSET', KEYS[6], ARGV[6], ARGV[7]) end
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[3], result[2] .. ':' .. result[3] .. ':' .. result[4], 'PX', ARGV[1])
end
return result
"""
)

PUT = (
    "#!lua\n"
    + LUA_HELPERS
    + LUA_TTL
    + """
-- The hot path: one key, no trigger parts (what COMMIT does, with fewer arguments).
-- KEYS[1] meta, [2] log, [3] request key, [4] state hash, [5] evstate:ttl;
-- ARGV[1] request ttl ms, [2] scope, [3] key, [4] new text ('' with [5] = 'd': delete),
-- [5] 's' | 'd', [6] compare-and-set: '' none, '0' the key must be missing, '1' it must
-- hold ARGV[7], [8] ttl: '' none (a set clears the key's deadline), 'k' keep the key's
-- deadline (update), else ms from now. A key past its deadline counts as missing: its
-- expiry entry is written first.
-- Returns {'ok', revision, timestamp, revision, old}, {'dup', 'revision:timestamp', old} or
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
local now = clock_ms()
local member, old, dl, gone = load_key(KEYS, ARGV, now)
if ARGV[6] == '1' then
  if old ~= ARGV[7] then return {'conflict'} end
elseif ARGV[6] == '0' and old then
  return {'conflict'}
end
local rev, ts
rev, now, ts = write_revision(KEYS, ARGV, now, gone)
local etype = 'created'
if ARGV[5] == 'd' then etype = 'deleted' elseif old then etype = 'updated' end
local deadline = false
if ARGV[5] ~= 'd' then
  if ARGV[8] == 'k' then deadline = dl
  elseif ARGV[8] ~= '' then deadline = num(now + tonumber(ARGV[8])) end
end
local entry = {KEYS[2], num(rev) .. '-0', 'ts', ts, 'type', etype, 'scope', ARGV[2], 'key', ARGV[3]}
if old then entry[#entry + 1] = 'old'; entry[#entry + 1] = old end
if ARGV[5] ~= 'd' then entry[#entry + 1] = 'new'; entry[#entry + 1] = ARGV[4] end
if deadline then entry[#entry + 1] = 'expires'; entry[#entry + 1] = num(tonumber(deadline)) end
redis.call('XADD', unpack(entry))  -- first: it fails on a bad ID before any state change
if ARGV[5] == 'd' then
  if old or gone then redis.call('HDEL', KEYS[4], ARGV[3]) end
  if dl or gone then redis.call('ZREM', KEYS[5], member) end
else
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
  if deadline then
    redis.call('ZADD', KEYS[5], tonumber(deadline), member)
  elseif dl or gone then
    redis.call('ZREM', KEYS[5], member)
  end
end
redis.call('HSET', KEYS[1], 'revision', num(rev), 'timestamp', ts)
redis.call('SET', KEYS[3], num(rev) .. ':' .. ts, 'PX', ARGV[1])
return {'ok', num(rev), ts, num(rev), old}
"""
)

EXPIRE = (
    "#!lua\n"
    + LUA_HELPERS
    + LUA_TTL
    + """
-- KEYS[1] meta, [2] log, [3] evstate:ttl; ARGV[1] most keys to expire.
-- Every key whose deadline has passed (at most ARGV[1]): a deleted entry with its old value
-- and reason expired, the hash field and the ttl member removed, in one step, so each key
-- expires once whichever process of the fleet runs this. Returns how many expired.
local now = clock_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', num(now), 'LIMIT', 0, tonumber(ARGV[1]))
if #due == 0 then return 0 end
local rev, ts
rev, now, ts = head_and_time(KEYS[1], now)
local expired = 0
for _, m in ipairs(due) do
  local scope, key = ttl_parse(m)
  local hk = 'state:' .. scope
  local old = redis.call('HGET', hk, key)
  if old then
    rev = rev + 1
    log_expiry(KEYS[2], rev, ts, scope, key, old)
    redis.call('HDEL', hk, key)
    expired = expired + 1
  end
  redis.call('ZREM', KEYS[3], m)
end
if expired > 0 then redis.call('HSET', KEYS[1], 'revision', num(rev), 'timestamp', ts) end
return expired
"""
)

TRIM = (
    "#!lua\n"
    + LUA_HELPERS
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
