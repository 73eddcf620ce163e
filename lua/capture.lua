-- capture.lua: settle an open hold at the actual cost (<= the held amount); the rest goes
-- back to the balance, the cost counts as spent today, and a capture event is written.
-- A hold past its expiry is refused as closed (the sweeper releases it within 1 s).
-- A hold taken on an earlier UTC day is not in today's window: its cost lands in today's
-- window as new spending, so it must fit today's daily caps (else 15/16, the hold stays
-- open until released or expired). A hold of today was counted when it was taken.
-- The walls' windows (agent x = '1') likewise: a hold counted in the walls (xw) stays in the
-- rolling hour while open, and in its week and month; its cost is checked against the week
-- or month it lands in when that is another one, and against every window when the hold
-- was not counted (taken before the walls were set). Call caps counted the hold already.
-- A hold on a fixed-price tool charges exactly its held price: the cost may be omitted, and
-- any other cost is refused. A hold without its fx mark (written before fx existed, or
-- rebuilt by iou recover) takes the tool's pricing from the partition's catalog copy.
-- A hold taken under a task moves from the task's held to its spent (task_unhold; the task's
-- key is derived from the hold's, same slot); the task's state does not matter: the money
-- was authorized while it was open.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] window hash           iou:{pNN}:win:<agent>
-- KEYS[3] hold hash             iou:{pNN}:hold:<hold_id>
-- KEYS[4] open holds by expiry  iou:{pNN}:holds
-- KEYS[5] idempotency record    iou:{pNN}:idem:<agent>:<sha>
-- KEYS[6] events stream         iou:{pNN}:events
-- KEYS[7] catalog copy          iou:{pNN}:tools (read only for a hold without its fx mark)
-- KEYS[8] walls hash            iou:{pNN}:walls:<agent>
-- ARGV[1] agent name (the hold must belong to it)
-- ARGV[2] entry id (UUIDv7) of the capture event; becomes the charge id
-- ARGV[3] hold id
-- ARGV[4] cost, micros (0 <= cost <= held amount; '' = none, for fixed-price holds)
-- ARGV[5] amount max, micros
-- ARGV[6] idempotency body hash ('' = none)
-- ARGV[7] idempotency key as given
-- ARGV[8] metadata JSON text ('' = none)
-- Returns:
--   code OK = 0: {0, balance, flags, entry_id, released, cost}
--   code REPLAY = 1: {1, balance, flags, entry_id, released, cost} of the first answer
--   code COST_FIXED = 26: {26, price} a cost other than the held price of a fixed tool
--   code COST_REQUIRED = 27: {27} no cost for a variable hold
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code HOLD_NOT_FOUND = 18: {18} unknown hold, or another agent's
--   code HOLD_CLOSED = 19: {19, state} captured, released or expired
--   code CAPTURE_EXCEEDS_HOLD = 20: {20, held_amount, cost}
--   code LIMIT_DAILY = 15: {15, max, spent, retry_after_s, category}
--   code LIMIT_CATEGORY_DAILY = 16: {16, max, spent, retry_after_s, category}
--   code LIMIT_WINDOW = 31: {31, limit, max, spent, retry_after_s, category}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[5], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 5 } end
local cost = nil
if ARGV[4] ~= '' then
  cost = uint(ARGV[4], amount_max)
  if not cost then return { C.BAD_ARGUMENT, 4 } end
end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if ARGV[6] ~= '' and not token(ARGV[6], 64) then return { C.BAD_ARGUMENT, 6 } end

local h = hold_read(KEYS[3])
if not h or h.agent ~= ARGV[1] then return { C.HOLD_NOT_FOUND } end
local replay = idem_lookup(KEYS[5], ARGV[6])
if replay then
  if replay[1] == C.REPLAY then replay[6] = h.amount - tonumber(replay[5]) end
  return replay
end
local ms = now_ms()
if h.state ~= 'open' then return { C.HOLD_CLOSED, h.state } end
if ms >= h.exp then return { C.HOLD_CLOSED, 'expired' } end
local fixed = h.fx == '1'
if not h.fx then
  local tool = tool_read(KEYS[7], h.tool)
  fixed = tool ~= nil and tool.fixed
end
if fixed then
  if cost and cost ~= h.amount then return { C.COST_FIXED, h.amount } end
  cost = h.amount
elseif not cost then
  return { C.COST_REQUIRED }
end
if cost > h.amount then return { C.CAPTURE_EXCEEDS_HOLD, h.amount, cost } end
local a = redis.call('HMGET', KEYS[1], 'dl', 'low', 'lowf',
  'c:' .. h.category .. ':dl', 'x')
local dl, cdl = uint(a[1], MICROS_MAX), uint(a[4], MICROS_MAX)
local day = math.floor(ms / DAY_MS)
local win = nil
if h.day ~= day then
  -- hold_close leaves today's window alone for such a hold, so this read stays exact.
  win = window_read(KEYS[2], day, h.category)
  local refusal = daily_refusal(dl, cdl, win, cost, ms)
  if refusal then
    refusal[5] = h.category
    return refusal
  end
end
local st = nil
if a[5] == '1' then
  local p = periods(ms)
  st = walls_read(KEYS[8], p, h.category, h.tool)
  local counted = { hr = h.xw, wk = h.xw and h.wk == p.week, mo = h.xw and h.mo == p.month }
  local refusal = spend_refusal(caps_read(KEYS[1], h.category, h.tool), st, p, cost,
    h.category, counted)
  if refusal then return refusal end
end

-- Writes only from here on. The cost goes into the walls' records first: the hold's close
-- then takes its amount out of the records as they are after that write.
if st then walls_write(st, cost, 0, 0) end
local released = h.amount - cost
local bal = hold_close(KEYS[1], KEYS[2], KEYS[8], KEYS[3], KEYS[4], ARGV[3], h, 'captured',
  released, ms)
local cost_text = istr(cost)
redis.call('HSET', KEYS[3], 'captured', cost_text)
win = win or window_read(KEYS[2], day, h.category)
window_add(KEYS[2], win, 's', h.category, cost)
local flags = low_flags(KEYS[1], bal, uint(a[2], MICROS_MAX), a[3])
  + near_flag(dl, cdl, win[2] + win[3] + cost, win[4] + win[5] + cost)
idem_store(KEYS[5], ARGV[6], bal, flags, ARGV[2], istr(released))
redis.call('XADD', KEYS[6], '*', unpack(task_event({ 'id', ARGV[2], 'at', istr(ms),
  'kind', 'capture', 'agent', ARGV[1], 'tool', h.tool, 'category', h.category,
  'amount', cost_text, 'held', istr(h.amount), 'balance_after', istr(bal), 'hold_id', ARGV[3],
  'idem', ARGV[7], 'ih', ARGV[6], 'meta', ARGV[8] }, h.task)))
return { C.OK, bal, flags, ARGV[2], released, cost }
