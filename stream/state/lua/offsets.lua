-- Record the next offset to read per partition. Runs behind the restart guard (scripts.py prepends guard.lua).
-- KEYS: the offsets hash; ARGV: the run id the worker reconciled with, then pairs ('<topic>:<partition>', offset).
local offsets = KEYS[1]
local run_id = ARGV[1]
if not same_server(run_id) then return redis.error_reply('TGRESTART redis restarted') end
for i = 2, #ARGV, 2 do redis.call('HSET', offsets, ARGV[i], ARGV[i + 1]) end
return 1
