r"""The ``UPDATE`` fast path's JSON reader and writer, in Lua (see :mod:`.update_script`).

Redis's ``cjson`` cannot serve: it loses object key order, writes numbers with 14 significant
digits and escapes ``/``. This reader keeps what Python's output is made of: object keys in
order and the exact text of every string and number, which the writer copies back unchanged.

It accepts a stored text only if that text is exactly what
:func:`evstate.backends.redis.client.dump_value` (``json.dumps(value, separators=(",", ":"),
ensure_ascii=False)``, how every evstate writer stores values) writes for the value
``json.loads`` reads from it: no whitespace; only the escapes Python writes (``\" \\ \b \f
\n \r \t``, and ``\u00XX`` in lower case for the other control characters); valid UTF-8
without surrogates; no duplicate keys; integers without leading zeros and never ``-0``; floats
only in the one shape whose Python ``repr`` provably equals the text (``canonical_float``).
Anything else *declines* (raises ``{decline = reason}``). Then every part of the output the
ops did not touch is Python's own output, byte for byte.

Op values come from the client's :func:`dump_value`, so they are read in *trusted* mode
(their floats are Python's ``repr`` already; no UTF-8 check).
"""

from __future__ import annotations

__all__ = ["LUA_JSON"]

# The strict JSON reader and writer. A node is {t = <JSON type name>, ...}:
#   object {t='object', keys={key text...}, vals={node...}, at={[key text]=position}}
#   array  {t='array', items={node...}}
#   scalar {t='string'|'number'|'boolean'|'null', raw=<exact JSON text>, int=true for integers}
# Object keys are kept as their JSON text (with quotes): the client sends path segments in
# the same canonical spelling, so comparing texts compares strings.
LUA_JSON = r"""
-- Bound at the start of each run (bind_libs): a function library may not read the standard
-- libraries while it loads, only while it runs.
local byte, sub, find, format
local function bind_libs()
  byte, sub, find, format = string.byte, string.sub, string.find, string.format
end
local MAX_DEPTH = 500  -- deeper documents go to Python (its reader goes deeper than this)
local SAFE = 9007199254740992  -- 2^53: integers strictly inside +-SAFE are exact doubles

local function decline(reason) error({decline = reason}, 0) end

-- One UTF-8 sequence starting at k (lead byte c); returns the index after it. Rejects
-- overlong forms, surrogates (ED A0..BF) and code points above U+10FFFF, as Python's codec.
local function utf8_next(s, k, c)
  local n, lo, hi = 0, 128, 191
  if c >= 194 and c <= 223 then n = 1
  elseif c == 224 then n, lo = 2, 160
  elseif c == 237 then n, hi = 2, 159
  elseif c >= 225 and c <= 239 then n = 2
  elseif c == 240 then n, lo = 3, 144
  elseif c == 244 then n, hi = 3, 143
  elseif c >= 241 and c <= 243 then n = 3
  else decline('text') end
  local b = byte(s, k + 1)
  if not b or b < lo or b > hi then decline('text') end
  for m = 2, n do
    b = byte(s, k + m)
    if not b or b < 128 or b > 191 then decline('text') end
  end
  return k + n + 1
end

-- The string token at s[i] == '"'; returns the index after its closing quote. Only the
-- escapes json.dumps writes are accepted: \" \\ \b \f \n \r \t, and \u00XX (lower-case hex)
-- for the other control characters. Trusted texts (made by dump_value) skip the UTF-8 check.
-- Runs of ordinary characters are skipped by one anchored match each (the fastest way Lua
-- patterns have to scan).
local RUN = '^[^%z\1-\31"\\\128-\255]*'
local RUN_TRUSTED = '^[^%z\1-\31"\\]*'
local SHORT = {[34] = true, [92] = true, [98] = true, [102] = true, [110] = true,
               [114] = true, [116] = true}
local function scan_string(s, i, trusted)
  local run = trusted and RUN_TRUSTED or RUN
  local j = i + 1
  while true do
    local _, e = find(s, run, j)
    local k = e + 1
    local c = byte(s, k)
    if c == 34 then return k + 1 end
    if c == 92 then
      local x = byte(s, k + 1)
      if x == 117 then
        local hex = sub(s, k + 2, k + 5)
        if not find(hex, '^00[01][0-9a-f]$') then decline('text') end
        local v = tonumber(sub(hex, 3), 16)
        if v == 8 or v == 9 or v == 10 or v == 12 or v == 13 then decline('text') end
        j = k + 6
      elseif SHORT[x] then
        j = k + 2
      else
        decline('text')
      end
    elseif not c or c < 32 then
      decline('text')  -- the end of the text, or a raw control character
    else
      j = utf8_next(s, k, c)
    end
  end
end

-- Is a stored float token exactly Python's repr of its value? Accepted only in fixed
-- notation 'I.F' with at most 15 significant digits: any decimal of <= 15 significant
-- digits is the unique shortest text of its double (DBL_DIG), and repr writes such a double
-- in fixed notation, with '.0' when integral, while its decimal exponent is in (-4, 16].
-- Everything else (exponents, 16-17 digits, trailing zeros) declines.
local function canonical_float(raw)
  local ip, fp = string.match(raw, '^%-?(%d+)%.(%d+)$')
  if not ip then return false end
  if #ip > 1 and sub(ip, 1, 1) == '0' then return false end
  if fp ~= '0' and sub(fp, -1) == '0' then return false end
  local digits
  if ip == '0' then
    if fp == '0' then return true end  -- 0.0 and -0.0
    local zeros = #string.match(fp, '^0*')
    if zeros > 3 then return false end  -- repr switches to 1e-05 below 0.0001
    digits = #fp - zeros
  else
    if #ip > 16 then return false end  -- repr switches to 1e+16 at 10^16
    if fp == '0' then digits = #(string.gsub(ip, '0+$', '')) else digits = #ip + #fp end
  end
  return digits <= 15
end

local function scan_number(s, i, trusted)
  local _, e = find(s, '^%-?%d+', i)
  if not e then decline('text') end
  local c = byte(s, e + 1)
  if c == 46 or c == 101 or c == 69 then  -- '.', 'e', 'E': a float
    local _, fe = find(s, '^%-?%d+%.?%d*[eE]?[-+]?%d*', i)
    local raw = sub(s, i, fe)
    if not trusted and not canonical_float(raw) then decline('float') end
    return {t = 'number', raw = raw}, fe + 1
  end
  local raw = sub(s, i, e)
  local first = byte(s, i) == 45 and i + 1 or i  -- after the sign
  if byte(s, first) == 48 and (e > first or first > i) then decline('text') end  -- 01, -0
  return {t = 'number', raw = raw, int = true}, e + 1
end

local parse_value

local function parse_object(s, i, depth, trusted)
  local keys, vals, at = {}, {}, {}
  local node = {t = 'object', keys = keys, vals = vals, at = at}
  i = i + 1
  if byte(s, i) == 125 then return node, i + 1 end
  local n = 0
  while true do
    if byte(s, i) ~= 34 then decline('text') end
    local e = scan_string(s, i, trusted)
    local key = sub(s, i, e - 1)
    if at[key] then decline('text') end  -- a duplicate key: Python keeps the last one
    if byte(s, e) ~= 58 then decline('text') end
    local v
    v, i = parse_value(s, e + 1, depth, trusted)
    n = n + 1
    keys[n], vals[n], at[key] = key, v, n
    local c = byte(s, i)
    if c == 125 then return node, i + 1 end
    if c ~= 44 then decline('text') end
    i = i + 1
  end
end

local function parse_array(s, i, depth, trusted)
  local items = {}
  local node = {t = 'array', items = items}
  i = i + 1
  if byte(s, i) == 93 then return node, i + 1 end
  local n = 0
  while true do
    local v
    v, i = parse_value(s, i, depth, trusted)
    n = n + 1
    items[n] = v
    local c = byte(s, i)
    if c == 93 then return node, i + 1 end
    if c ~= 44 then decline('text') end
    i = i + 1
  end
end

parse_value = function(s, i, depth, trusted)
  local c = byte(s, i)
  if c == 123 or c == 91 then
    if depth >= MAX_DEPTH then decline('deep') end
    if c == 123 then return parse_object(s, i, depth + 1, trusted) end
    return parse_array(s, i, depth + 1, trusted)
  elseif c == 34 then
    local e = scan_string(s, i, trusted)
    return {t = 'string', raw = sub(s, i, e - 1)}, e
  elseif c == 116 and sub(s, i, i + 3) == 'true' then
    return {t = 'boolean', raw = 'true'}, i + 4
  elseif c == 102 and sub(s, i, i + 4) == 'false' then
    return {t = 'boolean', raw = 'false'}, i + 5
  elseif c == 110 and sub(s, i, i + 3) == 'null' then
    return {t = 'null', raw = 'null'}, i + 4
  elseif c == 45 or (c and c >= 48 and c <= 57) then
    return scan_number(s, i, trusted)
  end
  decline('text')
end

-- A whole JSON text; anything after the value (even whitespace) declines.
local function parse_text(s, trusted)
  local node, e = parse_value(s, 1, 0, trusted)
  if e ~= #s + 1 then decline('text') end
  return node
end

local function emit(node, out)
  local t = node.t
  if t == 'object' then
    local keys, vals = node.keys, node.vals
    out[#out + 1] = '{'
    for j = 1, #keys do
      if j > 1 then out[#out + 1] = ',' end
      out[#out + 1] = keys[j]
      out[#out + 1] = ':'
      emit(vals[j], out)
    end
    out[#out + 1] = '}'
  elseif t == 'array' then
    local items = node.items
    out[#out + 1] = '['
    for j = 1, #items do
      if j > 1 then out[#out + 1] = ',' end
      emit(items[j], out)
    end
    out[#out + 1] = ']'
  else
    out[#out + 1] = node.raw
  end
end

local function dump_text(node)
  local out = {}
  emit(node, out)
  return table.concat(out)
end
"""
