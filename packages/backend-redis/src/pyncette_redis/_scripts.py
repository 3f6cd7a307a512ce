"""Lua scripts: every state change runs atomically on the server as one of these.

Key layout of one parent (see the README), in the order the scripts take them: ``KEYS[1]`` is the
``due`` sorted set (name -> epoch seconds when the record next becomes claimable, that is
``max(scheduled_at, locked_until)``), ``KEYS[2]`` the ``rec`` hash (name -> record JSON),
``KEYS[3]`` the ``idx`` sorted set (every name with score 0, for ordered paging), ``KEYS[4]`` the
``pause`` hash (the pause rules: ``p<prefix>`` or ``n<name>`` -> the rule's info encoded as a JSON
string, ``null`` for none) and ``KEYS[5]`` the ``held`` sorted set (like ``due``, for the records a rule holds).

Pausing. The rule ``p`` (the empty prefix: the whole parent) is a flag: CLAIM returns nothing while
it exists, and records stay where they are, so pausing or resuming a whole parent costs O(1) however
many records it has. Every other rule holds the records it matches by keeping them in ``held``
instead of ``due``: a name is in ``held`` exactly when a rule other than ``p`` matches it. PAUSE moves
the matching names from ``due`` to ``held`` (walking ``idx`` over the prefix's range), RESUME moves back
those no remaining rule matches, and every script that puts a name into ``due`` (REGISTER, SETTLE,
EXTEND, RESCHEDULE) goes through ``placer``, which sends it to ``held`` when a rule matches. With no
rule that costs one ``HLEN`` per script call; CLAIM costs one ``HEXISTS``. Stores written before pausing
existed have neither key, which reads as "no rule": nothing to upgrade.

A record is JSON with short keys: ``s`` scheduled_at, ``l`` locked_until,
``t`` lease token, ``d`` spec, ``x`` state (the runtime's bookkeeping, copied
verbatim; records written before it existed have none); absent keys are ``None``. Times are decimal
strings of epoch seconds, written by Python and copied verbatim, so Lua never
formats a number (its ``tostring`` would round to 14 digits).

A stored value that cannot be decoded (invalid JSON, a time field that is not
a time, a spec or token that is not text: hand edits, foreign writers) never
makes a script fail: a script that raised half-way would keep the writes it
had made so far and fail every later call on that parent. Every script decodes
with ``load`` below, which returns ``nil`` and the reason instead of raising.
CLAIM quarantines such a due record (removes it from ``due``, keeps it in
``rec`` and ``idx``) and returns it as a marker; REGISTER in update mode
overwrites it as if it were missing; SETTLE, EXTEND and RESCHEDULE report the lease lost
(RESCHEDULE: nothing written). A quarantined record is in neither ``due`` nor ``held``, so pausing and
resuming leave it quarantined.

Wake-ups. REGISTER, RESCHEDULE and RESUME take the namespace's pub/sub channel as their last ARGV and,
when they made a record claimable sooner (inserted, moved sooner, rescheduled or released into ``due``),
PUBLISH on it once per call the earliest claimable time they wrote, as the same decimal text of epoch
seconds (``hint`` below). The channel is not a key, so this keeps the cluster's slot rules; classic
PUBLISH reaches subscribers on every node. No other script publishes.
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


# Shared by every script that reads a record. The time bounds are the years 1 to 9999 (what Python's
# datetime holds); the patterns accept what Python's repr() of a float writes, and nothing Lua's
# tonumber would read differently from Python's float() (hex, "inf", "nan", spaces).
_LOAD = """
local function time_of(v)
  if type(v) == 'string' then
    if not (string.find(v, '^%-?%d+%.?%d*$') or string.find(v, '^%-?%d+%.?%d*[eE][-+]?%d+$')) then
      return nil
    end
  elseif type(v) ~= 'number' then
    return nil
  end
  local n = tonumber(v)
  if n == nil or n ~= n or n < -62135596800 or n >= 253402300800 then return nil end
  return n
end
local function load(raw)
  local ok, r = pcall(cjson.decode, raw)
  if not ok or type(r) ~= 'table' then return nil, 'the stored value is not a JSON object' end
  local l, t, d, x = r.l, r.t, r.d, r.x
  if l == cjson.null then l = nil end
  if t == cjson.null then t = nil end
  if d == cjson.null then d = nil end
  if x == cjson.null then x = nil end
  if not time_of(r.s) then return nil, 'scheduled_at is not a time' end
  if l ~= nil and not time_of(l) then return nil, 'locked_until is not a time' end
  if t ~= nil and type(t) ~= 'string' then return nil, 'the lease token is not text' end
  if d ~= nil and type(d) ~= 'string' then return nil, 'the spec is not text' end
  if x ~= nil and type(x) ~= 'string' then return nil, 'the state is not text' end
  return {s = r.s, l = l, t = t, d = d, x = x}
