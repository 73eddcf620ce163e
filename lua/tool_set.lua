-- tool_set.lua: create or replace one entry of the price catalog. The gateway then writes
-- the entry's copy into every partition (tool_copy.lua) before the PUT answers.
-- KEYS[1] tool hash             iou:{tools}:tool:<name>
-- KEYS[2] catalog names         iou:{tools}:names
-- KEYS[3] catalog version       iou:{tools}:version
-- KEYS[4] catalog events        iou:{tools}:events
-- ARGV[1] tool name
-- ARGV[2] entry id (UUIDv7) of the 'tool' event
-- ARGV[3] price, micros (0 = free; for variable tools, the default hold amount)
-- ARGV[4] amount max, micros
-- ARGV[5] category
-- ARGV[6] pricing: 'fixed' or 'variable'
-- ARGV[7] upstream URL ('' = none)
-- ARGV[8] upstream headers as JSON text ('' = none); secret, never shown by the API
-- Returns:
--   code OK = 0: {0, version}
--   code BAD_ARGUMENT = 30: {30, argv_index}

local amount_max = uint(ARGV[4], MICROS_MAX)
if not amount_max then return { C.BAD_ARGUMENT, 4 } end
if not uint(ARGV[3], amount_max) then return { C.BAD_ARGUMENT, 3 } end
if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not name(ARGV[5]) then return { C.BAD_ARGUMENT, 5 } end
if ARGV[6] ~= 'fixed' and ARGV[6] ~= 'variable' then return { C.BAD_ARGUMENT, 6 } end
if ARGV[7] ~= '' and (#ARGV[7] > 2048 or not string.match(ARGV[7], '^https?://[!-~]+$')) then
  return { C.BAD_ARGUMENT, 7 }
end
if #ARGV[8] > 8192 then return { C.BAD_ARGUMENT, 8 } end

local ms = istr(now_ms())
-- The entry keeps the catalog version of its change: the partitions' copies (tool_copy.lua)
-- keep the newest version, so racing changes end the same in every partition.
local version = next_catalog_version(KEYS[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'price', ARGV[3], 'category', ARGV[5], 'pricing', ARGV[6],
  'upstream', ARGV[7], 'headers', ARGV[8], 'updated', ms, 'version', istr(version))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'at', ms, 'kind', 'tool', 'tool', ARGV[1],
  'price', ARGV[3], 'category', ARGV[5], 'pricing', ARGV[6], 'upstream', ARGV[7],
  'headers', ARGV[8])
return { C.OK, version }
