-- wrk script: BitTorrent announces against a tracker (roost or opentracker).
--
-- Environment (set by bench/tracker_load.py):
--   LOAD_SWARMS   file with one swarm per line: "<40 hex info_hash> <path prefix>"
--                 e.g. "ab..ef /announce/<token>" (roost) or "ab..ef /announce" (opentracker)
--   LOAD_PEERS    peers per swarm (peer_id and port are fixed per peer)
--   LOAD_MAX      stop each thread after this many responses (wrk -d bounds the time)
--   LOAD_CLOSE    "1": ask for a new connection per announce (Connection: close)

local swarms = {}
local peers_per_swarm = tonumber(os.getenv("LOAD_PEERS") or "500")
local max_requests = tonumber(os.getenv("LOAD_MAX") or "1000000")
local close = os.getenv("LOAD_CLOSE") == "1"
-- globals (not locals), so that done() can read them with thread:get()
responses, failures, non200 = 0, 0, 0

local function pct(raw)
  return (raw:gsub(".", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function unhex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

for line in io.lines(os.getenv("LOAD_SWARMS")) do
  local ih, prefix = line:match("^(%x+)%s+(%S+)$")
  if ih then
    swarms[#swarms + 1] = { ih = pct(unhex(ih)), prefix = prefix }
  end
end

local headers = { ["Host"] = "127.0.0.1" }
if close then headers["Connection"] = "close" end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

-- 20-byte peer_ids: 8-byte client prefix + 12 digits; one identity per peer number,
-- percent-encoded once here so request() stays cheap
local peer_ids = {}
for n = 1, peers_per_swarm do
  peer_ids[n] = pct(string.format("-LD0001-%012d", n))
end

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  local s = swarms[math.random(#swarms)]
  local n = math.random(peers_per_swarm)
  local left = (math.random(4) == 1) and 0 or math.random(1, 1000000)
  local path = string.format(
    "%s?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&numwant=50",
    s.prefix, s.ih, peer_ids[n], 10000 + n, left)
  return wrk.format("GET", path, headers)
end

function response(status, hdrs, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
  elseif body:find("failure reason", 1, true) then
    failures = failures + 1
  end
  if responses >= max_requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local resp, fail, bad = 0, 0, 0
  for _, t in ipairs(threads) do
    resp = resp + (t:get("responses") or 0)
    fail = fail + (t:get("failures") or 0)
    bad = bad + (t:get("non200") or 0)
  end
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"timeouts": %d, "status_errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "responses": %d, "failures": %d, "non200": %d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.timeout, summary.errors.status, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, resp, fail, bad))
end
