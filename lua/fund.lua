-- fund.lua: add tokens to an agent's balance (kind 'fund', or 'grant' for sign-up grants
-- given after creation), with an optional idempotency key, and write the ledger event.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] idempotency record    iou:{pNN}:idem:<agent>:<sha>
-- KEYS[3] events stream         iou:{pNN}:events
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7)
-- ARGV[3] amount, micros (> 0)
-- ARGV[4] amount max, micros
-- ARGV[5] balance max, micros (the balance may never exceed it)
-- ARGV[6] kind: 'fund' or 'grant'
-- ARGV[7] idempotency body hash ('' = none)
-- ARGV[8] idempotency key as given
-- ARGV[9] metadata JSON text ('' = none)
-- Returns:
--   code OK = 0: {0, balance, flags, entry_id}
--   code REPLAY = 1: {1, balance, flags, entry_id, amount} of the first answer
--   code NOT_FOUND = 10: {10}
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code BALANCE_OVERFLOW = 22: {22, balance, balance_max}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[4], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 4 } end
local amount = uint(ARGV[3], amount_max)
if not amount or amount == 0 then return { C.BAD_ARGUMENT, 3 } end
local balance_max = uint(ARGV[5], MICROS_MAX)
if not balance_max then return { C.BAD_ARGUMENT, 5 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if ARGV[6] ~= 'fund' and ARGV[6] ~= 'grant' then return { C.BAD_ARGUMENT, 6 } end
if ARGV[7] ~= '' and not token(ARGV[7], 64) then return { C.BAD_ARGUMENT, 7 } end

local a = redis.call('HMGET', KEYS[1], 'bal', 'held', 'low', 'lowf')
if not a[1] then return { C.NOT_FOUND } end
local replay = idem_lookup(KEYS[2], ARGV[7])
if replay then return replay end
local bal = tonumber(a[1])
-- Funded money is balance plus held: both must stay exact Lua integers.
if bal + num(a[2]) + amount > balance_max then
  return { C.BALANCE_OVERFLOW, bal, balance_max }
end

-- Writes only from here on.
local ms = now_ms()
bal = incr(KEYS[1], 'bal', amount)
local flags = low_flags(KEYS[1], bal, uint(a[3], MICROS_MAX), a[4])
idem_store(KEYS[2], ARGV[7], bal, flags, ARGV[2], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[2], 'at', istr(ms), 'kind', ARGV[6],
  'agent', ARGV[1], 'amount', ARGV[3], 'balance_after', istr(bal), 'idem', ARGV[8],
  'ih', ARGV[7], 'meta', ARGV[9])
return { C.OK, bal, flags, ARGV[2] }
