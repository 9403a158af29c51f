-- heartbeat.lua: a node or a driver says it is alive, timed by the Redis
-- server's clock (machines' clocks may differ).
--
-- KEYS[1]  registry  HASH nodes (node id -> info) or jobs (job id -> info)
-- KEYS[2]  beats     ZSET id -> last beat, server milliseconds
--
-- ARGV[1]  the node or job id
--
-- Returns 1, or 0 when the id is no longer registered (the node was declared
-- dead, the job was reaped): the caller must not carry on as if it were.

if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1
