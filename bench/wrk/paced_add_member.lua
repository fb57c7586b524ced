-- wrk script: add-member with a new key every call, paced: each connection waits DELAY_MS
-- between its requests, so CONNECTIONS * 1000 / DELAY_MS calls a second at most.
-- Arguments after "--": TOKEN PREFIX LOW HIGH COMMUNITY DELAY_MS. done() prints one JSON line.

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local token, prefix, low, high, community, pause
local counter = 0

function init(args)
  token, prefix = args[1], args[2]
  low, high, community, pause = tonumber(args[3]), tonumber(args[4]), tonumber(args[5]), tonumber(args[6])
  math.randomseed(os.time() * 1000 + id)
end

function delay()
  return pause
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"data":{"type":"communityMembership","attributes":{"personId":%d,"communityId":%d}}}',
    math.random(low, high), community)
  return wrk.format("POST", "/api/v1/ops/people/communities/add", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["X-CIO-Idempotency-Key"] = prefix .. "-" .. id .. "-" .. counter,
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non_2xx":%d,' ..
    '"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
