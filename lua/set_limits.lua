-- set_limits.lua: merge a patch into an agent's limits; an empty value removes a limit.
-- Fields: pc (per call), dl (daily), low (low-balance threshold), wh (webhook URL),
-- c:<category>:pc and c:<category>:dl. Every field is checked before the first write.
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
if #ARGV % 2 ~= 0 or #ARGV > 4 + 2 * 64 then return { C.BAD_ARGUMENT, #ARGV } end

-- A category's cap field: 'c:<category>:pc' or 'c:<category>:dl' (Lua patterns have no
-- alternation, so the suffix is compared after the match).
local function category_cap(f)
  local suffix = string.match(f, '^c:[a-z0-9_.-]+:(%l%l)$')
  return suffix == 'pc' or suffix == 'dl'
end

local function field_ok(f, v)
  if v == '' then
    return f == 'pc' or f == 'dl' or f == 'low' or f == 'wh' or category_cap(f)
  end
  if f == 'wh' then
    return #v <= 2048 and (string.match(v, '^https?://[!-~]+$') ~= nil)
  end
  if f == 'low' then return uint(v, amount_max) ~= nil end
  local ok = f == 'pc' or f == 'dl' or category_cap(f)
  local n = uint(v, amount_max)
  return ok and n ~= nil and n > 0 and (f == 'pc' or f == 'dl' or #f <= 69)
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
for i = 1, #fields, 2 do
  local f = fields[i]
  if f == 'pc' or f == 'dl' or f == 'low' or f == 'wh' or string.sub(f, 1, 2) == 'c:' then
    event[#event + 1] = 'l.' .. f
    event[#event + 1] = fields[i + 1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(event))
return { C.OK }
