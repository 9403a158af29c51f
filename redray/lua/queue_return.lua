-- queue_return.lua: give a util.queue.Queue back what a caller holds: the
-- slot of an item it popped with BLPOP or of a put it gave up, or items it
-- took but may not keep (a batch with a forged item, a get_async whose
-- caller was cancelled), which go back to the front.
--
-- KEYS[1]  items  LIST the queue's items (oldest first)
-- KEYS[2]  free   LIST one token per free slot (bounded queues)
-- KEYS[3]  meta   STRING the queue's maxsize (0: unbounded); gone once shut down
--
-- ARGV[1]  how many slots to give back
-- ARGV[2..] items to put back at the front, oldest first; they were taken
--          with queue_get.lua (their slots given back), so each takes a
--          free slot back while there is one
--
-- Returns 1, or -1 when the queue was shut down (nothing written).

local maxsize = queue_maxsize(KEYS[3])
if maxsize == nil then return -1 end
if maxsize > 0 then queue_give_slots(KEYS[1], KEYS[2], maxsize, tonumber(ARGV[1])) end
local n = #ARGV - 1
if n > 0 then
  -- LPUSH puts each value at the head in turn: push the newest first
  local back = {}
  for i = #ARGV, 2, -1 do back[#back + 1] = ARGV[i] end
  queue_push('LPUSH', KEYS[1], back, 1)
  if maxsize > 0 then redis.call('LPOP', KEYS[2], n) end
end
return 1
