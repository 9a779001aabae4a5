-- wrk script: a cohort mix with user ids; counts which track answered and non-200s.
-- Args (after --): "close" to send Connection: close on every request.
local threads = {}
local close = false

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  close = args[1] == "close"
  counts = {}
  non200 = 0
  math.randomseed(os.time() + math.random(1000000))
end

function request()
  local h = {}
  local r = math.random(100)
  if r <= 5 then
    h["X-Traffic-Group"] = "INTERNAL"
  elseif r <= 45 then
    h["X-Traffic-Group"] = "FREE"
  elseif r <= 60 then
    h["X-Traffic-Group"] = "ENTERPRISE"
  end
  h["X-User-Id"] = "u" .. math.random(1000000)
  if close then
    h["Connection"] = "close"
  end
  return wrk.format("GET", "/", h)
end

function response(status, headers, body)
  local t = headers["X-Track"] or headers["x-track"] or "none"
  counts[t] = (counts[t] or 0) + 1
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  local bad = 0
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("counts")) do
      total[k] = (total[k] or 0) + v
    end
    bad = bad + thread:get("non200")
  end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.3f errors=%d non200=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, bad,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
  local parts = {}
  for k, v in pairs(total) do
    table.insert(parts, string.format("%s=%d", k, v))
  end
  table.sort(parts)
  io.write("SPLIT " .. table.concat(parts, " ") .. "\n")
end
