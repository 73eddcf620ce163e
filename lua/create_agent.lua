-- create_agent.lua: create an agent with its sign-up grant and its first key.
-- Writes the agent hash, the key records, and two ledger events: 'agent' (configuration,
-- so the ledger can rebuild the agent) and 'grant' (the opening balance, possibly 0).
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] agent's key hashes    iou:{pNN}:keys:<agent>
-- KEYS[3] key lookup            iou:{pNN}:apikey:<sha256>  (same partition: see keys.py)
-- KEYS[4] events stream         iou:{pNN}:events
-- KEYS[5] agent names           iou:{pNN}:agents (zset, score 0, for listing by name)
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the 'agent' event
-- ARGV[3] entry id (UUIDv7) of the 'grant' event
-- ARGV[4] grant, micros (>= 0)
-- ARGV[5] amount max, micros
-- ARGV[6] low-balance threshold, micros (0 = none)
-- ARGV[7] key id
-- ARGV[8] key hash (hex sha256 of the agent key)
-- Returns:
--   code OK = 0: {0, balance, created_at_ms}
--   code AGENT_EXISTS = 21: {21}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[5], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 5 } end
local grant = uint(ARGV[4], amount_max)
if not grant then return { C.BAD_ARGUMENT, 4 } end
local low = uint(ARGV[6], amount_max)
if not low then return { C.BAD_ARGUMENT, 6 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if not token(ARGV[7], 64) then return { C.BAD_ARGUMENT, 7 } end
if not string.match(ARGV[8], '^[0-9a-f]+$') or #ARGV[8] ~= 64 then
  return { C.BAD_ARGUMENT, 8 }
end
if redis.call('EXISTS', KEYS[1]) == 1 then return { C.AGENT_EXISTS } end
if redis.call('EXISTS', KEYS[3]) == 1 then return { C.BAD_ARGUMENT, 8 } end

-- Writes only from here on.
local ms = now_ms()
redis.call('HSET', KEYS[1], 'bal', ARGV[4], 'held', '0', 'frozen', '0', 'created', istr(ms))
local lowf = 0
if low > 0 then
  redis.call('HSET', KEYS[1], 'low', ARGV[6])
  if grant < low then lowf = 1 end
end
redis.call('HSET', KEYS[1], 'lowf', istr(lowf))
redis.call('ZADD', KEYS[5], 0, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[7], ARGV[8])
redis.call('HSET', KEYS[3], 'agent', ARGV[1], 'key_id', ARGV[7], 'created', istr(ms))
redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'at', istr(ms), 'kind', 'agent',
  'agent', ARGV[1], 'low', ARGV[6], 'key_id', ARGV[7], 'key_hash', ARGV[8])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[3], 'at', istr(ms), 'kind', 'grant',
  'agent', ARGV[1], 'amount', ARGV[4], 'balance_after', ARGV[4], 'idem', '', 'meta', '')
return { C.OK, grant, ms }
