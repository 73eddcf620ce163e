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
  BAD_ARGUMENT = 30, LIMIT_WINDOW = 31, LIMIT_CALLS = 32, LIMIT_TOOL_PER_CALL = 33,
  TASK_NOT_FOUND = 40, TASK_CLOSED = 41, LIMIT_TASK_BUDGET = 42, LIMIT_TASK_CALLS = 43,
  LIMIT_TASK_REQUIRED = 44, TASK_IDS_SHORT = 45,
  LOOP_DETECTED = 50,
  REFUND_EXCEEDS = 60, NOT_A_CHILD = 61,
}
local F = { LOW_BALANCE = 1, DAILY_NEAR = 2, LOW_CROSSED = 4, HOURLY_NEAR = 8, WEEKLY_NEAR = 16, MONTHLY_NEAR = 32, CALLS_NEAR = 64 }

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
    'fx', 'xw', 'wk', 'mo', 'task')
  if not h[1] then return nil end
  return { agent = h[1], tool = h[2], category = h[3], amount = tonumber(h[4]),
    day = tonumber(h[5]), exp = tonumber(h[6]), state = h[7], fx = h[8], xw = h[9] == '1',
    wk = tonumber(h[10]), mo = tonumber(h[11]), task = h[12] }
end

-- ---- Walls beyond the balance: rolling-hour, weekly and monthly spend windows, call caps.
-- An agent that sets any of them has x = '1' in its hash (set_limits.lua keeps the flag), and
-- only then do the scripts read its caps (one HMGET) and its walls hash (one HMGET of three
-- fields): an agent without walls pays one more HMGET field, nothing else.
-- The walls hash holds one record per scope, the counters of the periods of the minute T it
-- was last written in, as decimal numbers separated by spaces, so that a call reads exactly
-- its three records and nothing stale is left in the hash to scan:
--   '@'            the agent's      "T N O D H R h W w M m"
--   '@:<category>' a category's     the same
--   '@/<tool>'     a tool's         "T N O D"
-- N, O, D: calls in T's UTC minute, clock hour and day; H: spent in minute T; R: spent in the
-- earlier minutes of T's rolling hour, each of which is also a field H<minute><scope> (scope ''
-- or ':<category>'; R is their sum, and none is 0), so that a call in a later minute takes the
-- minutes that have left the hour out of R (reading them once, then deleting them); h: held by
-- open holds taken while walls were on (counts in the hour until closed); W / w: spent / held
-- in T's ISO week (Monday 00:00 UTC); M / m: in T's calendar month. A record read in a later
-- minute counts from zero the periods that have ended since T.
local MINUTE_MS = 60000
local HOUR_MS = 3600000
local WALLS_TTL_MS = 35 * DAY_MS -- outlives a month without a call
-- (One literal: a concatenation would run on every script call, walls or not.)
local SPEND_RECORD = '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)$'
local CALLS_RECORD = '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)$'

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- Year and month of a day number (H. Hinnant's civil_from_days).
local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- The periods a call at `ms` falls in, and when the week and the month end (ms).
local function periods(ms)
  local day = math.floor(ms / DAY_MS)
  local week = math.floor((day + 3) / 7) -- day 0 was a Thursday; weeks start on Monday
  local y, m = civil_from_days(day)
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return { ms = ms, min = math.floor(ms / MINUTE_MS), hour = math.floor(ms / HOUR_MS),
    day = day, week = week, week_end = (week * 7 + 4) * DAY_MS, month = y * 12 + m - 1,
    month_end = days_from_civil(ny, nm, 1) * DAY_MS }
end

-- The caps that concern one call: {[field] = number}; fields of the agent hash 'hr', 'wk',
-- 'mo' (spend), 'nm', 'nh', 'nd' (calls a minute/hour/day), the same prefixed 'c:<cat>:' for
-- the category, calls and 'pc' prefixed 't:<tool>:' for the tool.
-- The caps come back under short names: the agent's as is, 'c<cap>' and 't<cap>' for the
-- category's and the tool's (e.g. 'chr', 'tnd', 'tpc'). set_limits.lua and restore.lua store
-- digits only (uint-checked, below 2^53), so tonumber alone reads them; a field that is not a
-- number still counts as unset (nil), as uint's nil did.
local function caps_read(agent_key, cat, tool)
  local c, t = 'c:' .. cat .. ':', 't:' .. tool .. ':'
  local v = redis.call('HMGET', agent_key, 'hr', 'wk', 'mo', 'nm', 'nh', 'nd', c .. 'hr',
    c .. 'wk', c .. 'mo', c .. 'nm', c .. 'nh', c .. 'nd', t .. 'nm', t .. 'nh', t .. 'nd',
    t .. 'pc')
  return { hr = tonumber(v[1]), wk = tonumber(v[2]), mo = tonumber(v[3]), nm = tonumber(v[4]),
    nh = tonumber(v[5]), nd = tonumber(v[6]), chr = tonumber(v[7]), cwk = tonumber(v[8]),
    cmo = tonumber(v[9]), cnm = tonumber(v[10]), cnh = tonumber(v[11]), cnd = tonumber(v[12]),
    tnm = tonumber(v[13]), tnh = tonumber(v[14]), tnd = tonumber(v[15]), tpc = tonumber(v[16]) }
end

-- A record's counters by name, zeros (and T nil) for a record never written; `calls`: a
-- tool's record (its calls only).
local function record_read(text, calls)
  local T, N, O, D, H, R, h, W, w, M, m = nil, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
  if text and calls then
    T, N, O, D = string.match(text, CALLS_RECORD)
  elseif text then
    T, N, O, D, H, R, h, W, w, M, m = string.match(text, SPEND_RECORD)
  end
  return { T = tonumber(T), N = tonumber(N), O = tonumber(O), D = tonumber(D), H = tonumber(H),
    R = tonumber(R), h = tonumber(h), W = tonumber(W), w = tonumber(w), M = tonumber(M),
    m = tonumber(m) }
end

-- A record as the hash keeps it; a tool's (`calls`) keeps its calls only. '%d' (a C long:
-- 64 bits where Redis runs) is exact for integers below 2^53 and twice as fast as istr's
-- '%.0f', which matters here: a call writes three records.
local function record_text(r, calls)
  if calls then
    return string.format('%d %d %d %d', r.T, r.N, r.O, r.D)
  end
  return string.format('%d %d %d %d %d %d %d %d %d %d %d', r.T, r.N, r.O, r.D, r.H, r.R, r.h,
    r.W, r.w, r.M, r.m)
