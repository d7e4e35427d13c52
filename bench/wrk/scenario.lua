-- wrk script for bench/run.py: `wrk ... -s scenario.lua URL -- MODE TAG`.
--   get   GET /
--   post  the course's curl: POST /messages?user_id=U&message=M, Content-Type: application/json,
--         empty body; U is new on every request (TAG-thread-counter), so no two requests
--         race for one user's history
--   mix   POST as above and GET /messages/{S}, alternating; S is one of the users that
--         bench/run.py stored beforehand (seed-0 .. seed-63), because wrk runs the connections
--         concurrently and a GET for the user just POSTed could overtake its POST
-- done() prints one line, BENCH_JSON {...}, that run.py parses.

local SEED_USERS = 64
local threads = {}
local counter = 0 -- requests sent by this thread

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode, tag = args[1], args[2]
  json_headers = { ["Content-Type"] = "application/json" }
end

local function post()
  counter = counter + 1
  return wrk.format("POST", string.format("/messages?user_id=%s-%d-%d&message=Hello%%20Dapr", tag, id, counter), json_headers, "")
end

function request()
  if mode == "get" then
    return wrk.format("GET", "/")
  elseif mode == "post" then
    return post()
  end
  if counter % 2 == 0 then
    return post()
  end
  counter = counter + 1
  return wrk.format("GET", string.format("/messages/seed-%d", (counter / 2) % SEED_USERS))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, e.status))
end
