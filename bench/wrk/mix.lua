-- wrk script of the todo-api bench: a weighted mix of request kinds, each
-- request for a random user with that user's token and one of that user's
-- own tasks. Driven by bench/run.mjs; environment:
--   BENCH_DATA    Lua file returning { users = { {token=..., ids={...}}, ... } }
--                 (written by run.mjs; not needed for a health-only mix)
--   BENCH_MIX     weights, e.g. "list=60,get=15,create=10,toggle=10,update=5"
--                 kinds: list get create toggle update health
--   BENCH_LIMIT   page size of list requests (default 20)
--   BENCH_STATUS  "1": count responses by status code (costs wrk some CPU)
-- Prints one line "BENCH_JSON {...}" with the totals when done.

local mix_spec = os.getenv("BENCH_MIX") or "list=60,get=15,create=10,toggle=10,update=5"
local limit = os.getenv("BENCH_LIMIT") or "20"
local data_path = os.getenv("BENCH_DATA")

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_no", thread_count)
  table.insert(threads, thread)
end

local kinds, cumulative, total_weight = {}, {}, 0
for name, weight in string.gmatch(mix_spec, "(%a+)=(%d+)") do
  total_weight = total_weight + tonumber(weight)
  table.insert(kinds, name)
  table.insert(cumulative, total_weight)
end

-- Pre-built raw requests, per user (and per task), so request() only picks one.
local users
local prebuilt = {}
sent = {}

local create_body = '{"title":"Bench task","description":"Created by the todo-api benchmark"}'

function init(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
  for _, kind in ipairs(kinds) do sent[kind] = 0 end
  if data_path then
    users = dofile(data_path).users
  else
    users = {}
  end
  for _, kind in ipairs(kinds) do
    local p = {}
    if kind == "health" then
      p[1] = wrk.format("GET", "/health")
    else
      for u, user in ipairs(users) do
        local auth = { ["Authorization"] = "Bearer " .. user.token }
        if kind == "list" then
          p[u] = wrk.format("GET", "/api/tasks?limit=" .. limit, auth)
        elseif kind == "create" then
          local h = { ["Authorization"] = auth["Authorization"], ["Content-Type"] = "application/json" }
          p[u] = wrk.format("POST", "/api/tasks", h, create_body)
        else
          local per_task = {}
          for i, id in ipairs(user.ids) do
            if kind == "get" then
              per_task[i] = wrk.format("GET", "/api/tasks/" .. id, auth)
            elseif kind == "toggle" then
              per_task[i] = wrk.format("PATCH", "/api/tasks/" .. id .. "/complete", auth)
            elseif kind == "update" then
              local h = { ["Authorization"] = auth["Authorization"], ["Content-Type"] = "application/json" }
              per_task[i] = wrk.format("PUT", "/api/tasks/" .. id, h, '{"title":"Renamed task ' .. id .. '"}')
            else
              error("unknown request kind: " .. kind)
            end
          end
          p[u] = per_task
        end
      end
    end
    prebuilt[kind] = p
  end
end

function request()
  local r = math.random(total_weight)
  local k = 1
  while cumulative[k] < r do k = k + 1 end
  local kind = kinds[k]
  sent[kind] = sent[kind] + 1
  local p = prebuilt[kind]
  local one = p[math.random(#p)]
  if type(one) == "table" then one = one[math.random(#one)] end
  return one
end

if os.getenv("BENCH_STATUS") == "1" then
  statuses = {}
  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

local function json_table(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, string.format('"%s":%d', tostring(k), v)) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local by_kind, by_status = {}, {}
  for _, thread in ipairs(threads) do
    for kind, n in pairs(thread:get("sent") or {}) do by_kind[kind] = (by_kind[kind] or 0) + n end
    for status, n in pairs(thread:get("statuses") or {}) do by_status[status] = (by_status[status] or 0) + n end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},' ..
    '"sent_by_kind":%s,"by_status":%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    json_table(by_kind), json_table(by_status)))
end
