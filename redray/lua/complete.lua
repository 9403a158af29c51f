-- complete.lua: publish a finished task's results (first write wins), release
-- its reservation (once: the amount is read from the reservation record),
-- make ready the tasks that were waiting for these objects, tell the owner
-- and any borrowers, and (ARGV[7]) claim the executor's next task in the same
-- step (claim_lib.lua, prepended to this script). Idempotent: running it again
-- for the same task stores nothing, releases nothing and sends no second
-- object notice, and the claim gives back the task the first run claimed.
--
-- KEYS[1]  task_spec   HASH task id -> spec
-- KEYS[2]  task_state  HASH task id -> state
-- KEYS[3]  deps_left   HASH task id -> ' <oid> <oid> ... ' missing inputs
-- KEYS[4]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[5]  seq         STRING ready-order counter
-- KEYS[6]  avail       HASH this node's free resources (may be absent: nothing to release)
-- KEYS[7]  gpus        HASH this node's free GPU units
-- KEYS[8]  running     HASH this node's reservation records
-- KEYS[9]  jobs        HASH live jobs
-- KEYS[10] job_tasks   SET the job's unfinished task ids
-- KEYS[11] job_keys    SET keys to delete when the job ends
-- KEYS[12] inbox       LIST the owner's completion notices
-- KEYS[13] retries     HASH task id -> times the task was re-queued
-- KEYS[14] claim       STRING the executor's claim record (cleared if it names this task)
-- KEYS[15] wake        LIST this node's wake tokens
-- KEYS[16] mailbox     STREAM the actor's mailbox, for an actor call (else unused)
-- KEYS[17] cancelled   SET the actor's cancelled calls, for an actor call (else unused)
-- KEYS[18] deadletters STREAM (the claim's: ready entries that name no queued task)
-- KEYS[19] submitted   STRING the owner's submission watermark: it exists while the
--                      owner does (no notice goes to the inbox of one that is gone)
-- KEYS[20 .. 19+B]     bell LIST of each shape named in ARGV (dependants made ready,
--                      and the shapes the next claim may take)
-- KEYS[20+B .. 19+B+3N]  per return value: obj key, waiters key, done key
-- KEYS[20+B+3N .. ]      per staged (large) return value: its staging key, in order
--
-- ARGV[1]  task id
-- ARGV[2]  job id
-- ARGV[3]  B, number of bells
-- ARGV[4]  N, number of return values
-- ARGV[5]  notice limit: inline values up to this size in the owner's notice;
--          -1 when there is no owner to tell (no notice is pushed)
-- ARGV[6]  'f' the task is finished, 'y' only these values are published (a
--          streaming generator's item, or a part of many return values): the
--          task keeps its reservation and records; 'F' and 'Y' the same
--          from an executor's run of a queued task, whose values are stored
--          only while the task is live (it has a task_state entry): a run
--          that was superseded (its node taken for dead, the task run again)
--          or a publish re-sent after a lost reply, arriving once the task
--          finished, would re-create values the owner may have freed since
-- ARGV[7]  '1': claim the executor's next task now, from the shapes of the
--          bells (the node's wake list is then not told about the freed
--          resources: the claim takes them)
-- ARGV[8]  the mailbox entry id of an actor call ('' for a task)
-- ARGV[9]  the mailbox's consumer group
-- ARGV[10] the node id (for the claim)
-- ARGV[11] the executor id (for the claim)
-- ARGV[12] the dead-letter stream cap (for the claim)
-- ARGV[13 .. 12+B]  the shapes of the bells, in order
-- then per return value: object id, mode ('i' inline | 's' staged), data ('' when staged)
--
-- Returns {stored, next task id, its spec, its reservation, the node's free
-- CPU after it, shape, ...}:
-- stored is 1 if the results were stored, 0 if the job is gone (results
-- dropped) or they already existed (a duplicate run; the first write won);
-- the next task's fields are '' when none was claimed (or none asked for);
-- then the shapes of dependants made ready whose bell was not passed (the
-- caller pushes their tokens).

local tid, jid = ARGV[1], ARGV[2]
local B = tonumber(ARGV[3])
local N = tonumber(ARGV[4])
local notice_limit = tonumber(ARGV[5])
local final = ARGV[6] ~= 'y' and ARGV[6] ~= 'Y'
-- (read before the final part below deletes the task's state)
local settled = (ARGV[6] == 'F' or ARGV[6] == 'Y') and redis.call('HEXISTS', KEYS[2], tid) == 0
local argv_base = 12 + B
local keys_base = 19 + B
local staged_base = keys_base + 3 * N

local claim_fresh = false
-- the claim record names this task: it is cleared (by finish) once done
local clear_claim = false

local function finish(stored, missed)
  local out = {stored, '', '', '', 0}
  local claimed = nil
  if final and ARGV[7] == '1' then
    local shapes, bells = {}, {}
    for b = 1, B do
      shapes[b] = ARGV[12 + b]
      bells[b] = KEYS[19 + b]
    end
    local k = {
      ready = KEYS[4], spec = KEYS[1], state = KEYS[2], avail = KEYS[6], gpus = KEYS[7],
      running = KEYS[8], deadletters = KEYS[18], claim = KEYS[14], bells = bells,
    }
    claimed = claim_next(k, ARGV[10], ARGV[11], ARGV[12], 0, shapes, claim_fresh)
    if claimed then out = {stored, claimed[1], claimed[2], claimed[3], claimed[4]} end
  end
  -- a claim of the next task overwrote the record: only clear it otherwise
  if clear_claim and not claimed then redis.call('DEL', KEYS[14]) end
  for _, shape in ipairs(missed) do out[#out + 1] = shape end
  return out
end

if final then
  local record = redis.call('HGET', KEYS[8], tid)
  if record then
    -- '<executor> <shape>;<gpu part> <CPU units given back while blocked>'
    local _, _, res, blocked = string.find(record, '^%S+ (%S+) (%d+)$')
    redis.call('HDEL', KEYS[8], tid)
    if res then
      local sep = string.find(res, ';', 1, true)
      local given = tonumber(blocked)
      for name, units in string.gmatch(string.sub(res, 1, sep - 1), '([^,=]+)=(%d+)') do
        local back = tonumber(units)
        if name == 'CPU' then back = back - given end
        if back ~= 0 then redis.call('HINCRBY', KEYS[6], name, back) end
      end
      for dev, units in string.gmatch(string.sub(res, sep + 1), '([^,=]+)=(%d+)') do
        redis.call('HINCRBY', KEYS[7], dev, tonumber(units))
      end
      if ARGV[7] ~= '1' then
        redis.call('RPUSH', KEYS[15], 'r')
        redis.call('LTRIM', KEYS[15], -16, -1)
      end
    end
  end
  local held_claim = redis.call('GET', KEYS[14])
  clear_claim = held_claim == tid
  -- no claim record but this task's: the next claim need not look for one (a
  -- record naming another task is the claim of an earlier run of this call)
  claim_fresh = clear_claim or held_claim == false
  redis.call('HDEL', KEYS[1], tid)
  redis.call('HDEL', KEYS[2], tid)
  redis.call('SREM', KEYS[10], tid)
  redis.call('HDEL', KEYS[13], tid)
  if ARGV[8] ~= '' then
    redis.call('XACK', KEYS[16], ARGV[9], ARGV[8])
    redis.call('XDEL', KEYS[16], ARGV[8])
    redis.call('SREM', KEYS[17], tid)
  end
end

if redis.call('HEXISTS', KEYS[9], jid) == 0 then
  -- the job ended while the task ran: nothing may outlive it
  local s = 0
  for r = 1, N do
    if ARGV[argv_base + 3 * r - 1] == 's' then
      s = s + 1
      redis.call('DEL', KEYS[staged_base + s])
    end
  end
  return finish(0, {})
end

local bells = {}
for b = 1, B do bells[ARGV[12 + b]] = KEYS[19 + b] end
local missed = {}
local function make_ready(t)
  local state = redis.call('HGET', KEYS[2], t)
  local waiting = state and string.sub(state, 1, 1)
  if waiting ~= 'W' and waiting ~= 'w' then return end
  local shape = string.sub(state, 2)
  local seq = redis.call('INCR', KEYS[5])
  -- a nested task ('w') keeps its place ahead of top-level ones (submit.lua)
  local priority = waiting == 'w' and '0' or '1'
  local member = shape .. '|' .. priority .. string.format('%013d', seq) .. '|' .. t
  redis.call('ZADD', KEYS[4], 0, member)
  redis.call('HSET', KEYS[2], t, 'Q' .. member)
  local bell = bells[shape]
  if bell then
    redis.call('RPUSH', bell, '1')
  else
    missed[#missed + 1] = shape
  end
end

-- a dependant's missing inputs are a set: removing this input twice is a no-op
local function arrived(t, oid)
  local missing = redis.call('HGET', KEYS[3], t)
  if not missing then return end
  local needle = ' ' .. oid .. ' '
  local at = string.find(missing, needle, 1, true)
  if not at then return end
  local left = string.sub(missing, 1, at) .. string.sub(missing, at + #needle)
  if left == ' ' then
    redis.call('HDEL', KEYS[3], t)
    make_ready(t)
  else
    redis.call('HSET', KEYS[3], t, left)
  end
end

local stored = 0
local staged = 0
local notices = {}
for r = 1, N do
  local oid, mode, data = ARGV[argv_base + 3 * r - 2], ARGV[argv_base + 3 * r - 1], ARGV[argv_base + 3 * r]
  local okey, wkey, dkey = KEYS[keys_base + 3 * r - 2], KEYS[keys_base + 3 * r - 1], KEYS[keys_base + 3 * r]
  local fresh = not settled and redis.call('EXISTS', okey) == 0
  if mode == 's' then
    staged = staged + 1
    if fresh then
      redis.call('RENAME', KEYS[staged_base + staged], okey)
    else
      redis.call('DEL', KEYS[staged_base + staged])
    end
  elseif fresh then
    redis.call('HSET', okey, 'd', data)
  end
  if fresh then
    stored = 1
    redis.call('SADD', KEYS[11], okey)
    local borrowers = 0
    local waiters = redis.call('SMEMBERS', wkey)
    for _, w in ipairs(waiters) do
      if string.sub(w, 1, 1) == '@' then
        borrowers = borrowers + 1
      else
        arrived(w, oid)
      end
    end
    -- (an empty set is no key: nothing to delete, and most objects have none)
    if #waiters > 0 then redis.call('DEL', wkey) end
    if borrowers > 0 then
      for _ = 1, borrowers do redis.call('RPUSH', dkey, '1') end
      redis.call('SADD', KEYS[11], dkey)
    end
    if mode == 'i' and #data <= notice_limit then
      notices[#notices + 1] = 'o' .. oid .. '\0' .. data
    else
      notices[#notices + 1] = 'o' .. oid .. '\0'
    end
  end
end
-- (a task-done notice may repeat when this runs twice: it only frees argument refs)
if N == 0 and final and not settled then notices[1] = 't' .. tid .. '\0' end
if #notices > 0 and notice_limit >= 0 and redis.call('EXISTS', KEYS[19]) == 1 then
  -- in chunks: unpack() of many thousands of values fails in Lua
  for at = 1, #notices, 1000 do
    redis.call('RPUSH', KEYS[12], unpack(notices, at, math.min(at + 999, #notices)))
  end
end
return finish(stored, missed)
