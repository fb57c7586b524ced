-- wrk script for add-member, one of two modes (arguments after "--"):
--   new    TOKEN PREFIX LOW HIGH COMMUNITY   a new key every call, a random person in [LOW, HIGH]
--   replay TOKEN PREFIX LOW COUNT COMMUNITY  keys PREFIX-0 .. PREFIX-(COUNT-1) again, each with
--                                            the body it was first sent with (person LOW + i)
-- done() prints one JSON line that bench/run.py reads.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local mode, token, prefix, low, high, community
local counter = 0

function init(args)
  mode, token, prefix = args[1], args[2], args[3]
  low, high, community = tonumber(args[4]), tonumber(args[5]), tonumber(args[6])
  math.randomseed(os.time() * 1000 + id)
  counter = id * 7919
end

local function body(person)
  return string.format(
    '{"data":{"type":"communityMembership","attributes":{"personId":%d,"communityId":%d}}}',
    person, community)
end

function request()
  counter = counter + 1
  local key, person
  if mode == "replay" then
    local i = counter % high
    key, person = prefix .. "-" .. i, low + i
  else
    key, person = prefix .. "-" .. id .. "-" .. counter, math.random(low, high)
  end
  return wrk.format("POST", "/api/v1/ops/people/communities/add", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["X-CIO-Idempotency-Key"] = key,
  }, body(person))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non_2xx":%d,' ..
    '"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
