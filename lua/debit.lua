-- debit.lua: take tokens back from an agent's balance (an admin's adjustment), never more
-- than the available balance, and write a 'debit' ledger event with its reason. A frozen
-- agent can be debited (the admin is correcting it, not spending).
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] idempotency record    iou:{pNN}:idem:<agent>:<sha>  (passed even when unused)
-- KEYS[3] events stream         iou:{pNN}:events
-- KEYS[4] webhook outbox        iou:{pNN}:webhooks (balance.low on a crossing)
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the debit event
-- ARGV[3] amount, micros (> 0)
-- ARGV[4] amount max, micros
-- ARGV[5] idempotency body hash ('' = none)
-- ARGV[6] idempotency key as given
-- ARGV[7] reason (1..1024 bytes), passed to the ledger unchanged
-- Returns:
--   code OK = 0: {0, balance, flags, entry_id}
--   code REPLAY = 1: {1, balance, flags, entry_id, amount} of the first answer
--   code NOT_FOUND = 10: {10}
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code BALANCE_INSUFFICIENT = 17: {17, balance, cost}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local REASON_BYTES_MAX = 1024 -- 256 characters of UTF-8

local amount_max = uint(ARGV[4], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 4 } end
local amount = uint(ARGV[3], amount_max)
if not amount or amount == 0 then return { C.BAD_ARGUMENT, 3 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if ARGV[5] ~= '' and not token(ARGV[5], 64) then return { C.BAD_ARGUMENT, 5 } end
if #ARGV[7] == 0 or #ARGV[7] > REASON_BYTES_MAX then return { C.BAD_ARGUMENT, 7 } end

local a = redis.call('HMGET', KEYS[1], 'bal', 'low', 'lowf', 'wh')
if not a[1] then return { C.NOT_FOUND } end
local replay = idem_lookup(KEYS[2], ARGV[5])
if replay then return replay end
local bal = tonumber(a[1])
if amount > bal then return { C.BALANCE_INSUFFICIENT, bal, amount } end

-- Writes only from here on.
local ms = now_ms()
bal = incr(KEYS[1], 'bal', -amount)
local low = uint(a[2], MICROS_MAX)
local flags = low_flags(KEYS[1], bal, low, a[3])
outbox_low(KEYS[4], flags, a[4], ARGV[1], bal, low, ARGV[2], ms)
idem_store(KEYS[2], ARGV[5], bal, flags, ARGV[2], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[2], 'at', istr(ms), 'kind', 'debit',
  'agent', ARGV[1], 'amount', ARGV[3], 'balance_after', istr(bal), 'reason', ARGV[7],
  'idem', ARGV[6], 'ih', ARGV[5])
return { C.OK, bal, flags, ARGV[2] }
