-- Add one window's distinct values of one feature to its HyperLogLog, one call per HLL per batch.
-- KEYS: the HLL (keys.feature_distinct). ARGV: its TTL in seconds, the numbers packed as 8-byte IEEE doubles in one
-- string, the strings as a JSON array (already cut to the counted length). Two arguments per HLL: one argument per
-- value cost the worker a Python packing step each. A number's element is its 8 bytes, a string's 's:' and the
-- string (a string meets a number no more often than two elements' hashes collide in the HyperLogLog anyway).
-- PFADD is idempotent: no guard is needed.
local hll, ttl, nums = KEYS[1], ARGV[1], ARGV[2]
local strs = cjson.decode(ARGV[3])
local MANY = 1000  -- elements per PFADD: unpack() is bounded by Lua's C stack
local elements = {}
for i = 1, #nums, 8 do elements[#elements + 1] = string.sub(nums, i, i + 7) end
for _, s in ipairs(strs) do elements[#elements + 1] = 's:' .. s end
for from = 1, #elements, MANY do
  redis.call('PFADD', hll, unpack(elements, from, math.min(from + MANY - 1, #elements)))
end
redis.call('EXPIRE', hll, ttl)
