-- _lib.lua: shared helpers, prepended to every script by gateway/scripts.py.
-- Defines the return-code table C (mirrored by gateway/codes.py Code), the warning
-- bits F (gateway/codes.py Flag), strict argument parsers and the clock.
-- Rules: every check before the first write; amounts are integer micros below 2^53,
-- parsed from ARGV with a digit-only pattern before tonumber (tonumber alone accepts
-- "nan", "inf", "0x10" and " 5 "); numbers go back to Redis through istr, never tostring.

local C = {
  OK = 0, REPLAY = 1, NOT_FOUND = 10, FROZEN = 11, IDEMPOTENCY_CONFLICT = 12,
  LIMIT_PER_CALL = 13, LIMIT_CATEGORY_PER_CALL = 14, LIMIT_DAILY = 15,
  LIMIT_CATEGORY_DAILY = 16, BALANCE_INSUFFICIENT = 17, HOLD_NOT_FOUND = 18,
  HOLD_CLOSED = 19, CAPTURE_EXCEEDS_HOLD = 20, AGENT_EXISTS = 21,
  BALANCE_OVERFLOW = 22, KEY_NOT_FOUND = 23, KEYS_FULL = 24, TOOL_NOT_FOUND = 25,
  COST_FIXED = 26, COST_REQUIRED = 27, HOLD_BELOW_PRICE = 28, NOTHING_TO_HOLD = 29,
  BAD_ARGUMENT = 30,
}
local F = { LOW_BALANCE = 1, DAILY_NEAR = 2, LOW_CROSSED = 4 }

local MICROS_MAX = 9007199254740991 -- 2^53 - 1: the largest exact Lua integer
local DAY_MS = 86400000
local IDEM_TTL_MS = 86400000
local WINDOW_TTL_MS = 172800000
local CLOSED_HOLD_TTL_MS = 86400000

-- A non-negative integer from a digit-only string, at most hi; nil otherwise.
local function uint(s, hi)
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.match(s, '^[0-9]+$') then
    return nil
  end
  local n = tonumber(s)
  if n == nil or n ~= n or n % 1 ~= 0 or n > hi then return nil end
  return n
end

-- A name of 1..64 characters of a-z 0-9 - _ . ; nil otherwise.
local function name(s)
  if type(s) ~= 'string' or #s == 0 or #s > 64 or not string.match(s, '^[a-z0-9_.-]+$') then
    return nil
  end
  return s
end

-- A printable-ASCII token of 1..n characters (ids, hashes); nil otherwise.
local function token(s, n)
  if type(s) ~= 'string' or #s == 0 or #s > n or not string.match(s, '^[!-~]+$') then
    return nil
  end
  return s
end

-- Integer to decimal text without exponent (exact below 2^53).
local function istr(n)
  return string.format('%.0f', n)
end

local function num(v)
  if not v then return 0 end
  return tonumber(v)
end

-- The one clock: Redis TIME in ms. gateway/scripts.py swaps the line marked below for one
-- that also adds a test offset when IOU_TEST_CLOCK is set (never in production).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) -- clock
end

-- The next catalog version: one more than the last, and never below the clock in µs, so
-- versions keep growing even if the version key were lost (a cluster node restored from an
-- older copy) while the partitions' copies kept newer ones.
local function next_catalog_version(key)
  local version = redis.call('INCR', key)
  local floor = now_ms() * 1000
  if version < floor then
    version = floor
    redis.call('SET', key, istr(version))
  end
  return version
end

-- HINCRBY with a Lua number, skipped when zero; returns the new value.
local function incr(key, field, n)
  if n == 0 then return num(redis.call('HGET', key, field)) end
  return redis.call('HINCRBY', key, field, istr(n))
end

-- The window of today: {day, spent, held, cat_spent, cat_held}, zeros when stale.
local function window_read(key, day, cat)
  local w = redis.call('HMGET', key, 'day', 's', 'h', 's:' .. cat, 'h:' .. cat)
  if num(w[1]) ~= day then return { day, 0, 0, 0, 0, true } end
  return { day, num(w[2]), num(w[3]), num(w[4]), num(w[5]), false }
end

-- Add `amount` to today's total of `kind` ('s' spent, 'h' held) and to its category's
-- total, in one HSET of the values window_read returned (exact: nothing else runs in
-- between). A stale window restarts as today's; its 48 h expiry is set once, when the
-- day's window is created (it outlives the day it counts; later writes need not renew it).
local function window_add(key, win, kind, cat, amount)
  if amount == 0 and not win[6] then return end
  local at = (kind == 's') and 2 or 3
  local total, cat_total = istr(win[at] + amount), istr(win[at + 2] + amount)
  if win[6] then
    redis.call('DEL', key)
    redis.call('HSET', key, 'day', istr(win[1]), kind, total, kind .. ':' .. cat, cat_total)
    redis.call('PEXPIRE', key, WINDOW_TTL_MS)
  else
    redis.call('HSET', key, kind, total, kind .. ':' .. cat, cat_total)
  end
end

local function retry_after_s(ms)
  return math.floor((DAY_MS - ms % DAY_MS + 999) / 1000)
end

