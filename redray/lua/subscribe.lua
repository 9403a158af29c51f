-- subscribe.lua: for objects this process does not own, report which are ready
-- and subscribe to the rest, atomically, so no completion can slip between.
--
-- KEYS[2i-1]  obj key of object i
-- KEYS[2i]    waiters key of object i
--
-- ARGV[1]  subscriber member, '@<worker id>'
-- ARGV[2]  '1' to subscribe to the objects that are not ready, '0' to only look
--
-- Returns a list with 1 (ready) or 0 (not ready) per object. The producer's
-- complete.lua pushes one token to the object's done list per subscriber.

local out = {}
for i = 1, #KEYS / 2 do
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 1 then
    out[i] = 1
  else
    out[i] = 0
    if ARGV[2] == '1' then redis.call('SADD', KEYS[2 * i], ARGV[1]) end
  end
end
return out
