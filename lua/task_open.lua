-- task_open.lua: open a task (a budget envelope) for an agent. The task is a cap, not money
-- set aside: calls that name it still pay from the balance. Its hash lives until a day after
-- its expiry (TASK_KEEP_MS) so its summary can be read; the agent's task index (created ms
-- -> id) forgets tasks older than the longest ttl plus that day.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] task hash             iou:{pNN}:task:<agent>:<task_id>
-- KEYS[3] agent's task index    iou:{pNN}:tasks:<agent> (zset, score = created ms)
-- ARGV[1] agent name
-- ARGV[2] task id (minted by the gateway, random)
-- ARGV[3] budget, micros (> 0)
-- ARGV[4] amount max, micros
-- ARGV[5] ttl, ms (> 0)
-- ARGV[6] ttl max, ms
-- ARGV[7] name ('' = none; at most 128 printable characters or spaces)
-- ARGV[8..] max_calls: tool or category name, count (1..10^9) pairs, at most 64
-- Returns:
--   code OK = 0: {0, created_ms, expires_at_ms}
--   code NOT_FOUND = 10: {10} unknown agent
--   code BAD_ARGUMENT = 30: {30, argv_index} (ARGV[2] also when the task id exists)

local amount_max = uint(ARGV[4], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 4 } end
local budget = uint(ARGV[3], amount_max)
if not budget or budget == 0 then return { C.BAD_ARGUMENT, 3 } end
local ttl_max = uint(ARGV[6], MICROS_MAX)
if not ttl_max then return { C.BAD_ARGUMENT, 6 } end
local ttl = uint(ARGV[5], ttl_max)
if not ttl or ttl == 0 then return { C.BAD_ARGUMENT, 5 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if #ARGV[7] > 128 or not string.match(ARGV[7], '^[ -~]*$') then return { C.BAD_ARGUMENT, 7 } end
if #ARGV % 2 ~= 1 or #ARGV > 7 + 2 * 64 then return { C.BAD_ARGUMENT, #ARGV } end
for i = 8, #ARGV, 2 do
  if not name(ARGV[i]) then return { C.BAD_ARGUMENT, i } end
  local n = uint(ARGV[i + 1], 1000000000)
  if not n or n == 0 then return { C.BAD_ARGUMENT, i + 1 } end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return { C.NOT_FOUND } end
if redis.call('EXISTS', KEYS[2]) == 1 then return { C.BAD_ARGUMENT, 2 } end

-- Writes only from here on.
local ms = now_ms()
local expires = ms + ttl
local fields = { 'budget', istr(budget), 'spent', '0', 'held', '0', 'calls', '0',
  'exp', istr(expires), 'state', 'open', 'created', istr(ms), 'name', ARGV[7] }
for i = 8, #ARGV, 2 do
  fields[#fields + 1] = 'm:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIRE', KEYS[2], ttl + TASK_KEEP_MS)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', istr(ms - ttl_max - TASK_KEEP_MS))
redis.call('ZADD', KEYS[3], istr(ms), ARGV[2])
redis.call('PEXPIRE', KEYS[3], ttl_max + TASK_KEEP_MS)
return { C.OK, ms, expires }
