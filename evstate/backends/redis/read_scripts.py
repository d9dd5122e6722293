"""The redis adapter's read-only scripts: each read that must see one state is one script.

A key past its deadline (``evstate:ttl``) is absent from every read at once, before the
expirer has written its event: ``READ_KEY``, ``READ_SCOPE``, ``SCOPE_STATE`` and ``SCOPES``
leave it out. ``LIVE_STATE`` (for ``verify``) returns the deadlines with the hashes.
"""

from __future__ import annotations

from evstate.backends.redis.scripts import LUA_EACH_STATE_HASH, LUA_HELPERS, LUA_TTL

__all__ = ["BISECT", "LIVE_STATE", "READ_KEY", "READ_SCOPE", "SCOPES", "SCOPE_STATE"]

# The keys of one scope that are past their deadline now, as a set.
_DUE_IN_SCOPE = """
local function due_in_scope(ttlk, scope, now)
  local due = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', ttlk, '-inf', num(now))) do
    local s, k = ttl_parse(m)
    if s == scope then due[k] = true end
  end
  return due
end
"""

BISECT = (
    "#!lua flags=no-writes\n"
    + LUA_HELPERS
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
    + LUA_EACH_STATE_HASH
    + """
-- KEYS[1] meta, [2] evstate:ttl. The revision, every state:* hash and every deadline, read
-- in one atomic step (for verify). Returns {revision, {hash, pairs}..., deadlines}.
local out = {redis.call('HGET', KEYS[1], 'revision') or '0'}
each_state_hash(function(k)
  table.insert(out, k)
  table.insert(out, redis.call('HGETALL', k))
end)
table.insert(out, redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'))
return out
"""
)

READ_KEY = (
    "#!lua flags=no-writes\n"
    + LUA_HELPERS
    + LUA_TTL
    + """
-- KEYS[1] state hash, [2] evstate:ttl; ARGV[1] scope, [2] key.
-- Returns {value or false, deadline or false, now}; a key past its deadline is {false, ...}.
local now = clock_ms()
local value = redis.call('HGET', KEYS[1], ARGV[2])
local dl = redis.call('ZSCORE', KEYS[2], ttl_member(ARGV[1], ARGV[2]))
if value and dl and tonumber(dl) <= now then return {false, false, num(now)} end
return {value or false, dl or false, num(now)}
"""
)

READ_SCOPE = (
    "#!lua flags=no-writes\n"
    + LUA_HELPERS
    + LUA_TTL
    + _DUE_IN_SCOPE
    + """
-- KEYS[1] state hash, [2] evstate:ttl; ARGV[1] scope, [2] 'pairs' | 'keys'.
-- The scope's live fields and values (HGETALL order) or field names, in one step.
local due = due_in_scope(KEYS[2], ARGV[1], clock_ms())
local out = {}
if ARGV[2] == 'keys' then
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not due[k] then table.insert(out, k) end
  end
  return out
end
local kv = redis.call('HGETALL', KEYS[1])
for j = 1, #kv, 2 do
  if not due[kv[j]] then table.insert(out, kv[j]); table.insert(out, kv[j + 1]) end
end
return out
"""
)

SCOPE_STATE = (
    "#!lua flags=no-writes\n"
    + LUA_HELPERS
    + LUA_TTL
    + _DUE_IN_SCOPE
    + """
-- KEYS[1] meta, [2] one state hash, [3] evstate:ttl; ARGV[1] scope. The revision, the time
-- and that scope's live pairs, read in one atomic step (a list_entries listing's first page).
local now = clock_ms()
local due = due_in_scope(KEYS[3], ARGV[1], now)
local out = {}
local kv = redis.call('HGETALL', KEYS[2])
for j = 1, #kv, 2 do
  if not due[kv[j]] then table.insert(out, kv[j]); table.insert(out, kv[j + 1]) end
end
return {redis.call('HGET', KEYS[1], 'revision') or '0', num(now), out}
"""
)

SCOPES = (
    "#!lua flags=no-writes\n"
    + LUA_HELPERS
    + LUA_TTL
    + LUA_EACH_STATE_HASH
    + """
-- KEYS[1] evstate:ttl. The name of every state:* hash holding a live key, in one atomic
-- step: a batch that empties one scope and fills another is never seen half done (SCAN from
-- a client spans several calls), and a scope whose keys are all past their deadline is gone.
local due = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', num(clock_ms()))) do
  local s = ttl_parse(m)
  due[s] = (due[s] or 0) + 1
end
local out = {}
each_state_hash(function(k)
  local n = due[string.sub(k, 7)]
  if not n or redis.call('HLEN', k) > n then table.insert(out, k) end
end)
return out
"""
)
