"""``update`` applied inside Redis: the ``UPDATE`` function, for the cases it can do exactly.

A key updated by several processes with compare-and-set (read, apply the ops in Python, write
if unchanged) retries whenever they collide; one step in Redis that reads, applies and writes
never does. But the op rules have ONE reference implementation,
:func:`evstate.ops_apply.apply_update_ops`, and Lua 5.1 cannot reproduce all of it: its
numbers are doubles (no i64/u64 arithmetic) and ``cjson`` does not keep texts as Python
writes them. So this is a **fast path** that does only what it reproduces byte for byte and
*declines* the rest, before writing anything:

* the stored value is read by a strict JSON reader of its own (:mod:`.update_json`) that
  takes only the exact text Python's writer produces (else ``text``, ``float``, ``deep``)
  and at most :data:`FAST_PATH_MAX_BYTES` of it (else ``large``), and writes back every
  untouched part unchanged;
* ``increment``/``decrement`` run only on integers of magnitude below 2**53 with a result
  below 2**53, where doubles are exact (else ``float arithmetic``, ``big integer``): iii's
  float and u64/i64 overflow rules stay in Python;
* the checks that depend on the op alone (path bounds, merge value limits) are made by the
  client with the Python engine itself (:mod:`.update_plan`), which also keeps amounts of
  2**53 or more and very large op values out (``plan``). Everything else (the ``missing``
  rules, each op's target checks, error codes and messages) is done here, mirroring
  ``ops_apply.py`` function by function; the op matrix of ``tests/unit/test_ops.py`` runs
  every case through both engines and requires the same text and errors.

A declined update answers ``fallback`` with the text it read, and the client runs the
compare-and-set path from it (:mod:`.writes`). An applied one writes as ``PUT`` does with
``ttl = 'k'`` (keep the key's deadline): request-id dedup, a key past its deadline is missing
and its expiry entry is written first, the timestamp never goes below the previous event's,
``XADD`` before any state change.

The code is loaded as a Redis function library (:data:`UPDATE_LIBRARY`, called with
``FCALL``), so its ~40 Lua closures are made once per load rather than on every call; the
same source runs as an ``EVAL`` script (:data:`UPDATE`) on a server that refuses functions.
"""

from __future__ import annotations

import hashlib

from evstate.backends.redis.scripts import LUA_HELPERS, LUA_TTL
from evstate.backends.redis.update_json import LUA_JSON

__all__ = [
    "FAST_PATH_MAX_BYTES",
    "LUA_OPS",
    "LUA_UPDATE",
    "UPDATE",
    "UPDATE_FUNCTION",
    "UPDATE_LIBRARY",
]

FAST_PATH_MAX_BYTES = 4096
"""Largest stored text (and total of op value texts) the fast path takes.

The Lua reader manages about 4 to 50 MB/s (slowest on many small elements, fastest on long
strings): 4 KiB is at most about a millisecond during which Redis serves nobody else. Larger
values are updated in Python, outside Redis, as before.
"""

