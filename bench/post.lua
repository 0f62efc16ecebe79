-- wrk script for bench/run.py: POSTs pre-signed, unique webhook bodies.
--
-- Usage: wrk ... -s bench/post.lua URL -- BODIES_FILE FIRST COUNT
--
-- BODIES_FILE has one request per line: "<signature>\t<json body>". Lines FIRST ..
-- FIRST+COUNT-1 (0-based) belong to this run; each wrk thread takes a disjoint slice of
-- them and every request takes the next line of its slice, so no body is sent twice
-- (relay would answer a repeated body as a duplicate without storing it). If a slice runs
-- out the thread wraps around and counts the reused bodies: run.py then declares the
-- result invalid.
--
-- done() prints one parseable line starting with "BENCH " (key=value pairs).

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

-- Per-thread state (each wrk thread has its own Lua state).
local requests = {}
n_requests = 0 -- global: done() reads it with thread:get
local cursor = 0
sent = 0
reused = 0
accepted = 0 -- 200 {"status": "accepted"}: a new event, stored
status_other_2xx = 0
status_non_2xx = 0

function init(args)
   local path, first, count = args[1], tonumber(args[2]), tonumber(args[3])
   local nthreads = tonumber(args[4])
   if path == nil or first == nil or count == nil or nthreads == nil then
      error("usage: -- BODIES_FILE FIRST COUNT THREADS")
   end
   local per = math.floor(count / nthreads)
   local lo = first + tid * per
   local hi = lo + per -- exclusive
   local file = assert(io.open(path, "r"))
   local index = 0
   local headers = {["Content-Type"] = "application/json"}
   for line in file:lines() do
      if index >= hi then
         break
      end
      if index >= lo then
         local tab = string.find(line, "\t", 1, true)
         headers["X-bitHuman-Signature"] = string.sub(line, 1, tab - 1)
         n_requests = n_requests + 1
         requests[n_requests] = wrk.format("POST", nil, headers, string.sub(line, tab + 1))
      end
      index = index + 1
   end
   file:close()
   if n_requests == 0 then
      error(string.format("thread %d: no bodies in lines [%d, %d) of %s", tid, lo, hi, path))
   end
end

function request()
   cursor = cursor + 1
   if cursor > n_requests then
      cursor = 1
   end
   sent = sent + 1
   if sent > n_requests then
      reused = reused + 1
   end
   return requests[cursor]
end

function response(status, headers, body)
   -- relay answers a new event and a duplicate both 200: the body tells them apart.
   if status == 200 and string.find(body, '"status": "accepted"', 1, true) then
      accepted = accepted + 1
   elseif status >= 200 and status < 300 then
      status_other_2xx = status_other_2xx + 1
   else
      status_non_2xx = status_non_2xx + 1
   end
end

function done(summary, latency, requests)
   local totals = {sent = 0, reused = 0, accepted = 0, status_other_2xx = 0,
                   status_non_2xx = 0, bodies = 0}
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         if name ~= "bodies" then
            totals[name] = totals[name] + (thread:get(name) or 0)
         end
      end
      totals.bodies = totals.bodies + (thread:get("n_requests") or 0)
   end
   local seconds = summary.duration / 1e6
   local errors = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d" ..
      " accepted=%d status_other_2xx=%d status_non_2xx=%d sent=%d reused=%d bodies=%d" ..
      " err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      totals.accepted, totals.status_other_2xx, totals.status_non_2xx, totals.sent,
      totals.reused, totals.bodies,
      errors.connect, errors.read, errors.write, errors.timeout))
end
