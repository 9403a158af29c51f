-- cancel.lua: take a task that has not started out of the scheduler.
--
-- KEYS[1]  task_state  HASH task id -> state
-- KEYS[2]  deps_left   HASH task id -> unfinished input count
-- KEYS[3]  ready       ZSET '<shape>|<seq>|<task id>'
--
-- ARGV[1]  task id
--
-- Returns 'removed' when the task was waiting or queued (the caller then
-- publishes TaskCancelledError as its result with complete.lua), the task's
-- running state 'R<node> <worker>' when it already runs, or 'gone' when it
-- is finished or unknown.

local state = redis.call('HGET', KEYS[1], ARGV[1])
if state == false then return 'gone' end
local kind = string.sub(state, 1, 1)
if kind == 'R' then return state end
if kind == 'C' then return 'gone' end
if kind == 'Q' then redis.call('ZREM', KEYS[3], string.sub(state, 2)) end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], 'C')
return 'removed'