# ---------------------------------------------------------------------------------------------
# The op rules, mirroring evstate/ops_apply.py function by function (same names after "op_").
# A handler returns nothing on success or (code, message) for a per-op error, and changes
# nothing when it fails. ``doc.missing`` is the engine's "using_missing_default" flag.
LUA_OPS = r"""
local function new_object() return {t = 'object', keys = {}, vals = {}, at = {}} end

local function obj_get(o, key)
  local j = o.at[key]
  return j and o.vals[j]
end

-- Like a Python dict: an existing key keeps its position, a new one goes last.
local function obj_set(o, key, v)
  local j = o.at[key]
  if j then o.vals[j] = v; return end
  j = #o.keys + 1
  o.keys[j], o.vals[j], o.at[key] = key, v, j
end

local function obj_remove(o, key)
  local j = o.at[key]
  if not j then return end
  table.remove(o.keys, j)
  table.remove(o.vals, j)
  o.at[key] = nil
  for m = j, #o.keys do o.at[o.keys[m]] = m end
end

-- Op values are parsed again at each use: no two places of the document share a node.
local function value_of(op) return parse_text(op.value, true) end

local function target_not_object(kind, label, found)
  return kind .. '.target_not_object',
         'Cannot ' .. kind .. " at path '" .. label .. "': target is " .. found.t ..
         ', expected object.'
end

local function walk_or_create(node, segs, count)
  for j = 1, count do
    local child = obj_get(node, segs[j])
    if not child or child.t ~= 'object' then
      child = new_object()
      obj_set(node, segs[j], child)
    end
    node = child
  end
  return node
end

local function op_set(doc, op)
  if op.nseg == 0 then
    doc.value = value_of(op)
  elseif doc.value.t == 'object' then
    obj_set(doc.value, op.segs[1], value_of(op))
  else
    return target_not_object(op.kind, op.label, doc.value)
  end
  doc.missing = false
end

-- The client has checked the value (an object within the limits) and the path.
local function op_merge(doc, op)
  local value = value_of(op)
  local target
  if op.nseg == 0 then
    if doc.value.t ~= 'object' then return end  -- a silent no-op; the key stays missing
    target = doc.value
  else
    if doc.value.t ~= 'object' then doc.value = new_object() end
    target = walk_or_create(doc.value, op.segs, op.nseg)
  end
  for j = 1, #value.keys do obj_set(target, value.keys[j], value.vals[j]) end
  doc.missing = false
end

-- number + delta, exactly, or nil when the node is not a number. Declines when doubles
-- cannot be exact (a float, |n| >= 2^53, |result| >= 2^53); |delta| < 2^53 (client).
local function add(node, delta)
  if node.t ~= 'number' then return nil end
  if not node.int then decline('float arithmetic') end
  local n = tonumber(node.raw)
  if n <= -SAFE or n >= SAFE then decline('big integer') end
  local total = n + delta
  if total <= -SAFE or total >= SAFE then decline('big integer') end
  if total == 0 then return {t = 'number', raw = '0', int = true} end
  return {t = 'number', raw = format('%.0f', total), int = true}
end

local function not_number(op, found)
  local label = 'root'
  if op.nseg > 0 then label = op.label end
  return op.kind .. '.not_number',
         "Expected number at path '" .. label .. "', got " .. found.t .. '.'
end

local function op_arithmetic(doc, op)
  local delta = tonumber(op.delta)
  if op.nseg == 0 then
    if doc.missing then
      doc.value = {t = 'number', raw = op.delta, int = true}
    else
      local result = add(doc.value, delta)
      if not result then return not_number(op, doc.value) end
      doc.value = result
    end
  elseif doc.value.t == 'object' then
    local key = op.segs[1]
    local current = obj_get(doc.value, key)
    if current then
      local result = add(current, delta)
      if not result then return not_number(op, current) end
      obj_set(doc.value, key, result)
    else
      obj_set(doc.value, key, {t = 'number', raw = op.delta, int = true})
    end
  else
    return target_not_object(op.kind, op.label, doc.value)
  end
  doc.missing = false
end

-- A string stays a string, anything else starts an array.
local function initial(op)
  local value = value_of(op)
  if value.t == 'string' then return value end
  return {t = 'array', items = {value}}
end

-- (new target) or (nil, code, message): arrays grow in place, strings concatenate (the
-- escaped contents of two canonical strings concatenate to a canonical string), null
-- starts from scratch.
local function append_to_target(target, op, label)
  local t = target.t
  if t == 'array' then
    target.items[#target.items + 1] = value_of(op)
    return target
  elseif t == 'string' then
    local value = value_of(op)
    if value.t == 'string' then
      return {t = 'string', raw = sub(target.raw, 1, -2) .. sub(value.raw, 2)}
    end
    return nil, 'append.type_mismatch',
           "Expected string append value at path '" .. label .. "', got " .. value.t .. '.'
  elseif t == 'null' then
    return initial(op)
  end
  return nil, 'append.type_mismatch',
         "Cannot append at path '" .. label .. "': target is " .. t ..
         ', expected array, string, null, or missing field.'
end

local function op_append(doc, op)
  if op.nseg == 0 then
    if doc.missing then doc.value = {t = 'null', raw = 'null'} end
    local result, code, message = append_to_target(doc.value, op, 'root')
    if not result then return code, message end
    doc.value = result
    doc.missing = false
    return
  end
  if doc.value.t ~= 'object' then  -- checked before anything is created
    return target_not_object('append', op.label2, doc.value)
  end
  local parent = walk_or_create(doc.value, op.segs, op.nseg - 1)
  doc.missing = false  -- as the engine: even when the append below fails
  local leaf = op.segs[op.nseg]
  local current = obj_get(parent, leaf)
  if not current then
    if op.nseg == 1 then
      obj_set(parent, leaf, initial(op))
    else  -- a missing nested leaf is always an array (engine issue #1552)
      obj_set(parent, leaf, {t = 'array', items = {value_of(op)}})
    end
    return
  end
  local result, code, message = append_to_target(current, op, op.label)
  if not result then return code, message end
  obj_set(parent, leaf, result)
end

local function op_remove(doc, op)
  if op.nseg == 0 then
    doc.value = {t = 'null', raw = 'null'}
  elseif doc.value.t == 'object' then
    obj_remove(doc.value, op.segs[1])
  else
    return target_not_object(op.kind, op.label, doc.value)
  end
  doc.missing = false
end

local HANDLERS = {set = op_set, merge = op_merge, increment = op_arithmetic,
                  decrement = op_arithmetic, append = op_append, remove = op_remove}

-- Read the ops from ARGV starting at ARGV[first] (layout in UPDATE), apply them to the old
-- text (false: missing) and return the new text and the flat error list
-- {op index, code, message, ...}. Declines by raising {decline = reason}.
local function apply_ops(ARGV, old, first)
  -- The reader manages 4-50 MB/s: a larger value would hold up every client of Redis.
  if old and #old > MAX_TEXT_BYTES then decline('large') end
  local doc = {missing = not old}
  if old then doc.value = parse_text(old, false) else doc.value = new_object() end
  local errors = {}
  local i = first + 1
  for _ = 1, tonumber(ARGV[first]) do
    local nseg = tonumber(ARGV[i + 6])
    local op = {kind = ARGV[i + 1], delta = ARGV[i + 2], value = ARGV[i + 3],
                label = ARGV[i + 4], label2 = ARGV[i + 5], nseg = nseg, segs = {}}
    for j = 1, nseg do op.segs[j] = ARGV[i + 6 + j] end
    local handler = HANDLERS[op.kind]
    if not handler then decline('unknown op') end
    local code, message = handler(doc, op)
    if code then
      errors[#errors + 1] = ARGV[i]
      errors[#errors + 1] = code
      errors[#errors + 1] = message
    end
    i = i + 7 + nseg
  end
  return dump_text(doc.value), errors
end
"""

