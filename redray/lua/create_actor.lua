-- create_actor.lua: register a new actor (and its name, if any) atomically.
--
-- KEYS[1]  actor_names  HASH '<namespace>:<name>' -> actor id
-- KEYS[2]  actor        HASH the new actor's record
-- KEYS[3]  mailbox      STREAM the new actor's calls
-- KEYS[4]  job_actors   SET the owner job's non-detached actors
-- KEYS[5]  job_keys     SET keys deleted when the job ends
-- KEYS[6]  actors       SET every live actor id
--
-- ARGV[1]  name key '<namespace>:<name>', or '' for an unnamed actor
-- ARGV[2]  actor id
-- ARGV[3]  '1' if the actor is detached (not listed under the job)
-- ARGV[4]  mailbox consumer group name
-- ARGV[5..] field, value pairs of the actor record
--
-- Returns {'created', actor id} or {'exists', existing actor id} when the
-- name is taken (names are unique per namespace; a dead actor's name is freed).
-- Idempotent: registering the same actor id again changes nothing and
-- answers 'created' (the reply of the first call was lost).

if redis.call('EXISTS', KEYS[2]) == 1 then return {'created', ARGV[2]} end
if ARGV[1] ~= '' then
  local existing = redis.call('HGET', KEYS[1], ARGV[1])
  if existing then return {'exists', existing} end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], 'state', 'PENDING', unpack(fields))
redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[4], '$', 'MKSTREAM')
redis.call('SADD', KEYS[6], ARGV[2])
if ARGV[3] ~= '1' then
  -- a non-detached actor's record lives as long as its job
  redis.call('SADD', KEYS[4], ARGV[2])
  redis.call('SADD', KEYS[5], KEYS[2], KEYS[3])
end
return {'created', ARGV[2]}
