"""The code stays ruff-clean under pyproject's [tool.ruff] (pyflakes, pycodestyle, bugbear, complexity <= 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ("stream", "tests", "bench", "deploy", "scripts", "examples")


@pytest.mark.integration
def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", *LINTED],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
