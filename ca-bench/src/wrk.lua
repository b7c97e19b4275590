-- Written by ca-bench (ca-bench/src/wrk.rs) next to the bodies file; run as
--   wrk ... -s authsign.lua URL -- BODIES_FILE keepalive|close
-- Each line of BODIES_FILE is one CFSSL authsign body (made up front; the
-- token covers only the inner request, so the bodies can be replayed). Each
-- wrk thread sends them in turn from its own starting point. An answer is OK
-- only when it is HTTP 200 and its body says "success":true. `close` adds
-- `Connection: close`: the server answers with it and closes, and wrk opens
-- a new connection (TCP and TLS) for the next request.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

ok = 0
bad = 0
first_bad = ""
local reqs = {}
local n = 0
local i = 0

function init(args)
  local path, mode = args[1], args[2]
  local headers = { ["Host"] = "localhost", ["Content-Type"] = "application/json" }
  if mode == "close" then
    headers["Connection"] = "close"
  end
  for line in io.lines(path) do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format("POST", "/api/v1/cfssl/authsign", headers, line)
    end
  end
  if n == 0 then
    error("no bodies in " .. tostring(path))
  end
  i = (id * 997) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end

function response(status, headers, body)
  if status == 200 and body and string.find(body, '"success":true', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then
      local text = string.gsub(body or "", "%s+", " ")
      first_bad = "HTTP " .. status .. ": " .. string.sub(text, 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local o, b, fb = 0, 0, ""
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
    if fb == "" then
      fb = t:get("first_bad")
    end
  end
  local e = summary.errors
  io.write(string.format(
    "ca-bench: ok %.0f bad %.0f requests %.0f duration_us %.0f connect %.0f read %.0f write %.0f status %.0f timeout %.0f p50_us %.0f p90_us %.0f p99_us %.0f max_us %.0f\n",
    o, b, summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  io.write("ca-bench: first_bad " .. fb .. "\n")
end
