-- Apply one bucket's share of a batch: dedup, join, count, park, record features; one call per bucket per batch.
-- Runs behind the restart guard and the migration check (scripts.py prepends guard.lua, progress.lua, slot.lua).
-- KEYS: the bucket's meta hash, its pending set, and on a Redis Cluster its progress record (offsets hash,
-- event-time hash). ARGV: cfg JSON, records JSON, triples JSON, feature groups JSON, their snapshots JSON (see
-- store.encode), the five key prefixes below, the run id the worker reconciled with for this bucket's shard, the
-- bucket's cluster slot ('' on one node), then (a cluster) the progress triples of the chunk (record_progress).
local meta, pendz = KEYS[1], KEYS[2]
local record_offsets, record_event_time = KEYS[3], KEYS[4]
local cfg = cjson.decode(ARGV[1])
local run_id, slot = ARGV[11], ARGV[12]
local CLAIMS = 13  -- the first ARGV of the progress triples
if not same_server(run_id) then return redis.error_reply('TGRESTART redis restarted') end
if migrating(slot) then return redis.error_reply('TGMIGRATING slot moving') end
-- The records, one flat JSON array (see encode in store.py): a flat array of scalars decodes into one Lua table,
-- not one per record. Prediction records name their (model, version, scopes) by index into the call's triples.
local recs = cjson.decode(ARGV[2])
local tri = cjson.decode(ARGV[3])
-- The bucket's key prefixes, from keys.py: the script appends only the parts keys.py documents for each.
local context_prefix, parked_prefix = ARGV[6], ARGV[7]
local window_prefix = {w = ARGV[8], f = ARGV[9]}  -- window counters, feature statistics
local top_prefix = ARGV[10]

local applied, dup, pending, late, drained, beyond = 0, 0, 0, 0, 0, 0
local closed, touched, first, slots = {}, {}, {}, {}
-- per model and kind ('n' predictions, 'a' actions, 'o' outcomes): {counted, late, beyond the horizon}
local flows = {}
-- window counter increments summed per (key, field) and written once at the end: a batch repeats a few dozen
-- fields thousands of times, and the script is atomic, so the end state is the same with far fewer calls
local incr = {}

local function fmt(x) return string.format('%d', x) end
local MANY = 1000  -- fields per HMGET/HSET: unpack() is bounded by Lua's C stack
local function num(x) return string.format('%.17g', x) end
-- the end of the last window whose stage `stage` ('n', 'a0', 'o2', ...) was judged (keys.bucket_meta)
local function closed_of(model, stage)
  local by_stage = closed[model]
  if by_stage == nil then by_stage = {}; closed[model] = by_stage end
  local c = by_stage[stage]
  if c == nil then
    local field = 'closed:' .. model
    if stage ~= 'n' then field = field .. ':' .. stage end
    c = tonumber(redis.call('HGET', meta, field) or '-1')
    by_stage[stage] = c
  end
  return c
end

local function flow(model, kind, what, by)
  local f = flows[model]
  if f == nil then f = {}; flows[model] = f end
  local k = f[kind]
  if k == nil then k = {0, 0, 0}; f[kind] = k end
  k[what] = k[what] + (by or 1)
end

-- Names a batch builds thousands of times from a few parts are built once per call: Lua strings are interned, so
-- a lookup through nested tables costs less than the concatenations and string.format it saves.
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
    local key = window_prefix[kind] .. model .. ':' .. fmt(start)
    w = {key = key, start = start, stop = start + size, ttl = ttls[model], counts = {}}
    incr[key] = w.counts
    by_start[start] = w
  end
  return w
end

-- count one event (or `by` of them) into window w for the model, its version and every scope
local function count(w, model, version, scopes, counter, by)
  local c, k = w.counts, by or 1
  for _, f in ipairs(fields_of(version, scopes, counter)) do c[f] = (c[f] or 0) + k end
  touched[w.key] = w.ttl
  if first[model] == nil or w.start < first[model] then first[model] = w.start end
end

