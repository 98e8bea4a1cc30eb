-- wrk script for EventFlow's POST /events: every request carries a unique event_id.
--
--   wrk -t1 -c32 -d15s -s benchmarks/wrk_single.lua http://127.0.0.1:8000/events -- PREFIX [KEY]
--
-- KEY, when given, is sent as a Bearer token.
-- PREFIX (8 hex digits) keeps ids of concurrent wrk processes apart; each wrk thread
-- adds its number and a counter: PREFIX-TTTT-4000-8000-CCCCCCCCCCCC. The four event
-- types are sent in turn, with valid properties. At the end one line starting with
-- "WRK_JSON " gives the counts and latencies for the benchmark harness.

local threads = {}
local prefix = "0badcafe"
local counter = 0
local stamp = ""
local templates = {
  '{"event_id":"%s","event_type":"purchase","user_id":"user-42","timestamp":"%s",'
    .. '"properties":{"amount":12.5,"currency":"EUR","product_id":"sku-1","quantity":1}}',
  '{"event_id":"%s","event_type":"page_view","user_id":"user-7","timestamp":"%s",'
    .. '"properties":{"page":"/pricing","duration_ms":1200}}',
  '{"event_id":"%s","event_type":"user_signup","user_id":"user-9","timestamp":"%s",'
    .. '"properties":{"email":"user-9@example.com","plan":"pro","source":"ads"}}',
  '{"event_id":"%s","event_type":"custom","user_id":"user-3","timestamp":"%s",'
    .. '"properties":{"name":"video.played","value":3}}',
}
local headers = { ["Content-Type"] = "application/json" }

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  if args[1] then
    prefix = args[1]
  end
  if args[2] then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
end

function request()
  counter = counter + 1
  local id = string.format("%s-%04x-4000-8000-%012x", prefix, thread_no, counter)
  local body = string.format(templates[counter % 4 + 1], id, stamp)
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "p50": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max
  ))
end
