-- requeue.lua: a running task lost its executor; release what it still
-- reserved and, while its retry budget lasts and cancel() did not reach it,
-- queue it again. Idempotent: it acts only while the reservation record exists.
--
-- KEYS[1]  task_state  HASH task id -> state
-- KEYS[2]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[3]  seq         STRING ready-order counter
-- KEYS[4]  avail       HASH the node's free resources
-- KEYS[5]  gpus        HASH the node's free GPU units
-- KEYS[6]  running     HASH the node's reservation records
-- KEYS[7]  retries     HASH task id -> times re-queued
-- KEYS[8]  claim       STRING the dead executor's claim record (cleared if it names the task)
-- KEYS[9]  wake        LIST the node's wake tokens
-- KEYS[10] bell        LIST the bell of the shape it is queued under
--
-- ARGV[1]  task id
-- ARGV[2]  max retries (-1: unlimited)
-- ARGV[3]  the shape to queue it under (the reservation's shape, or the
--          shape an actor needs to be placed again: it gave back part of its
--          placement, so its own record keeps that shape)
--
-- Returns 1 when re-queued, 0 when it is not (budget spent, or cancelled: the
-- caller publishes the failure with complete.lua), -1 when the task was not
-- running on this node.

local tid = ARGV[1]
local record = redis.call('HGET', KEYS[6], tid)
if record == false then return -1 end
redis.call('HDEL', KEYS[6], tid)
local _, _, res, blocked = string.find(record, '^%S+ (%S+) (%d+)$')
if res then
  local sep = string.find(res, ';', 1, true)
  for name, units in string.gmatch(string.sub(res, 1, sep - 1), '([^,=]+)=(%d+)') do
    local back = tonumber(units)
    if name == 'CPU' then back = back - tonumber(blocked) end
    if back ~= 0 then redis.call('HINCRBY', KEYS[4], name, back) end
  end
  for dev, units in string.gmatch(string.sub(res, sep + 1), '([^,=]+)=(%d+)') do
    redis.call('HINCRBY', KEYS[5], dev, tonumber(units))
  end
  redis.call('RPUSH', KEYS[9], 'r')
  redis.call('LTRIM', KEYS[9], -16, -1)
end
if redis.call('GET', KEYS[8]) == tid then redis.call('DEL', KEYS[8]) end
local state = redis.call('HGET', KEYS[1], tid) or ''
if string.sub(state, 1, 1) == 'R' and string.sub(state, -2) == ' c' then return 0 end
local max = tonumber(ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[7], tid, 1)
if max >= 0 and attempts > max then return 0 end
local shape = ARGV[3]
local seq = redis.call('INCR', KEYS[3])
-- behind everything queued (priority 1, submit.lua), nested or not: a task
-- that keeps killing its executor must not hold up the rest
local member = shape .. '|1' .. string.format('%013d', seq) .. '|' .. tid
redis.call('ZADD', KEYS[2], 0, member)
redis.call('HSET', KEYS[1], tid, 'Q' .. member)
redis.call('RPUSH', KEYS[10], '1')
return 1