end

-- The walls hash in its layout before records (one field per counter and period, named
-- <kind><period><scope>: H<minute>, N<minute>, O<hour>, D<day>, W<week>, w<week>, M<month>,
-- m<month>, h), as scripts older than the records left it: its counters of the periods of `p`
-- become records, its minutes of the rolling hour stay as they are named, the rest is
-- deleted. Runs once, on the first touch that finds no agent record; false when the hash is
-- empty (then there is nothing to read).
local function walls_migrate(key, p)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return false end
  local periods_of = { N = 'min', O = 'hour', D = 'day', W = 'week', w = 'week', M = 'month',
    m = 'month' }
  local recs, drop = { [''] = record_read(nil) }, {}
  for i = 1, #flat, 2 do
    local kind, period, scope = string.match(flat[i], '^(%a)(%d*)(.*)$')
    if kind then
      local pn, n = tonumber(period), tonumber(flat[i + 1])
      recs[scope] = recs[scope] or record_read(nil)
      local r = recs[scope]
      if kind == 'H' and pn and pn > p.min - 60 and pn < p.min then
        r.R = r.R + n -- an earlier minute of the hour: it stays, as it is named
      else
        drop[#drop + 1] = flat[i]
        if kind == 'H' and pn == p.min then r.H = r.H + n end
        if kind == 'h' and period == '' then r.h = r.h + n end
        if periods_of[kind] and pn == p[periods_of[kind]] then r[kind] = r[kind] + n end
      end
    end
  end
  local out = {}
  for scope, r in pairs(recs) do
    r.T = p.min
    out[#out + 1] = '@' .. scope
    out[#out + 1] = record_text(r, string.sub(scope, 1, 1) == '/')
  end
  redis.call('HSET', key, unpack(out))
  if #drop > 0 then redis.call('HDEL', key, unpack(drop)) end
  return true
end

-- The records of `sfxs` ('' the agent, ':<cat>', '/<tool>'), migrating an older hash first.
local function records_get(key, p, sfxs)
  local names = {}
  for i, sfx in ipairs(sfxs) do names[i] = '@' .. sfx end
  local v = redis.call('HMGET', key, unpack(names))
  if not v[1] and walls_migrate(key, p) then v = redis.call('HMGET', key, unpack(names)) end
  return v
end

-- Record r brought to minute p.min, for a call that will write it: the periods that ended
-- since T count from zero; minute T's spending becomes a field of its own while it is still
-- in the hour (st.out; st.moved by name), and the minutes that have left the hour come out of
-- R (read here, deleted by the write: st.drop). Nothing is written here: a refused call
-- writes nothing.
local function record_roll(key, r, p, sfx, st)
  if not r.T or r.T == p.min then
    r.T = p.min
    return r
  end
  local t = periods(r.T * MINUTE_MS)
  r.N = 0
  if t.hour ~= p.hour then r.O = 0 end
  if t.day ~= p.day then r.D = 0 end
  if t.week ~= p.week then r.W, r.w = 0, 0 end
  if t.month ~= p.month then r.M, r.m = 0, 0 end
  if r.R > 0 then
    local names = {}
    for m = r.T - 59, math.min(r.T - 1, p.min - 60) do
      names[#names + 1] = 'H' .. istr(m) .. sfx
    end
    if #names > 0 then
      local v = redis.call('HMGET', key, unpack(names))
      for i, f in ipairs(names) do
        if v[i] then
          r.R = r.R - tonumber(v[i])
          st.drop[#st.drop + 1] = f
        end
      end
    end
  end
  if r.H > 0 and r.T > p.min - 60 then
    local f = 'H' .. istr(r.T) .. sfx
    st.out[#st.out + 1] = f
    st.out[#st.out + 1] = istr(r.H)
    st.moved[f] = r.H
    r.R = r.R + r.H
  end
  r.H = 0
  r.T = p.min
  return r
end

-- The walls of one call: its three records brought to p (rec.a the agent's, rec.c its
-- category's, rec.t its tool's) and what they hold, used[<wall><scope>] ('hra', 'wkc', 'ndt',
-- ...: spend walls count spent and held, call walls calls).
local function walls_read(key, p, cat, tool)
  local sfx = { a = '', c = ':' .. cat, t = '/' .. tool }
  local v = records_get(key, p, { sfx.a, sfx.c, sfx.t })
  local st = { key = key, p = p, sfx = sfx, out = {}, moved = {}, drop = {} }
  local a = record_read(v[1])
  st.fresh = a.T ~= p.min -- the hash's expiry is renewed by the first write of a minute
  a = record_roll(key, a, p, sfx.a, st)
  local c = record_roll(key, record_read(v[2]), p, sfx.c, st)
  local t = record_roll(key, record_read(v[3], true), p, sfx.t, st)
  st.rec = { a = a, c = c, t = t }
  st.used = { hra = a.H + a.R + a.h, hrc = c.H + c.R + c.h, wka = a.W + a.w, wkc = c.W + c.w,
    moa = a.M + a.m, moc = c.M + c.m, nma = a.N, nmc = c.N, nmt = t.N, nha = a.O, nhc = c.O,
    nht = t.O, nda = a.D, ndc = c.D, ndt = t.D }
  return st
end

-- Spending of the rolling hour by minute, of the agent ('a') or the category ('c'), as the
-- call's write would leave it: read only for a refusal's Retry-After.
local function hour_minutes(st, s)
  local names, mins = {}, {}
  for m = st.p.min - 59, st.p.min - 1 do names[#names + 1] = 'H' .. istr(m) .. st.sfx[s] end
  local v = redis.call('HMGET', st.key, unpack(names))
  for i = 1, #names do mins[st.p.min - 60 + i] = tonumber(v[i]) or st.moved[names[i]] end
  mins[st.p.min] = st.rec[s].H
  return mins
end

-- Seconds until enough minutes of the rolling hour have passed for `cost` to fit `cap`
-- (each minute's spending leaves the window 60 minutes after that minute began).
local function hour_retry_s(mins, used, cost, cap, ms)
  local order = {}
  for m in pairs(mins) do order[#order + 1] = m end
  table.sort(order)
  for _, m in ipairs(order) do
    used = used - mins[m]
    if used + cost <= cap then return math.floor(((m + 60) * MINUTE_MS - ms + 999) / 1000) end
  end
  return 3600 -- only open holds stand in the way: they close within their TTL (at most 1 h)
end

local function ceil_s(ms) return math.floor((ms + 999) / 1000) end

-- The walls in the order they are checked: spend walls (the window, the cap's and the usage's
-- short names, the scope, the refusal's limit), call walls (the cap's and the usage's short
-- names, the period's length in ms, the refusal's limit and scope), and the near bits (the
-- bit, the spend walls of the agent and the category). Built by the first check that needs
-- them: the scripts' top level runs on every call, walls or not, and these tables would cost
-- every call their construction.
local wall_tables_built = nil
local function wall_tables()
  if not wall_tables_built then
    local spend = {
      { w = 'hr', cap = 'hr', used = 'hra', s = 'a', limit = 'hourly' },
      { w = 'hr', cap = 'chr', used = 'hrc', s = 'c', limit = 'category_hourly' },
      { w = 'wk', cap = 'wk', used = 'wka', s = 'a', limit = 'weekly' },
      { w = 'wk', cap = 'cwk', used = 'wkc', s = 'c', limit = 'category_weekly' },
      { w = 'mo', cap = 'mo', used = 'moa', s = 'a', limit = 'monthly' },
      { w = 'mo', cap = 'cmo', used = 'moc', s = 'c', limit = 'category_monthly' } }
    wall_tables_built = { spend = spend, calls = {
      { cap = 'nm', used = 'nma', span = MINUTE_MS, limit = 'calls_per_minute', scope = 'agent' },
      { cap = 'cnm', used = 'nmc', span = MINUTE_MS, limit = 'calls_per_minute',
        scope = 'category' },
      { cap = 'tnm', used = 'nmt', span = MINUTE_MS, limit = 'calls_per_minute', scope = 'tool' },
      { cap = 'nh', used = 'nha', span = HOUR_MS, limit = 'calls_per_hour', scope = 'agent' },
      { cap = 'cnh', used = 'nhc', span = HOUR_MS, limit = 'calls_per_hour', scope = 'category' },
      { cap = 'tnh', used = 'nht', span = HOUR_MS, limit = 'calls_per_hour', scope = 'tool' },
      { cap = 'nd', used = 'nda', span = DAY_MS, limit = 'calls_per_day', scope = 'agent' },
      { cap = 'cnd', used = 'ndc', span = DAY_MS, limit = 'calls_per_day', scope = 'category' },
      { cap = 'tnd', used = 'ndt', span = DAY_MS, limit = 'calls_per_day', scope = 'tool' } },
      near = { { F.HOURLY_NEAR, spend[1], spend[2] }, { F.WEEKLY_NEAR, spend[3], spend[4] },
        { F.MONTHLY_NEAR, spend[5], spend[6] } } }
  end
  return wall_tables_built
end

-- Spend windows: nil when `cost` fits every window not in `skip` (the windows a hold being
-- captured was already counted in), else the refusal reply.
local function spend_refusal(caps, st, p, cost, cat, skip)
  if cost == 0 then return nil end
  for _, x in ipairs(wall_tables().spend) do
    local cap, used = caps[x.cap], st.used[x.used]
    if cap and not skip[x.w] and used + cost > cap then
      local retry = ceil_s(p.week_end - p.ms)
      if x.w == 'hr' then retry = hour_retry_s(hour_minutes(st, x.s), used, cost, cap, p.ms) end
      if x.w == 'mo' then retry = ceil_s(p.month_end - p.ms) end
      return { C.LIMIT_WINDOW, x.limit, cap, used, retry, cat }
    end
  end
  return nil
end

-- Call caps (free calls count too): nil when one more call fits, else the refusal reply.
local function calls_refusal(caps, st, p, cat, tool)
  for _, x in ipairs(wall_tables().calls) do
    local cap = caps[x.cap]
    if cap and st.used[x.used] + 1 > cap then
      local ends = (math.floor(p.ms / x.span) + 1) * x.span
      return { C.LIMIT_CALLS, x.limit, x.scope, cap, ceil_s(ends - p.ms), cat, tool }
    end
  end
  return nil
end

-- Every wall of one call: the tool's per-call cap, call caps, spend windows.
local function walls_refusal(caps, st, p, cost, cat, tool)
  if cost > 0 and caps.tpc and cost > caps.tpc then
    return { C.LIMIT_TOOL_PER_CALL, caps.tpc, cost, cat, tool }
  end
  return calls_refusal(caps, st, p, cat, tool) or spend_refusal(caps, st, p, cost, cat, {})
end

-- The walls' warning bits after a call that passed: spent or held over 80 % of a rolling-hour,
-- weekly or monthly cap (the agent's or the call's category's, this call's `cost` counted),
-- and CALLS_NEAR over 80 % of a call cap (agent, category or tool, this call counted), so
-- the warning comes on the calls that still pass, before calls start to fail.
local function walls_near(caps, st, cost)
  local flags = 0
  for _, bit in ipairs(wall_tables().near) do
    local a, c = bit[2], bit[3]
    local cap, ccap = caps[a.cap], caps[c.cap]
    if (cap and (st.used[a.used] + cost) * 5 > cap * 4)
        or (ccap and (st.used[c.used] + cost) * 5 > ccap * 4) then
      flags = flags + bit[1]
    end
  end
  for _, x in ipairs(wall_tables().calls) do
    local cap = caps[x.cap]
    if cap and (st.used[x.used] + 1) * 5 > cap * 4 then return flags + F.CALLS_NEAR end
  end
  return flags
end

-- One call's writes to the walls hash, in one HSET of the records walls_read brought to its
-- minute (exact: nothing else runs in between): `spent` and `held` micros in the agent's and
-- the category's records, `calls` (1, or 0 for a capture) in all three; the minute that left
-- its record, and the minutes that left the hour.
local function walls_write(st, spent, held, calls)
  local a, c, t = st.rec.a, st.rec.c, st.rec.t
  t.N, t.O, t.D = t.N + calls, t.O + calls, t.D + calls
  for _, r in ipairs({ a, c }) do
    r.N, r.O, r.D = r.N + calls, r.O + calls, r.D + calls
    r.H, r.W, r.M = r.H + spent, r.W + spent, r.M + spent
    r.h, r.w, r.m = r.h + held, r.w + held, r.m + held
  end
  local out, n = st.out, #st.out
  out[n + 1], out[n + 2] = '@', record_text(a)
  out[n + 3], out[n + 4] = '@' .. st.sfx.c, record_text(c)
  out[n + 5], out[n + 6] = '@' .. st.sfx.t, record_text(t, true)
  redis.call('HSET', st.key, unpack(out))
  if #st.drop > 0 then redis.call('HDEL', st.key, unpack(st.drop)) end
  if st.fresh then redis.call('PEXPIRE', st.key, WALLS_TTL_MS) end
end

-- `fix(r, t, sfx)` on the records of the agent and of `cat` that exist (t: the periods of the
-- record's minute), written back as they are (not brought to now): a hold's close and a
-- refund change counters of the periods they were counted in.
local function records_fix(key, p, cat, fix)
  local sfxs = { '', ':' .. cat }
  local v = records_get(key, p, sfxs)
  local out = {}
  for i, sfx in ipairs(sfxs) do
    if v[i] then
      local r = record_read(v[i])
      fix(r, periods(r.T * MINUTE_MS), sfx)
      out[#out + 1] = '@' .. sfx
      out[#out + 1] = record_text(r)
    end
  end
  if #out > 0 then redis.call('HSET', key, unpack(out)) end
end

-- A closing hold that was counted in the walls (xw) leaves the held counters: the hour's
-- always, the week's and the month's while the record is still of the hold's week and month.
local function walls_unhold(key, h, ms)
  if not h.xw then return end
  records_fix(key, periods(ms), h.category, function(r, t)
    r.h = r.h - h.amount
    if t.week == h.wk then r.w = r.w - h.amount end
    if t.month == h.mo then r.m = r.m - h.amount end
  end)
end

-- What a refund takes out of the field of an earlier minute (`less` of its value; a minute
-- left at zero is deleted, as R's minutes are never 0); 0 when the field is gone.
local function minute_less(key, f, less)
  local n = tonumber(redis.call('HGET', key, f))
  if not n then return 0 end
  if less(n) > 0 then
    redis.call('HSET', key, f, istr(less(n)))
  else
    redis.call('HDEL', key, f)
  end
  return n - less(n)
end

-- A refund of `amount` of a call made at periods c gives it back to the spending the walls
-- counted it in (agent and category; never below zero, no counter created) while that is
-- current at ms: its minute while in the rolling hour (the record's H, or the minute's own
-- field and R), its week, its month. Call counts stay: the call happened.
local function walls_refund(key, ms, c, cat, amount)
  local p = periods(ms)
  local function less(n) return n > amount and n - amount or 0 end
  records_fix(key, p, cat, function(r, _, sfx)
    if c.min > p.min - 60 then
      if c.min == r.T then
        r.H = less(r.H)
      else
        r.R = r.R - minute_less(key, 'H' .. istr(c.min) .. sfx, less)
      end
    end
    if c.week == p.week then r.W = less(r.W) end
    if c.month == p.month then r.M = less(r.M) end
  end)
end

-- ---- Tasks (budget envelopes). A task is a hash iou:{pNN}:task:<agent>:<task_id> (the
-- agent's hash tag, so one script sees both; another agent's task id names another key):
--   budget, spent, held (micros), calls, exp (ms), state ('open' | 'closed'), created (ms),
--   name, m:<tool or category> (max_calls), nt:<tool> / nc:<category> (calls), st:<tool> /
--   sc:<category> (spent), o:<hold_id> (amount of each open hold taken under the task).
-- Only a call that names a task reads it; an agent with require_task (rt = '1' in its hash)
-- pays one more field of the agent HMGET, nothing else.
local TASK_KEEP_MS = DAY_MS -- a task's hash outlives its close or expiry by a day (summary)

-- The task hash fields one call needs, or nil when the task does not exist.
local function task_read(key, tool, cat)
  local t = redis.call('HMGET', key, 'budget', 'spent', 'held', 'exp', 'state', 'calls',
    'm:' .. tool, 'm:' .. cat, 'nt:' .. tool, 'nc:' .. cat, 'st:' .. tool, 'sc:' .. cat)
  if not t[1] then return nil end
  return { budget = tonumber(t[1]), spent = num(t[2]), held = num(t[3]), exp = tonumber(t[4]),
    state = t[5], calls = num(t[6]), mt = tonumber(t[7]), mc = tonumber(t[8]), nt = num(t[9]),
    nc = num(t[10]), st = num(t[11]), sc = num(t[12]) }
end

-- nil when one more call costing `cost` fits task t at `ms`, else the refusal reply.
local function task_refusal(t, ms, cost, tool, cat)
  if t.state ~= 'open' then return { C.TASK_CLOSED, t.state } end
  if ms >= t.exp then return { C.TASK_CLOSED, 'expired' } end
  if t.mt and t.nt + 1 > t.mt then return { C.LIMIT_TASK_CALLS, tool, t.mt } end
  if t.mc and t.nc + 1 > t.mc then return { C.LIMIT_TASK_CALLS, cat, t.mc } end
  -- A free call fits always: spent + held never exceed the budget.
  if t.spent + t.held + cost > t.budget then
    return { C.LIMIT_TASK_BUDGET, t.budget, t.spent + t.held }
  end
  return nil
end

-- One call's writes to its task, in one HSET of the values task_read returned (exact:
-- nothing else runs in between): `spent` or `held` micros, one call of the tool and
-- category; a hold also records itself (o:<hold_id>) for the task's close to release.
local function task_count(key, t, tool, cat, spent, held, hold_id)
  local out = { 'calls', istr(t.calls + 1), 'nt:' .. tool, istr(t.nt + 1), 'nc:' .. cat,
    istr(t.nc + 1) }
  if spent > 0 then
    out[#out + 1] = 'spent'
    out[#out + 1] = istr(t.spent + spent)
    out[#out + 1] = 'st:' .. tool
    out[#out + 1] = istr(t.st + spent)
    out[#out + 1] = 'sc:' .. cat
    out[#out + 1] = istr(t.sc + spent)
  end
  if held > 0 then
    out[#out + 1] = 'held'
    out[#out + 1] = istr(t.held + held)
    out[#out + 1] = 'o:' .. hold_id
    out[#out + 1] = istr(held)
  end
  redis.call('HSET', key, unpack(out))
end

-- A ledger event's fields, with the task's id when the call counted against one.
local function task_event(event, task_id)
  if task_id then
    event[#event + 1] = 'task'
    event[#event + 1] = task_id
  end
  return event
end

-- A closing hold taken under a task leaves the task's held, and what it captured (`spent`)
-- becomes the task's spending. The task's key is derived from the hold's (same partition
-- prefix, so the same slot). A task whose hash is gone (kept a day past its expiry, longer
-- than any hold) is left alone.
local function task_unhold(hold_key, hold_id, h, spent)
  if not h.task then return end
  local key = string.match(hold_key, '^(.*)hold:') .. 'task:' .. h.agent .. ':' .. h.task
  if redis.call('HEXISTS', key, 'o:' .. hold_id) == 0 then return end
  redis.call('HDEL', key, 'o:' .. hold_id)
  redis.call('HINCRBY', key, 'held', istr(-h.amount))
  if spent > 0 then
    redis.call('HINCRBY', key, 'spent', istr(spent))
    redis.call('HINCRBY', key, 'st:' .. h.tool, istr(spent))
    redis.call('HINCRBY', key, 'sc:' .. h.category, istr(spent))
  end
end

-- Close an open hold: give `credit` micros back to the balance, drop the hold's amount
-- from held and from the held counters of the window it was counted in (if that window
-- is still the stored one) and from the walls' held counters (walls_unhold), mark its final
-- state and take it out of the expiry index.
local function hold_close(agent_key, win_key, walls_key, hold_key, index_key, hold_id, h, state,
                          credit, ms)
  local bal = incr(agent_key, 'bal', credit)
  walls_unhold(walls_key, h, ms)
  task_unhold(hold_key, hold_id, h, h.amount - credit)
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

-- ---- Loop breaker: the same tool with the same arguments more than `repeats` times within
-- `window_s` is refused (and with action freeze, the agent is frozen). The agent hash's field
-- 'lp' = '<repeats>/<window_s>/<r|f>' comes with the agent's other fields (an agent without
-- it pays nothing more); only then is the call's list read: iou:{pNN}:loop:<agent>:<digest>
-- (the digest of tool and arguments, made by the gateway), the times in ms of the last
-- `repeats` accepted calls, newest first, expiring `window_s` after the last one.
local LOOP_REPEATS_MAX = 1000
local LOOP_WINDOW_S_MAX = 86400

-- The loop setting of field 'lp' as {repeats, window_ms, freeze}, or nil when unset (or not
-- one that set_limits.lua writes).
local function loop_setting(lp)
  if not lp then return nil end
  local r, w, act = string.match(lp, '^(%d+)/(%d+)/([rf])$')
  local repeats, window_s = uint(r, LOOP_REPEATS_MAX), uint(w, LOOP_WINDOW_S_MAX)
  if not repeats or not window_s or repeats == 0 or window_s == 0 then return nil end
  return { repeats = repeats, window_s = window_s, window_ms = window_s * 1000,
    freeze = act == 'f' }
end

-- The loop state of one call: its setting, and the time of the `repeats`-th newest accepted
-- call (nil when there were fewer); nil when the agent has no loop setting.
local function loop_read(lp, key)
  local loop = loop_setting(lp)
  if not loop then return nil end
  loop.key = key
  loop.oldest = tonumber(redis.call('LINDEX', key, loop.repeats - 1))
  return loop
end

-- nil when one more call fits, else the refusal: `repeats` calls already in the window
-- (ms - window, ms]; Retry-After is when the oldest of them leaves it.
local function loop_refusal(loop, ms, tool)
  if not loop or not loop.oldest or loop.oldest <= ms - loop.window_ms then return nil end
  return { C.LOOP_DETECTED, tool, loop.repeats, loop.window_s,
    math.floor((loop.oldest + loop.window_ms - ms + 999) / 1000), loop.freeze and 1 or 0 }
end

-- Action freeze: the refusal freezes the agent (unless it is already frozen), as an event
-- with the entry id the refused call was given, and queues webhook agent.loop_detected when
-- the agent has a webhook URL. `who`: {agent, entry_id, bal, frozen, wh} as the script read
-- them.
local function loop_freeze(keys, loop, refusal, who, ms)
  if not loop.freeze or who.frozen == '1' then return refusal end
  local at, repeats, window_s = istr(ms), istr(loop.repeats), istr(loop.window_s)
  redis.call('HSET', keys.agent, 'frozen', '1')
  redis.call('XADD', keys.events, '*', 'id', who.entry_id, 'at', at, 'kind', 'freeze',
    'agent', who.agent, 'tool', refusal[2], 'reason', 'loop_detected', 'repeats', repeats,
    'window_s', window_s)
  if who.wh then
    redis.call('XADD', keys.outbox, '*', 'event_id', who.entry_id .. ':agent.loop_detected',
      'event', 'agent.loop_detected', 'agent', who.agent, 'balance', who.bal, 'at', at,
      'tool', refusal[2], 'repeats', repeats, 'window_s', window_s, 'url', who.wh)
  end
  return refusal
end

-- An accepted call: its time goes in front of the list, which keeps the last `repeats`.
local function loop_write(loop, ms)
  if not loop then return end
  if redis.call('LPUSH', loop.key, istr(ms)) > loop.repeats then
    redis.call('LTRIM', loop.key, 0, loop.repeats - 1)
  end
  redis.call('PEXPIRE', loop.key, loop.window_ms)
end

-- ---- Shadow limits: a second limits object, evaluated on every charge and hold in the same
-- script as the enforced one, that never refuses. Its caps are the enforced fields prefixed
-- 's.' in the agent hash ('s.pc', 's.dl', 's.c:<cat>:dl', 's.hr', 's.t:<tool>:nd', 's.rt', ...);
-- sx = '1' while any is set (set_limits.lua keeps the flag), and only then does a script read
-- them (one HMGET): an agent without shadow limits pays one more HMGET field, nothing else.
-- Shadow walls keep x = '1' too, so the counters they are checked against are kept even when
-- the enforced limits have no such wall. A call the shadow caps would have refused succeeds as
-- it would have anyway; the limit that would have fired (the `limit` name of the enforced
-- refusal) goes into the call's event ('shadow') and reply, and into the agent hash's sums:
-- 'sn:<limit>' calls, 'sa:<limit>' micros.
local SHADOW_LIMITS = { [C.LIMIT_PER_CALL] = 'per_call',
  [C.LIMIT_CATEGORY_PER_CALL] = 'category_per_call', [C.LIMIT_DAILY] = 'daily',
  [C.LIMIT_CATEGORY_DAILY] = 'category_daily', [C.LIMIT_TOOL_PER_CALL] = 'tool_per_call' }

-- The shadow caps that concern one call: per-call and daily caps (the agent's and the
-- category's), require_task, and the walls under caps_read's short names.
local function shadow_read(agent_key, cat, tool)
  local c, t = 'c:' .. cat .. ':', 't:' .. tool .. ':'
  local names = { 'pc', 'dl', c .. 'pc', c .. 'dl', 'rt', 'hr', 'wk', 'mo', 'nm', 'nh', 'nd',
    c .. 'hr', c .. 'wk', c .. 'mo', c .. 'nm', c .. 'nh', c .. 'nd', t .. 'nm', t .. 'nh',
    t .. 'nd', t .. 'pc' }
  for i, n in ipairs(names) do names[i] = 's.' .. n end
  local v = redis.call('HMGET', agent_key, unpack(names))
  local caps = { hr = tonumber(v[6]), wk = tonumber(v[7]), mo = tonumber(v[8]),
    nm = tonumber(v[9]), nh = tonumber(v[10]), nd = tonumber(v[11]), chr = tonumber(v[12]),
    cwk = tonumber(v[13]), cmo = tonumber(v[14]), cnm = tonumber(v[15]), cnh = tonumber(v[16]),
    cnd = tonumber(v[17]), tnm = tonumber(v[18]), tnh = tonumber(v[19]), tnd = tonumber(v[20]),
    tpc = tonumber(v[21]) }
  return { pc = uint(v[1], MICROS_MAX), dl = uint(v[2], MICROS_MAX),
    cpc = uint(v[3], MICROS_MAX), cdl = uint(v[4], MICROS_MAX), rt = v[5] == '1', caps = caps }
end

-- The limit the shadow caps `sh` would have refused one call with, or nil: the enforced
-- checks in their order (per-call, daily, walls when kept, require_task for a paid call
-- naming no task), on the same counters.
local function shadow_refusal(sh, win, walls, ms, cost, cat, tool, task_named)
  if cost > 0 then
    local r = per_call_refusal(sh.pc, sh.cpc, cost) or daily_refusal(sh.dl, sh.cdl, win, cost, ms)
    if r then return SHADOW_LIMITS[r[1]] end
  end
  if walls then
    local r = walls_refusal(sh.caps, walls.st, walls.p, cost, cat, tool)
    if r then return SHADOW_LIMITS[r[1]] or r[2] end
  end
  if cost > 0 and sh.rt and not task_named then return 'task_required' end
  return nil
end

-- A would-be refusal's sums in the agent hash; '' when there was none (the reply's value).
local function shadow_count(agent_key, limit, cost)
  if not limit then return '' end
  redis.call('HINCRBY', agent_key, 'sn:' .. limit, 1)
  if cost > 0 then redis.call('HINCRBY', agent_key, 'sa:' .. limit, istr(cost)) end
  return limit
end

-- A ledger event's fields, with the would-be refusal's limit when there was one.
local function shadow_event(event, limit)
  if limit ~= '' then
    event[#event + 1] = 'shadow'
    event[#event + 1] = limit
  end
  return event
end
