-- cancel.lua: take a task that has not started out of the scheduler, or mark
-- a running one cancelled where recovery reads it (it is never retried).
--
-- KEYS[1]  task_state  HASH task id -> state
-- KEYS[2]  deps_left   HASH task id -> missing inputs
-- KEYS[3]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[4..] bell       LIST the bell of each shape in ARGV[2..]
--
-- ARGV[1]  task id
-- ARGV[2..] the shapes whose bells are passed
--
-- Returns 'removed' when the task was waiting or queued (the caller then
-- publishes TaskCancelledError as its result with complete.lua; its bell
-- keeps no more tokens than its queue has tasks), the task's running state
-- 'R<node> <worker>' when it already runs (now flagged ' c'), or 'gone' when
-- it is finished or unknown.

local state = redis.call('HGET', KEYS[1], ARGV[1])
if state == false then return 'gone' end
local kind = string.sub(state, 1, 1)
if kind == 'R' then
  if string.sub(state, -2) == ' c' then return string.sub(state, 1, -3) end
  redis.call('HSET', KEYS[1], ARGV[1], state .. ' c')
  return state
end
if kind == 'C' then return 'gone' end
if kind == 'Q' then
  local member = string.sub(state, 2)
  redis.call('ZREM', KEYS[3], member)
  local shape = string.match(member, '^([^|]*)|')
  for i = 2, #ARGV do
    if ARGV[i] == shape then
      local bell = KEYS[2 + i]
      local queued = redis.call('ZLEXCOUNT', KEYS[3], '[' .. shape .. '|', '[' .. shape .. '|\255')
      if redis.call('LLEN', bell) > queued then redis.call('LPOP', bell) end
    end
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], 'C')
return 'removed'
