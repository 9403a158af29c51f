-- expired.lua: which members of a heartbeat ZSET are older than an age, by
-- the Redis server's clock.
--
-- KEYS[1]  beats  ZSET id -> last beat, server milliseconds
--
-- ARGV[1]  age in milliseconds
-- ARGV[2]  at most this many members
--
-- Returns {server now in ms, id, last beat, id, last beat, ...}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])),
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for _, v in ipairs(old) do out[#out + 1] = v end
return out
