-- hold.lua: authorize an amount for a call whose cost is settled later; the balance drops
-- at once. The amount comes from the partition's copy of the catalog: a fixed-price tool
-- holds exactly its price (a max_cost below it is refused, one above it holds the price);
-- a variable tool holds max_cost (default: its catalog price). Same checks as charge.lua
-- against that amount (the loop breaker when the agent sets one, per-call caps, daily caps counting what is spent and held today,
-- balance), then the writes: balance and held, today's held counters, the hold record
-- (fx marks a fixed price, which its capture must charge), the expiry index, the
-- idempotency record, the ledger event. A hold naming a task (ARGV[12]) is checked against
-- it as a charge is (held counts in the task until the hold closes) and recorded in it.
-- Shadow limits (sx = '1') are checked on the held amount as charge.lua checks them.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] window hash           iou:{pNN}:win:<agent>
-- KEYS[3] hold hash             iou:{pNN}:hold:<hold_id>
-- KEYS[4] open holds by expiry  iou:{pNN}:holds (zset, score = expires_at ms)
-- KEYS[5] idempotency record    iou:{pNN}:idem:<agent>:<sha>
-- KEYS[6] events stream         iou:{pNN}:events
-- KEYS[7] webhook outbox        iou:{pNN}:webhooks (balance.low on a crossing)
-- KEYS[8] catalog copy          iou:{pNN}:tools
-- KEYS[9] walls hash            iou:{pNN}:walls:<agent> (read and written only when x = '1')
-- KEYS[10] task hash            iou:{pNN}:task:<agent>:<task_id> (read when ARGV[12] is set)
-- KEYS[11] loop list            iou:{pNN}:loop:<agent>:<digest of tool and arguments> (read
--                               and written only when the agent has 'lp')
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the hold event
-- ARGV[3] hold id
-- ARGV[4] tool name
-- ARGV[5] max cost, micros (> 0; '' = none)
-- ARGV[6] amount max, micros
-- ARGV[7] ttl, ms (> 0)
-- ARGV[8] ttl max, ms
-- ARGV[9] idempotency body hash ('' = none)
-- ARGV[10] idempotency key as given
-- ARGV[11] metadata JSON text ('' = none)
-- ARGV[12] task id ('' = none)
-- Returns:
--   code OK = 0: {0, balance, flags, hold_id, expires_at_ms, amount, fixed (1 or 0), shadow}
--     shadow: the limit the shadow limits would have refused the hold with, '' when none
--   code REPLAY = 1: {1, balance, flags, hold_id, expires_at_ms, amount, fixed, shadow} of the
--     first (shadow '': a replay is no new call)
--   code NOT_FOUND = 10: {10}
--   code TOOL_NOT_FOUND = 25: {25}
--   code HOLD_BELOW_PRICE = 28: {28, price} max_cost below a fixed price
--   code NOTHING_TO_HOLD = 29: {29} the amount would be 0 (a free tool)
--   code FROZEN = 11: {11}
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code LIMIT_PER_CALL = 13: {13, max, cost, category}
--   code LIMIT_CATEGORY_PER_CALL = 14: {14, max, cost, category}
--   code LIMIT_DAILY = 15: {15, max, spent, retry_after_s, category}
--   code LIMIT_CATEGORY_DAILY = 16: {16, max, spent, retry_after_s, category}
--   code LIMIT_TOOL_PER_CALL = 33: {33, max, cost, category, tool}
--   code LIMIT_CALLS = 32: {32, limit, scope, max, retry_after_s, category, tool}
--   code LIMIT_WINDOW = 31: {31, limit, max, spent, retry_after_s, category}
--   code LOOP_DETECTED = 50: {50, tool, repeats, window_s, retry_after_s, frozen (1 or 0)}
--   code TASK_NOT_FOUND = 40: {40} no such task of this agent
--   code TASK_CLOSED = 41: {41, state} the task is closed or expired
--   code LIMIT_TASK_CALLS = 43: {43, name, max} the task's max_calls of the tool or category
--   code LIMIT_TASK_BUDGET = 42: {42, max, spent}
--   code LIMIT_TASK_REQUIRED = 44: {44} a hold without a task under require_task
--   code BALANCE_INSUFFICIENT = 17: {17, balance, cost}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[6], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 6 } end
local max_cost = nil
if ARGV[5] ~= '' then
  max_cost = uint(ARGV[5], amount_max)
  if not max_cost or max_cost == 0 then return { C.BAD_ARGUMENT, 5 } end
