-- Admit producer-chosen names under caps, so a buggy producer cannot grow Redis or Prometheus without bound: the
-- one capped-set admission, for model names, label dimensions and values, and tracked feature names.
-- KEYS: a set of admitted names. ARGV: max names, max values per dimension, TTL of every set touched, the answer
-- for a refused name or value, the prefix of the per-dimension value sets (keys.model_label_values_prefix, same
-- slot; '' when no pair has a dimension), then pairs (dimension, value). Dimension '' admits the value into the set
-- itself (model names, feature names); the built-in dimensions 'version' and 'band' skip the dimension-name cap.
-- Returns the pairs as admitted: a refused dimension answers (refused, refused), a refused value (dim, refused).
local names = KEYS[1]
local max_names, max_values, ttl, refused = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local values_prefix = ARGV[5]
local touched = {}
local function admit(key, value, cap)
  touched[key] = true
  if redis.call('SISMEMBER', key, value) == 1 then return true end
  if redis.call('SCARD', key) < cap then redis.call('SADD', key, value) return true end
  return false
end
local out = {}
for i = 6, #ARGV, 2 do
  local dim, value = ARGV[i], ARGV[i + 1]
  if dim == '' then
    if not admit(names, value, max_names) then value = refused end
  elseif dim ~= 'version' and dim ~= 'band' and not admit(names, dim, max_names) then
    dim, value = refused, refused
  elseif not admit(values_prefix .. dim, value, max_values) then
    value = refused
  end
  out[#out + 1] = dim
  out[#out + 1] = value
end
for key in pairs(touched) do redis.call('EXPIRE', key, ttl) end
return out
