-- The restart guard, prepended (by scripts.py) to every script that records progress. After a Redis restart from
-- the AOF the last second of writes may be gone, and a batch applied on top of that hole would let its offset
-- claim effects that no longer exist; so such a script first checks that it runs on the Redis process the worker
-- reconciled with, and refuses with TGRESTART otherwise (the worker seeks back and retries).
local function same_server(expected)
  if expected == nil or expected == '' then return true end
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') == expected
end
