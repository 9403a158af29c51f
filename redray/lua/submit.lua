-- submit.lua: register a batch of tasks; each becomes ready at once or waits
-- for its inputs. Idempotent: tasks numbered at or below the owner's
-- submission watermark were applied by an earlier send and are skipped, so a
-- batch whose reply was lost can be sent again as it was.
--
-- KEYS[1]  task_spec   HASH task id -> spec
-- KEYS[2]  task_state  HASH task id -> 'W<shape>' | 'w<shape>' (nested) | 'Q<member>' | 'R<node> <worker>'
-- KEYS[3]  deps_left   HASH task id -> ' <oid> <oid> ... ', its missing inputs
-- KEYS[4]  ready       ZSET '<shape>|<priority digit><13-digit seq>|<task id>'
-- KEYS[5]  seq         STRING ready-order counter
-- KEYS[6]  job_tasks   SET the job's unfinished task ids
-- KEYS[7]  job_keys    SET keys to delete when the job ends
-- KEYS[8]  submitted   STRING the owner's submission watermark
-- KEYS[9 .. 8+S]       bell LIST of each distinct shape s (one token per ready task)
-- KEYS[9+S .. 8+S+2D]  for each distinct input object d: obj key, then waiters key
--
-- ARGV[1]  S, number of distinct shapes
-- ARGV[2]  D, number of distinct input objects
-- ARGV[3]  T, number of tasks
-- ARGV[4]  '1' when a running task or actor submits them (nested), else '0'
-- ARGV[5 .. 4+S]  the S shapes, in bell order
-- then per task: submission number, task id, shape index (1-based), spec,
-- k, then k indexes (1-based) into the D inputs, then k input object ids
--
-- Returns the number of tasks that were ready immediately.

local S = tonumber(ARGV[1])
local D = tonumber(ARGV[2])
local T = tonumber(ARGV[3])
-- nested tasks queue ahead of top-level ones (priority digit 0, else 1):
-- the running task that submitted them is usually waiting for them, so a
-- backlog of top-level tasks must not hold them up (Ray's fair queueing
-- test: 1000 f() -> g() -> h() on one CPU)
local nested = ARGV[4] == '1'
local priority = nested and '0' or '1'
local obj_base = 8 + S
local exists = {}
for d = 1, D do
  exists[d] = redis.call('EXISTS', KEYS[obj_base + 2 * d - 1]) == 1
end

local last = tonumber(redis.call('GET', KEYS[8]) or '0')
local highest = last

local function make_ready(tid, shape, bell)
  local seq = redis.call('INCR', KEYS[5])
  local member = shape .. '|' .. priority .. string.format('%013d', seq) .. '|' .. tid
  redis.call('ZADD', KEYS[4], 0, member)
  redis.call('HSET', KEYS[2], tid, 'Q' .. member)
  redis.call('RPUSH', bell, '1')
end

local i = 5 + S
local immediately = 0
for _ = 1, T do
  local n, tid, s, spec, k = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  i = i + 5
  if n > last then
    if n > highest then highest = n end
    local shape = ARGV[4 + s]
    redis.call('HSET', KEYS[1], tid, spec)
    redis.call('SADD', KEYS[6], tid)
    local missing = {}
    for j = 1, k do
      local d = tonumber(ARGV[i + j - 1])
      if not exists[d] then
        local wkey = KEYS[obj_base + 2 * d]
        redis.call('SADD', wkey, tid)
        redis.call('SADD', KEYS[7], wkey)
        missing[#missing + 1] = ARGV[i + k + j - 1]
      end
    end
    if #missing == 0 then
      make_ready(tid, shape, KEYS[8 + s])
      immediately = immediately + 1
    else
      redis.call('HSET', KEYS[3], tid, ' ' .. table.concat(missing, ' ') .. ' ')
      redis.call('HSET', KEYS[2], tid, (nested and 'w' or 'W') .. shape)
    end
  end
  i = i + 2 * k
end
if highest > last then redis.call('SET', KEYS[8], highest) end
return immediately
