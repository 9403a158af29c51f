-- actor_call.lua: append method calls to actor mailboxes, in order, unless
-- the actor is dead.
--
-- KEYS[2i-1]  actor    HASH the called actor's record
-- KEYS[2i]    mailbox  STREAM its calls
--
-- ARGV[i]  the serialized call spec of call i
--
-- Returns, per call, 1 when queued, or the actor's death record (the object
-- record of its ActorDiedError) when it is dead ('' when its record is gone
-- too); the caller then publishes that record as the call's result.

local out = {}
for i = 1, #ARGV do
  local actor, mailbox = KEYS[2 * i - 1], KEYS[2 * i]
  local state = redis.call('HGET', actor, 'state')
  if state == false or state == 'DEAD' then
    out[i] = redis.call('HGET', actor, 'death') or ''
  else
    redis.call('XADD', mailbox, '*', 's', ARGV[i])
    out[i] = 1
  end
end
return out
