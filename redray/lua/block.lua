-- block.lua: a task blocks in get()/wait(): give its CPU back to its node
-- (so the node can run other tasks meanwhile), recording how much in the
-- reservation record, which every release path reads. Idempotent.
--
-- KEYS[1]  running  HASH the node's reservation records
-- KEYS[2]  avail    HASH the node's free resources
-- KEYS[3]  wake     LIST the node's wake tokens
--
-- ARGV[1]  task id
--
-- Returns the CPU units given back (0: none, or already given back).

local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
local _, _, who, res, blocked = string.find(record, '^(%S+) (%S+) (%d+)$')
if not res or tonumber(blocked) > 0 then return 0 end
local cpu = 0
for name, units in string.gmatch(string.sub(res, 1, string.find(res, ';', 1, true) - 1), '([^,=]+)=(%d+)') do
  if name == 'CPU' then cpu = tonumber(units) end
end
if cpu == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'CPU', cpu)
redis.call('HSET', KEYS[1], ARGV[1], who .. ' ' .. res .. ' ' .. cpu)
redis.call('RPUSH', KEYS[3], 'r')
redis.call('LTRIM', KEYS[3], -16, -1)
return cpu
