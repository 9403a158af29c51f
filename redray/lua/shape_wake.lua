-- shape_wake.lua: tell executors that a new resource shape was registered,
-- so that each re-reads the shapes hash and listens to the new shape's bell.
-- Every executor has a wake list of its own: a node-wide token would reach
-- one executor only, and one that already knew the shape would keep it.
--
-- KEYS[2i-1]  workers  SET  the live executors of the i-th executor's node
-- KEYS[2i]    wake     LIST the i-th executor's own wake tokens
--
-- ARGV[i]  the i-th executor's id
--
-- Returns the number of executors told. An executor its node no longer lists
-- is skipped: its keys are gone, and a push would create its list again.

local told = 0
for i = 1, #ARGV do
  if redis.call('SISMEMBER', KEYS[2 * i - 1], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2 * i], 's')
    -- one token is enough: the executor re-reads every shape at once
    redis.call('LTRIM', KEYS[2 * i], -1, -1)
    told = told + 1
  end
end
return told
