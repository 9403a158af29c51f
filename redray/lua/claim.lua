-- claim.lua: an executor takes the oldest ready task that fits its node's free
-- resources and reserves those resources, in one atomic step.
--
-- KEYS[1]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[2]  task_spec   HASH task id -> spec
-- KEYS[3]  task_state  HASH task id -> state
-- KEYS[4]  avail       HASH resource -> free units on this node
-- KEYS[5]  gpus        HASH GPU id -> free units of that device
-- KEYS[6]  running     HASH task id -> reservation, this node's running tasks
-- KEYS[7]  deadletters STREAM where ready entries that name no queued task go
--
-- ARGV[1]  node id
-- ARGV[2]  worker (executor) id
-- ARGV[3]  dead-letter stream cap (XADD MAXLEN ~)
-- ARGV[4..] shapes this node can ever satisfy, e.g. 'CPU=10000,GPU=5000'
--
-- Returns nil when nothing fits, else {task id, spec, reservation} where the
-- reservation is '<shape>;<gpu id>=<units>,...' (the part after ';' may be empty).
-- A ready entry is only taken if its task's state points back at it ('Q' ..
-- entry); any other entry (foreign, malformed, stale) is removed and kept as a
-- dead letter, so garbage can neither reserve slots nor block its queue.

local function parse(shape)
  local need = {}
  for name, units in string.gmatch(shape, '([^,=]+)=(%d+)') do
    need[#need + 1] = {name, tonumber(units)}
  end
  return need
end

local function pick_gpus(units)
  local flat = redis.call('HGETALL', KEYS[5])
  local devs = {}
  for j = 1, #flat, 2 do
    devs[#devs + 1] = {flat[j], tonumber(flat[j + 1])}
  end
  table.sort(devs, function(a, b)
    local na, nb = tonumber(a[1]), tonumber(b[1])
    if na and nb then return na < nb end
    return a[1] < b[1]
  end)
  local chosen = {}
  if units < 10000 then
    -- best fit: pack fractional GPUs onto the fullest device that still fits
    local best = nil
    for _, d in ipairs(devs) do
      if d[2] >= units and (best == nil or d[2] < best[2]) then best = d end
    end
    if best == nil then return nil end
    chosen[1] = {best[1], units}
  else
    local want = math.floor(units / 10000)
    for _, d in ipairs(devs) do
      if #chosen < want and d[2] >= 10000 then chosen[#chosen + 1] = {d[1], 10000} end
    end
    if #chosen < want then return nil end
  end
  return chosen
end

local function fits(need)
  for _, pair in ipairs(need) do
    local free = tonumber(redis.call('HGET', KEYS[4], pair[1]) or '0')
    if free < pair[2] then return false end
    if pair[1] == 'GPU' and pair[2] > 0 and pick_gpus(pair[2]) == nil then return false end
  end
  return true
end

-- the oldest entry of a shape's queue that names a queued task
local function first_queued(shape)
  for _ = 1, 100 do
    local first = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. shape .. '|', '[' .. shape .. '|\255', 'LIMIT', 0, 1)[1]
    if first == nil then return nil end
    local tid = string.sub(first, #shape + 17)
    if tid ~= '' and string.sub(first, #shape + 16, #shape + 16) == '|'
        and redis.call('HGET', KEYS[3], tid) == 'Q' .. first then
      return first
    end
    redis.call('ZREM', KEYS[1], first)
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[3], '*', 'source', KEYS[1],
      'reason', 'ready entry names no queued task', 'time', redis.call('TIME')[1],
      'size', #first, 'data', first)
  end
  return nil
end

local best_member, best_shape, best_need = nil, nil, nil
for a = 4, #ARGV do
  local shape = ARGV[a]
  local first = first_queued(shape)
  if first ~= nil then
    local need = parse(shape)
    if fits(need) then
      local seq = string.sub(first, #shape + 2, #shape + 15)
      if best_member == nil or seq < string.sub(best_member, #best_shape + 2, #best_shape + 15) then
        best_member, best_shape, best_need = first, shape, need
      end
    end
  end
end
if best_member == nil then return nil end

local gpu_part = ''
for _, pair in ipairs(best_need) do
  if pair[1] == 'GPU' and pair[2] > 0 then
    local chosen = pick_gpus(pair[2])
    local parts = {}
    for _, c in ipairs(chosen) do
      redis.call('HINCRBY', KEYS[5], c[1], -c[2])
      parts[#parts + 1] = c[1] .. '=' .. c[2]
    end
    gpu_part = table.concat(parts, ',')
  end
end
for _, pair in ipairs(best_need) do
  redis.call('HINCRBY', KEYS[4], pair[1], -pair[2])
end

local tid = string.sub(best_member, #best_shape + 17)
redis.call('ZREM', KEYS[1], best_member)
local reservation = best_shape .. ';' .. gpu_part
redis.call('HSET', KEYS[6], tid, reservation)
redis.call('HSET', KEYS[3], tid, 'R' .. ARGV[1] .. ' ' .. ARGV[2])
local spec = redis.call('HGET', KEYS[2], tid)
return {tid, spec or '', reservation}
