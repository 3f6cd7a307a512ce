"""Lua scripts: every state change runs atomically on the server as one of these.

Key layout of one parent (see the README): ``KEYS[1]`` is the ``due`` sorted
set (name -> epoch seconds when the record next becomes claimable, that is
``max(scheduled_at, locked_until)``), ``KEYS[2]`` the ``rec`` hash (name ->
record JSON) and ``KEYS[3]`` the ``idx`` sorted set (every name with score 0,
for ordered paging).

A record is JSON with short keys: ``s`` scheduled_at, ``l`` locked_until,
``t`` lease token, ``d`` spec; absent keys are ``None``. Times are decimal
strings of epoch seconds, written by Python and copied verbatim, so Lua never
formats a number (its ``tostring`` would round to 14 digits).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Script:
    """A Lua script, called by its SHA-1 and loaded again when the server lost it."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest())


# ARGV: mode ('c' create, 'u' update, 'f' force), now, JSON list of [name, scheduled_at, spec or null].
# Returns a string of '1' (written) and '0' (left as it was), one per record.
REGISTER = Script(
    "register",
    """
local due, rec, idx = KEYS[1], KEYS[2], KEYS[3]
local mode, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for i, item in ipairs(cjson.decode(ARGV[3])) do
  local name, at, spec = item[1], item[2], item[3]
  if spec == cjson.null then spec = nil end
  local old = false
  if mode ~= 'f' then old = redis.call('HGET', rec, name) end
  if not old then
    redis.call('HSET', rec, name, cjson.encode({s = at, d = spec}))
    redis.call('ZADD', due, at, name)
    redis.call('ZADD', idx, 0, name)
    out[i] = '1'
  elseif mode == 'c' then
    out[i] = '0'
  else
    local r = cjson.decode(old)
    if r.l and tonumber(r.l) > now then
      out[i] = '0'
    else
      r.d = spec
      if tonumber(at) < tonumber(r.s) then r.s = at end
      redis.call('HSET', rec, name, cjson.encode(r))
      local ready = r.s
      if r.l and tonumber(r.l) > tonumber(ready) then ready = r.l end
      redis.call('ZADD', due, ready, name)
      out[i] = '1'
    end
  end
end
return table.concat(out)
""",
)

# ARGV: now, limit, lease_until, token. Returns a JSON list of [name, record] pairs.
CLAIM = Script(
    "claim",
    """
local due, rec = KEYS[1], KEYS[2]
local lease, token = ARGV[3], ARGV[4]
local lease_n = tonumber(lease)
local names = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, name in ipairs(names) do
  local raw = redis.call('HGET', rec, name)
  if raw then
    local r = cjson.decode(raw)
    r.l = lease
    r.t = token
    raw = cjson.encode(r)
    redis.call('HSET', rec, name, raw)
    local ready = lease
    if tonumber(r.s) > lease_n then ready = r.s end
    redis.call('ZADD', due, ready, name)
    out[#out + 1] = '[' .. cjson.encode(name) .. ',' .. raw .. ']'
  else
    redis.call('ZREM', due, name)
  end
end
return '[' .. table.concat(out, ',') .. ']'
""",
)

# ARGV: JSON list of [name, token, action]; action '' deletes the record, '-'
# only releases the lease, anything else is the next scheduled_at.
# Returns a string of '1' (done) and '0' (lease lost), one per item.
SETTLE = Script(
    "settle",
    """
local due, rec, idx = KEYS[1], KEYS[2], KEYS[3]
local out = {}
for i, item in ipairs(cjson.decode(ARGV[1])) do
  local name, token, action = item[1], item[2], item[3]
  local raw = redis.call('HGET', rec, name)
  out[i] = '0'
  if raw then
    local r = cjson.decode(raw)
    if r.t == token then
      out[i] = '1'
      if action == '' then
        redis.call('HDEL', rec, name)
        redis.call('ZREM', due, name)
        redis.call('ZREM', idx, name)
      else
        if action ~= '-' then r.s = action end
        r.l = nil
        r.t = nil
        redis.call('HSET', rec, name, cjson.encode(r))
        redis.call('ZADD', due, r.s, name)
      end
    end
  end
end
return table.concat(out)
""",
)

# ARGV: name, token, lease_until. Returns 1/0.
EXTEND = Script(
    "extend",
    """
local due, rec = KEYS[1], KEYS[2]
local name, token, lease = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('HGET', rec, name)
if not raw then return 0 end
local r = cjson.decode(raw)
if r.t ~= token then return 0 end
r.l = lease
redis.call('HSET', rec, name, cjson.encode(r))
local ready = lease
if tonumber(r.s) > tonumber(lease) then ready = r.s end
redis.call('ZADD', due, ready, name)
return 1
""",
)

# ARGV: name. Returns 1 when the record existed.
DELETE = Script(
    "delete",
    """
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
""",
)

# KEYS: idx, rec. ARGV: lexicographic start ('-' or '(' .. last name), limit.
# Returns a JSON list: the continuation (last name of the page, or null on the
# last page), then [name, record] pairs.
LIST = Script(
    "list",
    """
local limit = tonumber(ARGV[2])
local names = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, limit + 1)
local out = {'null'}
if #names > limit then
  names[#names] = nil
  out[1] = cjson.encode(names[#names])
end
for _, name in ipairs(names) do
  local raw = redis.call('HGET', KEYS[2], name)
  if raw then out[#out + 1] = '[' .. cjson.encode(name) .. ',' .. raw .. ']' end
end
return '[' .. table.concat(out, ',') .. ']'
""",
)

# KEYS: rec. ARGV: name, spec. Testing hook: replaces the spec verbatim.
RAW_SPEC = Script(
    "raw_spec",
    """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local r = cjson.decode(raw)
r.d = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(r))
return 1
""",
)

ALL = (REGISTER, CLAIM, SETTLE, EXTEND, DELETE, LIST, RAW_SPEC)
