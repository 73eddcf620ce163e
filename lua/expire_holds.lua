-- expire_holds.lua: release every open hold of one partition whose expiry has passed.
-- Derived keys: each expired hold credits its own agent, whose keys cannot be known by the
-- caller in advance; they are built here only from ARGV[1], the partition prefix, so they
-- share the hash tag (and so the cluster slot) of KEYS[1] and KEYS[2].
-- KEYS[1] open holds by expiry  iou:{pNN}:holds
-- KEYS[2] events stream         iou:{pNN}:events
-- ARGV[1] partition prefix      iou:{pNN}:   (derives hold:<id>, agent:<a>, win:<a>,
--                               walls:<a>, task:<a>:<task_id>)
-- ARGV[2..n] entry ids (UUIDv7), one per hold this call may expire (bounds the batch)
-- Returns:
--   code OK = 0: {0, expired_count}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local prefix = ARGV[1]
if type(prefix) ~= 'string' or not string.match(prefix, '^iou:{p[0-9]+}:$') then
  return { C.BAD_ARGUMENT, 1 }
end
if string.sub(KEYS[1], 1, #prefix) ~= prefix then return { C.BAD_ARGUMENT, 1 } end
for i = 2, #ARGV do
  if not token(ARGV[i], 64) then return { C.BAD_ARGUMENT, i } end
end
local batch_max = #ARGV - 1
if batch_max < 1 then return { C.OK, 0 } end

local ms = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', istr(ms), 'LIMIT', 0, batch_max)
local expired = 0
for i, hold_id in ipairs(due) do
  local hold_key = prefix .. 'hold:' .. hold_id
  local h = hold_read(hold_key)
  if not h or h.state ~= 'open' then
    redis.call('ZREM', KEYS[1], hold_id)
  else
    local agent_key = prefix .. 'agent:' .. h.agent
    local low = redis.call('HMGET', agent_key, 'low', 'lowf')
    local bal = hold_close(agent_key, prefix .. 'win:' .. h.agent, prefix .. 'walls:' .. h.agent,
      hold_key, KEYS[1], hold_id, h, 'expired', h.amount, ms)
    low_flags(agent_key, bal, uint(low[1], MICROS_MAX), low[2])
    redis.call('XADD', KEYS[2], '*', unpack(task_event({ 'id', ARGV[i + 1], 'at', istr(ms),
      'kind', 'expire', 'agent', h.agent, 'tool', h.tool, 'category', h.category,
      'amount', istr(h.amount), 'balance_after', istr(bal), 'hold_id', hold_id, 'idem', '',
      'meta', '' }, h.task)))
    expired = expired + 1
  end
end
return { C.OK, expired }
