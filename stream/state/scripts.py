"""The Lua scripts, each read once from `stream/state/lua/<name>.lua` when this module is imported.

Scripts that record progress (`apply`, `offsets`) get the restart guard (`guard.lua`) in front of them here and
nowhere else. Each script's header says what its KEYS and ARGV are; key names come from `keys.py`.

The scripts inside pipelines travel with every EVAL (see Store.send), so the source sent has its comment lines
blanked: a third fewer bytes per call, and an error's line number is still the file's line number (counted from
the guard's first line for a guarded script).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

GUARDED = frozenset({"apply", "offsets"})
"""Scripts that record progress, so must refuse to run on a Redis process other than the one reconciled with."""

NAMES = ("guard", "apply", "offsets", "idle", "admit", "close", "commit", "lease", "sweep")


@dataclass(frozen=True, slots=True)
class Script:
    """One script's source as sent to Redis (guard included where it applies), and its SHA1 as Redis names it."""

    name: str
    source: str
    sha: str


def read(name: str) -> str:
    """A script's own text, as in its file."""
    return (files("stream.state") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_COMMENT_LINE = re.compile(r"^[ \t]*--.*$", re.MULTILINE)  # the scripts use no --[[ ]] blocks (a test checks)


def _build(name: str) -> Script:
    body = read(name)
    source = _COMMENT_LINE.sub("", read("guard") + body if name in GUARDED else body)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


APPLY = _build("apply")
OFFSETS = _build("offsets")
IDLE = _build("idle")
ADMIT = _build("admit")
CLOSE = _build("close")
COMMIT = _build("commit")
LEASE = _build("lease")
SWEEP = _build("sweep")

ALL = (APPLY, OFFSETS, IDLE, ADMIT, CLOSE, COMMIT, LEASE, SWEEP)
