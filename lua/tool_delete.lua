-- tool_delete.lua: remove one entry of the price catalog.
-- KEYS[1] tool hash             iou:{tools}:tool:<name>
-- KEYS[2] catalog names         iou:{tools}:names
-- KEYS[3] catalog version       iou:{tools}:version
-- KEYS[4] catalog events        iou:{tools}:events
-- ARGV[1] tool name
-- ARGV[2] entry id (UUIDv7) of the 'tool_delete' event
-- Returns:
--   code OK = 0: {0, version}
--   code NOT_FOUND = 10: {10}
--   code BAD_ARGUMENT = 30: {30, argv_index}

if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if redis.call('EXISTS', KEYS[1]) == 0 then return { C.NOT_FOUND } end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
local version = next_catalog_version(KEYS[3])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'at', istr(now_ms()), 'kind', 'tool_delete',
  'tool', ARGV[1])
return { C.OK, version }
