-- claim_lib.lua: the claim step, shared by claim.lua and complete.lua (a busy
-- executor publishes one task and takes its next in one call). It is not a
-- script of its own: scripts.py prepends it to the scripts that use it.
--
-- claim_next(k, node, worker, cap, held, shapes, fresh)
--   k       the key names: k.ready, k.spec, k.state, k.avail, k.gpus,
--           k.running, k.deadletters, k.claim, and k.bells[i], the bell of shapes[i]
--   node, worker   the claimant's node and executor ids
--   cap     the dead-letter stream cap (XADD MAXLEN ~)
--   held    the index in shapes of the bell token the caller holds, or 0
--   shapes  the shapes the node can ever satisfy
--   fresh   true when the caller just cleared the claim record (complete.lua)
-- Returns nil when nothing fits, else {task id, spec, reservation, free CPU},
-- the reservation being '<shape>;<gpu id>=<units>,...' (the part after ';'
-- may be empty) and free CPU the node's CPU units left after it (an executor
-- asks its node for another executor only when some are).
--
-- The claim takes the oldest ready task that fits the node's free resources,
-- reserves them, and records who claimed it in the same atomic step: the
-- reservation record '<executor> <reservation> 0' (the 0: CPU given back
-- while blocked), the state 'R<node> <executor>' and the executor's claim
-- record. It is idempotent: an executor whose claim record names a task it
-- still holds is given that task again (the reply of its earlier claim was
-- lost). A ready entry is only taken if its task's state points back at it;
-- any other entry is removed and kept as a dead letter. Bell tokens: the
-- claimed shape's token is consumed; a held token of another shape is given
-- back while that shape has more queued tasks than tokens, else dropped.

local function shape_range(shape)
  return '[' .. shape .. '|', '[' .. shape .. '|\255'
end

local function claim_give_back(k, shapes, index)
  if index < 1 then return end
  local lo, hi = shape_range(shapes[index])
  if redis.call('LLEN', k.bells[index]) < redis.call('ZLEXCOUNT', k.ready, lo, hi) then
    redis.call('RPUSH', k.bells[index], '1')
  end
end

local function claim_parse(shape)
  local need = {}
  for name, units in string.gmatch(shape, '([^,=]+)=(%d+)') do
    need[#need + 1] = {name, tonumber(units)}
  end
  return need
end

local function claim_pick_gpus(k, units)
  local flat = redis.call('HGETALL', k.gpus)
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

local function claim_fits(k, need)
  for _, pair in ipairs(need) do
    local free = tonumber(redis.call('HGET', k.avail, pair[1]) or '0')
    if free < pair[2] then return false end
    if pair[1] == 'GPU' and pair[2] > 0 and claim_pick_gpus(k, pair[2]) == nil then return false end
  end
  return true
end

-- the oldest entry of a shape's queue that names a queued task
local function claim_first_queued(k, shape, cap)
  local lo, hi = shape_range(shape)
  for _ = 1, 100 do
    local first = redis.call('ZRANGEBYLEX', k.ready, lo, hi, 'LIMIT', 0, 1)[1]
    if first == nil then return nil end
    local tid = string.sub(first, #shape + 17)
    if tid ~= '' and string.sub(first, #shape + 16, #shape + 16) == '|'
        and redis.call('HGET', k.state, tid) == 'Q' .. first then
      return first
    end
    redis.call('ZREM', k.ready, first)
    redis.call('XADD', k.deadletters, 'MAXLEN', '~', cap, '*', 'source', k.ready,
      'reason', 'ready entry names no queued task', 'time', redis.call('TIME')[1],
      'size', #first, 'data', first)
  end
  return nil
end

local function claim_next(k, node, worker, cap, held, shapes, fresh)
  -- the claim this executor already holds (its reply was lost)
  local mine = (not fresh) and redis.call('GET', k.claim)
  if mine then
    local state = redis.call('HGET', k.state, mine)
    local mine_state = 'R' .. node .. ' ' .. worker
    local record = redis.call('HGET', k.running, mine)
    if (state == mine_state or state == mine_state .. ' c') and record
        and string.sub(record, 1, #worker + 1) == worker .. ' ' then
      claim_give_back(k, shapes, held)
      local rest = string.sub(record, #worker + 2)
      local reservation = string.sub(rest, 1, string.find(rest, ' ', 1, true) - 1)
      return {mine, redis.call('HGET', k.spec, mine) or '', reservation,
        tonumber(redis.call('HGET', k.avail, 'CPU') or '0')}
    end
    redis.call('DEL', k.claim)
  end

  if redis.call('EXISTS', k.ready) == 0 then
    claim_give_back(k, shapes, held)
    return nil
  end
  local best_member, best_index, best_need = nil, 0, nil
  for a = 1, #shapes do
    local shape = shapes[a]
    local first = claim_first_queued(k, shape, cap)
    if first ~= nil then
      local need = claim_parse(shape)
      if claim_fits(k, need) then
        local seq = string.sub(first, #shape + 2, #shape + 15)
        if best_member == nil
            or seq < string.sub(best_member, #shapes[best_index] + 2, #shapes[best_index] + 15) then
          best_member, best_index, best_need = first, a, need
        end
      end
    end
  end
  if best_member == nil then
    claim_give_back(k, shapes, held)
    return nil
  end

  local best_shape = shapes[best_index]
  local gpu_part = ''
  for _, pair in ipairs(best_need) do
    if pair[1] == 'GPU' and pair[2] > 0 then
      local chosen = claim_pick_gpus(k, pair[2])
      local parts = {}
      for _, c in ipairs(chosen) do
        redis.call('HINCRBY', k.gpus, c[1], -c[2])
        parts[#parts + 1] = c[1] .. '=' .. c[2]
      end
      gpu_part = table.concat(parts, ',')
    end
  end
  -- the node's free CPU after the claim, which the reply carries: HINCRBY
  -- returns it (a shape without CPU reads it)
  local free_cpu = nil
  for _, pair in ipairs(best_need) do
    local left = redis.call('HINCRBY', k.avail, pair[1], -pair[2])
    if pair[1] == 'CPU' then free_cpu = left end
  end

  if held ~= best_index then
    claim_give_back(k, shapes, held)
    redis.call('LPOP', k.bells[best_index])
  end
  local tid = string.sub(best_member, #best_shape + 17)
  redis.call('ZREM', k.ready, best_member)
  local reservation = best_shape .. ';' .. gpu_part
  redis.call('HSET', k.running, tid, worker .. ' ' .. reservation .. ' 0')
  redis.call('HSET', k.state, tid, 'R' .. node .. ' ' .. worker)
  redis.call('SET', k.claim, tid)
  return {tid, redis.call('HGET', k.spec, tid) or '', reservation,
    free_cpu or tonumber(redis.call('HGET', k.avail, 'CPU') or '0')}
end
