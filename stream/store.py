"""Redis state: the Lua scripts that apply a batch idempotently, close windows, and commit evaluations.

The one rule: every write that must not happen twice is guarded inside the same Lua call that does it.
- `apply` runs one script per bucket touched by a batch (one round trip for the whole batch). The script
  dedups each prediction by its id in its context slot and each action/outcome by a hash of its `event_id` kept in
  its prediction's context, joins actions/outcomes to their prediction (or parks them until it arrives), bumps the
  window counters, refusing events whose window is already closed, and records the features of a prediction it
  newly stored.
- `close_window` marks a window closed in every bucket and returns its counts in the same call, so nothing can
  be added to a window after it was read.
- `commit_evaluation` advances a model's closed mark only from the value the evaluator read (compare-and-set),
  so two workers, or one worker after a restart, evaluate each window exactly once; its alerts go to an outbox
  that is emptied only once the broker acknowledged them.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from . import features, keys
from .events import Annotation, Event, HumanActionEvent, OutcomeEvent, PredictionEvent, epoch_ms
from .settings import Settings
from .windows import window_start

COUNTERS = ("n", "a:accept", "a:override", "a:bypass", "a:escalate", "o:truth", "o:proxy", "m:truth", "m:proxy")
"""Window counters per (version, scope): predictions, actions by kind, outcomes by kind, mismatches by kind."""

# Every script that records progress first checks that it runs on the Redis instance the worker reconciled with:
# after a restart from the AOF the last second of writes may be gone, and a batch applied on top of that hole
# would let its offset claim effects that no longer exist. The worker sees TGRESTART, seeks back and retries.
_GUARD = r"""
local function same_server(expected)
  if expected == nil or expected == '' then return true end
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') == expected
end
"""

_APPLY = _GUARD + r"""
local meta, pendz = KEYS[1], KEYS[2]
local pre = string.sub(meta, 1, -6)  -- '<tag>:meta' -> '<tag>': the bucket's key names are built from it (keys.py)
local cfg = cjson.decode(ARGV[1])
if not same_server(cfg.run_id) then return redis.error_reply('TGRESTART redis restarted') end
-- ARGV[2]: the records, one flat JSON array (see Store.prepare); ARGV[3]: the call's (model, version, scopes) triples,
-- which prediction records name by index: a flat array of scalars decodes into one Lua table, not one per record
local recs = cjson.decode(ARGV[2])
local tri = cjson.decode(ARGV[3])
local applied, dup, pending, late, drained = 0, 0, 0, 0, 0
local closed, touched, wm, first, slots = {}, {}, {}, {}, {}
-- window counter increments summed per (key, field) and written once at the end: a batch repeats a few dozen
-- fields thousands of times, and the script is atomic, so the end state is the same with far fewer calls (issue 7)
local incr = {}

local function fmt(x) return string.format('%d', x) end
local MANY = 1000  -- fields per HMGET/HSET: unpack() is bounded by Lua's C stack
local function num(x) return string.format('%.17g', x) end
local function closed_of(model)
  if closed[model] == nil then closed[model] = tonumber(redis.call('HGET', meta, 'closed:' .. model) or '-1') end
  return closed[model]
end

-- Names a batch builds thousands of times from a few parts are built once per call (issue 7): Lua strings are
-- interned, so a lookup through nested tables costs less than the concatenations and string.format it saves.
local function memo_table(t, k)
  local v = t[k]
  if v == nil then v = {}; t[k] = v end
  return v
end

