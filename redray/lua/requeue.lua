-- requeue.lua: a running task lost its executor; release what it reserved and,
-- while its retry budget lasts, queue it again.
--
-- KEYS[1]  task_state  HASH task id -> state
-- KEYS[2]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[3]  seq         STRING ready-order counter
-- KEYS[4]  avail       HASH the node's free resources
-- KEYS[5]  gpus        HASH the node's free GPU units
-- KEYS[6]  running     HASH the node's running tasks
-- KEYS[7]  retries     HASH task id -> times re-queued
--
-- ARGV[1]  task id
-- ARGV[2]  max retries (-1: unlimited)
-- ARGV[3]  ready channel
-- ARGV[4]  the shape to queue it under, or '' for the reservation's shape
--          (an actor gives back part of its placement, so its own record
--          keeps the shape it needs to be placed again)
--
-- Returns 1 when re-queued, 0 when the budget is spent (the caller publishes
-- the failure with complete.lua and an empty reservation), -1 when the task
-- was not running on this node.

local tid = ARGV[1]
local reservation = redis.call('HGET', KEYS[6], tid)
if reservation == false then return -1 end
redis.call('HDEL', KEYS[6], tid)
local sep = string.find(reservation, ';', 1, true)
local shape = string.sub(reservation, 1, sep - 1)
for name, units in string.gmatch(shape, '([^,=]+)=(%d+)') do
  redis.call('HINCRBY', KEYS[4], name, tonumber(units))
end
for dev, units in string.gmatch(string.sub(reservation, sep + 1), '([^,=]+)=(%d+)') do
  redis.call('HINCRBY', KEYS[5], dev, tonumber(units))
end
local max = tonumber(ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[7], tid, 1)
if max >= 0 and attempts > max then return 0 end
if ARGV[4] ~= nil and ARGV[4] ~= '' then shape = ARGV[4] end
local seq = redis.call('INCR', KEYS[3])
local member = shape .. '|' .. string.format('%014d', seq) .. '|' .. tid
redis.call('ZADD', KEYS[2], 0, member)
redis.call('HSET', KEYS[1], tid, 'Q' .. member)
redis.call('PUBLISH', ARGV[3], shape)
return 1
