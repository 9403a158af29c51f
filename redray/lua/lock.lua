-- lock.lua: a fenced lock: only the holder of the token may renew or release
-- it, and work done under it checks the token first (job_cleanup.lua).
--
-- KEYS[1]  lock  STRING the token of the holder
--
-- ARGV[1]  'take', 'renew' or 'release'
-- ARGV[2]  the caller's token
-- ARGV[3]  time to live in milliseconds (take, renew)
--
-- Returns 1 when the caller holds the lock afterwards (take, renew) or
-- released it (release), else 0.

local op, token = ARGV[1], ARGV[2]
if op == 'take' then
  if redis.call('SET', KEYS[1], token, 'NX', 'PX', tonumber(ARGV[3])) then return 1 end
  return redis.call('GET', KEYS[1]) == token and 1 or 0
end
if redis.call('GET', KEYS[1]) ~= token then return 0 end
if op == 'renew' then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
else
  redis.call('DEL', KEYS[1])
end
return 1
