-- wrk script for every HTTP workload of bench/run. Configured by environment variables:
--   BENCH_METHOD       GET, POST or PUT
--   BENCH_PATH         path template: {k} session number (0..99), {id} k + 1 (json-server ids),
--                      {n} this thread's request counter, {t} the thread number;
--                      e.g. /api/backup/s{k}, /s{k}/{n}-{t}.json, /snapshots/{id}
--   BENCH_BODY_BYTES   size of the JSON body of a write (exact)
--   BENCH_SESSION_FIELD  if set, the body also names the session ("session":"s<k>"), for
--                      json-server, whose collection has no per-session path
--   BENCH_SESSIONS     number of sessions (100); BENCH_THREADS: wrk's -t, so that request i of
--                      all threads together goes to session i mod BENCH_SESSIONS
--   BENCH_HEADER       if not empty, one more header on every request, "Name: value"
--                      (moto-put: "If-None-Match: *", as snapkeep's own snapshot PUT)
-- Every body is different (it holds the request's number), so no write is a duplicate.
-- At the end it prints one line "BENCH_RESULT {json}" with exact figures.

local method = os.getenv("BENCH_METHOD") or "GET"
local template = os.getenv("BENCH_PATH") or "/"
local body_bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "4096")
local session_field = os.getenv("BENCH_SESSION_FIELD")
local sessions = tonumber(os.getenv("BENCH_SESSIONS") or "100")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local extra_header = os.getenv("BENCH_HEADER") or ""

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local counter, pad
local headers = {}

function init(args)
  counter = 0
  local name, value = extra_header:match("^([^:]+):%s*(.*)$")
  if name then
    headers[name] = value
  end
  if method ~= "GET" then
    headers["Content-Type"] = "application/json"
    pad = string.rep("x", body_bytes)
  end
end

function request()
  local n = counter
  counter = counter + 1
  local k = (n * nthreads + id) % sessions
  local path = template:gsub("{k}", tostring(k)):gsub("{id}", tostring(k + 1))
    :gsub("{n}", tostring(n)):gsub("{t}", tostring(id))
  if method == "GET" then
    return wrk.format(method, path, headers)
  end
  local head = '{"seq":' .. n .. ',"thread":' .. id
  if session_field then
    head = head .. ',"session":"s' .. k .. '"'
  end
  head = head .. ',"state":"'
  local body = head .. pad:sub(1, body_bytes - #head - 2) .. '"}'
  return wrk.format(method, path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
