-- Commit a model's judgement of one (window, stage): advance its cursor only from the value the evaluator read
-- (compare-and-set), so two workers, or one worker after a restart, judge each stage exactly once; store (replace)
-- the window's summary, trim the history, and put the alerts decided into the outbox in the same call.
-- KEYS: the model's state, history and outbox hashes. ARGV: the cursor read, the new cursor, the window
-- start, its summary JSON, the detector state JSON, the oldest history start to keep, the TTL of the three keys,
-- then pairs (alert_id, alert JSON). Returns 1, or 0 when another evaluator got there first.
local state, hist, outbox = KEYS[1], KEYS[2], KEYS[3]
local expected, closed, start, summary, new_state = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local keep_from, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
if (redis.call('HGET', state, 'closed') or '') ~= expected then return 0 end
redis.call('HSET', state, 'closed', closed, 'state', new_state)
redis.call('HSET', hist, start, summary)
for _, f in ipairs(redis.call('HKEYS', hist)) do
  if tonumber(f) < keep_from then redis.call('HDEL', hist, f) end
end
for i = 8, #ARGV, 2 do redis.call('HSET', outbox, ARGV[i], ARGV[i + 1]) end
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
return 1