-- An outcome's value goes into window w's value sums for the model, its version and every scope: `v:` the values'
-- sum, and of the positive ones `vn:` their count, `vl:` and `vq:` the sum and sum of squares of their logs. An
-- event adds to one accumulator per (window, version, scopes, outcome kind, checkpoint); `spread_values` adds the
-- accumulators to every scope's fields once per call (floats into `fsum`, written with the feature sums), so an
-- event's cost does not grow with its scopes.
local fsum = {}
local values_memo, value_acc = {}, {}
local function value_sums(w, version, scopes, outcome, suffix)
  local by_suffix = memo_table(memo_table(memo_table(values_memo, version), scopes), outcome)
  local f = by_suffix[suffix]
  if f == nil then
    local tail = outcome .. suffix
    f = {v = fields_of(version, scopes, 'v:' .. tail), vn = fields_of(version, scopes, 'vn:' .. tail),
         vl = fields_of(version, scopes, 'vl:' .. tail), vq = fields_of(version, scopes, 'vq:' .. tail)}
    by_suffix[suffix] = f
  end
  local acc = value_acc[w.key]
  if acc == nil then acc = {key = w.key, counts = w.counts, list = {}}; value_acc[w.key] = acc end
  local a = acc[f]
  if a == nil then  -- kept in first-seen order too: fields shared by several lists get their sums in one order
    a = {0, 0, 0, 0, f = f}
    acc[f] = a
    acc.list[#acc.list + 1] = a
  end
  return a
end

local function spread_values()
  for _, acc in pairs(value_acc) do
    local sums, c = memo_table(fsum, acc.key), acc.counts
    for _, a in ipairs(acc.list) do
      local f = a.f
      for i = 1, #f.v do
        sums[f.v[i]] = (sums[f.v[i]] or 0) + a[1]
        if a[2] > 0 then
          c[f.vn[i]] = (c[f.vn[i]] or 0) + a[2]
          sums[f.vl[i]] = (sums[f.vl[i]] or 0) + a[3]
          sums[f.vq[i]] = (sums[f.vq[i]] or 0) + a[4]
        end
      end
    end
  end
end

-- a late event of window w (its stage of the window was judged), counted in the window as keys.LATE_FIELD says
local function count_late(w, kind, by)
  local f = cfg.late_field .. kind
  w.counts[f] = (w.counts[f] or 0) + (by or 1)
  touched[w.key] = w.ttl
end

-- Contexts are fields of event-time slot hashes (keys.context_slot): field prediction_id, value
-- '<id>[\029<tokens>]\030<label>'. <id> names the prediction's (model, version, scopes), interned once per bucket
-- in meta ('i:<json>' -> id, 'j:<id>' -> json): a bucket sees a handful of distinct triples while it holds up to
-- millions of contexts. <tokens> are the 16-hex-digit hashes of the event_ids already applied to the prediction.
-- A field in a shared hash costs ~100 bytes less than a key of its own.

-- the interned id of every triple of the call (ARGV[3]), by the records' 0-based index, in one HMGET (and one
-- HINCRBY + HSET for new ones): a call names a few dozen triples, each once
local function intern_all(triples)
  local sigs, fields = {}, {}
  for x, t in ipairs(triples) do
    sigs[x] = cjson.encode({t[1], t[2], t[3]})  -- stored as [model, version, scopes]
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

-- `<at>` is the prediction's ts as ms after its slot's start: a follow-up's age is its ts minus the prediction's
local function pack(id, at, tokens, label)
  if tokens == '' then return id .. ',' .. at .. '\030' .. label end
  return id .. ',' .. at .. '\029' .. tokens .. '\030' .. label
end

-- (id, at, tokens, label) of a packed context: ids, offsets are digits and tokens hex, so the label may hold any
-- byte
local function unpack_ctx(v)
  local id, at, pos = string.match(v, '^(%d+),(%d+)()')
  if string.byte(v, pos) == 29 then
    local stop = string.find(v, '\030', pos + 1, true)
    return id, at, string.sub(v, pos + 1, stop - 1), string.sub(v, stop + 1)
  end
  return id, at, '', string.sub(v, pos + 1)
end

local function has_token(tokens, token)
  for i = 1, #tokens, 16 do
    if string.sub(tokens, i, i + 15) == token then return true end
  end
  return false
end

local triples = {}  -- id -> decoded [model, version, scopes]: a batch's actions share a few ids
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
  if key == nil then key = context_prefix .. fmt(start); slot_keys[start] = key end
  return key
end

-- the slot key, its start and the packed context of an action/outcome's prediction, looked for from slot(ts) back
-- to slot(ts - context_ttl), then one slot ahead (a prediction stamped slightly after its action); nil when absent
local function find(pid, ts)
  local here = ts - (ts % cfg.span)
  local oldest = ts - cfg.ctx_ttl * 1000
  oldest = oldest - (oldest % cfg.span)
  for s = here, oldest, -cfg.span do
    local key = slot_key(s)
    local v = redis.call('HGET', key, pid)
    if v then return key, s, v end
  end
  local key = slot_key(here + cfg.span)
  local v = redis.call('HGET', key, pid)
  if v then return key, here + cfg.span, v end
  return nil, nil, nil
end

