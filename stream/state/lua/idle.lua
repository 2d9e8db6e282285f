-- Assert that partitions are idle: for each one whose offset in the offsets hash has reached the end offset its
-- owner read from the broker (or that was empty, with no offset yet, when its first offset is its end), set its
-- idleness key with a lifetime. The check is made here, against the offsets this Redis holds, so a partition whose
-- messages are not all applied (a backlog, a chunk still in flight, offsets rolled back) is never asserted idle.
-- No restart guard: what it asserts follows from the offsets it reads in the same call, on whatever Redis runs it.
-- KEYS: the offsets hash; ARGV: the idleness key prefix, the wall-clock ms to stamp, the lifetime ms, then triples
-- ('<topic>:<partition>', first offset, end offset). Returns 1 or 0 per triple: asserted or not.
local offsets = KEYS[1]
local idle_prefix, now_ms, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 3 do
  local tp = ARGV[i]
  local held = tonumber(redis.call('HGET', offsets, tp)) or tonumber(ARGV[i + 1])
  if held >= tonumber(ARGV[i + 2]) then
    redis.call('SET', idle_prefix .. tp, now_ms, 'PX', ttl_ms)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
