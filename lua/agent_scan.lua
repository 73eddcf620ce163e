-- agent_scan.lua: read one page of a partition's agents for the summary table (read only).
-- The dashboard's summary sorts every agent by balance, held or today's spending; rather
-- than one round trip per agent, the gateway reads a partition in pages of ARGV[3] agents.
-- Derived keys: each agent's hash and today's window are built here only from ARGV[1], the
-- partition prefix, so they share the hash tag (and so the cluster slot) of KEYS[1].
-- KEYS[1] agent names           iou:{pNN}:agents (zset, listing by name)
-- ARGV[1] partition prefix      iou:{pNN}:   (derives agent:<a>, win:<a>)
-- ARGV[2] cursor: the last name of the previous page ('' = from the first name)
-- ARGV[3] page size, agents (1..5000)
-- ARGV[4] today, UTC days since the epoch (a window of another day counts 0 spent)
-- Returns:
--   code OK = 0: {0, name, balance, held, frozen, low, daily, spent_today, name, ...}
--     (6 values per agent after the name, micros as integers; frozen 0/1; low and daily
--      0 when unset); fewer than ARGV[3] agents means the partition is done
--   code BAD_ARGUMENT = 30: {30, argv_index}

local prefix = ARGV[1]
if type(prefix) ~= 'string' or not string.match(prefix, '^iou:{p[0-9]+}:$') then
  return { C.BAD_ARGUMENT, 1 }
end
if string.sub(KEYS[1], 1, #prefix) ~= prefix then return { C.BAD_ARGUMENT, 1 } end
if ARGV[2] ~= '' and not name(ARGV[2]) then return { C.BAD_ARGUMENT, 2 } end
local page = uint(ARGV[3], 5000)
if not page or page < 1 then return { C.BAD_ARGUMENT, 3 } end
local today = uint(ARGV[4], MICROS_MAX)
if not today then return { C.BAD_ARGUMENT, 4 } end

local start = '-'
if ARGV[2] ~= '' then start = '(' .. ARGV[2] end
local names = redis.call('ZRANGE', KEYS[1], start, '+', 'BYLEX', 'LIMIT', 0, page)
local out = { C.OK }
local n = 1
for _, agent in ipairs(names) do
  local a = redis.call('HMGET', prefix .. 'agent:' .. agent, 'bal', 'held', 'frozen', 'low', 'dl')
  local w = redis.call('HMGET', prefix .. 'win:' .. agent, 'day', 's')
  local spent = 0
  if num(w[1]) == today then spent = num(w[2]) end
  local frozen = 0
  if a[3] == '1' then frozen = 1 end
  out[n + 1] = agent
  out[n + 2] = num(a[1])
  out[n + 3] = num(a[2])
  out[n + 4] = frozen
  out[n + 5] = num(a[4])
  out[n + 6] = num(a[5])
  out[n + 7] = spent
  n = n + 7
end
return out
