-- Close a model's window in one bucket and return its counts in the same call, so nothing can be added to the
-- window after it was read (the apply script refuses events of a window that ends at or before the closed mark).
-- KEYS: the bucket's meta hash, the window's counter hash; ARGV: model, window end ms.
local meta, window = KEYS[1], KEYS[2]
local model, stop = ARGV[1], ARGV[2]
local cur = tonumber(redis.call('HGET', meta, 'closed:' .. model) or '-1')
if cur < tonumber(stop) then redis.call('HSET', meta, 'closed:' .. model, stop) end
return redis.call('HGETALL', window)
