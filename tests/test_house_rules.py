"""House rules read from the source: test modules import no other test module, no text cites an issue number,
and no function in `stream/` runs past 60 lines without saying why.

Pure and fast: the files are parsed (ast, tokenize), never imported or run.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# Where the code lives; examples/ is the SDK's sample and is held to the same rule.
CODE_DIRS = ("stream", "bench", "deploy", "scripts", "tests", "examples")
# Text files outside Python that carry comments: Lua scripts, alert rules, compose and provisioning files.
OTHER_SUFFIXES = (".lua", ".yml", ".yaml", ".toml", ".sh")
ROOT_FILES = ("pyproject.toml", "Makefile")

# "issue" or "issues", maybe a "#", then a number, in any case: a reader of the repo has no tracker to look it up in.
ISSUE_CITATION = re.compile(r"\bissues?\s*#?\s*\d", re.IGNORECASE)
MAX_FUNCTION_LINES = 60
LONG_BECAUSE = re.compile(r"(?:^|[.!?:]\s+|\n\s*)Long because\b")


def python_files(*dirs: str) -> Iterator[Path]:
    for d in dirs:
        yield from sorted(p for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts)


# --- test modules import no other test module -----------------------------------------------------------------

def _test_module_names() -> set[str]:
    return {p.stem for p in TESTS.glob("test_*.py")}


def _imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{a.name}") for a in node.names)


def cross_test_imports() -> list[str]:
    """Each `file:line module` where a file under tests/ imports a test module (tests.test_x, or test_x)."""
    tests = _test_module_names()
    found = []
    for path in python_files("tests"):
        for lineno, name in _imported(ast.parse(path.read_text(), str(path))):
            parts = name.split(".")
            if (parts[:1] == ["tests"] and len(parts) > 1 and parts[1] in tests) or parts[0] in tests:
                found.append(f"{path.relative_to(ROOT)}:{lineno} {name}")
    return sorted(set(found))


def test_no_test_module_imports_another() -> None:
    # Shared builders and fixtures' helpers live in tests/support/: a test module's own helpers stay its own.
    assert cross_test_imports() == []


def test_the_import_scan_sees_a_test_module_import() -> None:
    tree = ast.parse("from tests.test_pipeline import generate\nimport test_hostile\nfrom tests.support import x\n")
    names = [name for _, name in _imported(tree)]
    tests = _test_module_names()
    assert {"tests.test_pipeline", "test_hostile"} <= set(names) and {"test_pipeline", "test_hostile"} <= tests


# --- no issue numbers ----------------------------------------------------------------------------------------

def python_text(source: str) -> Iterator[tuple[int, str]]:
    """Comments and string literals (docstrings, descriptions, Lua kept in strings) with their first line."""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            yield tok.start[0], tok.string
        elif tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            yield tok.start[0], tok.string


def issue_citations() -> list[str]:
    """Each `file:line` whose comment or string cites an issue number."""
    found: list[str] = []
    for path in python_files(*CODE_DIRS):
        for lineno, text in python_text(path.read_text()):
            for i, line in enumerate(text.splitlines()):
                if ISSUE_CITATION.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{lineno + i}")
    others = [ROOT / f for f in ROOT_FILES] + [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*"))
                                                if p.suffix in OTHER_SUFFIXES and ".venv" not in p.parts]
    for path in others:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if ISSUE_CITATION.search(line):
                found.append(f"{path.relative_to(ROOT)}:{lineno}")
    return found


def test_no_comment_or_docstring_cites_an_issue_number() -> None:
    # Say the reason itself: the number means nothing to a reader of the repo.
    assert issue_citations() == []


def test_the_citation_pattern_matches_what_it_must_and_no_more() -> None:
    n = 7  # the cases are f-strings so that this file does not cite an issue itself
    cited = [f"(issue {n})", f"issues {n} and 4", f"Issue #{n}", f"see issue#{n}", f"ISSUE {n}"]
    clean = ["an issue with ordering", "issues arise", "tissue 5", "the 7 issues", "issuer 3"]
    assert [bool(ISSUE_CITATION.search(s)) for s in cited + clean] == [True] * len(cited) + [False] * len(clean)


# --- short functions -----------------------------------------------------------------------------------------

def long_functions() -> list[str]:
    """Each `file:line name (n lines)` of a function in stream/ over the limit whose docstring says not why."""
    found = []
    for path in python_files("stream"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_FUNCTION_LINES and not LONG_BECAUSE.search(ast.get_docstring(node) or ""):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_stream_is_longer_than_60_lines_unless_it_says_why() -> None:
    assert long_functions() == []


def test_long_because_counts_only_as_the_start_of_a_sentence() -> None:
    assert LONG_BECAUSE.search("Apply a batch.\n\nLong because the script's steps share locals.")
    assert LONG_BECAUSE.search("Apply a batch. Long because one round trip.")
    assert not LONG_BECAUSE.search("Apply a batch, not long because short.")
