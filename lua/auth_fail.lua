-- auth_fail.lua: count one failed authentication in fixed windows and say whether the
-- caller is now over a limit. Only requests whose credential was wrong (or missing) come
-- here: a valid credential is checked first and never counted or refused.
-- Every key is in the {auth} hash tag, so the script touches one cluster slot.
-- KEYS[1] failures of everyone     iou:{auth}:fail:all
-- KEYS[2] failures of one client   iou:{auth}:fail:client:<address>
-- KEYS[3] failures of a credential iou:{auth}:fail:cred:<sha256 of the token> (absent when
--                                  no token was presented)
-- ARGV[1] window, ms (each counter expires this long after its first failure)
-- ARGV[2] failures max, everyone together
-- ARGV[3] failures max, per client
-- ARGV[4] failures max, per credential
-- Returns:
--   code OK = 0: {0, scope, retry_ms}: scope 0 = under every limit, 1 = everyone's limit,
--     2 = the client's, 3 = the credential's; retry_ms = until that counter's window ends
--   code BAD_ARGUMENT = 30: {30, argv_index}
-- Once everyone's limit is passed the client and credential counters are not touched, so
-- rotating addresses or credentials cannot make the script create keys without bound.

local window_ms = uint(ARGV[1], 86400000)
if not window_ms or window_ms == 0 then return { C.BAD_ARGUMENT, 1 } end
local limits = {}
for i = 2, 4 do
  limits[i] = uint(ARGV[i], 100000000)
  if not limits[i] then return { C.BAD_ARGUMENT, i } end
end

local function count(key)
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, window_ms) end
  return n
end

local function left_ms(key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then -- never without an expiry: a counter that outlived it starts a window
    redis.call('PEXPIRE', key, window_ms)
    return window_ms
  end
  return ttl
end

if count(KEYS[1]) > limits[2] then return { C.OK, 1, left_ms(KEYS[1]) } end
local by_client = count(KEYS[2])
local by_credential = 0
if KEYS[3] then by_credential = count(KEYS[3]) end
if by_client > limits[3] then return { C.OK, 2, left_ms(KEYS[2]) } end
if by_credential > limits[4] then return { C.OK, 3, left_ms(KEYS[3]) } end
return { C.OK, 0, 0 }
