-- restore.lua: write one record of an agent rebuilt from the ledger (iou recover), in the
-- formats and with the expiries the other scripts use, so that each exists once (_lib.lua).
-- ARGV[1] says which record; each mode names its own KEYS and ARGV. Every check comes
-- before the first write. Nothing goes to the events stream: the ledger already has it.
-- KEYS[1] by mode: agent: agent hash iou:{pNN}:agent:<agent>; hold: hold hash
--         iou:{pNN}:hold:<hold_id>; window: window hash iou:{pNN}:win:<agent>; idem:
--         idempotency record iou:{pNN}:idem:<agent>:<sha>; tool: catalog entry
--         iou:{tools}:tool:<name>; walls: walls hash iou:{pNN}:walls:<agent>
-- KEYS[2] by mode: agent: agents index iou:{pNN}:agents; hold: holds index iou:{pNN}:holds;
--         idem: agent hash (restored first: its low_balance gives the replay's LOW_BALANCE
--         bit; DAILY_NEAR, a fact of that day's window, is not rebuilt); tool: catalog
--         names iou:{tools}:names; window, walls: none
-- KEYS[3] tool only: catalog version iou:{tools}:version (the entry gets the next one)
-- ARGV[1] mode: 'agent', 'hold', 'window', 'idem', 'tool' or 'walls'
-- ARGV[2..] by mode:
--   agent:  name, balance micros, held micros, frozen '1'/'0', created Unix ms, then limit
--           field, value pairs as set_limits.lua writes them (pc, dl, low, wh, c:*)
--   hold:   hold id, agent, tool, category, amount micros, held at Unix ms (the hold counts
--           in that UTC day's window), expires at Unix ms, and when the hold counts in the
--           agent's walls (hold.lua's xw): the ISO week and the month numbers it was taken in
--   window: a time of the day Unix ms, then field, micros pairs (s, h, s:<cat>, h:<cat>)
--   idem:   request body hash, balance after micros, the id the replay answers (entry id,
--           or a hold's id), the script's extra field micros (cost, amount, released or
--           expiry: what idem_store kept)
--   tool:   name, price micros, category, pricing 'fixed'/'variable', upstream URL or '',
--           sealed upstream headers or ''
--   walls:  field, value pairs of the walls hash as _lib.lua names them: the records '@',
--           '@:<category>' (11 numbers "T N O D H R h W w M m") and '@/<tool>' (4, "T N O D"),
--           the minutes of the rolling hour 'H<minute>' and 'H<minute>:<category>' (micros);
--           the hash is replaced, with its expiry
-- Returns:
--   code OK = 0: {0, written} the number of keys written
--   code BAD_ARGUMENT = 30: {30, argv_index}

local mode = ARGV[1]

local function restore_agent()
  if not name(ARGV[2]) then return { C.BAD_ARGUMENT, 2 } end
  local bal, held = uint(ARGV[3], MICROS_MAX), uint(ARGV[4], MICROS_MAX)
  if not bal then return { C.BAD_ARGUMENT, 3 } end
  if not held then return { C.BAD_ARGUMENT, 4 } end
  if ARGV[5] ~= '0' and ARGV[5] ~= '1' then return { C.BAD_ARGUMENT, 5 } end
  local created = uint(ARGV[6], MICROS_MAX)
  if not created then return { C.BAD_ARGUMENT, 6 } end
  if #ARGV % 2 ~= 0 then return { C.BAD_ARGUMENT, #ARGV } end
  local low = nil
  for i = 7, #ARGV, 2 do
    if not token(ARGV[i], 80) then return { C.BAD_ARGUMENT, i } end
    if ARGV[i] == 'low' then
      low = uint(ARGV[i + 1], MICROS_MAX)
      if not low then return { C.BAD_ARGUMENT, i + 1 } end
    end
  end
  -- lowf: the same rule as low_flags, so the next call below the threshold is no crossing.
  local lowf = (low and bal < low) and '1' or '0'
  redis.call('HSET', KEYS[1], 'bal', istr(bal), 'held', istr(held), 'frozen', ARGV[5],
    'created', istr(created), 'lowf', lowf)
  for i = 7, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('ZADD', KEYS[2], 0, ARGV[2])
  return { C.OK, 2 }
end

local function restore_hold()
  if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
  if not name(ARGV[3]) then return { C.BAD_ARGUMENT, 3 } end
  if not name(ARGV[4]) then return { C.BAD_ARGUMENT, 4 } end
  if not name(ARGV[5]) then return { C.BAD_ARGUMENT, 5 } end
  local amount, at, exp = uint(ARGV[6], MICROS_MAX), uint(ARGV[7], MICROS_MAX),
    uint(ARGV[8], MICROS_MAX)
  if not amount then return { C.BAD_ARGUMENT, 6 } end
  if not at then return { C.BAD_ARGUMENT, 7 } end
  if not exp then return { C.BAD_ARGUMENT, 8 } end
  local counted = #ARGV == 10
  if counted and not uint(ARGV[9], MICROS_MAX) then return { C.BAD_ARGUMENT, 9 } end
  if counted and not uint(ARGV[10], MICROS_MAX) then return { C.BAD_ARGUMENT, 10 } end
  if #ARGV ~= 8 and not counted then return { C.BAD_ARGUMENT, #ARGV } end
  redis.call('HSET', KEYS[1], 'agent', ARGV[3], 'tool', ARGV[4], 'category', ARGV[5],
    'amount', istr(amount), 'day', istr(math.floor(at / DAY_MS)), 'exp', istr(exp),
    'state', 'open')
  if counted then redis.call('HSET', KEYS[1], 'xw', '1', 'wk', ARGV[9], 'mo', ARGV[10]) end
  redis.call('ZADD', KEYS[2], istr(exp), ARGV[2])
  return { C.OK, 2 }
end

local function restore_window()
  local ms = uint(ARGV[2], MICROS_MAX)
  if not ms then return { C.BAD_ARGUMENT, 2 } end
  if #ARGV % 2 ~= 0 then return { C.BAD_ARGUMENT, #ARGV } end
  for i = 3, #ARGV, 2 do
    if not string.match(ARGV[i], '^[sh]$') and not string.match(ARGV[i], '^[sh]:[a-z0-9_.-]+$')
    then
      return { C.BAD_ARGUMENT, i }
    end
    if not uint(ARGV[i + 1], MICROS_MAX) then return { C.BAD_ARGUMENT, i + 1 } end
  end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'day', istr(math.floor(ms / DAY_MS)))
  for i = 3, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIRE', KEYS[1], WINDOW_TTL_MS)
  return { C.OK, 1 }
end

local function restore_idem()
  if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
  local bal = uint(ARGV[3], MICROS_MAX)
  if not bal then return { C.BAD_ARGUMENT, 3 } end
  if not token(ARGV[4], 64) then return { C.BAD_ARGUMENT, 4 } end
  if not uint(ARGV[5], MICROS_MAX) then return { C.BAD_ARGUMENT, 5 } end
  local low = uint(redis.call('HGET', KEYS[2], 'low'), MICROS_MAX)
  local flags = (low and bal < low) and F.LOW_BALANCE or 0
  idem_store(KEYS[1], ARGV[2], bal, flags, ARGV[4], ARGV[5])
  return { C.OK, 1 }
end

-- The number of values a walls field holds (_lib.lua's records and minutes), nil for a name
-- the scripts do not write: '@' and '@:<category>' 11, '@/<tool>' 4, 'H<minute>' and
-- 'H<minute>:<category>' 1.
local function walls_width(f)
  local kind, scope = string.match(f, '^(@)(.*)$')
  if not kind then kind, scope = string.match(f, '^(H)%d+(.*)$') end
  if not kind then return nil end
  if scope == '' then return kind == '@' and 11 or 1 end
  local sep = string.sub(scope, 1, 1)
  if not name(string.sub(scope, 2)) or (sep ~= ':' and sep ~= '/') then return nil end
  if kind == 'H' then return sep == ':' and 1 or nil end
  return sep == ':' and 11 or 4
end

-- True when `text` is exactly `width` unsigned integers separated by one space each.
local function uints_ok(text, width)
  local n = 0
  for word in string.gmatch(text .. ' ', '([^ ]*) ') do
    if not uint(word, MICROS_MAX) then return false end
    n = n + 1
  end
  return n == width
end

local function restore_walls()
  if #ARGV < 3 or #ARGV % 2 ~= 1 then return { C.BAD_ARGUMENT, #ARGV } end
  for i = 2, #ARGV, 2 do
    local width = walls_width(ARGV[i])
    if not width then return { C.BAD_ARGUMENT, i } end
    if not uints_ok(ARGV[i + 1], width) then return { C.BAD_ARGUMENT, i + 1 } end
  end
  redis.call('DEL', KEYS[1])
  for i = 2, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIRE', KEYS[1], WALLS_TTL_MS)
  return { C.OK, 1 }
end

local function restore_tool()
  if not name(ARGV[2]) then return { C.BAD_ARGUMENT, 2 } end
  if not uint(ARGV[3], MICROS_MAX) then return { C.BAD_ARGUMENT, 3 } end
  if not name(ARGV[4]) then return { C.BAD_ARGUMENT, 4 } end
  if ARGV[5] ~= 'fixed' and ARGV[5] ~= 'variable' then return { C.BAD_ARGUMENT, 5 } end
  if ARGV[6] ~= '' and (#ARGV[6] > 2048 or not string.match(ARGV[6], '^https?://[!-~]+$')) then
    return { C.BAD_ARGUMENT, 6 }
  end
  if #ARGV[7] > 8192 then return { C.BAD_ARGUMENT, 7 } end
  local version = next_catalog_version(KEYS[3])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'price', ARGV[3], 'category', ARGV[4], 'pricing', ARGV[5],
    'upstream', ARGV[6], 'headers', ARGV[7], 'updated', '0', 'version', istr(version))
  redis.call('SADD', KEYS[2], ARGV[2])
  return { C.OK, 1 }
end

if mode == 'agent' then return restore_agent() end
if mode == 'hold' then return restore_hold() end
if mode == 'window' then return restore_window() end
if mode == 'idem' then return restore_idem() end
if mode == 'tool' then return restore_tool() end
if mode == 'walls' then return restore_walls() end
return { C.BAD_ARGUMENT, 1 }
