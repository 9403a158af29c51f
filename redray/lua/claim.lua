-- claim.lua: an executor takes the oldest ready task that fits its node's free
-- resources and reserves them, recording who claimed it in the same atomic
-- step (claim_lib.lua, prepended to this script, describes the claim).
--
-- KEYS[1]  ready       ZSET '<shape>|<seq>|<task id>'
-- KEYS[2]  task_spec   HASH task id -> spec
-- KEYS[3]  task_state  HASH task id -> state
-- KEYS[4]  avail       HASH resource -> free units on this node
-- KEYS[5]  gpus        HASH GPU id -> free units of that device
-- KEYS[6]  running     HASH task id -> '<executor> <reservation> <blocked CPU units>'
-- KEYS[7]  deadletters STREAM where ready entries that name no queued task go
-- KEYS[8]  claim       STRING this executor's claim record (task id)
-- KEYS[9 .. 8+S]       bell LIST of each shape in ARGV[5..], same order
--
-- ARGV[1]  node id
-- ARGV[2]  executor id
-- ARGV[3]  dead-letter stream cap (XADD MAXLEN ~)
-- ARGV[4]  index (1-based) of the shape whose bell token the caller holds, or 0
-- ARGV[5..] shapes this node can ever satisfy, e.g. 'CPU=10000,GPU=5000'
--
-- Returns nil when nothing fits, else {task id, spec, reservation, free CPU}.

local shapes, bells = {}, {}
for i = 5, #ARGV do
  shapes[#shapes + 1] = ARGV[i]
  bells[#bells + 1] = KEYS[4 + i]
end
local k = {
  ready = KEYS[1], spec = KEYS[2], state = KEYS[3], avail = KEYS[4], gpus = KEYS[5],
  running = KEYS[6], deadletters = KEYS[7], claim = KEYS[8], bells = bells,
}
return claim_next(k, ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), shapes)
