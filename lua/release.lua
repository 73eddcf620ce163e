-- release.lua: cancel an open hold; its whole amount goes back to the balance (and leaves
-- its task's held, when taken under a task: the task's key is derived from the hold's).
-- KEYS[1] agent hash            iou:{pNN}:agent:<agent>
-- KEYS[2] window hash           iou:{pNN}:win:<agent>
-- KEYS[3] hold hash             iou:{pNN}:hold:<hold_id>
-- KEYS[4] open holds by expiry  iou:{pNN}:holds
-- KEYS[5] idempotency record    iou:{pNN}:idem:<agent>:<sha>
-- KEYS[6] events stream         iou:{pNN}:events
-- KEYS[7] walls hash            iou:{pNN}:walls:<agent> (held counters of a hold counted there)
-- ARGV[1] agent name (the hold must belong to it)
-- ARGV[2] entry id (UUIDv7) of the release event
-- ARGV[3] hold id
-- ARGV[4] idempotency body hash ('' = none)
-- ARGV[5] idempotency key as given
-- Returns:
--   code OK = 0: {0, balance, flags, entry_id, released}
--   code REPLAY = 1: {1, balance, flags, entry_id, released} of the first answer
--   code IDEMPOTENCY_CONFLICT = 12: {12}
--   code HOLD_NOT_FOUND = 18: {18} unknown hold, or another agent's
--   code HOLD_CLOSED = 19: {19, state}
--   code BAD_ARGUMENT = 30: {30, argv_index}

if not name(ARGV[1]) then return { C.BAD_ARGUMENT, 1 } end
if not token(ARGV[2], 64) then return { C.BAD_ARGUMENT, 2 } end
if not token(ARGV[3], 64) then return { C.BAD_ARGUMENT, 3 } end
if ARGV[4] ~= '' and not token(ARGV[4], 64) then return { C.BAD_ARGUMENT, 4 } end

local h = hold_read(KEYS[3])
if not h or h.agent ~= ARGV[1] then return { C.HOLD_NOT_FOUND } end
local replay = idem_lookup(KEYS[5], ARGV[4])
if replay then return replay end
if h.state ~= 'open' then return { C.HOLD_CLOSED, h.state } end
local ms = now_ms()
local a = redis.call('HMGET', KEYS[1], 'low', 'lowf')

-- Writes only from here on.
local bal = hold_close(KEYS[1], KEYS[2], KEYS[7], KEYS[3], KEYS[4], ARGV[3], h, 'released',
  h.amount, ms)
local flags = low_flags(KEYS[1], bal, uint(a[1], MICROS_MAX), a[2])
idem_store(KEYS[5], ARGV[4], bal, flags, ARGV[2], istr(h.amount))
redis.call('XADD', KEYS[6], '*', unpack(task_event({ 'id', ARGV[2], 'at', istr(ms),
  'kind', 'release', 'agent', ARGV[1], 'tool', h.tool, 'category', h.category,
  'amount', istr(h.amount), 'balance_after', istr(bal), 'hold_id', ARGV[3], 'idem', ARGV[5],
  'ih', ARGV[4], 'meta', '' }, h.task)))
return { C.OK, bal, flags, ARGV[2], h.amount }
