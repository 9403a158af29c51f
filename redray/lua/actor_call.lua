-- actor_call.lua: append method calls to actor mailboxes, in order, unless
-- the actor is dead. Idempotent: calls numbered at or below the caller's
-- submission watermark were delivered by an earlier send and are dropped, so
-- a method never runs twice because a reply was lost.
--
-- KEYS[1]     submitted  STRING the caller's submission watermark
-- KEYS[2i]    actor      HASH the actor of call i
-- KEYS[2i+1]  mailbox    STREAM its calls
--
-- ARGV[2i-1]  the submission number of call i
-- ARGV[2i]    the serialized call spec of call i
--
-- Returns, per call, 1 when queued, 0 when it was delivered before, or the
-- actor's death record (the object record of its ActorDiedError) when it is
-- dead ('' when its record is gone too); the caller then publishes that
-- record as the call's result.

local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local highest = last
local out = {}
for i = 1, #ARGV / 2 do
  local n = tonumber(ARGV[2 * i - 1])
  if n <= last then
    out[i] = 0
  else
    if n > highest then highest = n end
    local actor, mailbox = KEYS[2 * i], KEYS[2 * i + 1]
    local state = redis.call('HGET', actor, 'state')
    if state == false or state == 'DEAD' then
      out[i] = redis.call('HGET', actor, 'death') or ''
    else
      redis.call('XADD', mailbox, '*', 's', ARGV[2 * i])
      out[i] = 1
    end
  end
end
if highest > last then redis.call('SET', KEYS[1], highest) end
return out
