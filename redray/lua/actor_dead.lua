-- actor_dead.lua: mark an actor dead for good; later calls fail at once with
-- its death record (see actor_call.lua). Idempotent.
--
-- KEYS[1]  actor        HASH the actor's record
-- KEYS[2]  actor_names  HASH '<namespace>:<name>' -> actor id
-- KEYS[3]  job_actors   SET the owner job's actors (may not exist)
-- KEYS[4]  actors       SET every live actor id
-- KEYS[5]  task_state   HASH task id -> state (where the creation task runs)
--
-- ARGV[1]  actor id
-- ARGV[2]  death record (object record of the ActorDiedError)
-- ARGV[3]  name key, or ''
--
-- Returns {previous state ('' when the record is gone), node id or '',
-- worker id or ''}: where the actor's process lives, or, while its __init__
-- still runs, where its creation task was claimed; '' and '' when it has no
-- process yet.

local state = redis.call('HGET', KEYS[1], 'state') or ''
-- a record deleted with its job is not brought back
if state ~= 'DEAD' and state ~= '' then
  redis.call('HSET', KEYS[1], 'state', 'DEAD', 'death', ARGV[2])
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
local node = redis.call('HGET', KEYS[1], 'node') or ''
local worker = redis.call('HGET', KEYS[1], 'worker') or ''
if node == '' then
  local task = redis.call('HGET', KEYS[1], 'task')
  local running = task and redis.call('HGET', KEYS[5], task)
  if running and string.sub(running, 1, 1) == 'R' then
    local _, _, n, w = string.find(running, '^R(%S+) (%S+)')
    if n then node, worker = n, w end
  end
end
return {state, node, worker}
