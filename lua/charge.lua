-- charge.lua: charge one tool call against an agent's balance, atomically.
-- The price, category and pricing come from the partition's copy of the catalog, read here
-- in the same step as the charge, so a price change applies to every call after the PUT.
-- Order: arguments, tool, agent, idempotency (replay/conflict), pricing, free tool, frozen,
-- the loop breaker when the agent sets one ('lp': free calls meet it too), per-call cap, category per-call cap, daily cap, category daily cap, then the walls beyond
-- the balance when the agent sets any (x = '1': the tool's per-call cap, call caps, which
-- free calls meet too, the rolling-hour, weekly and monthly windows), the task (named by
-- ARGV[9]: unknown, closed or expired, max_calls, budget; or require_task for a paid call
-- naming none), balance; then, and only then, the writes: decrement, window counters,
-- walls counters (and their near-limit warning bits), task counters, the loop list,
-- low-balance flag, idempotency record, ledger event. A loop refusal with action freeze
-- writes the freeze (agent hash, event, webhook agent.loop_detected) and nothing else.
-- Shadow limits (sx = '1'): after every enforced check passed, the shadow caps are checked
-- in the same order on the same counters; a would-be refusal changes nothing of the answer,
-- it is named in the reply and the event and summed in the agent hash (_lib.lua).
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] window hash           iou:{pNN}:win:<agent>
-- KEYS[3] idempotency record    iou:{pNN}:idem:<agent>:<sha>  (passed even when unused)
-- KEYS[4] events stream         iou:{pNN}:events
-- KEYS[5] webhook outbox        iou:{pNN}:webhooks (balance.low on a crossing)
-- KEYS[6] catalog copy          iou:{pNN}:tools
-- KEYS[7] walls hash            iou:{pNN}:walls:<agent> (read and written only when x = '1')
-- KEYS[8] task hash             iou:{pNN}:task:<agent>:<task_id> (read when ARGV[9] is set)
-- KEYS[9] loop list             iou:{pNN}:loop:<agent>:<digest of tool and arguments> (read
--                               and written only when the agent has 'lp'; callers written
--                               before the loop breaker pass none)
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7, minted by the gateway; becomes the charge id)
-- ARGV[3] tool name
-- ARGV[4] cost, micros, for tools priced variable ('' = none; fixed-price tools take none)
-- ARGV[5] amount max, micros
-- ARGV[6] idempotency body hash ('' = no idempotency key)
-- ARGV[7] idempotency key as given by the caller (for the ledger)
-- ARGV[8] metadata JSON text ('' = none), passed to the ledger unchanged
-- ARGV[9] task id ('' = none)
-- Returns:
--   code OK = 0: {0, balance, flags, entry_id, cost, category, shadow}
--     shadow: the limit the shadow limits would have refused the call with, '' when none
--   code REPLAY = 1: {1, balance, flags, entry_id, cost, category, shadow} of the first
--     answer (shadow '': a replay is no new call)
--   code NOT_FOUND = 10: {10} unknown agent
--   code TOOL_NOT_FOUND = 25: {25} the tool is not in the catalog
--   code COST_FIXED = 26: {26, price} a cost was given for a fixed-price tool
--   code COST_REQUIRED = 27: {27} no cost for a tool priced variable
--   code FROZEN = 11: {11}
--   code IDEMPOTENCY_CONFLICT = 12: {12} same key, other body
--   code LIMIT_PER_CALL = 13: {13, max, cost, category}
--   code LIMIT_CATEGORY_PER_CALL = 14: {14, max, cost, category}
--   code LIMIT_DAILY = 15: {15, max, spent, retry_after_s, category}
--   code LIMIT_CATEGORY_DAILY = 16: {16, max, spent, retry_after_s, category}
--   code LIMIT_TOOL_PER_CALL = 33: {33, max, cost, category, tool}
--   code LIMIT_CALLS = 32: {32, limit, scope, max, retry_after_s, category, tool}
--   code LIMIT_WINDOW = 31: {31, limit, max, spent, retry_after_s, category}
--   code TASK_NOT_FOUND = 40: {40} no such task of this agent
--   code TASK_CLOSED = 41: {41, state} the task is closed or expired
--   code LIMIT_TASK_CALLS = 43: {43, name, max} the task's max_calls of the tool or category
--   code LIMIT_TASK_BUDGET = 42: {42, max, spent}
--   code LIMIT_TASK_REQUIRED = 44: {44} a paid call without a task under require_task
--   code LOOP_DETECTED = 50: {50, tool, repeats, window_s, retry_after_s, frozen (1 or 0)}
--   code BALANCE_INSUFFICIENT = 17: {17, balance, cost}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[5], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 5 } end
local given = nil
if ARGV[4] ~= '' then
  given = uint(ARGV[4], amount_max)
  if not given then return { C.BAD_ARGUMENT, 4 } end
