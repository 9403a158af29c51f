-- queue_take.lua: take exactly N items from a Queue, or none.
--
-- KEYS[1]  items  LIST the queue's items (oldest first)
--
-- ARGV[1]  N, how many items to take
--
-- Returns the N items, or nil when the queue holds fewer than N.

local n = tonumber(ARGV[1])
if redis.call('LLEN', KEYS[1]) < n then return nil end
return redis.call('LPOP', KEYS[1], n)
