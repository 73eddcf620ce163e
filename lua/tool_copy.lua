-- tool_copy.lua: write one catalog entry into one partition's copy of the catalog, which
-- charge.lua, hold.lua and capture.lua read in the same step as the money they move (the
-- {tools} slot is out of their reach on a cluster). The gateway runs it for every partition
-- after tool_set.lua/tool_delete.lua and before the PUT or DELETE answers, and again to
-- repair copies (engine start, catalog refresh, iou recover). A copy is replaced only by a
-- newer catalog version, so racing changes end the same in every partition; a deleted tool
-- keeps its version alone (a tombstone), so an older copy arriving late cannot revive it.
-- KEYS[1] catalog copy          iou:{pNN}:tools   field tool -> "<version> <price> <category> <pricing>"
-- ARGV[1] tool name
-- ARGV[2] catalog version of the change
-- ARGV[3] price, micros ('' = the tool was deleted)
-- ARGV[4] category ('' when deleted)
-- ARGV[5] pricing: 'fixed' or 'variable' ('' when deleted)
-- ARGV[6] '1' = replace whatever version is stored (iou recover), else '0'
-- Returns:
--   code OK = 0: {0, written}: 1 written, 0 kept (a newer version is stored)
--   code BAD_ARGUMENT = 30: {30, argv_index}

if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
local version = uint(ARGV[2], MICROS_MAX)
if not version then return { C.BAD_ARGUMENT, 2 } end
local row = istr(version)
if ARGV[3] ~= '' then
  if not uint(ARGV[3], MICROS_MAX) then return { C.BAD_ARGUMENT, 3 } end
  if not name(ARGV[4]) then return { C.BAD_ARGUMENT, 4 } end
  if ARGV[5] ~= 'fixed' and ARGV[5] ~= 'variable' then return { C.BAD_ARGUMENT, 5 } end
  row = row .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5]
end
if ARGV[6] ~= '0' and ARGV[6] ~= '1' then return { C.BAD_ARGUMENT, 6 } end

if ARGV[6] == '0' then
  local stored = redis.call('HGET', KEYS[1], ARGV[1])
  local stored_version = stored and tonumber(string.match(stored, '^(%d+)'))
  if stored_version and stored_version >= version then return { C.OK, 0 } end
end
redis.call('HSET', KEYS[1], ARGV[1], row)
return { C.OK, 1 }
