-- Record progress, prepended (by scripts.py) to the scripts that write it: the offsets script (one node: the
-- worker's record of every partition) and the apply script (a Redis Cluster: each bucket's own record, in its own
-- slot, written by the same call as its effects). Per partition: the next offset to read, and the newest event time
-- the claimed messages carried (a monotonic max, so a chunk retried after a newer one cannot move it back). A
-- claimed event also ends the partition's idleness where the idleness keys share the slot (idle_prefix not '').
-- ARGV[from..]: triples ('<topic>:<partition>', next offset, newest event ms or '' when none carried an event).
local function record_progress(offsets, event_time, idle_prefix, from)
  for i = from, #ARGV, 3 do
    local tp, ms = ARGV[i], ARGV[i + 2]
    redis.call('HSET', offsets, tp, ARGV[i + 1])
    if ms ~= '' then
      local cur = tonumber(redis.call('HGET', event_time, tp))
      if cur == nil or tonumber(ms) > cur then redis.call('HSET', event_time, tp, ms) end
      if idle_prefix ~= '' then redis.call('DEL', idle_prefix .. tp) end
    end
  end
end
