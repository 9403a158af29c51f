-- queue_get.lua: take exactly N items from a util.queue.Queue, or none,
-- and give their slots back in the same step (a get that dies after its
-- pop cannot shrink the queue).
--
-- KEYS[1]  items  LIST the queue's items (oldest first)
-- KEYS[2]  free   LIST one token per free slot (bounded queues)
-- KEYS[3]  meta   STRING the queue's maxsize (0: unbounded); gone once shut down
--
-- ARGV[1]  N, how many items to take (0: only check the queue exists)
--
-- Returns {1, item1, ..., itemN}: taken, oldest first; {0, size}: the
-- queue holds fewer than N, nothing taken; {-1}: the queue was shut down.

local maxsize = queue_maxsize(KEYS[3])
if maxsize == nil then return {-1} end
local n = tonumber(ARGV[1])
if n == 0 then return {1} end
local size = redis.call('LLEN', KEYS[1])
if size < n then return {0, size} end
local got = redis.call('LPOP', KEYS[1], n)
if maxsize > 0 then queue_give_slots(KEYS[1], KEYS[2], maxsize, n) end
table.insert(got, 1, 1)
return got
