-- key_add.lua: give an agent a further key (stored as its sha256 only).
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] agent's key hashes    iou:{pNN}:keys:<agent>
-- KEYS[3] key lookup            iou:{pNN}:apikey:<sha256>
-- KEYS[4] events stream         iou:{pNN}:events
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the 'key_add' event
-- ARGV[3] key id
-- ARGV[4] key hash (hex sha256)
-- ARGV[5] keys per agent, max
-- Returns:
--   code OK = 0: {0}
--   code NOT_FOUND = 10: {10}
--   code KEYS_FULL = 24: {24, keys_max}
--   code BAD_ARGUMENT = 30: {30, argv_index}

if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if not string.match(ARGV[4], '^[0-9a-f]+$') or #ARGV[4] ~= 64 then
  return { C.BAD_ARGUMENT, 4 }
end
local keys_max = uint(ARGV[5], 1000)
if not keys_max then return { C.BAD_ARGUMENT, 5 } end
if redis.call('EXISTS', KEYS[1]) == 0 then return { C.NOT_FOUND } end
if redis.call('HLEN', KEYS[2]) >= keys_max then return { C.KEYS_FULL, keys_max } end
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
  return { C.BAD_ARGUMENT, 3 }
end

-- One clock reading: TIME moves during a script, and the key's creation is its event's time.
local at = istr(now_ms())
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[3], 'agent', ARGV[1], 'key_id', ARGV[3], 'created', at)
redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'at', at, 'kind', 'key_add',
  'agent', ARGV[1], 'key_id', ARGV[3], 'key_hash', ARGV[4])
return { C.OK }
