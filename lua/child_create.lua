-- child_create.lua: create a sub-agent funded by its parent: the amount moves (parent's
-- balance down, the child's up) in the same step as the child is created, so the family's
-- money is never created, lost or pooled. The child lives in its parent's partition (the
-- caller chose a name that hashes there), so both hashes are in this one slot. The child's
-- hash keeps its parent's name ('parent'); its limits (the caller merged them, only tighter
-- than the parent's) are written as set_limits.lua would.
-- KEYS[1] parent agent hash     iou:{pNN}:agent:<parent>
-- KEYS[2] child agent hash      iou:{pNN}:agent:<child>
-- KEYS[3] child's key hashes    iou:{pNN}:keys:<child>
-- KEYS[4] key lookup            iou:{pNN}:apikey:<sha256>
-- KEYS[5] events stream         iou:{pNN}:events
-- KEYS[6] agent names           iou:{pNN}:agents
-- KEYS[7] webhook outbox        iou:{pNN}:webhooks (the parent's balance.low on a crossing)
-- KEYS[8] parent's children     iou:{pNN}:children:<parent> (set of names, for listing)
-- ARGV[1] parent name
-- ARGV[2] child name
-- ARGV[3] entry id (UUIDv7) of the child's 'agent' event
-- ARGV[4] entry id of the parent's 'transfer_out' event
-- ARGV[5] entry id of the child's 'transfer_in' event
-- ARGV[6] entry id of the child's 'limits' event (written only with limit pairs)
-- ARGV[7] amount, micros (> 0)
-- ARGV[8] amount max, micros
-- ARGV[9] the child's low-balance threshold, micros (0 = none)
-- ARGV[10] key id of the child's first key
-- ARGV[11] key hash (hex sha256 of the child's key)
-- ARGV[12] the child's limits as JSON text, for the ledger ('' = none)
-- ARGV[13..] the child's limit field, value pairs (agent-hash fields, x included)
-- Returns:
--   code OK = 0: {0, balance, child_balance, created_at_ms} balance: the parent's, after
--   code NOT_FOUND = 10: {10} unknown parent
--   code FROZEN = 11: {11} the parent is frozen
--   code AGENT_EXISTS = 21: {21} the child's name is taken
--   code BALANCE_INSUFFICIENT = 17: {17, balance, cost}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local PAIRS_MAX = 64

local amount_max = uint(ARGV[8], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 8 } end
local amount = uint(ARGV[7], amount_max)
if not amount or amount == 0 then return { C.BAD_ARGUMENT, 7 } end
local low = uint(ARGV[9], amount_max)
if not low then return { C.BAD_ARGUMENT, 9 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not name(ARGV[2]) or ARGV[2] == ARGV[1] then return { C.BAD_ARGUMENT, 2 } end
for i = 3, 6 do
  if not token(ARGV[i], 64) then return { C.BAD_ARGUMENT, i } end
end
if not token(ARGV[10], 64) then return { C.BAD_ARGUMENT, 10 } end
if not string.match(ARGV[11], '^[0-9a-f]+$') or #ARGV[11] ~= 64 then
  return { C.BAD_ARGUMENT, 11 }
end
if #ARGV % 2 ~= 0 or #ARGV > 12 + 2 * PAIRS_MAX then return { C.BAD_ARGUMENT, #ARGV } end
for i = 13, #ARGV, 2 do
  if not string.match(ARGV[i], '^[a-z][a-z0-9_.:-]*$') or #ARGV[i] > 80 then
    return { C.BAD_ARGUMENT, i }
  end
  if not token(ARGV[i + 1], 2048) then return { C.BAD_ARGUMENT, i + 1 } end
end

local p = redis.call('HMGET', KEYS[1], 'bal', 'frozen', 'low', 'lowf', 'wh')
if not p[1] then return { C.NOT_FOUND } end
if p[2] == '1' then return { C.FROZEN } end
if redis.call('EXISTS', KEYS[2]) == 1 then return { C.AGENT_EXISTS } end
if redis.call('EXISTS', KEYS[4]) == 1 then return { C.BAD_ARGUMENT, 11 } end
local bal = tonumber(p[1])
if amount > bal then return { C.BALANCE_INSUFFICIENT, bal, amount } end

-- Writes only from here on.
local ms = now_ms()
local at = istr(ms)
bal = incr(KEYS[1], 'bal', -amount)
local parent_low = uint(p[3], MICROS_MAX)
local flags = low_flags(KEYS[1], bal, parent_low, p[4])
outbox_low(KEYS[7], flags, p[5], ARGV[1], bal, parent_low, ARGV[4], ms)
redis.call('HSET', KEYS[2], 'bal', ARGV[7], 'held', '0', 'frozen', '0', 'created', at,
  'parent', ARGV[1], 'lowf', (low > 0 and amount < low) and '1' or '0')
if low > 0 then redis.call('HSET', KEYS[2], 'low', ARGV[9]) end
local limits = { 'id', ARGV[6], 'at', at, 'kind', 'limits', 'agent', ARGV[2], 'patch', ARGV[12] }
for i = 13, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if ARGV[i] ~= 'x' then
    limits[#limits + 1] = 'l.' .. ARGV[i]
    limits[#limits + 1] = ARGV[i + 1]
  end
end
if low > 0 then
  limits[#limits + 1] = 'l.low'
  limits[#limits + 1] = ARGV[9]
end
redis.call('ZADD', KEYS[6], 0, ARGV[2])
redis.call('SADD', KEYS[8], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[10], ARGV[11])
redis.call('HSET', KEYS[4], 'agent', ARGV[2], 'key_id', ARGV[10], 'created', at)
redis.call('XADD', KEYS[5], '*', 'id', ARGV[3], 'at', at, 'kind', 'agent', 'agent', ARGV[2],
  'low', ARGV[9], 'key_id', ARGV[10], 'key_hash', ARGV[11], 'parent', ARGV[1])
if #ARGV > 12 then redis.call('XADD', KEYS[5], '*', unpack(limits)) end
redis.call('XADD', KEYS[5], '*', 'id', ARGV[4], 'at', at, 'kind', 'transfer_out',
  'agent', ARGV[1], 'amount', ARGV[7], 'balance_after', istr(bal), 'ref', ARGV[2])
redis.call('XADD', KEYS[5], '*', 'id', ARGV[5], 'at', at, 'kind', 'transfer_in',
  'agent', ARGV[2], 'amount', ARGV[7], 'balance_after', ARGV[7], 'ref', ARGV[1])
return { C.OK, bal, amount, ms }
