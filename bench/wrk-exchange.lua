-- wrk script of the exchange load: every request POSTs the next pre-signed OIDC token, each token exactly once.
-- Arguments after `--`: the token file (one token a line) and the number of wrk threads.
-- Thread k of n takes lines k, k + n, k + 2n, …; a thread out of tokens stops itself (its last request is a
-- GET /healthz, counted apart) and prints "exhausted" so that bench/wrk.ts can end the run with SIGINT (wrk's
-- main thread otherwise sleeps for the whole --duration). `done` prints one JSON line with the totals.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, count = args[1], tonumber(args[2])
  tokens = {}
  local line_number = 0
  for line in io.lines(file) do
    if line ~= "" then
      if line_number % count == id then tokens[#tokens + 1] = line end
      line_number = line_number + 1
    end
  end
  next_token = 1
  used = 0
  exhausted = 0
  not_ok = 0
  filler = wrk.format("GET", "/healthz", {}, nil)
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  local token = tokens[next_token]
  if token == nil then
    exhausted = exhausted + 1
    if exhausted == 1 then
      io.write("exhausted\n")
      io.flush()
    end
    wrk.thread:stop()
    return filler
  end
  next_token = next_token + 1
  used = used + 1
  return wrk.format("POST", "/v1/oidc/token", headers, '{"oidc_token":"' .. token .. '"}')
end

-- wrk itself counts only statuses from 400 up as errors; every answer but a 2xx is a failed exchange here.
function response(status, headers, body)
  if status < 200 or status > 299 then not_ok = not_ok + 1 end
end

function done(summary, latency, requests)
  local used_total, exhausted_total, not_ok_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    used_total = used_total + thread:get("used")
    exhausted_total = exhausted_total + thread:get("exhausted")
    not_ok_total = not_ok_total + thread:get("not_ok")
  end
  local e = summary.errors
  io.write(string.format(
    '{"durationUs":%d,"requests":%d,"tokensUsed":%d,"fillers":%d,"non2xx":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latencyUs":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.duration, summary.requests, used_total, exhausted_total, not_ok_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
