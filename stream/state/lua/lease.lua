-- Take or renew a model's evaluation lease: 1 when `owner` holds it now, 0 while another live worker does.
-- KEYS: the lease key; ARGV: owner, lease ms.
local lease = KEYS[1]
local owner, ttl_ms = ARGV[1], ARGV[2]
local cur = redis.call('GET', lease)
if cur == false or cur == owner then
  redis.call('SET', lease, owner, 'PX', ttl_ms)
  return 1
end
return 0
