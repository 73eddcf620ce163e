-- hold.lua: authorize up to max_cost for a variable-cost call; the balance drops at once.
-- Same checks as charge.lua against max_cost (per-call caps, daily caps counting what is
-- spent and held today, balance), then the writes: balance and held, today's held
-- counters, the hold record, the expiry index, the idempotency record, the ledger event.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] window hash           iou:{pNN}:win:<agent>
-- KEYS[3] hold hash             iou:{pNN}:hold:<hold_id>
-- KEYS[4] open holds by expiry  iou:{pNN}:holds (zset, score = expires_at ms)
-- KEYS[5] idempotency record    iou:{pNN}:idem:<agent>:<sha>
-- KEYS[6] events stream         iou:{pNN}:events
-- KEYS[7] webhook outbox        iou:{pNN}:webhooks (balance.low on a crossing)
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the hold event
-- ARGV[3] hold id
-- ARGV[4] tool name
-- ARGV[5] category
-- ARGV[6] max cost, micros (> 0)
-- ARGV[7] amount max, micros
-- ARGV[8] ttl, ms (> 0)
-- ARGV[9] ttl max, ms
-- ARGV[10] idempotency body hash ('' = none)
-- ARGV[11] idempotency key as given
-- ARGV[12] metadata JSON text ('' = none)
-- Returns:
--   code OK = 0: {0, balance, flags, hold_id, expires_at_ms}
--   code REPLAY = 1: {1, balance, flags, hold_id, expires_at_ms} of the first answer
--   code NOT_FOUND = 10: {10}
--   code FROZEN = 11: {11}
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code LIMIT_PER_CALL = 13: {13, max, cost}
--   code LIMIT_CATEGORY_PER_CALL = 14: {14, max, cost}
--   code LIMIT_DAILY = 15: {15, max, spent, retry_after_s}
--   code LIMIT_CATEGORY_DAILY = 16: {16, max, spent, retry_after_s}
--   code BALANCE_INSUFFICIENT = 17: {17, balance, cost}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[7], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 7 } end
local max_cost = uint(ARGV[6], amount_max)
if not max_cost or max_cost == 0 then return { C.BAD_ARGUMENT, 6 } end
local ttl_max = uint(ARGV[9], MICROS_MAX)
if not ttl_max then return { C.BAD_ARGUMENT, 9 } end
local ttl = uint(ARGV[8], ttl_max)
if not ttl or ttl == 0 then return { C.BAD_ARGUMENT, 8 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if not name(ARGV[4]) then return { C.BAD_ARGUMENT, 4 } end
local cat = name(ARGV[5])
if not cat then return { C.BAD_ARGUMENT, 5 } end
if ARGV[10] ~= '' and not token(ARGV[10], 64) then return { C.BAD_ARGUMENT, 10 } end

local a = redis.call('HMGET', KEYS[1], 'bal', 'frozen', 'pc', 'dl', 'low', 'lowf',
  'c:' .. cat .. ':pc', 'c:' .. cat .. ':dl', 'wh')
if not a[1] then return { C.NOT_FOUND } end
local replay = idem_lookup(KEYS[5], ARGV[10])
if replay then return replay end
if redis.call('EXISTS', KEYS[3]) == 1 then return { C.BAD_ARGUMENT, 3 } end

local bal = tonumber(a[1])
local ms = now_ms()
local day = math.floor(ms / DAY_MS)
local win = window_read(KEYS[2], day, cat)
local pc, dl, low, cpc, cdl = uint(a[3], MICROS_MAX), uint(a[4], MICROS_MAX),
  uint(a[5], MICROS_MAX), uint(a[7], MICROS_MAX), uint(a[8], MICROS_MAX)
if a[2] == '1' then return { C.FROZEN } end
local refusal = per_call_refusal(pc, cpc, max_cost) or daily_refusal(dl, cdl, win, max_cost, ms)
if refusal then return refusal end
if max_cost > bal then return { C.BALANCE_INSUFFICIENT, bal, max_cost } end

-- Writes only from here on.
local expires = ms + ttl
bal = incr(KEYS[1], 'bal', -max_cost)
incr(KEYS[1], 'held', max_cost)
window_add(KEYS[2], win, 'h', cat, max_cost)
redis.call('HSET', KEYS[3], 'agent', ARGV[1], 'tool', ARGV[4], 'category', cat,
  'amount', ARGV[6], 'day', istr(day), 'exp', istr(expires), 'state', 'open')
redis.call('ZADD', KEYS[4], istr(expires), ARGV[3])
local flags = low_flags(KEYS[1], bal, low, a[6])
  + near_flag(dl, cdl, win[2] + win[3] + max_cost, win[4] + win[5] + max_cost)
outbox_low(KEYS[7], flags, a[9], ARGV[1], bal, low, ARGV[2], ms)
idem_store(KEYS[5], ARGV[10], bal, flags, ARGV[3], istr(expires))
redis.call('XADD', KEYS[6], '*', 'id', ARGV[2], 'at', istr(ms), 'kind', 'hold',
  'agent', ARGV[1], 'tool', ARGV[4], 'category', cat, 'amount', ARGV[6],
  'balance_after', istr(bal), 'hold_id', ARGV[3], 'expires_at', istr(expires),
  'idem', ARGV[11], 'ih', ARGV[10], 'meta', ARGV[12])
return { C.OK, bal, flags, ARGV[3], expires }
