-- job_cleanup.lua: take up to a batch of a reaped job's unfinished tasks out
-- of the scheduler, under the reaper's fenced lock.
--
-- KEYS[1]  lock        STRING the reaper's lock
-- KEYS[2]  job_tasks   SET the job's unfinished task ids
-- KEYS[3]  task_spec   HASH task id -> spec
-- KEYS[4]  task_state  HASH task id -> state
-- KEYS[5]  deps_left   HASH task id -> missing inputs
-- KEYS[6]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[7]  retries     HASH task id -> times re-queued
-- KEYS[8..] bell       LIST the bell of each shape in ARGV[3..]
--
-- ARGV[1]  the reaper's lock token
-- ARGV[2]  batch size
-- ARGV[3..] the shapes whose bells are passed (every registered shape)
--
-- Returns the number of tasks taken from the job's set (0: none left), or -1
-- when the caller no longer holds the lock (it must stop). A running task is
-- left to finish: complete.lua drops the results of a job that is gone. Each
-- bell is trimmed to no more tokens than its queue has tasks.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local tids = redis.call('SPOP', KEYS[2], tonumber(ARGV[2]))
for _, tid in ipairs(tids) do
  local state = redis.call('HGET', KEYS[4], tid)
  if state and string.sub(state, 1, 1) ~= 'R' then
    if string.sub(state, 1, 1) == 'Q' then redis.call('ZREM', KEYS[6], string.sub(state, 2)) end
    redis.call('HDEL', KEYS[5], tid)
    redis.call('HDEL', KEYS[3], tid)
    redis.call('HDEL', KEYS[4], tid)
    redis.call('HDEL', KEYS[7], tid)
  end
end
for i = 3, #ARGV do
  local shape, bell = ARGV[i], KEYS[5 + i]
  local queued = redis.call('ZLEXCOUNT', KEYS[6], '[' .. shape .. '|', '[' .. shape .. '|\255')
  if queued == 0 then
    redis.call('DEL', bell)
  elseif redis.call('LLEN', bell) > queued then
    redis.call('LTRIM', bell, 0, queued - 1)
  end
end
return #tids
