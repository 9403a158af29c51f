-- shape.lua: register a resource shape; when it is new, wake one idle
-- executor on every node so that executors learn to listen to its bell.
--
-- KEYS[1]  shapes  HASH every shape ever submitted
-- KEYS[2..] wake   LIST the wake tokens of each live node
--
-- ARGV[1]  the shape
--
-- Returns 1 when the shape was new.

if redis.call('HSETNX', KEYS[1], ARGV[1], 1) == 0 then return 0 end
for i = 2, #KEYS do
  redis.call('RPUSH', KEYS[i], 's')
  redis.call('LTRIM', KEYS[i], -16, -1)
end
return 1