# ---------------------------------------------------------------------------------------------
# The update itself: apply (or decline), then PUT's writing steps with ttl 'k'.
LUA_UPDATE = r"""
-- KEYS[1] meta, [2] log, [3] request key, [4] state hash, [5] evstate:ttl;
-- ARGV[1] request ttl ms, [2] scope, [3] key, [4] number of ops, then per op:
--   op index (in the caller's list), kind, delta ('' unless increment/decrement: the signed
--   amount, |delta| < 2^53), value (dump_value text; '' if none), label (the first segment,
--   for append the last one: as messages name it), label2 (append: '[a, b]'), number of
--   segments, the segments (each as its JSON string text).
-- Returns, when applied, ONE string (a single bulk reply: the client parses it cheaply):
--   'ok <revision> <timestamp> <bytes of old, -1: none> <bytes of new>\n' old new, then per
--   failed op '<op index> <code> <bytes of message>\n' message;
-- {'dup', 'revision:timestamp', old, new} (this request was applied before: the values of
-- its stream entry), or {'fallback', old, reason}: the fast path declined and nothing was
-- written; old is the live text (false: missing or past its deadline).
local function update(KEYS, ARGV)
  bind_libs()
  local done = redis.call('GET', KEYS[3])
  if done then
    local rev = string.match(done, '^(%d+):')
    local found = redis.call('XRANGE', KEYS[2], rev .. '-0', rev .. '-0')
    local was, now_is = false, false
    if found[1] then
      local f = found[1][2]
      for j = 1, #f, 2 do
        if f[j] == 'old' then was = f[j + 1] elseif f[j] == 'new' then now_is = f[j + 1] end
      end
    end
    return {'dup', done, was, now_is}
  end
  local now = clock_ms()
  local member, old, dl, gone = load_key(KEYS, ARGV, now)
  local ok, new, errors = pcall(apply_ops, ARGV, old, 4)
  if not ok then  -- declined (or a fault of this engine): nothing written, Python decides
    local reason = new
    if type(reason) == 'table' then reason = reason.decline
    else reason = 'lua: ' .. tostring(reason) end
    return {'fallback', old, reason}
  end
  -- From here on, PUT's steps with ttl 'k' (keep the key's deadline).
  local rev, ts
  rev, now, ts = write_revision(KEYS, ARGV, now, gone)
  local etype = 'created'
  if old then etype = 'updated' end
  local deadline = dl
  local revision = num(rev)
  local entry = {KEYS[2], revision .. '-0', 'ts', ts, 'type', etype, 'scope', ARGV[2],
                 'key', ARGV[3]}
  if old then entry[#entry + 1] = 'old'; entry[#entry + 1] = old end
  entry[#entry + 1] = 'new'; entry[#entry + 1] = new
  if deadline then
    entry[#entry + 1] = 'expires'; entry[#entry + 1] = num(tonumber(deadline))
  end
  redis.call('XADD', unpack(entry))  -- first: it fails on a bad ID before any state change
  redis.call('HSET', KEYS[4], ARGV[3], new)
  if deadline then
    redis.call('ZADD', KEYS[5], tonumber(deadline), member)
  elseif dl or gone then
    redis.call('ZREM', KEYS[5], member)
  end
  redis.call('HSET', KEYS[1], 'revision', revision, 'timestamp', ts)
  redis.call('SET', KEYS[3], revision .. ':' .. ts, 'PX', ARGV[1])
  local out = {'ok ', revision, ' ', ts, ' ', old and #old or -1, ' ', #new, '\n', old or '', new}
  for j = 1, #errors, 3 do
    local message = errors[j + 2]
    out[#out + 1] = errors[j] .. ' ' .. errors[j + 1] .. ' ' .. #message .. '\n' .. message
  end
  return table.concat(out)
end
"""

_LIMITS = f"local MAX_TEXT_BYTES = {FAST_PATH_MAX_BYTES}\n"
_DEFINITIONS = LUA_HELPERS + LUA_TTL + _LIMITS + LUA_JSON + LUA_OPS + LUA_UPDATE

UPDATE = "#!lua\n" + _DEFINITIONS + "\nreturn update(KEYS, ARGV)\n"
"""The update as an ``EVAL`` script, for a server that refuses function libraries."""

_DIGEST = hashlib.sha1(_DEFINITIONS.encode()).hexdigest()[:16]
UPDATE_FUNCTION = f"evstate_update_{_DIGEST}"
"""The name of the update in its function library (one library per version of the code)."""

UPDATE_LIBRARY = (
    f"#!lua name={UPDATE_FUNCTION}\n"
    + _DEFINITIONS
    + f"\nredis.register_function('{UPDATE_FUNCTION}', update)\n"
)
"""The update as a Redis function library (``FUNCTION LOAD``): its definitions are made
once per load, where an ``EVAL`` script makes its ~40 closures again on every call (about a
fifth of the script's time)."""
