-- wrk script: add-member with a new key every call, paced to a schedule: each wrk thread
-- sends its next request at its next slot, INTERVAL_MS after the one before (a clock read
-- through LuaJIT's ffi), so THREADS * 1000 / INTERVAL_MS calls a second, whatever each call's
-- latency, as long as the connections outnumber the calls under way. A thread behind its
-- schedule sends at once until it has caught up.
-- Arguments after "--": TOKEN PREFIX LOW HIGH COMMUNITY INTERVAL_MS. done() prints one JSON line.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pm_ops_timespec;
int clock_gettime(int clk_id, pm_ops_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("pm_ops_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local token, prefix, low, high, community, interval
local counter = 0
local slot = nil

function init(args)
  token, prefix = args[1], args[2]
  low, high, community, interval = tonumber(args[3]), tonumber(args[4]), tonumber(args[5]), tonumber(args[6])
  math.randomseed(os.time() * 1000 + id)
end

function delay()
  local now = now_ms()
  slot = math.max((slot or now) + interval, now - 1000)  -- at most a second's backlog
  return math.max(0, slot - now)
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
