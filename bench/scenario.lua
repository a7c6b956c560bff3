-- wrk script of one benchmark scenario.
-- BENCH_REQUESTS names a file of "path<TAB>authorization header[<TAB>DPoP proof[<TAB>headers]]"
-- lines (headers: "Name: value" pairs joined by "|", such as a proxy's X-Forwarded-*); each
-- wrk thread takes every BENCH_THREADS-th line from its own offset, so threads never send the
-- same line, and cycles through its share (a request sent again counts as reused: a
-- distinct-token run must show none).
-- A response whose status is not BENCH_EXPECT counts as an error; done() prints one
-- "RESULT {json}" line.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   local nthreads = tonumber(os.getenv("BENCH_THREADS"))
   prepared, sent, reused, unexpected = {}, 0, 0, 0
   expect = tonumber(os.getenv("BENCH_EXPECT"))
   local n = 0
   for line in io.lines(os.getenv("BENCH_REQUESTS")) do
      if n % nthreads == id then
         local path, rest = line:match("^([^\t]*)\t?(.*)$")
         local auth, more = rest:match("^([^\t]*)\t?(.*)$")
         local proof, extra = more:match("^([^\t]*)\t?(.*)$")
         local headers = {}
         if auth ~= "" then headers["Authorization"] = auth end
         if proof ~= "" then headers["DPoP"] = proof end
         for name, value in extra:gmatch("([^|:]+): ([^|]*)") do headers[name] = value end
         table.insert(prepared, wrk.format("GET", path, headers))
      end
      n = n + 1
   end
end

function request()
   sent = sent + 1
   if sent > #prepared then reused = reused + 1 end
   return prepared[(sent - 1) % #prepared + 1]
end

function response(status, headers, body)
   if status ~= expect then unexpected = unexpected + 1 end
end

function done(summary, latency, requests)
   local unexpected, reused = 0, 0
   for _, thread in ipairs(threads) do
      unexpected = unexpected + thread:get("unexpected")
      reused = reused + thread:get("reused")
   end
   local e = summary.errors
   io.write(string.format(
      'RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, '
         .. '"socket_errors": %d, "unexpected_status": %d, "reused": %d}\n',
      summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
      latency:percentile(99) / 1e3, e.connect + e.read + e.write + e.timeout, unexpected, reused))
end