end
local ttl_max = uint(ARGV[8], MICROS_MAX)
if not ttl_max then return { C.BAD_ARGUMENT, 8 } end
local ttl = uint(ARGV[7], ttl_max)
if not ttl or ttl == 0 then return { C.BAD_ARGUMENT, 7 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if not name(ARGV[4]) then return { C.BAD_ARGUMENT, 4 } end
if ARGV[9] ~= '' and not token(ARGV[9], 64) then return { C.BAD_ARGUMENT, 9 } end
-- A task id, or '' (also when absent: callers written before tasks pass no ARGV[12]).
local task_id = ARGV[12] or ''
if task_id ~= '' and not token(task_id, 64) then return { C.BAD_ARGUMENT, 12 } end

local tool = tool_read(KEYS[8], ARGV[4])
if not tool then return { C.TOOL_NOT_FOUND } end
local cat = tool.category
local a = redis.call('HMGET', KEYS[1], 'bal', 'frozen', 'pc', 'dl', 'low', 'lowf',
  'c:' .. cat .. ':pc', 'c:' .. cat .. ':dl', 'wh', 'x', 'rt', 'lp', 'sx')
if not a[1] then return { C.NOT_FOUND } end
local replay = idem_lookup(KEYS[5], ARGV[9])
if replay then
  if replay[1] == C.REPLAY then
    -- The first hold's own record (same partition: its key differs from KEYS[3] only by id).
    local first = { false, false }
    if string.sub(KEYS[3], -#ARGV[3]) == ARGV[3] then
      first = redis.call('HMGET', string.sub(KEYS[3], 1, #KEYS[3] - #ARGV[3]) .. replay[4],
        'amount', 'fx')
    end
    replay[6] = tonumber(first[1]) or (tool.fixed and tool.price) or max_cost or tool.price
    replay[7] = (first[2] or (tool.fixed and '1' or '0')) == '1' and 1 or 0
    replay[8] = ''
  end
  return replay
end
if redis.call('EXISTS', KEYS[3]) == 1 then return { C.BAD_ARGUMENT, 3 } end

-- What is held: the client never chooses the price of a fixed-price tool.
local amount = max_cost or tool.price
if tool.fixed then
  if max_cost and max_cost < tool.price then return { C.HOLD_BELOW_PRICE, tool.price } end
  amount = tool.price
end
if amount == 0 then return { C.NOTHING_TO_HOLD } end

local bal = tonumber(a[1])
local ms = now_ms()
local day = math.floor(ms / DAY_MS)
local win = window_read(KEYS[2], day, cat)
local pc, dl, low, cpc, cdl = uint(a[3], MICROS_MAX), uint(a[4], MICROS_MAX),
  uint(a[5], MICROS_MAX), uint(a[7], MICROS_MAX), uint(a[8], MICROS_MAX)
if a[2] == '1' then return { C.FROZEN } end
local loop = loop_read(a[12], KEYS[11])
local refusal = loop_refusal(loop, ms, ARGV[4])
if refusal then
  return loop_freeze({ agent = KEYS[1], events = KEYS[6], outbox = KEYS[7] }, loop, refusal,
    { agent = ARGV[1], entry_id = ARGV[2], bal = a[1], frozen = a[2], wh = a[9] }, ms)
end
refusal = per_call_refusal(pc, cpc, amount) or daily_refusal(dl, cdl, win, amount, ms)
if refusal then
  refusal[#refusal + 1] = cat
  return refusal
end
local walls = nil
if a[10] == '1' then
  local p = periods(ms)
  walls = { p = p, caps = caps_read(KEYS[1], cat, ARGV[4]), st = walls_read(KEYS[9], p, cat,
    ARGV[4]) }
  refusal = walls_refusal(walls.caps, walls.st, p, amount, cat, ARGV[4])
  if refusal then return refusal end
end
local task = nil
if task_id ~= '' then
  task = task_read(KEYS[10], ARGV[4], cat)
  if not task then return { C.TASK_NOT_FOUND } end
  refusal = task_refusal(task, ms, amount, ARGV[4], cat)
  if refusal then return refusal end
elseif a[11] == '1' then
  return { C.LIMIT_TASK_REQUIRED }
end
if amount > bal then return { C.BALANCE_INSUFFICIENT, bal, amount } end
local shadow = nil
if a[13] == '1' then
  shadow = shadow_refusal(shadow_read(KEYS[1], cat, ARGV[4]), win, walls, ms, amount, cat,
    ARGV[4], task ~= nil)
end

-- Writes only from here on.
shadow = shadow_count(KEYS[1], shadow, amount)
local expires = ms + ttl
local amount_text, fixed = istr(amount), tool.fixed and 1 or 0
bal = incr(KEYS[1], 'bal', -amount)
incr(KEYS[1], 'held', amount)
window_add(KEYS[2], win, 'h', cat, amount)
redis.call('HSET', KEYS[3], 'agent', ARGV[1], 'tool', ARGV[4], 'category', cat,
  'amount', amount_text, 'day', istr(day), 'exp', istr(expires), 'state', 'open',
  'fx', istr(fixed))
redis.call('ZADD', KEYS[4], istr(expires), ARGV[3])
if walls then
  -- The hold counts in the walls while open (the call itself is counted now, not at capture);
  -- its periods tell its close which held counters are still its own.
  walls_write(walls.st, 0, amount, 1)
  redis.call('HSET', KEYS[3], 'xw', '1', 'wk', istr(walls.p.week), 'mo', istr(walls.p.month))
end
if task then
  task_count(KEYS[10], task, ARGV[4], cat, 0, amount, ARGV[3])
  redis.call('HSET', KEYS[3], 'task', task_id)
end
loop_write(loop, ms)
local flags = low_flags(KEYS[1], bal, low, a[6])
  + near_flag(dl, cdl, win[2] + win[3] + amount, win[4] + win[5] + amount)
if walls then flags = flags + walls_near(walls.caps, walls.st, amount) end
outbox_low(KEYS[7], flags, a[9], ARGV[1], bal, low, ARGV[2], ms)
idem_store(KEYS[5], ARGV[9], bal, flags, ARGV[3], istr(expires))
local event = { 'id', ARGV[2], 'at', istr(ms), 'kind', 'hold',
  'agent', ARGV[1], 'tool', ARGV[4], 'category', cat, 'amount', amount_text,
  'balance_after', istr(bal), 'hold_id', ARGV[3], 'expires_at', istr(expires),
  'idem', ARGV[10], 'ih', ARGV[9], 'meta', ARGV[11] }
redis.call('XADD', KEYS[6], '*', unpack(shadow_event(task_event(event, task and task_id),
  shadow)))
return { C.OK, bal, flags, ARGV[3], expires, amount, fixed, shadow }
