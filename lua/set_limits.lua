-- set_limits.lua: merge a patch into an agent's limits; an empty value removes a limit.
-- Fields: pc (per call), dl (daily), hr (rolling hour), wk (ISO week), mo (month), nm / nh /
-- nd (calls a minute / hour / day), low (low-balance threshold), wh (webhook URL), rt
-- (require_task: '1'; charge.lua and hold.lua read it with the agent's fields), lp (the
-- loop breaker: '<repeats>/<window_s>/<r|f>', r refuses, f also freezes); the caps
-- again per category as c:<category>:<cap>, and per tool as t:<tool>:pc|nm|nh|nd. Every
-- field is checked before the first write. The agent's x flag is kept '1' exactly while a
-- wall beyond per-call and daily caps is set (charge/hold/capture read walls only then).
-- Shadow limits (never refusing, _lib.lua) are the same caps and rt prefixed 's.'; the agent's
-- sx flag is kept '1' exactly while one is set, and a shadow wall keeps x '1' too (its
-- counters must be kept).
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] events stream         iou:{pNN}:events
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the 'limits' event
-- ARGV[3] amount max, micros
-- ARGV[4] patch as JSON text, passed to the ledger unchanged
-- ARGV[5..] field, value pairs (amounts in micros; '' removes)
-- Returns:
--   code OK = 0: {0}
--   code NOT_FOUND = 10: {10}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[3], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 3 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if #ARGV % 2 ~= 0 or #ARGV > 4 + 2 * 128 then return { C.BAD_ARGUMENT, #ARGV } end

local AMOUNT_CAPS = { pc = true, dl = true, hr = true, wk = true, mo = true }
local COUNT_CAPS = { nm = true, nh = true, nd = true }
local COUNT_MAX = 1000000000

-- The cap a field names ('pc', 'dl', 'hr', 'wk', 'mo', 'nm', 'nh', 'nd'), or nil: the agent's
-- own caps are the bare names, a category's 'c:<category>:<cap>' (any cap), a tool's
-- 't:<tool>:<cap>' (per call and call counts only).
local function cap_kind(f)
  if AMOUNT_CAPS[f] or COUNT_CAPS[f] then return f end
  local scope, suffix = string.match(f, '^([ct]):[a-z0-9_.-]+:(%l%l)$')
  if not scope or #f > 69 then return nil end
  if COUNT_CAPS[suffix] or suffix == 'pc' or (scope == 'c' and AMOUNT_CAPS[suffix]) then
    return suffix
  end
  return nil
end

-- A wall beyond the balance (set_limits keeps the agent's x flag from these): every cap but
-- the agent's and categories' per-call and daily caps, which the scripts always read.
local function is_wall(f)
  local kind = cap_kind(f)
  return kind ~= nil and (string.sub(f, 1, 2) == 't:' or (kind ~= 'pc' and kind ~= 'dl'))
end

-- The enforced field a shadow field shadows ('s.pc' -> 'pc'), or nil: caps and rt only.
local function shadowed(f)
  if string.sub(f, 1, 2) ~= 's.' then return nil end
  local inner = string.sub(f, 3)
  if inner == 'rt' or cap_kind(inner) then return inner end
  return nil
end

local function field_ok(f, v)
  local inner = shadowed(f)
  if inner then f = inner end
  if f == 'rt' then return v == '' or v == '1' end
  if f == 'wh' then
    return v == '' or (#v <= 2048 and string.match(v, '^https?://[!-~]+$') ~= nil)
  end
  if f == 'low' then return v == '' or uint(v, amount_max) ~= nil end
  if f == 'lp' then return v == '' or loop_setting(v) ~= nil end
  local kind = cap_kind(f)
  if not kind then return false end
  if v == '' then return true end
  local n = uint(v, COUNT_CAPS[kind] and COUNT_MAX or amount_max)
  return n ~= nil and n > 0
end

for i = 5, #ARGV, 2 do
  if not field_ok(ARGV[i], ARGV[i + 1]) then return { C.BAD_ARGUMENT, i } end
end
local a = redis.call('HMGET', KEYS[1], 'bal')
if not a[1] then return { C.NOT_FOUND } end

-- Writes only from here on.
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
-- A new threshold above the balance is not a crossing by spending: arm the flag quietly.
local low = uint(redis.call('HGET', KEYS[1], 'low') or '', MICROS_MAX)
local lowf = '0'
if low and tonumber(a[1]) < low then lowf = '1' end
redis.call('HSET', KEYS[1], 'lowf', lowf)
-- The event carries the whole resulting limits ('l.<field>'), so the ledger can rebuild
-- them from the latest event alone, whatever order patches arrived in.
local event = { 'id', ARGV[2], 'at', istr(now_ms()), 'kind', 'limits', 'agent', ARGV[1],
  'patch', ARGV[4] }
local fields = redis.call('HGETALL', KEYS[1])
local walls, shadow = false, false
for i = 1, #fields, 2 do
  local f = fields[i]
  local inner = shadowed(f)
  if f == 'low' or f == 'wh' or f == 'rt' or f == 'lp' or cap_kind(f) or inner then
    event[#event + 1] = 'l.' .. f
    event[#event + 1] = fields[i + 1]
  end
  walls = walls or is_wall(inner or f)
  shadow = shadow or inner ~= nil
end
if walls then
  redis.call('HSET', KEYS[1], 'x', '1')
else
  redis.call('HDEL', KEYS[1], 'x')
end
if shadow then
  redis.call('HSET', KEYS[1], 'sx', '1')
else
  redis.call('HDEL', KEYS[1], 'sx')
end
redis.call('XADD', KEYS[2], '*', unpack(event))
return { C.OK }
