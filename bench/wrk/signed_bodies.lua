-- Unique, pre-signed Slack requests for wrk, one body per request, never one twice.
--
--   wrk -t2 -c16 -d5s -s bench/wrk/signed_bodies.lua http://127.0.0.1:PORT -- PREFIX PATH
--
-- Thread i reads PREFIXi.txt (written by bench/loadgen.py before the run): one request
-- a line, "<timestamp> <signature> <urlencoded body>". request() hands them out in turn;
-- a thread that has used all of its own sends GET /healthz instead (counted as spare)
-- and stops. response() counts every answer other than 200 and keeps a few of them.
-- done() prints one line, "WRK_RESULT <json>", that loadgen.py reads.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   local prefix, path = args[1], args[2]
   bodies = {}
   sent, spare, non200, samples = 0, 0, 0, ""
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
   -- wrk also calls this once on its main state, only to check the request parses.
   if bodies == nil then
      return wrk.format("GET", "/healthz")
   end
   local index = sent + 1
   if index > #bodies then
      spare = spare + 1
      wrk.thread:stop()
      return healthz
   end
   sent = index
   return bodies[index]
end

function response(status, headers, body)
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
   local total_sent, total_spare, total_non200, all_samples = 0, 0, 0, ""
   for _, thread in ipairs(threads) do
      total_sent = total_sent + thread:get("sent")
      total_spare = total_spare + thread:get("spare")
      total_non200 = total_non200 + thread:get("non200")
      all_samples = all_samples .. thread:get("samples")
   end
   local percentiles = {}
   for _, p in ipairs({50, 90, 95, 99, 99.9}) do
      percentiles[#percentiles + 1] = string.format('"%s": %d', tostring(p), latency:percentile(p))
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"completed": %d, "duration_us": %d, "bytes": %d, "sent": %d, "spare": %d, "non200": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, %s}, "samples": %s}\n',
      summary.requests, summary.duration, summary.bytes, total_sent, total_spare, total_non200,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max, latency.stdev, table.concat(percentiles, ", "),
      json_string(all_samples)))
end
