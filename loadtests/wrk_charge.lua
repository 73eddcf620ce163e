-- wrk script: POST /v1/charge with a rotating agent key and a fresh Idempotency-Key.
-- Usage: wrk -s loadtests/wrk_charge.lua URL -- KEYS_FILE [PATH] [BODY]
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  keys = {}
  for line in io.lines(args[1]) do keys[#keys + 1] = line end
  path = args[2] or "/v1/charge"
  body = args[3] or '{"tool":"web_search"}'
  round = args[4] or "r"
end

function request()
  counter = counter + 1
  local key = keys[(counter % #keys) + 1]
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = round .. "-" .. id .. "-" .. counter,
  }, body)
end
