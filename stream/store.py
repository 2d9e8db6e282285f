"""Redis state: the Lua scripts that apply a batch idempotently, close windows, and commit evaluations.

The one rule: every write that must not happen twice is guarded inside the same Lua call that does it.
- `apply` runs one script per bucket touched by a batch (one round trip for the whole batch). The script
  dedups by `event_id` inside the prediction's context hash, joins actions/outcomes to their prediction (or parks
  them until it arrives), and bumps the window counters, refusing events whose window is already closed.
- `close_window` marks a window closed in every bucket and returns its counts in the same call, so nothing can
  be added to a window after it was read.
- `commit_evaluation` advances a model's closed mark only from the value the evaluator read (compare-and-set),
  so two workers, or one worker after a restart, evaluate each window exactly once; its alerts go to an outbox
  that is emptied only once the broker acknowledged them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from . import keys
from .events import Annotation, Event, HumanActionEvent, OutcomeEvent, PredictionEvent, epoch_ms
from .settings import Settings

COUNTERS = ("n", "a:accept", "a:override", "a:bypass", "a:escalate", "o:truth", "o:proxy", "m:truth", "m:proxy")
"""Window counters per (version, scope): predictions, actions by kind, outcomes by kind, mismatches by kind."""

_APPLY = r"""
local meta, pendz = KEYS[1], KEYS[2]
local pre = string.sub(meta, 1, -6)
local cfg = cjson.decode(ARGV[1])
local recs = cjson.decode(ARGV[2])
local applied, dup, pending, late, drained = 0, 0, 0, 0, 0
local closed, touched, wm, first = {}, {}, {}, {}
-- window counter increments summed per (key, field) and written once at the end: a batch repeats a few dozen
-- fields thousands of times, and the script is atomic, so the end state is the same with far fewer calls (issue 7)
local incr = {}

local function fmt(x) return string.format('%d', x) end
local function closed_of(model)
  if closed[model] == nil then closed[model] = tonumber(redis.call('HGET', meta, 'closed:' .. model) or '-1') end
  return closed[model]
end

-- count one event into its window for the model, its version and every scope; false when the window is closed
local function bump(model, version, scopes, ts, counter)
  local size = cfg.win[model] or cfg.win['_']
  local start = ts - (ts % size)
  if start + size <= closed_of(model) then return false end
  local key = pre .. ':w:' .. model .. ':' .. fmt(start)
  local c = incr[key]
  if c == nil then c = {}; incr[key] = c end
  local f = version .. '||' .. counter
  c[f] = (c[f] or 0) + 1
  for scope in string.gmatch(scopes, '[^\031]+') do
    f = version .. '|' .. scope .. '|' .. counter
    c[f] = (c[f] or 0) + 1
  end
  touched[key] = cfg.ttl[model] or cfg.ttl['_']
  if wm[model] == nil or ts > wm[model] then wm[model] = ts end
  if first[model] == nil or start < first[model] then first[model] = start end
  return true
end

-- A context hash holds one field 'm' = '<id>\030<label>': <id> names the prediction's (model, version, scopes),
-- interned once per bucket in meta ('i:<json>' -> id, 'j:<id>' -> json). A bucket sees a handful of distinct
-- triples while it holds up to millions of contexts, so each context stores ~10 bytes instead of ~60 (issue 7).
-- The prediction's own event_id is not kept: a prediction is deduplicated by prediction_id ('m' exists).
local function intern(m, v, s)
  local sig = cjson.encode({m, v, s})
  local id = redis.call('HGET', meta, 'i:' .. sig)
  if not id then
    id = fmt(redis.call('HINCRBY', meta, 'i#', 1))
    redis.call('HSET', meta, 'i:' .. sig, id, 'j:' .. id, sig)
  end
  return id
end

