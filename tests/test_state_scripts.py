"""The Lua scripts: one file each, loaded once, the restart guard in front of exactly the ones that record progress,
and every one accepted by a real redis-server."""

from __future__ import annotations

import asyncio
import re
from importlib.resources import files
from typing import Any

import pytest
import redis

from stream.embedded import StackInfo
from stream.errors import RedisRestarted
from stream.events import PredictionEvent
from stream.settings import load
from stream.state import Progress, Store, scripts
from stream.state.labels import admit_names

LUA = files("stream.state") / "lua"


def test_every_lua_file_is_a_named_script_and_every_name_has_its_file() -> None:
    on_disk = {p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua")}
    assert on_disk == set(scripts.NAMES)
    preludes = {lib for libs in scripts.PRELUDES.values() for lib in libs}
    assert {s.name for s in scripts.ALL} == set(scripts.NAMES) - preludes  # a prelude only ever runs prepended


def test_the_guard_is_prepended_to_the_scripts_that_record_progress_and_to_no_other() -> None:
    for s in scripts.ALL:
        assert ("local function same_server" in s.source) == (s.name in {"apply", "offsets"}), s.name
        assert ("local function record_progress" in s.source) == (s.name in {"apply", "offsets"}), s.name


def test_the_scripts_that_touch_keys_they_do_not_name_check_for_a_slot_migration() -> None:
    # the apply script's context slots, windows and parked keys, the sweep's parked keys: not in KEYS
    for s in scripts.ALL:
        assert ("local function migrating" in s.source) == (s.name in {"apply", "sweep"}), s.name


def test_the_source_sent_keeps_every_line_so_an_error_names_the_files_line() -> None:
    # comment lines are blanked, not removed; a --[[ block would defeat that, so none is used
    for s in scripts.ALL:
        text = scripts.read(s.name)
        assert "--[[" not in text
        preludes = "".join(scripts.read(lib) for lib in scripts.PRELUDES.get(s.name, ()))
        assert s.source.count("\n") == (preludes + text).count("\n")
        assert "--" not in "".join(line.split("--")[0] for line in s.source.splitlines())  # no comment line left


def test_every_script_names_its_keys_and_argv_in_locals_and_uses_the_names() -> None:
    # a fixed KEYS[n]/ARGV[n] appears only where a top-level local gets its name (variadic tails are looped over)
    fixed = re.compile(r"\b(KEYS|ARGV)\[\d+\]")
    for name in scripts.NAMES:
        for line in scripts.read(name).splitlines():
            if fixed.search(line.split("--")[0]):
                assert line.startswith("local "), (name, line)


@pytest.mark.integration
@pytest.mark.parametrize("name", scripts.NAMES)
def test_each_lua_file_loads_into_redis(redis_client: redis.Redis, name: str) -> None:
    assert redis_client.script_load(scripts.read(name))


@pytest.mark.integration
@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_each_script_as_sent_loads_into_redis_under_its_sha(redis_client: redis.Redis,
                                                            script: scripts.Script) -> None:
    assert redis_client.script_load(script.source) == script.sha


def _pred(i: int) -> PredictionEvent:
    return PredictionEvent.model_validate({"schema_version": 1, "event_id": f"p{i}", "prediction_id": f"id{i}",
                                           "model": "m", "model_version": "v1", "ts": "2026-11-20T00:00:00Z",
                                           "label": "a"})


@pytest.mark.integration
def test_the_guarded_scripts_refuse_another_redis_process(stack: StackInfo, redis_client: redis.Redis) -> None:
    store = Store.from_settings(load(None, redis_url=stack.redis_url, state_buckets=2))

    async def go() -> list[Any]:
        out: list[Any] = []
        try:
            store.run_id = "0" * 40  # not this server's run id
            for call in (lambda: store.apply([_pred(1)], Progress({("t", 0): 5}), 0),
                         lambda: store.add_annotations([], Progress({("t", 0): 5}))):
                try:
                    await call()
                    out.append("applied")
                except RedisRestarted:
                    out.append("refused")
            out.append(await store.offsets())
            store.run_id = await store.server_run_id()
            await store.apply([_pred(1)], Progress({("t", 0): 5}), 0)
            out.append(await store.offsets())
        finally:
            await store.close()
        return out

    assert asyncio.run(go()) == ["refused", "refused", {}, {("t", 0): 5}]


@pytest.mark.integration
def test_one_admission_script_caps_feature_names_as_the_registration_did(stack: StackInfo,
                                                                         redis_client: redis.Redis) -> None:
    # first come first admitted up to the cap, a known name always admitted again, '' answering a refusal
    async def go() -> list[list[str]]:
        client = Store.from_settings(load(None, redis_url=stack.redis_url)).redis
        try:
            return [await admit_names(client, "{tg:m:m}:feats", 2, ["a", "b", "c"], refused=""),
                    await admit_names(client, "{tg:m:m}:feats", 2, ["c", "b", "__other__"], refused="")]
        finally:
            await client.aclose()

    assert asyncio.run(go()) == [["a", "b", ""], ["", "b", ""]]
    assert redis_client.smembers("{tg:m:m}:feats") == {b"a", b"b"}
    assert 0 < redis_client.ttl("{tg:m:m}:feats")
