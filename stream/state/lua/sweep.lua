-- Delete the actions/outcomes parked in one bucket whose prediction did not come by their deadline, and count
-- them: {actions, outcomes}. At most 1,000 predictions per call; the rest wait for the next tick.
-- Nothing while the bucket's slot is being migrated (slot.lua, prepended by scripts.py).
-- KEYS: the bucket's pending set; ARGV: now ms, the prefix of the bucket's parked keys (keys.parked_prefix), the
-- bucket's cluster slot ('' on one node).
local pendz = KEYS[1]
local now, parked_prefix, slot = ARGV[1], ARGV[2], ARGV[3]
if migrating(slot) then return {0, 0} end
local due = redis.call('ZRANGEBYSCORE', pendz, '-inf', now, 'LIMIT', 0, 1000)
local actions, outcomes = 0, 0
for _, pid in ipairs(due) do
  -- a parked key still there was never drained: its prediction did not come (drain deletes it and the entry)
  local qk = parked_prefix .. pid
  local all = redis.call('HGETALL', qk)
  for i = 2, #all, 2 do
    -- `k` is the stored name of the record's kind (see park in apply.lua)
    if cjson.decode(all[i]).k == 'a' then actions = actions + 1 else outcomes = outcomes + 1 end
  end
  redis.call('DEL', qk)
  redis.call('ZREM', pendz, pid)
end
return {actions, outcomes}