-- the counter fields one event bumps: the whole model and every scope, for its version and counter
local fields_memo = {}
local function fields_of(version, scopes, counter)
  local by_counter = memo_table(memo_table(fields_memo, version), scopes)
  local l = by_counter[counter]
  if l == nil then
    l = {version .. '||' .. counter}
    for scope in string.gmatch(scopes, '[^\031]+') do l[#l + 1] = version .. '|' .. scope .. '|' .. counter end
    by_counter[counter] = l
  end
  return l
end

-- The windows a call writes, per kind ('w' counters, 'f' feature statistics), model and window start: the key's
-- name, end and TTL, and the field -> increment table of its writes (in `incr`), made once per call
local windows, sizes, ttls = {w = {}, f = {}}, {}, {}
local function window_of(kind, model, ts)
  local size = sizes[model]
  if size == nil then
    size = cfg.win[model] or cfg.win['_']
    sizes[model], ttls[model] = size, cfg.ttl[model] or cfg.ttl['_']
  end
  local start = ts - (ts % size)
  local by_start = memo_table(windows[kind], model)
  local w = by_start[start]
  if w == nil then
    local key = pre .. ':' .. kind .. ':' .. model .. ':' .. fmt(start)
    w = {key = key, start = start, stop = start + size, ttl = ttls[model], counts = {}}
    incr[key] = w.counts
    by_start[start] = w
  end
  return w
end

-- count one event into its window for the model, its version and every scope; false when the window is closed
local function bump(model, version, scopes, ts, counter)
  local w = window_of('w', model, ts)
  if w.stop <= closed_of(model) then return false end
  local c = w.counts
  for _, f in ipairs(fields_of(version, scopes, counter)) do c[f] = (c[f] or 0) + 1 end
  touched[w.key] = w.ttl
  if wm[model] == nil or ts > wm[model] then wm[model] = ts end
  if first[model] == nil or w.start < first[model] then first[model] = w.start end
  return true
end

-- Contexts are fields of event-time slot hashes (keys.context_slot): field prediction_id, value
-- '<id>[\029<tokens>]\030<label>'. <id> names the prediction's (model, version, scopes), interned once per bucket
-- in meta ('i:<json>' -> id, 'j:<id>' -> json): a bucket sees a handful of distinct triples while it holds up to
-- millions of contexts. <tokens> are the 16-hex-digit hashes of the event_ids already applied to the prediction.
-- A field in a shared hash costs ~100 bytes less than a key of its own (issue 7).

-- the interned id of every triple of the call (ARGV[3]), by the records' 0-based index, in one HMGET (and one
-- HINCRBY + HSET for new ones): a call names a few dozen triples, each once
local function intern_all(triples)
  local sigs, fields = {}, {}
  for x, t in ipairs(triples) do
    sigs[x] = cjson.encode({t[1], t[2], t[3]})
    fields[x] = 'i:' .. sigs[x]
  end
  local out = {}
  for from = 1, #fields, MANY do
    local to = math.min(from + MANY - 1, #fields)
    local got = redis.call('HMGET', meta, unpack(fields, from, to))
    for x = from, to do out[x - 1] = got[x - from + 1] or nil end  -- a missing field reads false
  end
  local fresh = {}
  for x = 1, #fields do if not out[x - 1] then fresh[#fresh + 1] = x end end
  if #fresh > 0 then
    local last = redis.call('HINCRBY', meta, 'i#', #fresh)
    local writes = {}
    for j, x in ipairs(fresh) do
      local id = fmt(last - #fresh + j)
      out[x - 1] = id
      writes[#writes + 1] = fields[x]; writes[#writes + 1] = id
      writes[#writes + 1] = 'j:' .. id; writes[#writes + 1] = sigs[x]
    end
    for from = 1, #writes, MANY do redis.call('HSET', meta, unpack(writes, from, math.min(from + MANY - 1, #writes))) end
  end
  return out
end

local function pack(id, tokens, label)
  if tokens == '' then return id .. '\030' .. label end
  return id .. '\029' .. tokens .. '\030' .. label
end

-- (id, tokens, label) of a packed context: ids are digits and tokens hex, so the label may hold any byte
local function unpack_ctx(v)
  local id, at = string.match(v, '^(%d+)()')
  if string.byte(v, at) == 29 then
    local stop = string.find(v, '\030', at + 1, true)
    return id, string.sub(v, at + 1, stop - 1), string.sub(v, stop + 1)
  end
  return id, '', string.sub(v, at + 1)
end

local function has_token(tokens, h)
  for i = 1, #tokens, 16 do
    if string.sub(tokens, i, i + 15) == h then return true end
  end
  return false
end

local triples = {}  -- id -> decoded {model, version, scopes}: a batch's actions share a few ids
local function triple(id)
  local t = triples[id]
  if t == nil then
    t = cjson.decode(redis.call('HGET', meta, 'j:' .. id))
    triples[id] = t
  end
  return t
end

local slot_keys = {}
local function slot_key(ts)
  local start = ts - (ts % cfg.span)
  local key = slot_keys[start]
  if key == nil then key = pre .. ':c:' .. fmt(start); slot_keys[start] = key end
  return key
end

-- the slot key and packed context of an action/outcome's prediction, looked for from slot(ts) back to
-- slot(ts - context_ttl), then one slot ahead (a prediction stamped slightly after its action); nil when absent
local function find(pid, ts)
  local here = ts - (ts % cfg.span)
  local oldest = ts - cfg.ctx_ttl * 1000
  oldest = oldest - (oldest % cfg.span)
  for s = here, oldest, -cfg.span do
    local key = slot_key(s)
    local v = redis.call('HGET', key, pid)
    if v then return key, v end
  end
  local key = slot_key(here + cfg.span)
  local v = redis.call('HGET', key, pid)
  if v then return key, v end
  return nil, nil
end

local function follow(ctx, r)
  -- an action or outcome meets its prediction context {model, version, label, scopes}
  if r.k == 'a' then return bump(ctx[1], ctx[2], ctx[4], r.t, 'a:' .. r.a) end
  local ok = bump(ctx[1], ctx[2], ctx[4], r.t, 'o:' .. r.o)
  if ok and r.l ~= ctx[3] then bump(ctx[1], ctx[2], ctx[4], r.t, 'm:' .. r.o) end
  return ok
end

-- feature statistics of a prediction this call newly stored in an open window (issue 4); being newly stored is
-- the once-guard, so a duplicate, a replay after a crash, or two workers racing record them once. Like the window
-- counters they are summed per (key, field) in the call and written once at its end (issue 7): counts into
-- `incr`, float sums, minima and maxima here, string values per top-value hash in first-seen order.
local fsum, flo, fhi, tops, top_keys = {}, {}, {}, {}, {}
local function field_of(t, key)
  local c = t[key]
  if c == nil then c = {}; t[key] = c end
  return c
end
local fnames = {}  -- feature name -> its field names in the statistics hash
local function names_of(f)
  local n = fnames[f]
  if n == nil then
    n = {c = 'c|' .. f, s = 's|' .. f, q = 'q|' .. f, k = 'k|' .. f, z = 'z|' .. f, lo = 'lo|' .. f,
         hi = 'hi|' .. f, top = {}}
    fnames[f] = n
  end
  return n
end
local tracked = {}  -- model -> set of its tracked feature names (cfg.ft lists them)
for m, names in pairs(cfg.ft or {}) do
  local set = {}
  for _, f in ipairs(names) do set[f] = true end
  tracked[m] = set
end
-- a string value is counted by its first str_max bytes, cut back to a UTF-8 character boundary (as `cut` in Python)
local function cut(v)
  if #v <= cfg.str_max then return v end
  local n = cfg.str_max
  while n > 0 do
    local b = string.byte(v, n + 1)
    if b < 128 or b >= 192 then break end
    n = n - 1
  end
  return string.sub(v, 1, n)
end
local function record_features(m, ts, fx)
  local w = window_of('f', m, ts)
  local key, ttl, counts = w.key, w.ttl, w.counts
  touched[key] = ttl
  local sums, lo, hi = w.sums, w.lo, w.hi
  if sums == nil then
    sums, lo, hi = field_of(fsum, key), field_of(flo, key), field_of(fhi, key)
    w.sums, w.lo, w.hi = sums, lo, hi
  end
  counts['_n'] = (counts['_n'] or 0) + 1
  local wanted = tracked[m] or {}
  for f, x in pairs(fx) do
    if wanted[f] then
      local n = names_of(f)
      local kind = type(x)
      if kind == 'number' then
        counts[n.c] = (counts[n.c] or 0) + 1
        sums[n.s] = (sums[n.s] or 0) + x
        sums[n.q] = (sums[n.q] or 0) + x * x
        if lo[n.lo] == nil or x < lo[n.lo] then lo[n.lo] = x end
        if hi[n.hi] == nil or x > hi[n.hi] then hi[n.hi] = x end
      elseif kind == 'string' then
        local v = cut(x)
        counts[n.k] = (counts[n.k] or 0) + 1
        local tk = n.top[key]
        if tk == nil then
          tk = pre .. ':fv' .. string.sub(key, #pre + 3) .. ':' .. f  -- '<pre>:f:<m>:<start>' -> '<pre>:fv:<m>:<start>:<f>'
          n.top[key] = tk
          touched[tk] = ttl
        end
        local t = tops[tk]
        if t == nil then t = {order = {}, n = {}}; tops[tk] = t; top_keys[#top_keys + 1] = tk end
        if t.n[v] == nil then t.order[#t.order + 1] = v; t.n[v] = 0 end
        t.n[v] = t.n[v] + 1
      else  -- cjson.null: sent as null
        counts[n.z] = (counts[n.z] or 0) + 1
      end
    end
  end
end

-- A call's writes to one hash, all in one HMGET and one HSET (per MANY fields): the script is atomic, so reading
-- and writing back ends where one HINCRBY/HINCRBYFLOAT/compare per field would, in a few calls instead of one per
-- field and key (issue 7). ints/floats: field -> increment; mins/maxs: field -> candidate extreme (any may be nil).
local function write_hash(key, ints, floats, mins, maxs)
  local names, ops, vals = {}, {}, {}
  local function add(t, op)
    if t == nil then return end
    for f, x in pairs(t) do names[#names + 1] = f; ops[#ops + 1] = op; vals[#vals + 1] = x end
  end
  add(ints, 1); add(floats, 2); add(mins, 3); add(maxs, 4)
  for from = 1, #names, MANY do
    local to = math.min(from + MANY - 1, #names)
    local cur = redis.call('HMGET', key, unpack(names, from, to))
    local out = {}
    for j = from, to do
      local op, x, c = ops[j], vals[j], tonumber(cur[j - from + 1])
      local v
      if op == 1 then v = fmt((c or 0) + x)
      elseif op == 2 then v = num((c or 0) + x)
      elseif op == 3 then if c == nil or x < c then v = num(x) end
      elseif c == nil or x > c then v = num(x) end
      if v then out[#out + 1] = names[j]; out[#out + 1] = v end
    end
    if #out > 0 then redis.call('HSET', key, unpack(out)) end
  end
end

-- Weighted Space-Saving over a batch's string values: a monitored value adds its count, a new one takes a free
-- counter or else the smallest one (and its count). The summary keeps its guarantee: any value with a share above
-- 1/top_k is monitored, its count over-estimated by at most the smallest counter. Computed on the hash as read,
-- then written back in one HSET (and one HDEL for the values it dropped).
local function write_tops()
  for _, tk in ipairs(top_keys) do
    local t = tops[tk]
    local all = redis.call('HGETALL', tk)
    local cnt, size, was = {}, 0, {}
    for i = 1, #all, 2 do cnt[all[i]] = tonumber(all[i + 1]); was[all[i]] = true; size = size + 1 end
    for _, v in ipairs(t.order) do
      local c = t.n[v]
      if cnt[v] ~= nil or size < cfg.top_k then
        if cnt[v] == nil then size = size + 1 end
        cnt[v] = (cnt[v] or 0) + c
      else
        local minv, minc = nil, nil
        for k, n in pairs(cnt) do
          if minc == nil or n < minc or (n == minc and k < minv) then minv, minc = k, n end
        end
        cnt[minv] = nil
        cnt[v] = minc + c
      end
    end
    local gone, out = {}, {}
    for v in pairs(was) do if cnt[v] == nil then gone[#gone + 1] = v end end
    for v, c in pairs(cnt) do out[#out + 1] = v; out[#out + 1] = fmt(c) end
    if #gone > 0 then redis.call('HDEL', tk, unpack(gone)) end
    redis.call('HSET', tk, unpack(out))
  end
end

local any_parked = redis.call('ZCARD', pendz) > 0  -- parking adds to it, draining and the sweep remove
local ids = intern_all(tri)  -- triple index -> interned id
local i, last = 1, #recs
while i <= last do
  local k = recs[i]
  if k == 'p' then
    -- 'p', prediction_id, triple index, ts, label, features object or false (the model tracks none)
    local pid, x, ts, label, fx = recs[i + 1], recs[i + 2], recs[i + 3], recs[i + 4], recs[i + 5]
    i = i + 6
    local m, v, s = tri[x + 1][1], tri[x + 1][2], tri[x + 1][3]
    local id = ids[x]
    -- a prediction's slot follows from its own ts, so a redelivered copy meets the stored one
    local sk = slot_key(ts)
    if redis.call('HSETNX', sk, pid, pack(id, '', label)) == 0 then
      dup = dup + 1
    else
      slots[sk] = true
      if bump(m, v, s, ts, 'n') then
        applied = applied + 1
        if fx then record_features(m, ts, fx) end
      else
        late = late + 1
      end
      -- nothing is parked in a bucket whose pending set is empty (the common case: predictions come first)
      if any_parked then
        local qk = pre .. ':q:' .. pid
        local parked = redis.call('HGETALL', qk)
        if #parked > 0 then
          local ctx, tokens = {m, v, label, s}, ''
          for j = 2, #parked, 2 do
            local q = cjson.decode(parked[j])
            if follow(ctx, q) then drained = drained + 1 else late = late + 1 end
            tokens = tokens .. q.h
          end
          redis.call('HSET', sk, pid, pack(id, tokens, label))
          redis.call('DEL', qk)
          redis.call('ZREM', pendz, pid)
        end
      end
    end
  else
    -- 'a', prediction_id, event_id, token, ts, action  |  'o', prediction_id, event_id, token, ts, label, kind
    local r
    if k == 'a' then
      r = {k = 'a', p = recs[i + 1], e = recs[i + 2], h = recs[i + 3], t = recs[i + 4], a = recs[i + 5]}
      i = i + 6
    else
      r = {k = 'o', p = recs[i + 1], e = recs[i + 2], h = recs[i + 3], t = recs[i + 4], l = recs[i + 5],
           o = recs[i + 6]}
      i = i + 7
    end
    local sk, v = find(r.p, r.t)
    if sk then
      local id, tokens, label = unpack_ctx(v)
      if has_token(tokens, r.h) then
        dup = dup + 1
      else
        local t = triple(id)
        if follow({t[1], t[2], label, t[3]}, r) then applied = applied + 1 else late = late + 1 end
        redis.call('HSET', sk, r.p, pack(id, tokens .. r.h, label))
        slots[sk] = true
      end
    else
      -- parked as the JSON object `follow` reads (the layout parked entries have always had)
      local qk = pre .. ':q:' .. r.p
      if redis.call('HSETNX', qk, r.e, cjson.encode(r)) == 0 then
        dup = dup + 1  -- parked already
      else
        redis.call('EXPIRE', qk, cfg.pend_ttl * 2)
        any_parked = true
        redis.call('ZADD', pendz, cfg.now + cfg.pend_ttl * 1000, r.p)
        redis.call('EXPIRE', pendz, cfg.pend_ttl * 2)
        pending = pending + 1
      end
    end
  end
end

for key, c in pairs(incr) do write_hash(key, c, fsum[key], flo[key], fhi[key]) end
write_tops()
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
for key in pairs(slots) do redis.call('EXPIRE', key, cfg.ctx_ttl) end
for model, ts in pairs(wm) do
  local cur = redis.call('HMGET', meta, 'wm:' .. model, 'first:' .. model)
  local out = {}
  if ts > (tonumber(cur[1]) or -1e18) then out[#out + 1] = 'wm:' .. model; out[#out + 1] = fmt(ts) end
  if first[model] < (tonumber(cur[2]) or 1e18) then out[#out + 1] = 'first:' .. model; out[#out + 1] = fmt(first[model]) end
  if #out > 0 then redis.call('HSET', meta, unpack(out)) end
end
if late > 0 then redis.call('HINCRBY', meta, 'late', late) end
redis.call('EXPIRE', meta, cfg.meta_ttl)
return {applied, dup, pending, late, drained}
"""

_OFFSETS = _GUARD + r"""
if not same_server(ARGV[1]) then return redis.error_reply('TGRESTART redis restarted') end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

_ADMIT = r"""
-- Admit producer-chosen label values under caps, so a buggy producer cannot grow Redis or Prometheus without bound.
-- KEYS[1]: a set of admitted names; for the per-model call also the prefix of one set per dimension (same slot).
-- ARGV: max names, max values per dimension, ttl, then pairs (dimension, value). Dimension '' admits the value
-- into KEYS[1] itself (model names); built-in dimensions 'version' and 'band' skip the dimension-name cap.
local names, max_names, max_values, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local touched = {}
local function admit(key, value, cap)
  touched[key] = true
  if redis.call('SISMEMBER', key, value) == 1 then return true end
  if redis.call('SCARD', key) < cap then redis.call('SADD', key, value) return true end
  return false
end
local out = {}
for i = 4, #ARGV, 2 do
  local dim, value = ARGV[i], ARGV[i + 1]
  if dim == '' then
    if not admit(names, value, max_names) then value = '__other__' end
  elseif dim ~= 'version' and dim ~= 'band' and not admit(names, dim, max_names) then
    dim, value = '__other__', '__other__'
  elseif not admit(names .. ':' .. dim, value, max_values) then
    value = '__other__'
  end
  out[#out + 1] = dim
  out[#out + 1] = value
end
for key in pairs(touched) do redis.call('EXPIRE', key, ttl) end
return out
"""

_CLOSE = r"""
local meta = KEYS[1]
local pre = string.sub(meta, 1, -6)
local model, start, stop = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cur = tonumber(redis.call('HGET', meta, 'closed:' .. model) or '-1')
if cur < stop then redis.call('HSET', meta, 'closed:' .. model, ARGV[3]) end
return redis.call('HGETALL', pre .. ':w:' .. model .. ':' .. start)
"""

_COMMIT = r"""
local state, hist, outbox = KEYS[1], KEYS[2], KEYS[3]
local expected, closed, start, summary, new_state = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local keep_from, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
if (redis.call('HGET', state, 'closed') or '') ~= expected then return 0 end
redis.call('HSET', state, 'closed', closed, 'state', new_state)
redis.call('HSET', hist, start, summary)
for _, f in ipairs(redis.call('HKEYS', hist)) do
  if tonumber(f) < keep_from then redis.call('HDEL', hist, f) end
end
for i = 8, #ARGV, 2 do redis.call('HSET', outbox, ARGV[i], ARGV[i + 1]) end
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
return 1
"""

_LEASE = r"""
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_SWEEP = r"""
local pendz = KEYS[1]
local pre = string.sub(pendz, 1, -9)  -- '<tag>:pending' -> '<tag>' (keys.py)
local due = redis.call('ZRANGEBYSCORE', pendz, '-inf', ARGV[1], 'LIMIT', 0, 1000)
local actions, outcomes = 0, 0
for _, pid in ipairs(due) do
  -- a parked key still there was never drained: its prediction did not come (drain deletes it and the entry)
  local qk = pre .. ':q:' .. pid
  local all = redis.call('HGETALL', qk)
  for i = 2, #all, 2 do
    if cjson.decode(all[i]).k == 'a' then actions = actions + 1 else outcomes = outcomes + 1 end
  end
  redis.call('DEL', qk)
  redis.call('ZREM', pendz, pid)
end
return {actions, outcomes}
"""


@dataclass(slots=True)
class ApplyResult:
    """What one batch did; `late` events were valid but their window had closed."""

    applied: int = 0
    duplicates: int = 0
    pending: int = 0
    late: int = 0
    drained: int = 0  # parked actions/outcomes applied because their prediction arrived
    untracked_features: dict[str, int] = field(default_factory=dict)  # model -> feature values over the cap
    overflow: Counter[str] = field(default_factory=Counter)  # label values capped into __other__, by kind

    def add(self, other: Sequence[int]) -> None:
        self.applied += other[0]
        self.duplicates += other[1]
        self.pending += other[2]
        self.late += other[3]
        self.drained += other[4]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch encoded for the apply pipeline (Store.prepare), sendable again as is after a Redis restart."""

    buckets: dict[int, tuple[bytes, bytes]]  # bucket -> its records and triples for `_APPLY` (JSON)
    features: FeaturePlan
    models: set[str]           # admitted model names the batch touches
    overflow: Counter[str]


@dataclass(slots=True)
class WindowCounts:
    """Counters of one closed window: (version, scope, counter) -> count, summed over buckets."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def merge(self, flat: Sequence[bytes]) -> None:
        for i in range(0, len(flat), 2):
            version, scope, counter = flat[i].decode().split("|", 2)
            key = (version, scope, counter)
            self.counts[key] = self.counts.get(key, 0) + int(flat[i + 1])


@dataclass(slots=True)
class ModelTick:
    """One model as an evaluator tick found it."""

    leased: bool                # this worker holds (or just renewed) the model's evaluation lease
    outbox: dict[str, bytes]    # alert_id -> alert JSON decided but not yet acknowledged by the broker
    closed: str                 # the model's closed mark as stored ('' before the first evaluation)
    newest: int | None = None   # newest event ms over all buckets
    first: int | None = None    # earliest window start over all buckets


@dataclass(slots=True)
class Tick:
    """What `Store.tick` read: every admitted model, the ones asked about, and the orphans swept."""

    models: list[str]
    seen: dict[str, ModelTick] = field(default_factory=dict)
    orphans: tuple[int, int] = (0, 0)  # (actions, outcomes) whose prediction never came


@dataclass(slots=True)
class ModelState:
    """A model's detector state as stored: the closed mark it belongs to, state JSON, history, annotations."""

    closed: str
    state: bytes | None
    history: dict[int, bytes]
    annotations: list[Annotation]


@dataclass(slots=True)
class ClosedWindow:
    """A window just closed: its counts, its feature statistics per bucket, and the model state if asked for."""

    counts: WindowCounts = field(default_factory=WindowCounts)
    feature_stats: list[dict[bytes, bytes]] = field(default_factory=list)
    state: ModelState | None = None


OTHER = "__other__"
"""What a label value over its cap is counted as."""

ADMIT_REFRESH_S = 3600.0
"""How long a worker trusts its memory of admitted label values before asking Redis again (refreshing TTLs)."""
LABELS_MEMO_MAX = 100_000
"""Distinct (model, version, band, segment) combinations a worker remembers as wholly admitted."""


@dataclass(frozen=True, slots=True)
class Labels:
    """A prediction's admitted model and labels, as its record carries them to the apply script."""

    model: str
    version: str  # '|' separates version, scope and counter in a counter field; kept out of the parts
    scopes: str   # scopes_of the labels, '\x1f'-separated

    @classmethod
    def of(cls, model: str, labels: Sequence[tuple[str, str]]) -> Labels:
        version = next(v for d, v in labels if d == "version")
        return cls(model, version.replace("|", "/"), "\x1f".join(x.replace("|", "/") for x in scopes_of(labels)))


from .errors import RedisRestarted  # noqa: E402 - only on this branch: the store helper moves it to the import block


def label_candidates(event: PredictionEvent, band: str) -> list[tuple[str, str]]:
    """(dimension, value) pairs of a prediction that become Redis scopes and metric labels, before capping."""
    pairs = [("version", event.model_version), ("band", band)]
    pairs += [(f"s:{dim}", value) for dim, value in sorted((event.segment or {}).items())]
    return pairs


def scopes_of(labels: Sequence[tuple[str, str]]) -> list[str]:
    """Scopes a prediction counts in besides the whole model: its band and each segment dimension=value.

    Capped-away dimensions all collapse into one `__other__=__other__` scope, counted once."""
    scopes: list[str] = []
    for dim, value in labels:
        if dim == "version":
            continue
        scope = f"{dim.removeprefix('s:')}={value}"
        if scope not in scopes:
            scopes.append(scope)
    return scopes


def _follower(event: HumanActionEvent | OutcomeEvent) -> tuple[Any, ...]:
    """An action's or outcome's fields in `_APPLY`'s flat record layout."""
    ts = epoch_ms(event.ts)
    if isinstance(event, HumanActionEvent):
        return "a", event.prediction_id, event.event_id, dedup_token(event.event_id), ts, event.action
    return "o", event.prediction_id, event.event_id, dedup_token(event.event_id), ts, event.label, event.kind


def dedup_token(event_id: str) -> str:
    """16 hex digits kept in a prediction's context per applied action/outcome: its dedup, in 16 bytes instead of a
    hash field holding the event_id. Two events of one prediction collide with probability ~2**-64."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def as_text(value: bytes | str) -> str:
    """redis-py answers bytes (no decode_responses); its types say bytes or str."""
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


async def _execute(pipe: Any) -> list[Any]:
    """Run a pipeline; a guard refusal anywhere in it becomes RedisRestarted."""
    try:
        return list(await pipe.execute())
    except ResponseError as err:
        if "TGRESTART" in str(err):
            raise RedisRestarted(str(err)) from None
        raise


class Store:
    """All of trustgap's Redis traffic; one instance per worker process."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        # Scripts called alone go through EVALSHA (registered); scripts inside pipelines are sent with EVAL (see
        # `apply`): a registered script in a pipeline costs redis-py an extra SCRIPT EXISTS round trip.
        self._commit = client.register_script(_COMMIT)
        self._lease = client.register_script(_LEASE)
        self._admit = client.register_script(_ADMIT)
        self._cfg_cache: dict[str, Any] | None = None
        self.features = FeatureStore(self)
        self._models_admitted: set[str] = set()
        # (dimension, value) pairs Redis admitted per model: a value once admitted stays admitted, so at steady
        # state a batch needs no admission round trip (issue 7). Forgotten every ADMIT_REFRESH_S so that the sets'
        # TTL is still refreshed by traffic.
        self._pairs_admitted: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._admitted_since = time.monotonic()
        self._labels_seen: dict[tuple[Any, ...], Labels] = {}
        # The Redis process (INFO run_id) whose offsets the worker last reconciled with; None disables the guard.
        self.run_id: str | None = None

    async def server_run_id(self) -> str:
        """The Redis process's run_id: it changes on every restart (and on a failover to a replica)."""
        info = await self.redis.info("server")
        return str(info["run_id"])

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        client = aioredis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10,
                                         socket_connect_timeout=5, health_check_interval=30)
        return cls(client, settings)

    def _static_cfg(self) -> dict[str, Any]:
        if self._cfg_cache is None:
            s = self.settings
            win = {"_": s.defaults.window_seconds * 1000}
            ttl = {"_": s.defaults.window_seconds + s.defaults.allowed_lateness_seconds + keys.WINDOW_MARGIN}
            for name, m in s.models.items():
                win[name] = m.window_seconds * 1000
                ttl[name] = m.window_seconds + m.allowed_lateness_seconds + keys.WINDOW_MARGIN
            self._cfg_cache = {"win": win, "ttl": ttl, "ctx_ttl": s.context_ttl_seconds,
                               "span": keys.slot_span_ms(s.context_ttl_seconds),
                               "pend_ttl": s.pending_ttl_seconds, "meta_ttl": keys.META_TTL,
                               "top_k": keys.FEATURE_TOP_K, "str_max": _STRING_MAX}
        return self._cfg_cache

    async def admit(self, predictions: Sequence[PredictionEvent]) -> tuple[list[Labels], Counter[str]]:
        """Cap producer-chosen names: the admitted labels of each prediction, and the overflows by kind.

        The admitted values live in Redis sets (per deployment, not per worker) so every worker and every restart
        agrees on them; a value once admitted stays admitted, so a replay maps an event the same way, and this
        worker remembers what was admitted and asks Redis only about pairs it has not seen admitted yet. A
        prediction whose (model, version, band, segment) was seen wholly admitted reuses its labels outright."""
        s = self.settings
        if time.monotonic() - self._admitted_since > ADMIT_REFRESH_S or len(self._labels_seen) > LABELS_MEMO_MAX:
            self._models_admitted.clear()
            self._pairs_admitted.clear()
            self._labels_seen.clear()
            self._admitted_since = time.monotonic()
        overflow: Counter[str] = Counter()
        out: list[Labels | None] = []
        misses: list[tuple[int, tuple[Any, ...], PredictionEvent, list[tuple[str, str]]]] = []
        for i, p in enumerate(predictions):
            band = p.band or s.for_model(p.model).band_for(p.score)
            # a memo key only: a segment sent in another key order is one more entry, never other labels
            sig = (p.model, p.model_version, band, tuple(p.segment.items()) if p.segment else ())
            hit = self._labels_seen.get(sig)
            out.append(hit)
            if hit is None:
                misses.append((i, sig, p, label_candidates(p, band)))
        if not misses:
            return out, overflow  # type: ignore[return-value]  # no None left
        models = {p.model: p.model for _, _, p, _ in misses}
        unknown = sorted(m for m in models if m not in self._models_admitted)
        if unknown:
            args = [s.max_models, s.max_label_values, keys.MODEL_TTL] + [x for m in unknown for x in ("", m)]
            reply = await self._admit(keys=[keys.MODELS], args=args)
            for m, got in zip(unknown, reply[1::2]):
                if got.decode() == m:
                    self._models_admitted.add(m)
                else:
                    models[m] = OTHER
        asked: dict[str, dict[tuple[str, str], tuple[str, str]]] = defaultdict(dict)  # model -> pair -> answer
        for _, _, p, pairs in misses:
            model = models[p.model]
            known = self._pairs_admitted[model]
            for pair in pairs:
                if pair not in known:
                    asked[model][pair] = pair
        if asked:
            async with self.redis.pipeline(transaction=False) as pipe:
                for model, answers in asked.items():
                    args = [s.max_dimensions, s.max_label_values, keys.MODEL_TTL, *(x for pair in answers for x in pair)]
                    pipe.eval(_ADMIT, 1, keys.model_labels(model), *args)  # EVAL: see apply
                replies = await pipe.execute()
            for (model, answers), reply in zip(asked.items(), replies):
                flat = iter(x.decode() for x in reply)
                for pair in answers:
                    got = (next(flat), next(flat))
                    answers[pair] = got
                    if got == pair:  # only admissions are remembered: a capped value is asked again next time
                        self._pairs_admitted[model].add(pair)
        for i, sig, p, pairs in misses:
            model = models[p.model]
            answers = asked.get(model, {})
            got = [answers.get(pair, pair) for pair in pairs]
            for (dim, value), (gdim, gvalue) in zip(pairs, got):
                if gdim != dim:
                    overflow["dimension"] += 1
                elif gvalue != value:
                    overflow["value"] += 1
            if model != p.model:
                overflow["model"] += 1
            labels = Labels.of(model, got)
            out[i] = labels
            if model == p.model and got == pairs:
                self._labels_seen[sig] = labels
        return out, overflow  # type: ignore[return-value]  # every None was a miss, now filled

    async def apply(self, events: Sequence[Event], offsets: Mapping[tuple[str, int], int], now_ms: int
                    ) -> ApplyResult:
        """Apply predictions, actions and outcomes idempotently, then record the offsets they cover.

        One pipeline for the effects: a script per bucket, then the offsets. Redis executes a connection's
        commands in order and its AOF keeps that order, so an offset that survived a crash implies that the
        effects before it survived too; effects past it are replayed and deduplicated. Every script refuses to
        run on a Redis process other than `run_id` (RedisRestarted), so a batch never lands on top of a hole.
        """
        return await self.send(await self.prepare(events), offsets, now_ms)

    async def prepare(self, events: Sequence[Event]) -> Prepared:
        """The CPU half of `apply`: cap labels, plan features, encode the records of each bucket.

        Talks to Redis only to admit label values or features this worker has not seen; the worker prepares the
        next batch while Redis runs the previous one's scripts (issue 7). A bucket's records are one flat JSON
        array, its predictions naming their (model, version, scopes) by index into a table of the bucket's
        triples, and carrying their `features` object as it came: the script counts the tracked ones (issue 7)."""
        preds = [e for e in events if isinstance(e, PredictionEvent)]
        labels, overflow = await self.admit(preds) if preds else ([], Counter[str]())
        stamps = [epoch_ms(p.ts) for p in preds]
        # features only for models admitted under their own name: a capped-away model keeps no feature keys
        own = [(p, ts) for p, got, ts in zip(preds, labels, stamps) if got.model == p.model]
        feature_plan = await self.features.plan([p for p, _ in own], [ts for _, ts in own])
        tracked = feature_plan.tracked
        n = self.settings.state_buckets
        records: dict[int, list[Any]] = defaultdict(list)
        triples: dict[int, dict[int, int]] = defaultdict(dict)  # bucket -> id(labels) -> index in `table_of`
        table_of: dict[int, list[Labels]] = defaultdict(list)  # (`labels` keeps every one alive meanwhile)
        j = 0
        for event in events:
            if isinstance(event, PredictionEvent):
                got, ts = labels[j], stamps[j]
                j += 1
                b = keys.bucket_of(event.prediction_id, n)
                table = triples[b]
                index = table.get(id(got))
                if index is None:
                    index = table[id(got)] = len(table)
                    table_of[b].append(got)
                # recorded by `_APPLY` exactly when it newly stores the prediction; {} still counts it (missing)
                fx: dict[str, Any] | bool = False
                if got.model == event.model and got.model in tracked:
                    fx = event.features or {}
                    names = tracked[got.model]
                    if not fx.keys() <= names:  # a wide snapshot: only the tracked values travel to Redis
                        fx = {k: v for k, v in fx.items() if k in names}
                # no event_id: a prediction is deduplicated by prediction_id in the slot of its ts
                records[b] += ("p", event.prediction_id, index, ts, event.label, fx)
            else:
                records[keys.bucket_of(event.prediction_id, n)] += _follower(event)  # type: ignore[arg-type, union-attr]
        encoded = {b: (orjson.dumps(recs), orjson.dumps([[t.model, t.version, t.scopes] for t in table_of[b]]))
                   for b, recs in records.items()}
        return Prepared(encoded, feature_plan, {got.model for got in labels}, overflow)

    async def send(self, prepared: Prepared, offsets: Mapping[tuple[str, int], int], now_ms: int) -> ApplyResult:
        """The Redis half of `apply`: one pipeline with a script per bucket, the HLLs, then the offsets."""
        cfg = orjson.dumps({**self._static_cfg(), "now": now_ms, "run_id": self.run_id or "",
                            "ft": {m: sorted(names) for m, names in prepared.features.tracked.items()}})
        result = ApplyResult(overflow=prepared.overflow)
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket, (recs, tri) in prepared.buckets.items():
                # EVAL, not EVALSHA: a script object in a pipeline makes redis-py send SCRIPT EXISTS first, a
                # second round trip per batch; EVALSHA alone could fail NOSCRIPT after a Redis restart while the
                # offsets queued behind it still apply. Redis caches the compiled body by its SHA (issue 7).
                pipe.eval(_APPLY, 2, keys.bucket_meta(bucket), keys.bucket_pending(bucket), cfg, recs, tri)
            self.features.queue(pipe, prepared.features)
            if prepared.models:
                pipe.sadd(keys.MODELS, *prepared.models)
            if offsets:
                self._write_offsets(pipe, offsets)
            replies = await _execute(pipe)
        for reply in replies[: len(prepared.buckets)]:
            result.add([int(x) for x in reply])
        result.untracked_features = prepared.features.untracked
        return result

    def _write_offsets(self, pipe: Any, offsets: Mapping[tuple[str, int], int]) -> None:
        args: list[Any] = [self.run_id or ""]
        for (t, p), o in offsets.items():
            args += [f"{t}:{p}", o]
        pipe.eval(_OFFSETS, 1, keys.OFFSETS, *args)  # EVAL: see apply

    async def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as far as Redis's state goes."""
        raw = await self.redis.hgetall(keys.OFFSETS)
        out = {}
        for k, v in raw.items():
            topic, _, part = as_text(k).rpartition(":")
            out[(topic, int(part))] = int(v)
        return out

    async def peek_window(self, model: str, start_ms: int) -> WindowCounts:
        """A window's counts summed over buckets, without closing it (for status and tests)."""
        counts = WindowCounts()
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in range(self.settings.state_buckets):
                pipe.hgetall(keys.window_counts(b, model, start_ms))
            for reply in await pipe.execute():
                counts.merge([x for kv in reply.items() for x in kv])
        return counts

    async def commit_evaluation(self, model: str, expected_closed: str, closed_ms: int, start_ms: int,
                                summary: bytes, state: bytes, alerts: Sequence[tuple[str, bytes]],
                                keep_from_ms: int) -> bool:
        """Advance the model's closed mark from `expected_closed`; False when another evaluator got there first."""
        args: list[Any] = [expected_closed, str(closed_ms), str(start_ms), summary, state, str(keep_from_ms),
                           str(keys.MODEL_TTL)]
        for alert_id, body in alerts:
            args += [alert_id, body]
        ok = await self._commit(keys=[keys.model_state(model), keys.model_history(model), keys.model_outbox(model)],
                                args=args)
        return bool(ok)

    async def lease(self, model: str, owner: str, ttl_ms: int = keys.LEASE_MS) -> bool:
        """Take or renew the model's evaluation lease; False while another live worker holds it."""
        return bool(await self._lease(keys=[keys.model_lease(model)], args=[owner, str(ttl_ms)]))

    async def ack_alerts(self, model: str, alert_ids: Sequence[str]) -> None:
        """Forget outbox entries the broker acknowledged (one HDEL for a whole burst)."""
        if alert_ids:
            await self.redis.hdel(keys.model_outbox(model), *alert_ids)

    async def tick(self, models: Sequence[str], owner: str, sweep_now_ms: int | None) -> Tick:
        """Everything an evaluator tick needs to know, in one round trip: the model set, and for each of `models`
        its lease (taken or renewed for `owner`), unpublished alerts, closed mark and event time; with
        `sweep_now_ms`, the expired pending actions/outcomes are swept in the same trip.

        `models` is what the caller knew from its last tick (the keys to read must be named before the reply
        says which models exist); models new to it are in `Tick.models` but not in `Tick.seen`."""
        n = self.settings.state_buckets
        fields = [f for m in models for f in (f"wm:{m}", f"first:{m}")]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.MODELS)
            for m in models:
                pipe.eval(_LEASE, 1, keys.model_lease(m), owner, str(keys.LEASE_MS))  # EVAL: see apply
                pipe.hgetall(keys.model_outbox(m))
                pipe.hget(keys.model_state(m), "closed")
            if fields:
                for b in range(n):
                    pipe.hmget(keys.bucket_meta(b), *fields)
            if sweep_now_ms is not None:
                for b in range(n):
                    pipe.eval(_SWEEP, 1, keys.bucket_pending(b), str(sweep_now_ms))
            replies = await pipe.execute()
        it = iter(replies)
        tick = Tick(sorted(as_text(m) for m in next(it)))
        for m in models:
            leased, outbox, closed = next(it), next(it), next(it)
            tick.seen[m] = ModelTick(bool(leased), {as_text(k): as_bytes(v) for k, v in outbox.items()},
                                     as_text(closed) if closed else "")
        if fields:
            for _ in range(n):
                values = next(it)
                for i, m in enumerate(models):
                    wm, first = values[2 * i], values[2 * i + 1]
                    t = tick.seen[m]
                    if wm is not None:
                        t.newest = max(int(wm), t.newest if t.newest is not None else int(wm))
                    if first is not None:
                        t.first = min(int(first), t.first if t.first is not None else int(first))
        if sweep_now_ms is not None:
            swept = [next(it) for _ in range(n)]
            tick.orphans = (sum(int(r[0]) for r in swept), sum(int(r[1]) for r in swept))
        return tick

    async def close_and_read(self, model: str, start_ms: int, end_ms: int, with_state: bool) -> ClosedWindow:
        """Close a window and read what judging it needs, in one round trip: its counts and feature statistics
        per bucket, and with `with_state` the model's detector state, history and annotations."""
        n = self.settings.state_buckets
        out = ClosedWindow()
        async with self.redis.pipeline(transaction=False) as pipe:
            if with_state:
                pipe.hmget(keys.model_state(model), "closed", "state")
                pipe.hgetall(keys.model_history(model))
                pipe.hgetall(keys.model_annotations(model))
            for b in range(n):
                pipe.eval(_CLOSE, 1, keys.bucket_meta(b), model, str(start_ms), str(end_ms))  # EVAL: see apply
            for b in range(n):  # read after the close: no feature statistic lands in a closed window
                pipe.hgetall(keys.feature_stats(b, model, start_ms))
            replies = await pipe.execute()
        if with_state:
            (closed, state), hist, ann = replies[:3]
            out.state = ModelState((closed or b"").decode(), state, {int(k): v for k, v in hist.items()},
                                   [Annotation.model_validate_json(v) for v in ann.values()])
            replies = replies[3:]
        for reply in replies[:n]:
            out.counts.merge(reply)
        out.feature_stats = list(replies[n:])
        return out

    async def add_annotations(self, annotations: Sequence[Annotation],
                              offsets: Mapping[tuple[str, int], int] | None = None) -> int:
        """Store annotations by event_id (a redelivered one keeps the first), then their offsets; returns how many
        were new. Annotations of models over the model cap are dropped (they could explain nothing)."""
        admitted = set()
        if annotations:
            reply = await self._admit(keys=[keys.MODELS], args=[self.settings.max_models, 0, keys.MODEL_TTL]
                                      + [x for a in annotations for x in ("", a.model)])
            admitted = {v.decode() for v in reply[1::2]}
        kept = [a for a in annotations if a.model in admitted]
        async with self.redis.pipeline(transaction=False) as pipe:
            for a in kept:
                pipe.hsetnx(keys.model_annotations(a.model), a.event_id, a.model_dump_json())
                pipe.expire(keys.model_annotations(a.model), keys.MODEL_TTL)
            if offsets:
                self._write_offsets(pipe, offsets)
            replies = await _execute(pipe)
        return sum(int(r) for r in replies[0: 2 * len(kept): 2])

    async def close(self) -> None:
        await self.redis.aclose()


# --- feature health (issue 4) ------------------------------------------------------------------------------
# A prediction's window statistics are written by `_APPLY` itself, in the call that newly stores it (see
# `record_features` there): being newly stored is the once-guard. The HyperLogLogs follow in the same pipeline.

_REGISTER = r"""
local set, cap, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local f = ARGV[i]
  if redis.call('SISMEMBER', set, f) == 1 then
    table.insert(out, f)
  elseif redis.call('SCARD', set) < cap then
    redis.call('SADD', set, f)
    table.insert(out, f)
  end
end
redis.call('EXPIRE', set, ttl)
return out
"""

_STRING_MAX = 256  # bytes of a string value counted (the top-value hash field and the HLL element), cut at a character


def cut(value: str) -> str:
    """A string value's first _STRING_MAX bytes, cut back to a character boundary (as the apply script's `cut`)."""
    if len(value) * 4 <= _STRING_MAX:  # at most 4 bytes per character in UTF-8
        return value
    return value.encode()[:_STRING_MAX].decode("utf-8", "ignore")


@dataclass
class FeaturePlan:
    """What one batch writes for features besides the apply script: HLL elements per key, values over the cap."""

    tracked: dict[str, frozenset[str]] = field(default_factory=dict)  # model -> its tracked names (the script counts them)
    distinct: dict[str, set[str]] = field(default_factory=dict)
    ttl: dict[str, int] = field(default_factory=dict)
    untracked: dict[str, int] = field(default_factory=dict)  # model -> feature values not tracked (over the cap)


class FeatureStore:
    """Feature statistics beside the window counters: written in the apply pipeline, read when a window closes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self._register = store.redis.register_script(_REGISTER)
        self._tracked: dict[str, set[str]] = {}  # per model, as far as this worker knows; the set only grows
        self._full: dict[str, bool] = {}

    async def tracked(self, model: str, names: set[str]) -> set[str]:
        """Which of `names` are tracked for the model: first come first tracked, up to `max_features`."""
        known = self._tracked.get(model, set())
        unknown = names - known
        if unknown and not self._full.get(model, False):
            cap = self.store.settings.for_model(model).max_features
            got = await self._register(keys=[keys.model_features(model)],
                                       args=[cap, keys.MODEL_TTL, *sorted(unknown)])
            known = known | {g.decode() for g in got}
            self._tracked[model] = known
            self._full[model] = len(got) < len(unknown) or len(known) >= cap
        return names & known

    async def plan(self, predictions: Sequence[PredictionEvent], stamps: Sequence[int]) -> FeaturePlan:
        """Register new feature names, list the tracked ones per model, and collect the HLL elements per window.

        The statistics themselves are counted by the apply script from each prediction's `features` object, so
        here the work is per distinct value, not per value (issue 7)."""
        plan = FeaturePlan()
        settings = self.store.settings
        seen: dict[str, set[str]] = defaultdict(set)
        for p in predictions:
            if p.features:
                seen[p.model].update(p.features)
        over: dict[str, set[str]] = {}  # per model: watched names this batch carries that are not tracked
        for model, names in seen.items():
            watched = {f for f in names if features.watched(f, settings.for_model(model))}
            untracked = watched - await self.tracked(model, watched)
            if untracked:
                over[model] = untracked
        sizes: dict[str, int] = {}
        groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for p, ts in zip(predictions, stamps):
            if p.model not in plan.tracked:
                if not self._tracked.get(p.model):
                    continue  # a model that never sent a watched feature keeps no feature statistics
                plan.tracked[p.model] = frozenset(self._tracked[p.model])
                sizes[p.model] = settings.for_model(p.model).window_seconds * 1000
            if p.features:
                groups[(p.model, window_start(ts, sizes[p.model]))].append(p.features)
                if p.model in over:
                    plan.untracked[p.model] = plan.untracked.get(p.model, 0) + len(over[p.model] & p.features.keys())
        for (model, start), values in groups.items():
            ms = settings.for_model(model)
            ttl = ms.window_seconds + ms.allowed_lateness_seconds + keys.WINDOW_MARGIN
            for name in plan.tracked[model]:
                distinct = {v for fx in values if (v := fx.get(name)) is not None}
                if distinct:
                    hll = keys.feature_distinct(model, start, name)
                    plan.distinct[hll] = {"s:" + cut(v) if isinstance(v, str) else "n:" + repr(float(v))
                                          for v in distinct}
                    plan.ttl[hll] = ttl
        return plan

    def queue(self, pipe: Any, plan: FeaturePlan) -> None:
        """Add a batch's distinct-count writes to the apply pipeline (after the counters, before the offsets)."""
        for hll, elements in plan.distinct.items():
            pipe.pfadd(hll, *elements)  # idempotent: a replayed or duplicate value adds nothing
            pipe.expire(hll, plan.ttl[hll])

    async def read(self, model: str, start_ms: int, stats: Sequence[Mapping[bytes, bytes]] | None = None
                   ) -> tuple[int, dict[str, features.FeatureStats]]:
        """A closed window's feature statistics summed over buckets: (predictions recorded, stats per feature).

        `stats`: the per-bucket statistics hashes when already read (Store.close_and_read), saving a round trip."""
        buckets = range(self.store.settings.state_buckets)
        if stats is None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for b in buckets:
                    pipe.hgetall(keys.feature_stats(b, model, start_ms))
                stats = await pipe.execute()
        replies = list(stats)
        n = 0
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        for reply in replies:
            for k, v in reply.items():
                kind, _, name = k.decode().partition("|")
                if kind == "_n":
                    n += int(v)
                elif kind == "lo":
                    lo[name] = min(float(v), lo.get(name, math.inf))
                elif kind == "hi":
                    hi[name] = max(float(v), hi.get(name, -math.inf))
                else:
                    sums[name][kind] += float(v)
        names = sorted(sums)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pfcount(keys.feature_distinct(model, start_ms, name))
                for b in buckets:
                    pipe.hgetall(keys.feature_top(b, model, start_ms, name))
            replies = await pipe.execute()
        out: dict[str, features.FeatureStats] = {}
        step = 1 + len(buckets)
        for i, name in enumerate(names):
            tops: dict[str, int] = defaultdict(int)
            for reply in replies[i * step + 1:(i + 1) * step]:
                for value, count in reply.items():
                    tops[value.decode()] += int(count)  # Space-Saving summaries merge by adding counts
            top_value, top_count = max(tops.items(), key=lambda kv: (kv[1], kv[0])) if tops else (None, 0)
            s = sums[name]
            out[name] = features.FeatureStats(
                n=n, values=int(s["c"]), total=s["s"], squares=s["q"], lo=lo.get(name), hi=hi.get(name),
                strings=int(s["k"]), explicit_nulls=int(s["z"]), distinct=int(replies[i * step]),
                top_value=top_value, top_count=top_count)
        return n, out
