"""`stream/` type-checks under mypy --strict (pyproject's [tool.mypy]), so the types in it stay true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_stream_is_mypy_strict_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "stream"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
