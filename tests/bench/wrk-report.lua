-- wrk's done() for tests/bench (common.sh, bench_wrk): one JSON object with what report.py and
-- ab.sh read, written to the file named by WRK_JSON (stdout without it).
--
-- errors.status is wrk's own count of responses with a status of 400 or more, reported as
-- "non2xx": the backend and the proxies answer 200 or an error status. Counting 1xx/3xx as well
-- would take a response() hook, which runs Lua for every response on the load generator's core.
-- cpu_s is wrk's own CPU time (os.clock(): the process's, all its threads, exited ones included).

done = function(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  local json = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"non2xx":%d,' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p99.9":%d,"max":%d,"mean":%.1f},"cpu_s":%.3f}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    p(50), p(90), p(99), p(99.9), latency.max, latency.mean, os.clock())
  local path = os.getenv("WRK_JSON")
  if path and path ~= "" then
    local f = assert(io.open(path, "w"))
    f:write(json, "\n")
    f:close()
  else
    io.write(json, "\n")
  end
end