-- {model, version, label, scopes} of a stored context, or nil when the prediction has not arrived
local triples = {}  -- id -> decoded {model, version, scopes}: a batch's actions share a few ids
local function context(ck)
  local packed = redis.call('HGET', ck, 'm')
  if not packed then return nil end
  local sep = string.find(packed, '\030', 1, true)  -- ids are digits, so the first separator ends the id
  local id = string.sub(packed, 1, sep - 1)
  local t = triples[id]
  if t == nil then
    t = cjson.decode(redis.call('HGET', meta, 'j:' .. id))
    triples[id] = t
  end
  return {t[1], t[2], string.sub(packed, sep + 1), t[3]}
end

local function follow(ctx, r)
  -- an action or outcome meets its prediction context {model, version, label, scopes}
  if r.k == 'a' then return bump(ctx[1], ctx[2], ctx[4], r.t, 'a:' .. r.a) end
  local ok = bump(ctx[1], ctx[2], ctx[4], r.t, 'o:' .. r.o)
  if ok and r.l ~= ctx[3] then bump(ctx[1], ctx[2], ctx[4], r.t, 'm:' .. r.o) end
  return ok
end

for _, r in ipairs(recs) do
  local ck = pre .. ':c:' .. r.p
  if r.k == 'p' then
    if redis.call('HEXISTS', ck, 'm') == 1 then
      dup = dup + 1
    else
      -- Without 'm' the hash can only hold parked 'q:' fields; when it does not exist at all (the common case:
      -- the prediction comes first) there is nothing to drain and no pending entry to remove (issue 7).
      local parked = redis.call('EXISTS', ck) == 1
      redis.call('HSET', ck, 'm', intern(r.m, r.v, r.s) .. '\030' .. r.l)
      redis.call('EXPIRE', ck, cfg.ctx_ttl)
      if bump(r.m, r.v, r.s, r.t, 'n') then applied = applied + 1 else late = late + 1 end
      local ctx = {r.m, r.v, r.l, r.s}
      local all = parked and redis.call('HGETALL', ck) or {}
      for i = 1, #all, 2 do
        local f = all[i]
        if string.sub(f, 1, 2) == 'q:' then
          local q = cjson.decode(all[i + 1])
          if follow(ctx, q) then drained = drained + 1 else late = late + 1 end
          redis.call('HDEL', ck, f)
          redis.call('HSET', ck, 'x:' .. string.sub(f, 3), 1)
        end
      end
      if parked then redis.call('ZREM', pendz, r.p) end
    end
  else
    local xf, qf = 'x:' .. r.e, 'q:' .. r.e
    if redis.call('HEXISTS', ck, xf) == 1 or redis.call('HEXISTS', ck, qf) == 1 then
      dup = dup + 1
    else
      local ctx = context(ck)
      if ctx then
        if follow(ctx, r) then applied = applied + 1 else late = late + 1 end
        redis.call('HSET', ck, xf, 1)
      else
        redis.call('HSET', ck, qf, cjson.encode(r))
        if redis.call('TTL', ck) < 0 then redis.call('EXPIRE', ck, cfg.pend_ttl) end
        redis.call('ZADD', pendz, cfg.now + cfg.pend_ttl * 1000, r.p)
        redis.call('EXPIRE', pendz, cfg.pend_ttl * 2)
        pending = pending + 1
      end
    end
  end
end

for key, c in pairs(incr) do
  for f, n in pairs(c) do redis.call('HINCRBY', key, f, n) end
end
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
for model, ts in pairs(wm) do
  local cur = tonumber(redis.call('HGET', meta, 'wm:' .. model) or '-1e18')
  if ts > cur then redis.call('HSET', meta, 'wm:' .. model, fmt(ts)) end
  local f = tonumber(redis.call('HGET', meta, 'first:' .. model) or '1e18')
  if first[model] < f then redis.call('HSET', meta, 'first:' .. model, fmt(first[model])) end
end
if late > 0 then redis.call('HINCRBY', meta, 'late', late) end
redis.call('EXPIRE', meta, cfg.meta_ttl)
return {applied, dup, pending, late, drained}
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

