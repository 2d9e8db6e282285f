-- Record the progress of the messages a chunk claims (record_progress, prepended with the restart guard by
-- scripts.py). On one node: behind the effects they cover, in the same pipeline. On a Redis Cluster: a bucket's
-- record vouched for by its worker once every chunk below it was applied (Store.vouch), with no idleness keys.
-- KEYS: the offsets hash, the event-time hash; ARGV: the run id the worker reconciled with, the idleness key
-- prefix ('' for none), then triples ('<topic>:<partition>', next offset, newest event ms or '').
local offsets, event_time = KEYS[1], KEYS[2]
local run_id, idle_prefix = ARGV[1], ARGV[2]
if not same_server(run_id) then return redis.error_reply('TGRESTART redis restarted') end
record_progress(offsets, event_time, idle_prefix, 3)
return 1
