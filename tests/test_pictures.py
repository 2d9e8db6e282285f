"""The docs' pictures: the committed SVGs are what scripts/docs_pictures.py draws from the code now, and the report's
screenshot, taken in headless Chromium, is a real picture of the page.

The SVGs are compared byte for byte (the script fixes the hash salt, the date and the font); a PNG depends on the
machine's fonts, so the screenshot is checked for being sane, never for being equal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from scripts import docs_pictures
from stream.report import VERDICT_COLOUR
from stream.settings import Settings

REGENERATE = "run `python -m scripts.docs_pictures` and commit docs/img/"


def test_committed_svgs_equal_what_the_script_draws(tmp_path: Path) -> None:
    drawn = docs_pictures.generated(tmp_path)
    assert sorted(p.name for p in drawn) == ["dataflow.svg", "windows.svg"]
    stale = [p.name for p, text in drawn.items() if not (docs_pictures.IMG / p.name).exists()
             or (docs_pictures.IMG / p.name).read_text() != text]
    assert stale == [], f"docs/img/{', docs/img/'.join(stale)} drifted: {REGENERATE}"


def test_drawing_twice_gives_the_same_bytes_and_keeps_text_as_text() -> None:
    first, second = docs_pictures.dataflow_svg(), docs_pictures.dataflow_svg()
    assert first == second
    assert "<dc:date>" not in first and "font-family: 'DejaVu Sans'" in first
    assert ">trustgap.predictions</text>" in first  # a topic name is searchable text, not a path of glyphs


def test_the_pictures_are_drawn_from_the_settings_not_from_copied_numbers() -> None:
    # a changed default shows in the picture, so the drift test catches a default that moved under the docs
    changed = Settings(defaults={"allowed_lateness_seconds": 900, "baseline_windows": 24}, app_id="fraud")
    windows = docs_pictures.windows_svg(changed)
    assert "allowed_lateness_seconds (900 s)" in windows and "baseline_windows = 24" in windows
    assert "allowed_lateness_seconds (600 s)" in docs_pictures.windows_svg()
    assert "app_id: fraud" in docs_pictures.dataflow_svg(changed)
    topics = Settings().topics
    dataflow = docs_pictures.dataflow_svg()
    assert all(f">{name}</text>" in dataflow for name in topics.model_dump().values())


def test_every_checkpoint_of_the_defaults_is_on_the_timeline() -> None:
    m = Settings().defaults
    windows = docs_pictures.windows_svg()
    for kind, ages in (("a", m.checkpoints_ms("a")), ("o", m.checkpoints_ms("o"))):
        for i, age in enumerate(ages):
            assert f">{kind}{i}</text>" in windows
            assert f"end + {docs_pictures.human(age // 1000)}" in windows
    assert f">{kind}{len(ages)}</text>" not in windows  # and no checkpoint more than the settings give


@pytest.mark.integration
@pytest.mark.skipif(docs_pictures.CHROMIUM is None,
                    reason="Debian package `chromium` is not installed (apt-get install chromium)")
def test_the_report_screenshot_is_a_real_picture_of_the_page(tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    docs_pictures.report_png(png)  # what `python -m scripts.docs_pictures --screenshot` writes to docs/img/
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.size == docs_pictures.VIEWPORT
        colours = {rgb: n for n, rgb in image.convert("RGB").getcolors(maxcolors=image.width * image.height)}
    # a page, not a blank or an error screen: text and plots on a mostly white ground
    assert len(colours) > 200
    assert max(colours, key=colours.__getitem__) == (255, 255, 255)
    assert colours[(255, 255, 255)] < 0.95 * sum(colours.values())
    # the gate's verdict on the first screen, in its colour (the simulated trust decay holds the gate)
    hold = tuple(int(VERDICT_COLOUR["hold"][i:i + 2], 16) for i in (1, 3, 5))
    assert colours.get(hold, 0) > 500
