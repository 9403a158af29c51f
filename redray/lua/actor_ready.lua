-- actor_ready.lua: an actor finished __init__: record where it lives and give
-- back the CPU it only needed to be placed (Ray's default: 1 CPU to schedule,
-- 0 to run).
--
-- KEYS[1]  actor    HASH the actor's record
-- KEYS[2]  avail    HASH its node's free resources
-- KEYS[3]  running  HASH its node's reservation records (the creation task's)
-- KEYS[4]  wake     LIST its node's wake tokens (told when the CPU is given back)
--
-- ARGV[1]  creation task id
-- ARGV[2]  CPU units to give back (0 when the actor holds what it asked for)
-- ARGV[3]  the reservation record the actor keeps while alive
-- ARGV[4..] field, value pairs to set on the record (node, worker, pid, ...)
--
-- Returns 1, or 0 when the actor was killed meanwhile, or its record went with
-- its job (it must exit).

local state = redis.call('HGET', KEYS[1], 'state')
if state == false or state == 'DEAD' then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'state', 'ALIVE', unpack(fields))
local units = tonumber(ARGV[2])
if units > 0 and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 and redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[3] then
  redis.call('HINCRBY', KEYS[2], 'CPU', units)
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
  redis.call('RPUSH', KEYS[4], 'r')
  redis.call('LTRIM', KEYS[4], -16, -1)
end
return 1
