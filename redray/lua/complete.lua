-- complete.lua: publish a finished task's results (first write wins), release
-- its reservation, make ready the tasks that were waiting for these objects,
-- and tell the owner and any borrowers.
--
-- KEYS[1]  task_spec   HASH task id -> spec
-- KEYS[2]  task_state  HASH task id -> state
-- KEYS[3]  deps_left   HASH task id -> unfinished input count
-- KEYS[4]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[5]  seq         STRING ready-order counter
-- KEYS[6]  avail       HASH this node's free resources (may be absent: nothing to release)
-- KEYS[7]  gpus        HASH this node's free GPU units
-- KEYS[8]  running     HASH this node's running tasks
-- KEYS[9]  jobs        HASH live jobs
-- KEYS[10] job_tasks   SET the job's unfinished task ids
-- KEYS[11] job_keys    SET keys to delete when the job ends
-- KEYS[12] inbox       LIST the owner's completion notices
-- KEYS[13] retries     HASH task id -> times the task was re-queued
-- KEYS[14] cancelled   SET ids of running tasks cancel() reached
-- KEYS[15 .. 14+3N]    per return value: obj key, waiters key, done key
-- KEYS[15+3N .. ]      per staged (large) return value: its staging key, in order
--
-- ARGV[1]  task id
-- ARGV[2]  job id
-- ARGV[3]  reservation to release ('' for none)
-- ARGV[4]  ready channel
-- ARGV[5]  N, number of return values
-- ARGV[6]  notice limit: inline values up to this size in the owner's notice;
--          -1 when there is no owner to tell (no notice is pushed)
-- ARGV[7]  'f' the task is finished, 'y' a streaming generator yielded (publish
--          the values only: the task keeps its reservation and records)
-- then per return value: object id, mode ('i' inline | 's' staged), data ('' when staged)
--
-- Returns 1 if the results were stored, 0 if the job is gone (results dropped)
-- or the results already existed (a duplicate run; the first write won).

local tid, jid, reservation = ARGV[1], ARGV[2], ARGV[3]
local N = tonumber(ARGV[5])
local notice_limit = tonumber(ARGV[6])

local final = ARGV[7] ~= 'y'

-- release the reservation
if final and reservation ~= '' then
  local sep = string.find(reservation, ';', 1, true)
  local shape = string.sub(reservation, 1, sep - 1)
  local gpu_part = string.sub(reservation, sep + 1)
  if redis.call('HDEL', KEYS[8], tid) == 1 then
    for name, units in string.gmatch(shape, '([^,=]+)=(%d+)') do
      redis.call('HINCRBY', KEYS[6], name, tonumber(units))
    end
    for dev, units in string.gmatch(gpu_part, '([^,=]+)=(%d+)') do
      redis.call('HINCRBY', KEYS[7], dev, tonumber(units))
    end
  end
end

if final then
  redis.call('HDEL', KEYS[1], tid)
  redis.call('HDEL', KEYS[2], tid)
  redis.call('SREM', KEYS[10], tid)
  redis.call('HDEL', KEYS[13], tid)
  redis.call('SREM', KEYS[14], tid)
end

local staged_base = 14 + 3 * N
if redis.call('HEXISTS', KEYS[9], jid) == 0 then
  -- the job ended while the task ran: nothing may outlive it
  local s = 0
  for r = 1, N do
    if ARGV[7 + 3 * r - 1] == 's' then
      s = s + 1
      redis.call('DEL', KEYS[staged_base + s])
    end
  end
  return 0
end

local woken = {}
local function make_ready(t)
  local state = redis.call('HGET', KEYS[2], t)
  if state == false or string.sub(state, 1, 1) ~= 'W' then return end
  local shape = string.sub(state, 2)
  local seq = redis.call('INCR', KEYS[5])
  local member = shape .. '|' .. string.format('%014d', seq) .. '|' .. t
  local first = redis.call('ZRANGEBYLEX', KEYS[4], '[' .. shape .. '|', '[' .. shape .. '|\255', 'LIMIT', 0, 1)
  redis.call('ZADD', KEYS[4], 0, member)
  redis.call('HSET', KEYS[2], t, 'Q' .. member)
  if first[1] == nil and not woken[shape] then
    woken[shape] = true
    redis.call('PUBLISH', ARGV[4], shape)
  end
end

local stored = 0
local staged = 0
local notices = {}
for r = 1, N do
  local oid, mode, data = ARGV[7 + 3 * r - 2], ARGV[7 + 3 * r - 1], ARGV[7 + 3 * r]
  local okey, wkey, dkey = KEYS[14 + 3 * r - 2], KEYS[14 + 3 * r - 1], KEYS[14 + 3 * r]
  local fresh = redis.call('EXISTS', okey) == 0
  if mode == 's' then
    staged = staged + 1
    if fresh then
      redis.call('RENAME', KEYS[staged_base + staged], okey)
    else
      redis.call('DEL', KEYS[staged_base + staged])
    end
  elseif fresh then
    redis.call('HSET', okey, 'd', data)
  end
  if fresh then
    stored = 1
    redis.call('SADD', KEYS[11], okey)
    local borrowers = 0
    for _, w in ipairs(redis.call('SMEMBERS', wkey)) do
      if string.sub(w, 1, 1) == '@' then
        borrowers = borrowers + 1
      else
        local left = redis.call('HINCRBY', KEYS[3], w, -1)
        if left <= 0 then
          redis.call('HDEL', KEYS[3], w)
          make_ready(w)
        end
      end
    end
    redis.call('DEL', wkey)
    if borrowers > 0 then
      for _ = 1, borrowers do redis.call('RPUSH', dkey, '1') end
      redis.call('SADD', KEYS[11], dkey)
    end
    if mode == 'i' and #data <= notice_limit then
      notices[#notices + 1] = 'o' .. oid .. '\0' .. data
    else
      notices[#notices + 1] = 'o' .. oid .. '\0'
    end
  end
end
if N == 0 and final then notices[1] = 't' .. tid .. '\0' end
if #notices > 0 and notice_limit >= 0 then
  redis.call('RPUSH', KEYS[12], unpack(notices))
end
return stored
