-- freeze.lua: freeze ('1') or unfreeze ('0') an agent; frozen agents make no paid calls.
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] events stream         iou:{pNN}:events
-- ARGV[1] agent name
-- ARGV[2] entry id (UUIDv7) of the 'freeze' or 'unfreeze' event
-- ARGV[3] '1' to freeze, '0' to unfreeze
-- Returns:
--   code OK = 0: {0, frozen}
--   code NOT_FOUND = 10: {10}
--   code BAD_ARGUMENT = 30: {30, argv_index}

if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if ARGV[3] ~= '0' and ARGV[3] ~= '1' then return { C.BAD_ARGUMENT, 3 } end
if redis.call('EXISTS', KEYS[1]) == 0 then return { C.NOT_FOUND } end

local kind = 'unfreeze'
if ARGV[3] == '1' then kind = 'freeze' end
redis.call('HSET', KEYS[1], 'frozen', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'at', istr(now_ms()), 'kind', kind,
  'agent', ARGV[1])
return { C.OK, tonumber(ARGV[3]) }
