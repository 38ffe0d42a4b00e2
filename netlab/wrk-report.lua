-- netlab's wrk report: after the run, print wrk's own totals as one JSON line (prefixed
-- "NETLAB "), with latency percentiles taken from wrk's histogram (µs), so netlab reads exact
-- numbers instead of the rounded text summary. netlab.external.wrk() passes it with -s.
done = function(summary, latency, requests)
  local function num(x)
    if x ~= x or x == math.huge or x == -math.huge then return "null" end
    return string.format("%.3f", x)
  end
  local e = summary.errors
  io.write(string.format(
    'NETLAB {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"mean":%s,"stdev":%s,"min":%s,"p50":%s,"p90":%s,"p99":%s,"p999":%s,"max":%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    num(latency.mean), num(latency.stdev), num(latency.min),
    num(latency:percentile(50)), num(latency:percentile(90)), num(latency:percentile(99)),
    num(latency:percentile(99.9)), num(latency.max)))
end
