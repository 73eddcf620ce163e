-- key_revoke.lua: revoke one key of an agent; it stops authenticating at once.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] agent's key hashes    iou:{pNN}:keys:<agent>
-- KEYS[3] key lookup            iou:{pNN}:apikey:<sha256> (the hash the caller read)
-- KEYS[4] events stream         iou:{pNN}:events
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the 'key_revoke' event
-- ARGV[3] key id
-- ARGV[4] key hash the caller read for this key id (checked again here)
-- Returns:
--   code OK = 0: {0}
--   code NOT_FOUND = 10: {10}
--   code KEY_NOT_FOUND = 23: {23}
--   code BAD_ARGUMENT = 30: {30, argv_index}

if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if redis.call('EXISTS', KEYS[1]) == 0 then return { C.NOT_FOUND } end
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return { C.KEY_NOT_FOUND } end

redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'at', istr(now_ms()), 'kind', 'key_revoke',
  'agent', ARGV[1], 'key_id', ARGV[3], 'key_hash', ARGV[4])
return { C.OK }