_SWEEP = r"""
local pendz = KEYS[1]
local pre = string.sub(pendz, 1, -9)
local due = redis.call('ZRANGEBYSCORE', pendz, '-inf', ARGV[1], 'LIMIT', 0, 1000)
local actions, outcomes = 0, 0
for _, pid in ipairs(due) do
  local ck = pre .. ':c:' .. pid
  if redis.call('HEXISTS', ck, 'm') == 0 then
    local all = redis.call('HGETALL', ck)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 2) == 'q:' then
        if cjson.decode(all[i + 1]).k == 'a' then actions = actions + 1 else outcomes = outcomes + 1 end
      end
    end
    redis.call('DEL', ck)
  end
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

    def add(self, other: Sequence[int]) -> None:
        self.applied += other[0]
        self.duplicates += other[1]
        self.pending += other[2]
        self.late += other[3]
        self.drained += other[4]


@dataclass(slots=True)
class WindowCounts:
    """Counters of one closed window: (version, scope, counter) -> count, summed over buckets."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def merge(self, flat: Sequence[bytes]) -> None:
        for i in range(0, len(flat), 2):
            version, scope, counter = flat[i].decode().split("|", 2)
            key = (version, scope, counter)
            self.counts[key] = self.counts.get(key, 0) + int(flat[i + 1])


def scopes_of(event: PredictionEvent, band: str) -> list[str]:
    """Scopes a prediction counts in besides the whole model: its band and each segment dimension=value."""
    scopes = [f"band={band}"]
    for dim, value in sorted((event.segment or {}).items()):
        scopes.append(f"{dim}={value}")
    return scopes


def _record(event: Event, settings: Settings) -> dict[str, Any]:
    ts = epoch_ms(event.ts)  # type: ignore[union-attr]
    if isinstance(event, PredictionEvent):
        ms = settings.for_model(event.model)
        band = event.band or ms.band_for(event.score)
        # '|' separates version, scope and counter in a counter field; keep it out of the parts.
        scopes = "\x1f".join(s.replace("|", "/") for s in scopes_of(event, band))
        return {"k": "p", "p": event.prediction_id, "e": event.event_id, "m": event.model,
                "v": event.model_version.replace("|", "/"), "t": ts, "l": event.label, "s": scopes}
    if isinstance(event, HumanActionEvent):
        return {"k": "a", "p": event.prediction_id, "e": event.event_id, "t": ts, "a": event.action}
    assert isinstance(event, OutcomeEvent)
    return {"k": "o", "p": event.prediction_id, "e": event.event_id, "t": ts, "l": event.label, "o": event.kind}


