-- Close one stage of a model's window in one bucket and return the window's counts in the same call, so nothing
-- can be added to what that stage judges after it was read (the apply script refuses predictions of a window that
-- ends at or before the predictions mark, and moves a follow-up of a judged checkpoint to the next open one).
-- KEYS: the bucket's meta hash, the window's counter hash; ARGV: the meta field of the stage's closed mark
-- (keys.closed_field), the window end ms.
local meta, window = KEYS[1], KEYS[2]
local field, stop = ARGV[1], ARGV[2]
local cur = tonumber(redis.call('HGET', meta, field) or '-1')
if cur < tonumber(stop) then redis.call('HSET', meta, field, stop) end
return redis.call('HGETALL', window)