end
"""


# Shared by every script that puts a name into ``due`` (KEYS[1]) or ``held`` (KEYS[5]) according to the
# rules in ``pause`` (KEYS[4]). ``holder`` returns a function telling whether a rule other than the
# whole-parent flag holds a name, or nil when none can (the common case: one HLEN). Few rules are read
# once; many are looked up per name (one HEXISTS per prefix of the name). ``placer`` returns the function
# that stores a name's claimable time in the set it belongs to.
_RULES = """
local function holder(pause)
  local n = redis.call('HLEN', pause)
  if n == 0 or (n == 1 and redis.call('HEXISTS', pause, 'p') == 1) then return nil end
  if n > 64 then
    return function(name)
      if redis.call('HEXISTS', pause, 'n' .. name) == 1 then return true end
      for i = 1, #name do
        if redis.call('HEXISTS', pause, 'p' .. string.sub(name, 1, i)) == 1 then return true end
      end
      return false
    end
  end
  local exact, prefixes = {}, {}
  for _, key in ipairs(redis.call('HKEYS', pause)) do
    local kind, match = string.sub(key, 1, 1), string.sub(key, 2)
    if kind == 'n' then
      exact[match] = true
    elseif kind == 'p' and match ~= '' then
      prefixes[#prefixes + 1] = match
    end
  end
  return function(name)
    if exact[name] then return true end
    for _, p in ipairs(prefixes) do
      if string.sub(name, 1, #p) == p then return true end
    end
    return false
  end
end
local function placer(due, pause, held)
  local holds = holder(pause)
  if not holds then
    return function(name, score)
      redis.call('ZADD', due, score, name)
      return true
    end
  end
  return function(name, score)
    if holds(name) then
      redis.call('ZADD', held, score, name)
      redis.call('ZREM', due, name)
      return false
    else
      redis.call('ZADD', due, score, name)
      redis.call('ZREM', held, name)
      return true
    end
  end
end
"""


# Shared by the scripts that send wake-ups: ``earliest(a, b)`` keeps the earlier of two times (decimal
# text, ``b`` may be nil) and ``hint(channel, at)`` publishes ``at`` unless nothing was written (nil) or
# the caller passed no channel.
_HINT = """
local function earliest(a, b)
  if b == nil or tonumber(a) < tonumber(b) then return a end
  return b
end
local function hint(channel, at)
  if channel and channel ~= '' and at then redis.call('PUBLISH', channel, at) end
end
"""


# ARGV: mode ('c' create, 'u' update, 'f' force), now, JSON list of [name, scheduled_at, spec or null,
# state or null], wake-up channel. Update mode keeps the stored state. Publishes the earliest claimable
# time of the records it inserted or moved sooner (into ``due``).
# Returns a string of '1' (written) and '0' (left as it was), one per record.
REGISTER = Script(
    "register",
    _LOAD
    + _RULES
    + _HINT
    + """
local due, rec, idx = KEYS[1], KEYS[2], KEYS[3]
local mode, now = ARGV[1], tonumber(ARGV[2])
local place = placer(due, KEYS[4], KEYS[5])
local out, soonest = {}, nil
for i, item in ipairs(cjson.decode(ARGV[3])) do
  local name, at, spec, state = item[1], item[2], item[3], item[4]
  if spec == cjson.null then spec = nil end
  if state == cjson.null then state = nil end
  local old, r = false, nil
  if mode ~= 'f' then old = redis.call('HGET', rec, name) end
  if old and mode == 'u' then r = load(old) end
  if old and mode == 'c' then
    out[i] = '0'
  elseif not r then
    -- Missing, forced, or unreadable (overwritten as if it were missing).
    redis.call('HSET', rec, name, cjson.encode({s = at, d = spec, x = state}))
    if place(name, at) then soonest = earliest(at, soonest) end
    redis.call('ZADD', idx, 0, name)
    out[i] = '1'
  elseif r.l and tonumber(r.l) > now then
    out[i] = '0'
  else
    r.d = spec
    local sooner = tonumber(at) < tonumber(r.s)
    if sooner then r.s = at end
    redis.call('HSET', rec, name, cjson.encode(r))
    local ready = r.s
    if r.l and tonumber(r.l) > tonumber(ready) then ready = r.l end
    if place(name, ready) and sooner then soonest = earliest(ready, soonest) end
    out[i] = '1'
  end
end
hint(ARGV[4], soonest)
return table.concat(out)
""",
)

# KEYS: due, rec, pause. ARGV: now, limit, lease_until, token. Returns a JSON list with one entry per
# due record: [name, record] for a leased one, [name, stored text, reason] for an unreadable one, which
# is quarantined: removed from ``due`` (no later claim sees it) but kept in ``rec`` and ``idx``.
# Nothing while the whole parent is paused; the names other rules hold are in ``held``, not ``due``, so
# the leases it stores in ``due`` need no rule check.
CLAIM = Script(
    "claim",
    _LOAD
    + """
local due, rec = KEYS[1], KEYS[2]
if redis.call('HEXISTS', KEYS[3], 'p') == 1 then return '[]' end
local lease, token = ARGV[3], ARGV[4]
local lease_n = tonumber(lease)
local names = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, name in ipairs(names) do
  local raw = redis.call('HGET', rec, name)
  if not raw then
    redis.call('ZREM', due, name)
  else
    local r, why = load(raw)
    if r then
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
      out[#out + 1] = '[' .. cjson.encode(name) .. ',' .. cjson.encode(raw) .. ',' .. cjson.encode(why) .. ']'
    end
  end
end
return '[' .. table.concat(out, ',') .. ']'
""",
)

# ARGV: JSON list of [name, token, action, state or null, keep]; action '' deletes the record, '-'
# only releases the lease, anything else is the next scheduled_at. A state replaces the stored one;
# keep = 1 leaves the lease in place (the record becomes claimable when it expires).
# Returns a string of '1' (done) and '0' (lease lost, or the record unreadable), one per item.
SETTLE = Script(
    "settle",
    _LOAD
    + _RULES
    + """
local due, rec, idx = KEYS[1], KEYS[2], KEYS[3]
local place = placer(due, KEYS[4], KEYS[5])
local out = {}
for i, item in ipairs(cjson.decode(ARGV[1])) do
  local name, token, action, state, keep = item[1], item[2], item[3], item[4], item[5]
  local raw = redis.call('HGET', rec, name)
  out[i] = '0'
  local r = raw and load(raw)
  if r and r.t == token then
    out[i] = '1'
    if action == '' then
      redis.call('HDEL', rec, name)
      redis.call('ZREM', due, name)
      redis.call('ZREM', idx, name)
      redis.call('ZREM', KEYS[5], name)
    else
      if action ~= '-' then r.s = action end
      if state ~= cjson.null then r.x = state end
      local ready = r.s
      if keep == 1 then
        if r.l and tonumber(r.l) > tonumber(ready) then ready = r.l end
      else
        r.l = nil
        r.t = nil
      end
      redis.call('HSET', rec, name, cjson.encode(r))
      place(name, ready)
    end
  end
end
return table.concat(out)
""",
)

# ARGV: name, token, lease_until. Returns 1/0 (0: lease lost, or the record unreadable).
EXTEND = Script(
    "extend",
    _LOAD
    + _RULES
    + """
local due, rec = KEYS[1], KEYS[2]
local name, token, lease = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('HGET', rec, name)
if not raw then return 0 end
local r = load(raw)
if not r or r.t ~= token then return 0 end
r.l = lease
redis.call('HSET', rec, name, cjson.encode(r))
local ready = lease
if tonumber(r.s) > tonumber(lease) then ready = r.s end
placer(due, KEYS[4], KEYS[5])(name, ready)
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
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
""",
)

# KEYS: idx, rec. ARGV: lexicographic start ('-' or '(' .. last name), limit.
# Returns a flat array: the continuation (last name of the page, or nil on the last page), then
# name and stored text of each record, undecoded, so that one unreadable record affects itself only.
LIST = Script(
    "list",
    """
local limit = tonumber(ARGV[2])
local names = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, limit + 1)
local out = {false}
if #names > limit then
  names[#names] = nil
  out[1] = names[#names]
end
for _, name in ipairs(names) do
  local raw = redis.call('HGET', KEYS[2], name)
  if raw then
    out[#out + 1] = name
    out[#out + 1] = raw
  end
end
return out
""",
)

# Shared by PAUSE and RESUME: ``under(idx, prefix, fn)`` calls ``fn`` with every name of ``idx`` that
# starts with ``prefix`` (a ZRANGEBYLEX range, read a thousand at a time) and returns how many there were.
# The range ends before the smallest string greater than every string with the prefix.
_UNDER = """
local function under(idx, prefix, fn)
  local lo, hi = '[' .. prefix, '+'
  local i = #prefix
  while i > 0 and string.byte(prefix, i) == 255 do i = i - 1 end
  if i > 0 then hi = '(' .. string.sub(prefix, 1, i - 1) .. string.char(string.byte(prefix, i) + 1) end
  local count = 0
  while true do
    local names = redis.call('ZRANGEBYLEX', idx, lo, hi, 'LIMIT', 0, 1000)
    for _, name in ipairs(names) do fn(name) end
    count = count + #names
    if #names < 1000 then return count end
    lo = '(' .. names[#names]
  end
end
"""

# ARGV: kind ('p' prefix, 'n' name), match, info (JSON). Stores the rule and moves the names it matches
# from ``due`` to ``held`` (none for the whole-parent flag ``p``: CLAIM checks it). Returns how many
# records it matches.
PAUSE = Script(
    "pause",
    _UNDER
    + """
local due, rec, idx, pause, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kind, match = ARGV[1], ARGV[2]
redis.call('HSET', pause, kind .. match, ARGV[3])
local function hold(name)
  local score = redis.call('ZSCORE', due, name)
  if score then
    redis.call('ZADD', held, score, name)
    redis.call('ZREM', due, name)
  end
end
if kind == 'n' then
  hold(match)
  return redis.call('HEXISTS', rec, match)
elseif match == '' then
  return redis.call('ZCARD', idx)
end
return under(idx, match, hold)
""",
)

# ARGV: kind ('p' prefix, 'n' name), match, wake-up channel. Removes the rule and moves the names it
# matched that no remaining rule holds from ``held`` back to ``due``, with the score they had, and
# publishes the earliest score released (for the whole-parent flag: the earliest score in ``due``; nothing
# while the whole-parent flag remains). Returns 0 when there was no such rule (nothing changes), else 1.
RESUME = Script(
    "resume",
    _RULES
    + _UNDER
    + _HINT
    + """
local due, idx, pause, held = KEYS[1], KEYS[3], KEYS[4], KEYS[5]
local kind, match, channel = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HDEL', pause, kind .. match) == 0 then return 0 end
local soonest = nil
if kind == 'p' and match == '' then
  soonest = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')[2]
  hint(channel, soonest)
  return 1
end
local holds = holder(pause)
local function release(name)
  local score = redis.call('ZSCORE', held, name)
  if score and not (holds and holds(name)) then
    redis.call('ZADD', due, score, name)
    redis.call('ZREM', held, name)
    soonest = earliest(score, soonest)
  end
end
if kind == 'n' then
  release(match)
else
  under(idx, match, release)
end
if redis.call('HEXISTS', pause, 'p') == 0 then hint(channel, soonest) end
return 1
""",
)

# ARGV: name, now, expected (the stored scheduled_at), scheduled_at, '1' when a state follows, state,
# wake-up channel (published: the new claimable time, when it went to ``due``).
# Compare and set, when the record is readable and not leased at ``now``. The stored time equals
# ``expected`` when it is the same text (what Python wrote) or, for a number written otherwise, the same
# count of microseconds. The claimable time goes to ``due`` or ``held`` as the rules say. Returns 1/0.
RESCHEDULE = Script(
    "reschedule",
    _LOAD
    + _RULES
    + _HINT
    + """
local due, rec = KEYS[1], KEYS[2]
local name, expected = ARGV[1], ARGV[3]
local raw = redis.call('HGET', rec, name)
if not raw then return 0 end
local r = load(raw)
if not r then return 0 end
local function micros(v) return math.floor(tonumber(v) * 1000000 + 0.5) end
if r.s ~= expected and micros(r.s) ~= micros(expected) then return 0 end
if r.l and tonumber(r.l) > tonumber(ARGV[2]) then return 0 end
r.s = ARGV[4]
if ARGV[5] == '1' then r.x = ARGV[6] end
redis.call('HSET', rec, name, cjson.encode(r))
local ready = r.s
if r.l and tonumber(r.l) > tonumber(ready) then ready = r.l end
if placer(due, KEYS[4], KEYS[5])(name, ready) then hint(ARGV[7], ready) end
return 1
""",
)


# KEYS: rec. ARGV: name, spec. Testing hook: replaces the spec verbatim (not in an unreadable record).
RAW_SPEC = Script(
    "raw_spec",
    _LOAD
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local r = load(raw)
if not r then return 0 end
r.d = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(r))
return 1
""",
)

ALL = (REGISTER, CLAIM, SETTLE, EXTEND, DELETE, LIST, PAUSE, RESUME, RESCHEDULE, RAW_SPEC)
