"""The Lua scripts, each read once from `stream/state/lua/<name>.lua` when this module is imported.

Some scripts get shared functions in front of them here and nowhere else (PRELUDES): the restart guard
(`guard.lua`), the progress recorder (`progress.lua`), the slot migration check (`slot.lua`). Each script's header
says what its KEYS and ARGV are; key names come from `keys.py`.

The scripts inside pipelines travel with every EVAL (see Store.send), so the source sent has its comment lines
blanked: a third fewer bytes per call, and an error's line number is still the file's line number (counted from
the first prelude's first line where a script has preludes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

PRELUDES = {"apply": ("guard", "progress", "slot"), "offsets": ("guard", "progress"), "sweep": ("slot",)}
"""The shared functions put in front of a script: the restart guard and the progress recorder for the scripts that
record progress (they must refuse to run on a Redis process other than the one reconciled with), the migration
check for those that touch keys they do not name."""

NAMES = ("guard", "progress", "slot", "apply", "offsets", "idle", "admit", "close", "commit", "lease", "sweep",
         "distinct")


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
    source = _COMMENT_LINE.sub("", "".join(read(lib) for lib in PRELUDES.get(name, ())) + body)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


APPLY = _build("apply")
OFFSETS = _build("offsets")
IDLE = _build("idle")
ADMIT = _build("admit")
CLOSE = _build("close")
COMMIT = _build("commit")
LEASE = _build("lease")
SWEEP = _build("sweep")
DISTINCT = _build("distinct")

ALL = (APPLY, OFFSETS, IDLE, ADMIT, CLOSE, COMMIT, LEASE, SWEEP, DISTINCT)
