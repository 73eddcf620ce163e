-- task_close.lua: close an agent's task: release every hold still open under it (each a
-- release event carrying the task, as release.lua writes it), then mark it closed; its hash
-- is kept a day for its summary. Closing a closed task changes nothing (idempotent).
-- Derived keys: each open hold's hash is iou:{pNN}:hold:<hold_id>, built from the prefix of
-- KEYS[2] (same hash tag, so the same cluster slot); the holds are the task's o:<hold_id>
-- fields.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] task hash             iou:{pNN}:task:<agent>:<task_id>
-- KEYS[3] window hash           iou:{pNN}:win:<agent>
-- KEYS[4] walls hash            iou:{pNN}:walls:<agent>
-- KEYS[5] open holds by expiry  iou:{pNN}:holds
-- KEYS[6] events stream         iou:{pNN}:events
-- ARGV[1] agent name
-- ARGV[2] task id
-- ARGV[3..] entry ids (UUIDv7), one per open hold to release
-- Returns:
--   code OK = 0: {0, released_count}
--   code TASK_NOT_FOUND = 40: {40} no such task of this agent
--   code TASK_IDS_SHORT = 45: {45, needed} fewer entry ids than open holds (nothing written)
--   code BAD_ARGUMENT = 30: {30, argv_index}

if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
for i = 3, #ARGV do
  if not token(ARGV[i], 64) then return { C.BAD_ARGUMENT, i } end
end
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return { C.TASK_NOT_FOUND } end
if state == 'closed' then return { C.OK, 0 } end
local open = {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local hold_id = string.match(flat[i], '^o:(.+)$')
  if hold_id then open[#open + 1] = hold_id end
end
if #open > #ARGV - 2 then return { C.TASK_IDS_SHORT, #open } end

-- Writes only from here on.
local ms = now_ms()
local prefix = string.match(KEYS[2], '^(.*)task:')
local low = redis.call('HMGET', KEYS[1], 'low', 'lowf')
local released = 0
for i, hold_id in ipairs(open) do
  local hold_key = prefix .. 'hold:' .. hold_id
  local h = hold_read(hold_key)
  if h and h.state == 'open' then
    local bal = hold_close(KEYS[1], KEYS[3], KEYS[4], hold_key, KEYS[5], hold_id, h, 'released',
      h.amount, ms)
    low_flags(KEYS[1], bal, uint(low[1], MICROS_MAX), low[2])
    redis.call('XADD', KEYS[6], '*', 'id', ARGV[i + 2], 'at', istr(ms), 'kind', 'release',
      'agent', ARGV[1], 'tool', h.tool, 'category', h.category, 'amount', istr(h.amount),
      'balance_after', istr(bal), 'hold_id', hold_id, 'idem', '', 'meta', '', 'task', ARGV[2])
    released = released + 1
  else
    redis.call('HDEL', KEYS[2], 'o:' .. hold_id)
  end
end
redis.call('HSET', KEYS[2], 'state', 'closed', 'closed', istr(ms))
redis.call('PEXPIRE', KEYS[2], TASK_KEEP_MS)
return { C.OK, released }