end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not name(ARGV[3]) then return { C.BAD_ARGUMENT, 3 } end
if ARGV[6] ~= '' and not token(ARGV[6], 64) then return { C.BAD_ARGUMENT, 6 } end
-- A task id, or '' (also when absent: callers written before tasks pass no ARGV[9]).
local task_id = ARGV[9] or ''
if task_id ~= '' and not token(task_id, 64) then return { C.BAD_ARGUMENT, 9 } end

local tool = tool_read(KEYS[6], ARGV[3])
if not tool then return { C.TOOL_NOT_FOUND } end
local cat = tool.category
local a = redis.call('HMGET', KEYS[1], 'bal', 'frozen', 'pc', 'dl', 'low', 'lowf',
  'c:' .. cat .. ':pc', 'c:' .. cat .. ':dl', 'wh', 'x', 'rt', 'lp', 'sx')
if not a[1] then return { C.NOT_FOUND } end
local replay = idem_lookup(KEYS[3], ARGV[6])
if replay then
  replay[6] = cat
  replay[7] = ''
  return replay
end

-- The catalog price is what a call costs: a client names a cost only for variable tools.
local cost = given
if tool.fixed then
  if given then return { C.COST_FIXED, tool.price } end
  cost = tool.price
elseif not given then
  return { C.COST_REQUIRED }
end

local bal = tonumber(a[1])
local ms = now_ms()
local win = window_read(KEYS[2], math.floor(ms / DAY_MS), cat)
local pc, dl, low, cpc, cdl = uint(a[3], MICROS_MAX), uint(a[4], MICROS_MAX),
  uint(a[5], MICROS_MAX), uint(a[7], MICROS_MAX), uint(a[8], MICROS_MAX)

local walls = nil
if a[10] == '1' then
  local p = periods(ms)
  walls = { p = p, caps = caps_read(KEYS[1], cat, ARGV[3]), st = walls_read(KEYS[7], p, cat,
    ARGV[3]) }
end

if cost > 0 and a[2] == '1' then return { C.FROZEN } end
local loop = loop_read(a[12], KEYS[9])
local looped = loop_refusal(loop, ms, ARGV[3])
if looped then
  return loop_freeze({ agent = KEYS[1], events = KEYS[4], outbox = KEYS[5] }, loop, looped,
    { agent = ARGV[1], entry_id = ARGV[2], bal = a[1], frozen = a[2], wh = a[9] }, ms)
end
if cost > 0 then
  local refusal = per_call_refusal(pc, cpc, cost) or daily_refusal(dl, cdl, win, cost, ms)
  if refusal then
    refusal[#refusal + 1] = cat
    return refusal
  end
end
if walls then
  local refusal = walls_refusal(walls.caps, walls.st, walls.p, cost, cat, ARGV[3])
  if refusal then return refusal end
end
local task = nil
if task_id ~= '' then
  task = task_read(KEYS[8], ARGV[3], cat)
  if not task then return { C.TASK_NOT_FOUND } end
  local refusal = task_refusal(task, ms, cost, ARGV[3], cat)
  if refusal then return refusal end
elseif cost > 0 and a[11] == '1' then
  return { C.LIMIT_TASK_REQUIRED }
end
if cost > bal then return { C.BALANCE_INSUFFICIENT, bal, cost } end
local shadow = nil
if a[13] == '1' then
  shadow = shadow_refusal(shadow_read(KEYS[1], cat, ARGV[3]), win, walls, ms, cost, cat,
    ARGV[3], task ~= nil)
end

-- Writes only from here on; none of them can fail on valid keys.
shadow = shadow_count(KEYS[1], shadow, cost)
local flags = 0
if cost > 0 then
  bal = incr(KEYS[1], 'bal', -cost)
  window_add(KEYS[2], win, 's', cat, cost)
  flags = low_flags(KEYS[1], bal, low, a[6])
    + near_flag(dl, cdl, win[2] + win[3] + cost, win[4] + win[5] + cost)
  outbox_low(KEYS[5], flags, a[9], ARGV[1], bal, low, ARGV[2], ms)
elseif low and bal < low then
  flags = F.LOW_BALANCE
end
if walls then
  walls_write(walls.st, cost, 0, 1)
  flags = flags + walls_near(walls.caps, walls.st, cost)
end
if task then task_count(KEYS[8], task, ARGV[3], cat, cost, 0, '') end
loop_write(loop, ms)
local cost_text = istr(cost)
idem_store(KEYS[3], ARGV[6], bal, flags, ARGV[2], cost_text)
local event = { 'id', ARGV[2], 'at', istr(ms), 'kind', 'charge',
  'agent', ARGV[1], 'tool', ARGV[3], 'category', cat, 'amount', cost_text,
  'balance_after', istr(bal), 'idem', ARGV[7], 'ih', ARGV[6], 'meta', ARGV[8] }
redis.call('XADD', KEYS[4], '*', unpack(shadow_event(task_event(event, task and task_id),
  shadow)))
return { C.OK, bal, flags, ARGV[2], cost, cat, shadow }
