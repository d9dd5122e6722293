"""The redis adapter's scripts for locks and trigger leases (docs/scaling.md).

``LOCK``: the fleet-wide maintenance lock; ``LEASE``, ``REGISTER``, ``REPLAY`` and
``DELETE_TRIGGER``: a trigger's lease, heartbeat and cursor, so that one process of the
fleet delivers each trigger at a time.
"""

from __future__ import annotations

from evstate.backends.redis.scripts import LUA_HELPERS

__all__ = ["DELETE_TRIGGER", "LEASE", "LOCK", "REGISTER", "REPLAY"]

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
    + LUA_HELPERS
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
    + LUA_HELPERS
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
