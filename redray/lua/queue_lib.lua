-- queue_lib.lua: helpers of the util.queue scripts (queue_put, queue_get,
-- queue_return), prepended to each when it is loaded.
--
-- A Queue is three keys: its items (LIST, oldest first), its free slots
-- (LIST of tokens, bounded queues only) and its meta (STRING, the maxsize,
-- 0 when unbounded). The meta is the queue's existence: it goes with
-- Queue.shutdown or the job's end, and no script writes a key of a queue
-- whose meta is gone (that would bring back a key nobody deletes).

-- The queue's maxsize, or nil when it was shut down.
local function queue_maxsize(meta)
  return tonumber(redis.call('GET', meta))
end

-- RPUSH or LPUSH list[from..#list] onto key, in chunks: unpack() of many
-- thousands of values fails in Lua.
local function queue_push(cmd, key, list, from)
  for at = from, #list, 1000 do
    redis.call(cmd, key, unpack(list, at, math.min(at + 999, #list)))
  end
end

-- Give n slots back to a bounded queue, but never so many that items plus
-- free slots exceed maxsize: a put-back that found its slots taken by
-- producers (queue_return.lua) heals here instead of growing the queue for
-- good. Slots held by blocked putters are in neither list, so they are
-- never counted against a get.
local function queue_give_slots(items, free, maxsize, n)
  n = math.min(n, maxsize - redis.call('LLEN', items) - redis.call('LLEN', free))
  local tokens = {}
  for i = 1, math.min(n, 1000) do tokens[i] = '1' end
  while n > 0 do
    local k = math.min(n, 1000)
    redis.call('RPUSH', free, unpack(tokens, 1, k))
    n = n - k
  end
end
