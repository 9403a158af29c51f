-- unblock.lua: a task's get()/wait() returned: take back the CPU block.lua
-- gave away, even if that over-commits the node for a while (as Ray does: the
-- task must not deadlock waiting for its own CPU). Idempotent.
--
-- KEYS[1]  running  HASH the node's reservation records
-- KEYS[2]  avail    HASH the node's free resources
--
-- ARGV[1]  task id
--
-- Returns the CPU units taken back.

local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
local _, _, who, res, blocked = string.find(record, '^(%S+) (%S+) (%d+)$')
if not res or tonumber(blocked) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'CPU', -tonumber(blocked))
redis.call('HSET', KEYS[1], ARGV[1], who .. ' ' .. res .. ' 0')
return tonumber(blocked)
