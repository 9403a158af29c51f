-- submit.lua: register a batch of tasks; each becomes ready at once or waits for its inputs.
--
-- KEYS[1]  task_spec   HASH task id -> spec
-- KEYS[2]  task_state  HASH task id -> 'W<shape>' | 'Q<member>' | 'R<node> <worker>'
-- KEYS[3]  deps_left   HASH task id -> unfinished input count
-- KEYS[4]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[5]  seq         STRING ready-order counter
-- KEYS[6]  job_tasks   SET the job's unfinished task ids
-- KEYS[7]  job_keys    SET keys to delete when the job ends
-- KEYS[8 .. 7+2D]      for each distinct input object d: obj key, then waiters key
--
-- ARGV[1]  ready channel (pub/sub) told when a shape's queue stops being empty
-- ARGV[2]  D, number of distinct input objects
-- ARGV[3]  T, number of tasks
-- then per task: task id, shape, spec, k, then k indexes (1-based) into the D inputs
--
-- Returns the number of tasks that were ready immediately.

local D = tonumber(ARGV[2])
local T = tonumber(ARGV[3])
local exists = {}
for d = 1, D do
  exists[d] = redis.call('EXISTS', KEYS[6 + 2 * d]) == 1
end

local woken = {}
local function make_ready(tid, shape)
  local seq = redis.call('INCR', KEYS[5])
  local member = shape .. '|' .. string.format('%014d', seq) .. '|' .. tid
  local first = redis.call('ZRANGEBYLEX', KEYS[4], '[' .. shape .. '|', '[' .. shape .. '|\255', 'LIMIT', 0, 1)
  redis.call('ZADD', KEYS[4], 0, member)
  redis.call('HSET', KEYS[2], tid, 'Q' .. member)
  if first[1] == nil and not woken[shape] then
    woken[shape] = true
    redis.call('PUBLISH', ARGV[1], shape)
  end
end

local i = 4
local immediately = 0
for _ = 1, T do
  local tid, shape, spec, k = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  redis.call('HSET', KEYS[1], tid, spec)
  redis.call('SADD', KEYS[6], tid)
  local missing = 0
  for j = 1, k do
    local d = tonumber(ARGV[i + j - 1])
    if not exists[d] then
      missing = missing + 1
      local wkey = KEYS[7 + 2 * d]
      redis.call('SADD', wkey, tid)
      redis.call('SADD', KEYS[7], wkey)
    end
  end
  i = i + k
  if missing == 0 then
    make_ready(tid, shape)
    immediately = immediately + 1
  else
    redis.call('HSET', KEYS[3], tid, missing)
    redis.call('HSET', KEYS[2], tid, 'W' .. shape)
  end
end
return immediately
