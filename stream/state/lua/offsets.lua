-- Record the progress of the messages a chunk claims, per partition: the next offset to read, and the newest event
-- time they carried (a monotonic max, so a chunk retried after a newer one cannot move it back). A claimed event
-- also ends the partition's idleness: it is no longer read to its end with nothing new. Runs behind the restart
-- guard (scripts.py prepends guard.lua).
-- KEYS: the offsets hash, the event-time hash; ARGV: the run id the worker reconciled with, the idleness key
-- prefix, then triples ('<topic>:<partition>', next offset, newest event ms or '' when none carried an event).
local offsets, event_time = KEYS[1], KEYS[2]
local run_id, idle_prefix = ARGV[1], ARGV[2]
if not same_server(run_id) then return redis.error_reply('TGRESTART redis restarted') end
for i = 3, #ARGV, 3 do
  local tp, ms = ARGV[i], ARGV[i + 2]
  redis.call('HSET', offsets, tp, ARGV[i + 1])
  if ms ~= '' then
    local cur = tonumber(redis.call('HGET', event_time, tp))
    if cur == nil or tonumber(ms) > cur then redis.call('HSET', event_time, tp, ms) end
    redis.call('DEL', idle_prefix .. tp)
  end
end
return 1
