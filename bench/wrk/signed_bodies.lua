-- Unique, pre-signed Slack requests for wrk, one body per request, never one twice.
--
--   wrk -t2 -c16 -d5s -s bench/wrk/signed_bodies.lua http://127.0.0.1:PORT -- PREFIX PATH
--
-- Thread i reads PREFIXi.txt (written by bench/loadgen.py before the run): one request
-- a line, "<timestamp> <signature> <urlencoded body>". request() hands them out in turn
-- and counts them: every body handed out is written to the server, which handles it
-- even when wrk stops before the answer arrives, so a store can be checked against the
-- count. A thread that has used all of its bodies sends GET /healthz (stores nothing)
-- and is reported as exhausted. response() counts the answers to bodies (a /healthz
-- answer, "ok", is counted apart as spare), and those other than 200 with a few
-- samples. done() prints "WRK_RESULT <json>" for loadgen.py.
--
-- wrk calls request() once before the run on thread 0's state only to check that the
-- request parses, and never sends that one: thread 0's first call returns GET /healthz,
-- so no body is counted that was not sent (on a wrk that skips the check, one /healthz
-- more is sent).

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } signed_bodies_timespec;
int clock_gettime(int clock_id, signed_bodies_timespec *tp);
]])
local clock = ffi.new("signed_bodies_timespec")
local CLOCK_MONOTONIC = 1

local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
   return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   local prefix, path = args[1], args[2]
   bodies = {}
   sent, answered, spare, non200, exhausted, samples = 0, 0, 0, 0, 0, ""
   first, last = 0, 0
   checked = id ~= 0
   local file = assert(io.open(prefix .. id .. ".txt", "r"))
   for line in file:lines() do
      local timestamp, signature, body = line:match("^(%d+) (%S+) (.+)$")
      bodies[#bodies + 1] = wrk.format("POST", path, {
         ["User-Agent"] = "Slackbot 1.0 (+https://api.slack.com/robots)",
         ["Content-Type"] = "application/x-www-form-urlencoded",
         ["X-Slack-Request-Timestamp"] = timestamp,
         ["X-Slack-Signature"] = signature,
      }, body)
   end
   file:close()
   healthz = wrk.format("GET", "/healthz")
end

function request()
   -- wrk also calls this once on its main state, only to check that the request parses.
   if bodies == nil then
      return wrk.format("GET", "/healthz")
   end
   if not checked then
      checked = true
      return healthz
   end
   if first == 0 then
      first = now()
   end
   local index = sent + 1
   if index > #bodies then
      exhausted = 1
      return healthz
   end
   sent = index
   return bodies[index]
end

function response(status, headers, body)
   last = now()
   if status == 200 and body == "ok" then
      spare = spare + 1
      return
   end
   answered = answered + 1
   if status ~= 200 then
      non200 = non200 + 1
      if non200 <= 5 then
         samples = samples .. status .. " " .. string.sub(body or "", 1, 200):gsub("[%c\"\\]", " ") .. " ;; "
      end
   end
end

local function json_string(text)
   return '"' .. tostring(text):gsub('[%c"\\]', " ") .. '"'
end

function done(summary, latency, requests)
   local total = {sent = 0, answered = 0, spare = 0, non200 = 0, exhausted = 0}
   local all_samples, first_sent, last_answer = "", math.huge, 0
   for _, thread in ipairs(threads) do
      for name, _ in pairs(total) do
         total[name] = total[name] + thread:get(name)
      end
      all_samples = all_samples .. thread:get("samples")
      if thread:get("first") > 0 then
         first_sent = math.min(first_sent, thread:get("first"))
      end
      last_answer = math.max(last_answer, thread:get("last"))
   end
   local window = last_answer > first_sent and (last_answer - first_sent) or 0
   local percentiles = {}
   for _, p in ipairs({50, 90, 95, 99, 99.9}) do
      percentiles[#percentiles + 1] = string.format('"%s": %d', tostring(p), latency:percentile(p))
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"completed": %d, "window_s": %.6f, "bytes": %d, "sent": %d, "answered": %d, "spare": %d, '
         .. '"non200": %d, "exhausted_threads": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, %s}, "samples": %s}\n',
      summary.requests, window, summary.bytes, total.sent, total.answered, total.spare, total.non200,
      total.exhausted, e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max, latency.stdev, table.concat(percentiles, ", "),
      json_string(all_samples)))
end