-- An action or outcome as the script handles it. Parked ones are stored as JSON under the one-letter names they
-- have always had in Redis (k kind, p prediction_id, e event_id, h token, t ts, a action, l label, o outcome
-- kind, v value), which the sweep reads too; `park` and `unpark` are the only places that know those letters.
local function park(r)
  if r.kind == 'a' then
    return cjson.encode({k = 'a', p = r.prediction_id, e = r.event_id, h = r.token, t = r.ts, a = r.action})
  end
  return cjson.encode({k = 'o', p = r.prediction_id, e = r.event_id, h = r.token, t = r.ts, l = r.label,
                       o = r.outcome, v = r.value})
end
local function unpark(json)
  local q = cjson.decode(json)
  return {kind = q.k, prediction_id = q.p, event_id = q.e, token = q.h, ts = q.t, action = q.a, label = q.l,
          outcome = q.o, value = q.v}
end

-- the checkpoint ages of a model's actions ('a') or outcomes ('o'), ascending (Settings.checkpoints_ms)
local function ages_of(model, kind)
  local cp = cfg.cp[model] or cfg.cp['_']
  return cp[kind]
end

-- An action or outcome meets its prediction (model, version, scopes, label, ts): it counts toward the prediction's
-- window, in the checkpoint its age reaches (windows.checkpoint_of), or the first one after that is still open
-- if that one was judged already (then it is late: that look missed it, the later ones count it). Beyond the last
-- checkpoint (the horizon) it is outside the definition: counted as such, in no window.
local function follow(model, version, scopes, label, pts, r)
  local kind = r.kind
  local ages = ages_of(model, kind)
  local age = r.ts - pts
  if age < 0 then age = 0 end
  local k = nil
  for i, limit in ipairs(ages) do
    if age < limit then k = i; break end
  end
  if k == nil then
    beyond = beyond + 1
    flow(model, kind, 3)
    return
  end
  local w = window_of('w', model, pts)
  local j = k
  while j <= #ages and w.stop <= closed_of(model, kind .. fmt(j - 1)) do j = j + 1 end
  if j > k then
    late = late + 1
    flow(model, kind, 2)
    count_late(w, kind)
    if j > #ages then return end
  else
    applied = applied + 1
    flow(model, kind, 1)
  end
  local suffix = '#' .. fmt(j - 1)
  if kind == 'a' then
    count(w, model, version, scopes, 'a:' .. r.action .. suffix)
    return
  end
  count(w, model, version, scopes, 'o:' .. r.outcome .. suffix)
  if r.label ~= label then count(w, model, version, scopes, 'm:' .. r.outcome .. suffix) end
  -- an outcome without a value is sent as null (cjson.null), one parked before values existed has none (nil);
  -- a positive value is also counted, and its log summed and squared (stream.stats.Amounts: claim severity)
  local x = r.value
  if type(x) == 'number' then
    local a = value_sums(w, version, scopes, r.outcome, suffix)
    a[1] = a[1] + x
    if x > 0 then
      local lx = math.log(x)
      a[2], a[3], a[4] = a[2] + 1, a[3] + lx, a[4] + lx * lx
    end
  end
end

