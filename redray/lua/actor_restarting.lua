-- actor_restarting.lua: an actor's process died and its creation task was
-- queued again: record that it restarts and how its last process ended,
-- unless it died for good or its record went with its job meanwhile (the
-- record must not come back).
--
-- KEYS[1]  actor  HASH the actor's record
--
-- ARGV[1]  how the last process ended
-- ARGV[2]  '1' if it was killed for using too much memory, else ''
--
-- Returns 1 when recorded, 0 when the actor is dead or its record is gone.

local state = redis.call('HGET', KEYS[1], 'state')
if state == false or state == 'DEAD' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'RESTARTING', 'node', '', 'worker', '',
  'exit', ARGV[1], 'exit_oom', ARGV[2])
return 1
