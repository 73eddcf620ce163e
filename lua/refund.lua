-- refund.lua: give back part or all of one charge (a charge, a batch item or a capture), never
-- more than it cost over all its refunds, and write a 'refund' ledger event.
-- The charge's cost, time, tool and category come from the ledger (the caller read its row);
-- the running total refunded lives here, in one record per refunded charge in the agent's
-- slot, so that concurrent refunds of one charge see each other: the script reads the total,
-- checks, and adds, with nothing in between. The record expires REFUND_TTL_MS after the last
-- refund; when it is absent the caller's ARGV[5] (what the ledger holds as refunded) is the
-- starting point: by then every earlier refund is in the ledger (and after iou recover, the
-- ledger is all there is).
-- The amount goes back to the balance and, when the charge is still in the current window,
-- to that window's spending: today's daily window (agent and category), and the walls' rolling
-- hour, ISO week and month counters of the agent and the category (never below zero; no
-- counter is created). Call counts stay: the call happened. A charge made under a task
-- (ARGV[15]) gives the amount back to the task's spent (and its tool's and category's) while
-- the task is open; a closed or expired task keeps the summary it closed with. The refund
-- event carries the task.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] window hash           iou:{pNN}:win:<agent>
-- KEYS[3] idempotency record    iou:{pNN}:idem:<agent>:<sha>  (passed even when unused)
-- KEYS[4] events stream         iou:{pNN}:events
-- KEYS[5] refunded record       iou:{pNN}:refunded:<charge_id> (string: micros refunded)
-- KEYS[6] walls hash            iou:{pNN}:walls:<agent>
-- KEYS[7] task hash             iou:{pNN}:task:<agent>:<task_id> (touched only with ARGV[15])
-- ARGV[1] agent name (the charge's)
-- ARGV[2] entry id (UUIDv7) of the refund event; becomes the refund id
-- ARGV[3] charge id (the refunded ledger entry)
-- ARGV[4] charge cost, micros (> 0)
-- ARGV[5] refunded so far according to the ledger, micros (used when KEYS[5] is absent)
-- ARGV[6] amount, micros ('' = what is left to refund)
-- ARGV[7] amount max, micros
-- ARGV[8] balance max, micros (funded money may never exceed it)
-- ARGV[9] charge time, ms
-- ARGV[10] charge tool
-- ARGV[11] charge category
-- ARGV[12] idempotency body hash ('' = none)
-- ARGV[13] idempotency key as given
-- ARGV[14] reason ('' = none; at most 1024 bytes), passed to the ledger unchanged
-- ARGV[15] the charge's task id ('' = none)
-- Returns:
--   code OK = 0: {0, balance, flags, entry_id, amount}
--   code REPLAY = 1: {1, balance, flags, entry_id, amount} of the first answer
--   code NOT_FOUND = 10: {10} unknown agent
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code REFUND_EXCEEDS = 60: {60, refundable} more than what is left to refund (or none left)
--   code BALANCE_OVERFLOW = 22: {22, balance, balance_max}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local REFUND_TTL_MS = 30 * DAY_MS
local REASON_BYTES_MAX = 1024 -- 256 characters of UTF-8

local amount_max = uint(ARGV[7], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 7 } end
local cost = uint(ARGV[4], amount_max)
if not cost or cost == 0 then return { C.BAD_ARGUMENT, 4 } end
local ledger_refunded = uint(ARGV[5], cost)
if not ledger_refunded then return { C.BAD_ARGUMENT, 5 } end
local asked = nil
if ARGV[6] ~= '' then
  asked = uint(ARGV[6], amount_max)
  if not asked or asked == 0 then return { C.BAD_ARGUMENT, 6 } end
end
local balance_max = uint(ARGV[8], MICROS_MAX)
if not balance_max then return { C.BAD_ARGUMENT, 8 } end
local at_ms = uint(ARGV[9], MICROS_MAX)
if not at_ms then return { C.BAD_ARGUMENT, 9 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if not name(ARGV[10]) then return { C.BAD_ARGUMENT, 10 } end
if not name(ARGV[11]) then return { C.BAD_ARGUMENT, 11 } end
if ARGV[12] ~= '' and not token(ARGV[12], 64) then return { C.BAD_ARGUMENT, 12 } end
if #ARGV[14] > REASON_BYTES_MAX then return { C.BAD_ARGUMENT, 14 } end
if ARGV[15] ~= '' and not token(ARGV[15], 64) then return { C.BAD_ARGUMENT, 15 } end

local a = redis.call('HMGET', KEYS[1], 'bal', 'held', 'low', 'lowf')
if not a[1] then return { C.NOT_FOUND } end
local replay = idem_lookup(KEYS[3], ARGV[12])
if replay then return replay end

local refunded = ledger_refunded
local recorded = redis.call('GET', KEYS[5])
if recorded then refunded = uint(recorded, MICROS_MAX) or cost end
local left = cost - refunded
if left < 0 then left = 0 end
local amount = asked or left
if amount == 0 or amount > left then return { C.REFUND_EXCEEDS, left } end
local bal = tonumber(a[1])
if bal + num(a[2]) + amount > balance_max then
  return { C.BALANCE_OVERFLOW, bal, balance_max }
end

-- Writes only from here on.
local ms = now_ms()
local cat = ARGV[11]
redis.call('SET', KEYS[5], istr(refunded + amount), 'PX', REFUND_TTL_MS)
bal = incr(KEYS[1], 'bal', amount)

-- Gives back up to `amount` of each named counter that exists (never below zero).
local function give_back(key, fields)
  local v = redis.call('HMGET', key, unpack(fields))
  for i, f in ipairs(fields) do
    if v[i] then
      local n = tonumber(v[i])
      redis.call('HSET', key, f, istr(n > amount and n - amount or 0))
    end
  end
end

local day = math.floor(ms / DAY_MS)
if math.floor(at_ms / DAY_MS) == day and num(redis.call('HGET', KEYS[2], 'day')) == day then
  give_back(KEYS[2], { 's', 's:' .. cat })
end
walls_refund(KEYS[6], ms, periods(at_ms), cat, amount)
if ARGV[15] ~= '' then
  local t = redis.call('HMGET', KEYS[7], 'state', 'exp')
  if t[1] == 'open' and ms < num(t[2]) then
    give_back(KEYS[7], { 'spent', 'st:' .. ARGV[10], 'sc:' .. cat })
  end
end

local flags = low_flags(KEYS[1], bal, uint(a[3], MICROS_MAX), a[4])
local amount_text = istr(amount)
idem_store(KEYS[3], ARGV[12], bal, flags, ARGV[2], amount_text)
redis.call('XADD', KEYS[4], '*', unpack(task_event({ 'id', ARGV[2], 'at', istr(ms),
  'kind', 'refund', 'agent', ARGV[1], 'tool', ARGV[10], 'category', cat, 'amount', amount_text,
  'balance_after', istr(bal), 'ref', ARGV[3], 'reason', ARGV[14], 'idem', ARGV[13],
  'ih', ARGV[12] }, ARGV[15] ~= '' and ARGV[15] or nil)))
return { C.OK, bal, flags, ARGV[2], amount }
