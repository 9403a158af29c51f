-- queue_put.lua: append items to a util.queue.Queue, all or none.
--
-- KEYS[1]  items  LIST the queue's items (oldest first)
-- KEYS[2]  free   LIST one token per free slot (bounded queues)
-- KEYS[3]  meta   STRING the queue's maxsize (0: unbounded); gone once shut down
--
-- ARGV[1]  'take': take one free slot per item, for every item or none;
--          'held': the caller already holds the items' slots (popped from free)
-- ARGV[2..] the items (signed), oldest first
--
-- Returns {1, size}: added, size the queue's length after; {0, size}: too
-- few free slots, nothing added; {-1}: the queue was shut down, nothing added.

local maxsize = queue_maxsize(KEYS[3])
if maxsize == nil then return {-1} end
local n = #ARGV - 1
if maxsize > 0 and ARGV[1] == 'take' and n > 0 then
  if redis.call('LLEN', KEYS[2]) < n then return {0, redis.call('LLEN', KEYS[1])} end
  redis.call('LPOP', KEYS[2], n)
end
queue_push('RPUSH', KEYS[1], ARGV, 2)
return {1, redis.call('LLEN', KEYS[1])}