-- Daily caps: nil when within both caps, else the refusal reply.
local function daily_refusal(dl, cdl, win, cost, ms)
  if dl and win[2] + win[3] + cost > dl then
    return { C.LIMIT_DAILY, dl, win[2] + win[3], retry_after_s(ms) }
  end
  if cdl and win[4] + win[5] + cost > cdl then
    return { C.LIMIT_CATEGORY_DAILY, cdl, win[4] + win[5], retry_after_s(ms) }
  end
  return nil
end

-- Per-call caps: nil when within both, else the refusal reply.
local function per_call_refusal(pc, cpc, cost)
  if pc and cost > pc then return { C.LIMIT_PER_CALL, pc, cost } end
  if cpc and cost > cpc then return { C.LIMIT_CATEGORY_PER_CALL, cpc, cost } end
  return nil
end

-- DAILY_NEAR when spent-or-held today is over 80 % of a daily cap.
local function near_flag(dl, cdl, total, cat_total)
  if (dl and total * 5 > dl * 4) or (cdl and cat_total * 5 > cdl * 4) then
    return F.DAILY_NEAR
  end
  return 0
end

-- Low-balance bits after a balance change; records the crossing in the agent hash so
-- that exactly one call reports each crossing, and re-arms once the balance is back up.
local function low_flags(agent_key, bal, low, lowf)
  if not low then return 0 end
  if bal < low then
    if lowf ~= '1' then
      redis.call('HSET', agent_key, 'lowf', '1')
      return F.LOW_BALANCE + F.LOW_CROSSED
    end
    return F.LOW_BALANCE
  end
  if lowf == '1' then redis.call('HSET', agent_key, 'lowf', '0') end
  return 0
end

-- Idempotency: nil when the key is unused (or not given), else the reply to return.
-- A record is one string "<body hash> <balance> <flags> <id> <extra>": one SET with its
-- expiry and one GET, cheaper in Redis than a hash plus PEXPIRE; no part holds a space.
local function idem_lookup(key, body_hash)
  if body_hash == '' then return nil end
  local record = redis.call('GET', key)
  if not record then return nil end
  local h, bal, fl, id, x = string.match(record, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if h ~= body_hash then return { C.IDEMPOTENCY_CONFLICT } end
  return { C.REPLAY, bal, fl, id, x }
end

local function idem_store(key, body_hash, bal, flags, id, extra)
  if body_hash == '' then return end
  redis.call('SET', key, body_hash .. ' ' .. istr(bal) .. ' ' .. istr(flags) .. ' ' .. id
    .. ' ' .. extra, 'PX', IDEM_TTL_MS)
end

-- The partition's copy of one catalog entry (tool_copy.lua writes every partition before
-- a PUT answers): {price, category, fixed}, or nil for an unknown or deleted tool.
local function tool_read(key, tool)
  local row = redis.call('HGET', key, tool)
  if not row then return nil end
  local price, cat, pricing = string.match(row, '^%d+ (%d+) (%S+) (%S+)$')
  if not price then return nil end
  return { price = tonumber(price), category = cat, fixed = pricing == 'fixed' }
end

-- The fields of a hold hash, or nil when absent. fx: '1' fixed price, '0' variable, nil for
-- a hold written without it (before fx existed, or rebuilt by iou recover).
local function hold_read(key)
  local h = redis.call('HMGET', key, 'agent', 'tool', 'category', 'amount', 'day', 'exp', 'state',
    'fx')
  if not h[1] then return nil end
  return { agent = h[1], tool = h[2], category = h[3], amount = tonumber(h[4]),
    day = tonumber(h[5]), exp = tonumber(h[6]), state = h[7], fx = h[8] }
end

-- Close an open hold: give `credit` micros back to the balance, drop the hold's amount
-- from held and from the held counters of the window it was counted in (if that window
-- is still the stored one), mark its final state and take it out of the expiry index.
local function hold_close(agent_key, win_key, hold_key, index_key, hold_id, h, state, credit)
  local bal = incr(agent_key, 'bal', credit)
  incr(agent_key, 'held', -h.amount)
  if num(redis.call('HGET', win_key, 'day')) == h.day then
    incr(win_key, 'h', -h.amount)
    incr(win_key, 'h:' .. h.category, -h.amount)
  end
  redis.call('HSET', hold_key, 'state', state)
  redis.call('PEXPIRE', hold_key, CLOSED_HOLD_TTL_MS)
  redis.call('ZREM', index_key, hold_id)
  return bal
end

-- On the one call that crossed below low_balance, queue balance.low and refill.requested
-- in the partition's webhook outbox (same slot), so a restart loses neither.
local function outbox_low(outbox_key, flags, webhook_url, agent, bal, low, entry_id, ms)
  if webhook_url == false or webhook_url == nil or flags % 8 < F.LOW_CROSSED then return end
  for _, event in ipairs({ 'balance.low', 'refill.requested' }) do
    redis.call('XADD', outbox_key, '*', 'event_id', entry_id .. ':' .. event, 'event', event,
      'agent', agent, 'balance', istr(bal), 'threshold', istr(low), 'at', istr(ms),
      'url', webhook_url)
  end
end