-- Feature statistics of the predictions this call newly stored in an open window; being newly stored is the
-- once-guard, so a duplicate, a replay after a crash, or two workers racing record them once. The worker sends
-- them by group (one model's predictions of one window, see store.encode): each group's summary, added whole when
-- every prediction of the group was newly stored (the common case), and the group's snapshots, decoded and
-- summarised here over the new ones only when some were not. Like the window counters they are summed per (key,
-- field) in the call and written once at its end: counts into `incr`, float sums, minima and maxima here, string
-- values per top-value hash in first-seen order.
local groups = cjson.decode(ARGV[4])  -- per group: {size, summary or null (summarise its snapshots here)}
local snapshots_json = ARGV[5]  -- per group, its snapshots: decoded only for a group with predictions not new
local members = {}  -- group -> {model, ts, seen = its records so far, new = positions of the newly stored ones}
local flo, fhi, tops, top_keys = {}, {}, {}, {}
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

-- features.summarize over the snapshots at `positions`: name -> {numbers, sum, squares, min, max, strings, nulls,
-- {value, count, ...}} (min and max nil without numbers)
local function summarize(snapshots, positions)
  local out, where = {}, {}  -- where: name -> value -> its count's index in the summary's value list
  for _, pos in ipairs(positions) do
    for f, x in pairs(snapshots[pos]) do
      local a = out[f]
      if a == nil then a = {0, 0, 0, nil, nil, 0, 0, {}}; out[f] = a; where[f] = {} end
      local kind = type(x)
      if kind == 'number' then
        a[1], a[2], a[3] = a[1] + 1, a[2] + x, a[3] + x * x
        if a[4] == nil or x < a[4] then a[4] = x end
        if a[5] == nil or x > a[5] then a[5] = x end
      elseif kind == 'string' then
        local v, top = cut(x), a[8]
        a[6] = a[6] + 1
        local at = where[f][v]
        if at == nil then
          top[#top + 1] = v; top[#top + 1] = 0
          at = #top
          where[f][v] = at
        end
        top[at] = top[at] + 1
      else  -- cjson.null: sent as null
        a[7] = a[7] + 1
      end
    end
  end
  return out
end

-- add a summary of n predictions to the model's statistics of window w
local function add_features(m, w, n, summary)
  local key, ttl, counts = w.key, w.ttl, w.counts
  touched[key] = ttl
  local sums, lo, hi = memo_table(fsum, key), memo_table(flo, key), memo_table(fhi, key)
  counts['_n'] = (counts['_n'] or 0) + n
  local wanted = tracked[m] or {}
  for f, a in pairs(summary) do
    if wanted[f] then
      local nm = names_of(f)
      if a[1] > 0 then
        counts[nm.c] = (counts[nm.c] or 0) + a[1]
        sums[nm.s] = (sums[nm.s] or 0) + a[2]
        sums[nm.q] = (sums[nm.q] or 0) + a[3]
        if lo[nm.lo] == nil or a[4] < lo[nm.lo] then lo[nm.lo] = a[4] end
        if hi[nm.hi] == nil or a[5] > hi[nm.hi] then hi[nm.hi] = a[5] end
      end
      if a[6] > 0 then
        counts[nm.k] = (counts[nm.k] or 0) + a[6]
        local tk = nm.top[key]
        if tk == nil then
          tk = top_prefix .. m .. ':' .. fmt(w.start) .. ':' .. f
          nm.top[key] = tk
          touched[tk] = ttl
        end
        local t = tops[tk]
        if t == nil then t = {order = {}, n = {}}; tops[tk] = t; top_keys[#top_keys + 1] = tk end
        local top = a[8]
        for i = 1, #top, 2 do
          local v = top[i]
          if t.n[v] == nil then t.order[#t.order + 1] = v; t.n[v] = 0 end
          t.n[v] = t.n[v] + top[i + 1]
        end
      end
      if a[7] > 0 then counts[nm.z] = (counts[nm.z] or 0) + a[7] end
    end
  end
end

-- a prediction of feature group g, in record order; `new`: this call newly stored it
local function member(g, model, ts, new)
  local m = members[g]
  if m == nil then m = {model = model, ts = ts, seen = 0, new = {}}; members[g] = m end
  m.seen = m.seen + 1
  if new then m.new[#m.new + 1] = m.seen end
end

local function record_features()
  local snapshots = nil
  for g = 1, #groups do
    local m = members[g]
    -- a group's predictions share their window, so its lateness too
    if m ~= nil and #m.new > 0 and window_of('w', m.model, m.ts).stop > closed_of(m.model, 'n') then
      local w = window_of('f', m.model, m.ts)
      local size, summary = groups[g][1], groups[g][2]
      if #m.new == size and summary ~= cjson.null then
        add_features(m.model, w, size, summary)
      else
        snapshots = snapshots or cjson.decode(snapshots_json)
        add_features(m.model, w, #m.new, summarize(snapshots[g], m.new))
      end
    end
  end
end

-- A call's writes to one hash, all in one HMGET and one HSET (per MANY fields): the script is atomic, so reading
-- and writing back ends where one HINCRBY/HINCRBYFLOAT/compare per field would, in a few calls instead of one per
-- field and key. ints/floats: field -> increment; mins/maxs: field -> candidate extreme (any may be nil).
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

-- The predictions this call newly stored, counted per window and triple: into the window, or as late when the
-- window's predictions stage was judged already.
local function count_predictions()
  for model, by_start in pairs(windows.w) do
    for _, w in pairs(by_start) do
      if w.new ~= nil then
        local is_late = w.stop <= closed_of(model, 'n')
        for index, k in pairs(w.new) do
          if is_late then
            late = late + k
            flow(model, 'n', 2, k)
            count_late(w, 'n', k)
          else
            local t = tri[index + 1]
            count(w, model, t[2], t[3], 'n', k)
            applied = applied + k
            flow(model, 'n', 1, k)
          end
        end
      end
    end
  end
end

local any_parked = redis.call('ZCARD', pendz) > 0  -- parking adds to it, draining and the sweep remove
local ids = intern_all(tri)  -- triple index -> interned id

-- a prediction: store its context once (dedup by prediction_id in the slot of its ts), note it for counting and
-- for its features, and drain what was parked for it
local function predict(pid, index, ts, label, g)
  local t = tri[index + 1]
  local model, version, scopes = t[1], t[2], t[3]
  local id = ids[index]
  -- a prediction's slot follows from its own ts, so a redelivered copy meets the stored one
  local sk = slot_key(ts)
  local at = fmt(ts % cfg.span)
  if redis.call('HSETNX', sk, pid, pack(id, at, '', label)) == 0 then
    dup = dup + 1
    if g > 0 then member(g, model, ts, false) end
    return
  end
  slots[sk] = true
  -- counted at the end of the call (count_predictions), per window and triple
  local w = window_of('w', model, ts)
  local new = w.new
  if new == nil then new = {}; w.new = new end
  new[index] = (new[index] or 0) + 1
  if g > 0 then member(g, model, ts, true) end
  -- nothing is parked in a bucket whose pending set is empty (the common case: predictions come first)
  if not any_parked then return end
  local qk = parked_prefix .. pid
  local parked = redis.call('HGETALL', qk)
  if #parked == 0 then return end
  local tokens = ''
  local before = applied
  for j = 2, #parked, 2 do
    local r = unpark(parked[j])
    follow(model, version, scopes, label, ts, r)
    tokens = tokens .. r.token
  end
  -- drained ones are reported apart from this batch's own: they were reported as pending when they came
  drained = drained + (applied - before)
  applied = before
  redis.call('HSET', sk, pid, pack(id, at, tokens, label))
  redis.call('DEL', qk)
  redis.call('ZREM', pendz, pid)
end

-- an action or outcome: count it toward its prediction's context once (dedup by its token there), or park it
local function join(r)
  local sk, slot_start, v = find(r.prediction_id, r.ts)
  if sk then
    local id, at, tokens, label = unpack_ctx(v)
    if has_token(tokens, r.token) then
      dup = dup + 1
    else
      local t = triple(id)
      follow(t[1], t[2], t[3], label, slot_start + tonumber(at), r)
      redis.call('HSET', sk, r.prediction_id, pack(id, at, tokens .. r.token, label))
      slots[sk] = true
    end
    return
  end
  local qk = parked_prefix .. r.prediction_id
  if redis.call('HSETNX', qk, r.event_id, park(r)) == 0 then
    dup = dup + 1  -- parked already
    return
  end
  redis.call('EXPIRE', qk, cfg.pend_ttl * 2)
  any_parked = true
  redis.call('ZADD', pendz, cfg.now + cfg.pend_ttl * 1000, r.prediction_id)
  redis.call('EXPIRE', pendz, cfg.pend_ttl * 2)
  pending = pending + 1
end

-- the records: 'p', prediction_id, triple index, ts, label, feature group (0: the model tracks none)
--            | 'a', prediction_id, event_id, token, ts, action
--            | 'o', prediction_id, event_id, token, ts, label, outcome kind, value (a number or null)
local i, last = 1, #recs
while i <= last do
  local kind = recs[i]
  if kind == 'p' then
    predict(recs[i + 1], recs[i + 2], recs[i + 3], recs[i + 4], recs[i + 5])
    i = i + 6
  elseif kind == 'a' then
    join({kind = 'a', prediction_id = recs[i + 1], event_id = recs[i + 2], token = recs[i + 3], ts = recs[i + 4],
          action = recs[i + 5]})
    i = i + 6
  else
    join({kind = 'o', prediction_id = recs[i + 1], event_id = recs[i + 2], token = recs[i + 3], ts = recs[i + 4],
          label = recs[i + 5], outcome = recs[i + 6], value = recs[i + 7]})
    i = i + 8
  end
end

count_predictions()
record_features()
spread_values()
for key, c in pairs(incr) do write_hash(key, c, fsum[key], flo[key], fhi[key]) end
write_tops()
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
for key in pairs(slots) do redis.call('EXPIRE', key, cfg.ctx_ttl) end
for model, start in pairs(first) do
  local cur = tonumber(redis.call('HGET', meta, 'first:' .. model) or '1e18')
  if start < cur then redis.call('HSET', meta, 'first:' .. model, fmt(start)) end
end
redis.call('EXPIRE', meta, cfg.meta_ttl)
if record_offsets then record_progress(record_offsets, record_event_time, '', CLAIMS) end
local flows_json = '{}'
if next(flows) ~= nil then flows_json = cjson.encode(flows) end
return {applied, dup, pending, late, drained, beyond, flows_json}
