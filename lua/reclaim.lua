-- reclaim.lua: move what a sub-agent has left (or part of it) back to its parent, in one
-- step: the child's available balance down, the parent's up (money the child holds in open
-- holds stays with the child until they close). Only the child's own parent (its hash's
-- 'parent') receives it.
-- KEYS[1] child agent hash      iou:{pNN}:agent:<child>
-- KEYS[2] parent agent hash     iou:{pNN}:agent:<parent>
-- KEYS[3] events stream         iou:{pNN}:events
-- KEYS[4] idempotency record    iou:{pNN}:idem:<child>:<sha>  (passed even when unused)
-- ARGV[1] child name
-- ARGV[2] parent name (must be the child's parent)
-- ARGV[3] entry id (UUIDv7) of the child's 'transfer_out' event
-- ARGV[4] entry id of the parent's 'transfer_in' event
-- ARGV[5] amount, micros ('' = all the child's available balance)
-- ARGV[6] amount max, micros
-- ARGV[7] balance max, micros (the parent's funded money may never exceed it)
-- ARGV[8] idempotency body hash ('' = none)
-- ARGV[9] idempotency key as given
-- Returns:
--   code OK = 0: {0, balance, flags, entry_id, amount} balance: the child's, after
--   code REPLAY = 1: {1, balance, flags, entry_id, amount} of the first answer
--   code NOT_FOUND = 10: {10} unknown child or parent
--   code NOT_A_CHILD = 61: {61} the agent is not a sub-agent of ARGV[2]
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code BALANCE_INSUFFICIENT = 17: {17, balance, cost} more than the child has available
--   code BALANCE_OVERFLOW = 22: {22, balance, balance_max}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[6], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 6 } end
local asked = nil
if ARGV[5] ~= '' then
  asked = uint(ARGV[5], amount_max)
  if not asked or asked == 0 then return { C.BAD_ARGUMENT, 5 } end
end
local balance_max = uint(ARGV[7], MICROS_MAX)
if not balance_max then return { C.BAD_ARGUMENT, 7 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not name(ARGV[2]) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if not token(ARGV[4], 64) then return { C.BAD_ARGUMENT, 4 } end
if ARGV[8] ~= '' and not token(ARGV[8], 64) then return { C.BAD_ARGUMENT, 8 } end

local c = redis.call('HMGET', KEYS[1], 'bal', 'parent', 'low', 'lowf')
if not c[1] then return { C.NOT_FOUND } end
if c[2] ~= ARGV[2] then return { C.NOT_A_CHILD } end
local p = redis.call('HMGET', KEYS[2], 'bal', 'held', 'low', 'lowf')
if not p[1] then return { C.NOT_FOUND } end
local replay = idem_lookup(KEYS[4], ARGV[8])
if replay then return replay end
local child_bal, parent_bal = tonumber(c[1]), tonumber(p[1])
local amount = asked or child_bal
if amount > child_bal then return { C.BALANCE_INSUFFICIENT, child_bal, amount } end
if parent_bal + num(p[2]) + amount > balance_max then
  return { C.BALANCE_OVERFLOW, parent_bal, balance_max }
end
if amount == 0 then return { C.OK, child_bal, 0, '', 0 } end

-- Writes only from here on.
local at = istr(now_ms())
child_bal = incr(KEYS[1], 'bal', -amount)
parent_bal = incr(KEYS[2], 'bal', amount)
local flags = low_flags(KEYS[1], child_bal, uint(c[3], MICROS_MAX), c[4])
low_flags(KEYS[2], parent_bal, uint(p[3], MICROS_MAX), p[4])
local amount_text = istr(amount)
idem_store(KEYS[4], ARGV[8], child_bal, flags, ARGV[3], amount_text)
redis.call('XADD', KEYS[3], '*', 'id', ARGV[3], 'at', at, 'kind', 'transfer_out',
  'agent', ARGV[1], 'amount', amount_text, 'balance_after', istr(child_bal), 'ref', ARGV[2],
  'idem', ARGV[9], 'ih', ARGV[8])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[4], 'at', at, 'kind', 'transfer_in',
  'agent', ARGV[2], 'amount', amount_text, 'balance_after', istr(parent_bal), 'ref', ARGV[1])
return { C.OK, child_bal, flags, ARGV[3], amount }