class Store:
    """All of trustgap's Redis traffic; one instance per worker process."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._apply = client.register_script(_APPLY)
        self._close = client.register_script(_CLOSE)
        self._commit = client.register_script(_COMMIT)
        self._sweep = client.register_script(_SWEEP)
        self._cfg_cache: dict[str, Any] | None = None

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
                               "pend_ttl": s.pending_ttl_seconds, "meta_ttl": keys.META_TTL}
        return self._cfg_cache

    async def apply(self, events: Iterable[Event], offsets: Mapping[tuple[str, int], int], now_ms: int
                    ) -> ApplyResult:
        """Apply predictions, actions and outcomes idempotently, then record the offsets they cover.

        One pipeline, one round trip: a script per bucket, then the offsets. Redis executes a connection's
        commands in order and its AOF keeps that order, so an offset that survived a crash implies that the
        effects before it survived too; effects past it are replayed and deduplicated.
        """
        buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
        models = set()
        n = self.settings.state_buckets
        for event in events:
            if isinstance(event, PredictionEvent):
                models.add(event.model)
            buckets[keys.bucket_of(event.prediction_id, n)].append(_record(event, self.settings))  # type: ignore
        cfg = orjson.dumps({**self._static_cfg(), "now": now_ms})
        result = ApplyResult()
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket, recs in buckets.items():
                # EVAL, not EVALSHA: a script object in a pipeline makes redis-py send SCRIPT EXISTS first, a
                # second round trip per batch; EVALSHA alone could fail NOSCRIPT after a Redis restart while the
                # offsets queued behind it still apply. Redis caches the compiled body by its SHA (issue 7).
                pipe.eval(_APPLY, 2, keys.bucket_meta(bucket), keys.bucket_pending(bucket), cfg, orjson.dumps(recs))
            if models:
                pipe.sadd(keys.MODELS, *models)
            if offsets:
                pipe.hset(keys.OFFSETS, mapping={f"{t}:{p}": o for (t, p), o in offsets.items()})
            replies = await pipe.execute()
        for reply in replies[: len(buckets)]:
            result.add([int(x) for x in reply])
        return result

    async def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as far as Redis's state goes."""
        raw = await self.redis.hgetall(keys.OFFSETS)
        out = {}
        for k, v in raw.items():
            topic, _, part = k.decode().rpartition(":")
            out[(topic, int(part))] = int(v)
        return out

    async def models(self) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(keys.MODELS))

    async def event_time(self, model: str) -> tuple[int | None, int | None]:
        """(newest event ms, earliest window start) for a model over all buckets; None before any data."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in range(self.settings.state_buckets):
                pipe.hmget(keys.bucket_meta(b), f"wm:{model}", f"first:{model}")
            replies = await pipe.execute()
        wms = [int(w) for w, _ in replies if w is not None]
        firsts = [int(f) for _, f in replies if f is not None]
        return (max(wms) if wms else None, min(firsts) if firsts else None)

    async def close_window(self, model: str, start_ms: int, end_ms: int) -> WindowCounts:
        """Close the window in every bucket and return its summed counts (atomic per bucket)."""
        counts = WindowCounts()
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in range(self.settings.state_buckets):
                pipe.eval(_CLOSE, 1, keys.bucket_meta(b), model, str(start_ms), str(end_ms))  # EVAL: see apply
            for reply in await pipe.execute():
                counts.merge(reply)
        return counts

    async def peek_window(self, model: str, start_ms: int) -> WindowCounts:
        """A window's counts summed over buckets, without closing it (for status and tests)."""
        counts = WindowCounts()
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in range(self.settings.state_buckets):
                pipe.hgetall(keys.window_counts(b, model, start_ms))
            for reply in await pipe.execute():
                counts.merge([x for kv in reply.items() for x in kv])
        return counts

    async def model_state(self, model: str) -> tuple[str, bytes | None, dict[int, bytes]]:
        """(closed mark as stored, detector state JSON, history: window start -> summary JSON)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.model_state(model), "closed", "state")
            pipe.hgetall(keys.model_history(model))
            (closed, state), hist = await pipe.execute()
        return ((closed or b"").decode(), state, {int(k): v for k, v in hist.items()})

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

    async def outbox(self, model: str) -> list[bytes]:
        return list((await self.redis.hgetall(keys.model_outbox(model))).values())

    async def ack_alert(self, model: str, alert_id: str) -> None:
        await self.redis.hdel(keys.model_outbox(model), alert_id)

    async def add_annotations(self, annotations: Sequence[Annotation]) -> int:
        """Store annotations by event_id (a redelivered one overwrites itself); returns how many were new."""
        new = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for a in annotations:
                pipe.hsetnx(keys.model_annotations(a.model), a.event_id, a.model_dump_json())
                pipe.expire(keys.model_annotations(a.model), keys.MODEL_TTL)
                pipe.sadd(keys.MODELS, a.model)
            replies = await pipe.execute()
        new = sum(int(r) for r in replies[0::3])
        return new

    async def annotations(self, model: str) -> list[Annotation]:
        raw = await self.redis.hgetall(keys.model_annotations(model))
        return [Annotation.model_validate_json(v) for v in raw.values()]

    async def sweep_pending(self, now_ms: int) -> tuple[int, int]:
        """Drop actions/outcomes whose prediction never came; returns (actions, outcomes) expired."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in range(self.settings.state_buckets):
                pipe.eval(_SWEEP, 1, keys.bucket_pending(b), str(now_ms))  # EVAL: see apply
            replies = await pipe.execute()
        return sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()
