-- Slot migration, prepended (by scripts.py) to the scripts that touch keys they cannot name in KEYS (a bucket's
-- context slots, windows and parked actions): while `redis-cli --cluster reshard` moves a slot key by key, some
-- of those keys are already on the other node and would read as absent. Both ends of a migration mark the slot in
-- their own line of CLUSTER NODES (`[<slot>->-<node>]` migrating, `[<slot>-<-<node>]` importing), so such a
-- script does nothing there until the slot has moved. `slot` is '' on a single node.
local function migrating(slot)
  if slot == '' then return false end
  return string.find(redis.call('CLUSTER', 'NODES'), '[' .. slot .. '-', 1, true) ~= nil
end
