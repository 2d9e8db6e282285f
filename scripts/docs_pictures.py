"""Draw the docs' pictures: the data-flow diagram and the windows timeline (SVG, drawn from the code's own names
and defaults), and a screenshot of the HTML report (PNG, taken in headless Chromium).

    python -m scripts.docs_pictures               # rewrite docs/img/dataflow.svg and docs/img/windows.svg
    python -m scripts.docs_pictures --check       # exit 1 listing the SVGs that differ from what the code draws
    python -m scripts.docs_pictures --screenshot  # also rewrite docs/img/report.png (needs `chromium`)

The SVGs are deterministic (fixed hash salt, no date, text kept as text in one font, DejaVu Sans, which matplotlib
ships), so tests/test_pictures.py regenerates them and fails on a difference. The screenshot depends on the
machine's fonts: it is checked for being a real picture, never compared.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

# Imported here, not in the functions: building matplotlib's font cache the first time may run `fc-list`, which
# belongs to the import, not to a test that draws.
import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from stream.embedded import stop
from stream.settings import ModelSettings, Settings
from deploy.generate import stale, write_or_check

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
RC = {"svg.fonttype": "none", "svg.hashsalt": "trustgap-docs", "font.family": "sans-serif",
      "font.sans-serif": ["DejaVu Sans"], "font.monospace": ["DejaVu Sans Mono"], "font.size": 10}
METADATA = {"Date": None, "Creator": "python -m scripts.docs_pictures"}

# One colour per part of the system, the same in both pictures: (fill, edge).
KAFKA = ("#fff1dc", "#c9731c")
WORKER = ("#e6f0fb", "#2b6cb0")
REDIS = ("#fde6e3", "#c0392b")
PURE = ("#e6f4e2", "#2f855a")
OPS = ("#f0eaf8", "#6b46c1")
OUTSIDE = ("#f3f3f3", "#555555")
INK = "#222222"
MUTED = "#555555"


# --- drawing helpers ---------------------------------------------------------------------------------------------

@contextmanager
def canvas(width: float, height: float) -> Iterator[tuple[Figure, Axes]]:
    """A figure whose one axes spans it in inches (x right, y up), drawn with the fixed style."""
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.axis("off")
        yield fig, ax


def svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata=METADATA)
    return buf.getvalue()


def box(ax: Axes, x: float, y: float, w: float, h: float, colours: tuple[str, str], title: str = "",
        lines: Sequence[str] = (), size: float = 9.5, title_size: float = 10.5) -> None:
    """A rounded box from (x, y) (bottom left), its title on top and its lines under it, left-aligned; a line
    that starts with `*` is a sub-heading."""
    fill, edge = colours
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08", facecolor=fill,
                                edgecolor=edge, lw=1.3))
    top = y + h - 0.1
    if title:
        ax.text(x + 0.12, top, title, ha="left", va="top", fontsize=title_size, weight="bold", color=edge)
        top -= 0.3
    for i, line in enumerate(lines):
        bold = line.startswith("*")
        text = line.lstrip("*")
        text = "\u00a0" * (len(text) - len(text.lstrip(" "))) + text.lstrip(" ")  # SVG collapses plain spaces
        ax.text(x + 0.12, top - i * 0.22, text, ha="left", va="top", fontsize=size, color=edge if bold else INK,
                weight="bold" if bold else "normal")


def pill(ax: Axes, x: float, y: float, w: float, text: str, colours: tuple[str, str], h: float = 0.3) -> None:
    """A small one-line white box centred on its text (a topic, a step); names from the code in monospace."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.06", facecolor="white",
                                edgecolor=colours[1], lw=1.1))
    code = text.startswith(("trustgap.", "/"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9.5, color=INK,
            family="monospace" if code else "sans-serif")


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], label: str = "",
          where: tuple[float, float] | None = None, both: bool = False) -> None:
    """An arrow from start to end (`both`: and back), its label (if any) at `where` (default: the middle) on a
    white ground."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="<|-|>" if both else "-|>", mutation_scale=12, lw=1.3,
                                 color=MUTED, shrinkA=2, shrinkB=2))
    if label:
        x, y = where or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(x, y, label, ha="center", va="center", fontsize=9, color=INK, linespacing=1.25,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.95})


# --- the data-flow diagram ---------------------------------------------------------------------------------------

def dataflow_svg(settings: Settings | None = None) -> str:
    """Producers → Kafka topics → the workers' ingest → Redis → the evaluator → the alerts topic, metrics and the
    retrain gate, with the topic names and settings the code defines."""
    s = settings or Settings()
    t = s.topics
    with canvas(11.0, 6.0) as (fig, ax):
        box(ax, 0.15, 3.9, 1.7, 1.35, OUTSIDE, "model services",
            ["stream.client (SDK),", "or any Kafka producer", "of contract v1 JSON"], size=9)
        box(ax, 0.15, 2.6, 1.7, 0.95, OUTSIDE, "people, tools", ["trustgap replay", "trustgap simulate"], size=9)

        box(ax, 2.25, 1.8, 2.1, 4.05, KAFKA, "Kafka topics")
        for i, name in enumerate([t.predictions, t.actions, t.outcomes, t.annotations]):
            pill(ax, 2.37, 5.05 - i * 0.42, 1.86, name, KAFKA)
        pill(ax, 2.37, 2.95, 1.86, t.dlq, KAFKA)
        ax.text(3.3, 3.33, "dead letters", ha="center", fontsize=8.5, color=MUTED, style="italic")
        pill(ax, 2.37, 2.05, 1.86, t.alerts, KAFKA)
        ax.text(3.3, 2.43, "alerts, from the outbox", ha="center", fontsize=8.5, color=MUTED, style="italic")
        arrow(ax, (1.85, 4.55), (2.25, 4.55))
        arrow(ax, (1.85, 3.1), (2.25, 4.1))

        box(ax, 5.2, 1.8, 2.7, 4.05, WORKER, "trustgap workers (Faust)",
            [f"one consumer group (app_id: {s.app_id})", f"at most topic_partitions ({s.topic_partitions}) consume"],
            size=8.5)
        box(ax, 5.32, 3.7, 2.46, 1.25, ("white", WORKER[1]), "ingest (thin agents)",
            ["events.parse → valid | rejects", f"chunk: take_max ({s.take_max}) events", f"   or take_within "
             f"({s.take_within:g} s)", "one atomic Lua call per bucket"], size=8.5, title_size=9.5)
        box(ax, 5.32, 2.35, 2.46, 1.2, ("white", WORKER[1]), f"evaluator (every {s.evaluate_interval:g} s)",
            ["watermark: min over partitions", "   minus the allowed lateness", "read → judge (pure) → commit",
             "→ outbox → publish"], size=8.5, title_size=9.5)
        pill(ax, 5.95, 1.9, 1.2, "/metrics", WORKER)
        arrow(ax, (4.35, 4.45), (5.32, 4.45), "consume", (4.78, 4.68))
        arrow(ax, (5.32, 3.9), (4.23, 3.1), "rejects", (4.78, 3.62))
        arrow(ax, (5.32, 2.6), (4.23, 2.2), "publish", (4.78, 2.62))

        box(ax, 8.65, 1.8, 2.2, 4.05, REDIS, "Redis",
            ["one node, or a Redis Cluster", "(redis_cluster: true)", "", "*per bucket {tg:b<N>}", "· contexts: dedup,",
             "   join by prediction_id", "· window counters", "· offsets and event time", "   per partition", "",
             "*per model {tg:m:<model>}", "· detector state, history", "· alert outbox", "· annotations"], size=8.5)
        arrow(ax, (7.78, 4.3), (8.65, 4.3), "apply.lua", (8.22, 4.53))
        arrow(ax, (7.78, 2.95), (8.65, 2.95), "close.lua\ncommit.lua", (8.22, 3.35), both=True)

        box(ax, 0.15, 0.15, 4.2, 1.3, OUTSIDE, "retrain gate: go, hold or block",
            ["trustgap gate --model <model>", "GET /v1/models/{model}/retrain-gate", "reads the alerts; from Redis, "
             "the annotations", "and the latest closed window"], size=9)
        arrow(ax, (3.3, 2.05), (3.3, 1.45))
        box(ax, 5.2, 0.15, 5.65, 1.3, OPS, "")
        pill(ax, 5.45, 0.63, 1.95, "Prometheus (rules)", OPS, h=0.34)
        pill(ax, 7.95, 0.85, 2.7, "Alertmanager: page, ticket, info", OPS, h=0.34)
        pill(ax, 7.95, 0.35, 2.7, "Grafana: the dashboards", OPS, h=0.34)
        arrow(ax, (6.55, 1.9), (6.45, 0.97), "scrape", (6.95, 1.45))
        arrow(ax, (7.4, 0.86), (7.95, 1.02))
        arrow(ax, (7.4, 0.74), (7.95, 0.52))
        return svg(fig)


# --- the windows timeline ----------------------------------------------------------------------------------------

def human(seconds: int) -> str:
    """3600 -> '1 h', 86400 -> '1 d', 600 -> '10 min'."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def checkpoint_source(m: ModelSettings, kind: str, age_s: int, last: bool) -> str:
    """The setting a checkpoint's age comes from (ModelSettings.checkpoints_ms)."""
    if last:
        return f"{kind}_horizon_seconds"
    if not m.checkpoints_seconds and age_s == m.window_seconds:
        return "one window: window_seconds"
    return "checkpoints_seconds" if m.checkpoints_seconds else "one day"


def event_time_axis(m: ModelSettings) -> Callable[[float], float]:
    """Inches from event time (seconds after window W's start): the baseline compressed, W and its neighbours to
    scale, then one equal stretch per later checkpoint, so that one hour and seven days fit one picture."""
    w = m.window_seconds
    ages = sorted({*m.checkpoints_ms("a"), *m.checkpoints_ms("o")})
    first = w + ages[0] // 1000 + w // 2  # the first checkpoint and half a window more, to scale
    anchors = [(-m.baseline_windows * w, 1.55), (-2 * w, 2.45), (first, 2.45 + (first + 2 * w) / w * 0.65)]
    step = (9.05 - anchors[-1][1]) / max(1, len(ages) - 1)
    anchors += [(w + age // 1000, anchors[-1][1] + (i + 1) * step) for i, age in enumerate(ages[1:])]
    anchors.append((anchors[-1][0] + w, 10.85))

    def x(t: float) -> float:
        for (t0, x0), (t1, x1) in zip(anchors, anchors[1:], strict=False):
            if t <= t1:
                return x0 + (x1 - x0) * (t - t0) / (t1 - t0)
        return anchors[-1][1]
    return x


def windows_svg(settings: Settings | None = None) -> str:
    """One window's life in event time, from the settings' defaults: the tumbling windows, the baseline, the
    watermark (allowed lateness) and the stages and checkpoints its predictions and follow-ups are judged at."""
    s = settings or Settings()
    m = s.defaults
    x = event_time_axis(m)
    with canvas(11.0, 5.5) as (fig, ax):
        for name, y in ROWS.items():
            ax.text(0.15, y, name, fontsize=10, weight="bold", color=INK, va="center")
        time_axis(ax, m, x)
        windows_row(ax, m, x)
        baseline_row(ax, m, x)
        watermark_row(ax, s, x)
        stage(ax, x(m.window_seconds), ROWS["predictions"], "n", "predictions and feature health, due at W's end",
              INK)
        follow_up_rows(ax, m, x)
        return svg(fig)


ROWS = {"windows": 4.95, "baseline": 4.35, "watermark": 3.7, "predictions": 3.0, "actions": 2.25, "outcomes": 1.5}
STAGE_COLOUR = {"a": "#0e7c86", "o": "#a23b72"}


def time_axis(ax: Axes, m: ModelSettings, x: Callable[[float], float]) -> None:
    """The event-time arrow, a dotted guide at every time the picture names, and the footnote."""
    w = m.window_seconds
    ages = sorted({*m.checkpoints_ms("a"), *m.checkpoints_ms("o")})
    guides = [(-m.baseline_windows * w, f"start − {m.baseline_windows} × {human(w)}"), (0, "W start"), (w, "W end")]
    guides += [(w + a // 1000, f"end + {human(a // 1000)}") for a in ages]
    for t, label in guides:
        ax.plot([x(t), x(t)], [1.12, 5.25], color="#bbbbbb", lw=0.8, ls=":")
        ax.text(x(t), 0.95, label, fontsize=8.5, color=MUTED, ha="center", va="center")
    ax.annotate("", (10.85, 0.72), (1.55, 0.72), arrowprops={"arrowstyle": "-|>", "color": MUTED, "lw": 1})
    ax.text(1.45, 0.72, "event time", fontsize=8.5, color=MUTED, ha="right", va="center")
    ax.text(0.15, 0.3, "Each checkpoint judges the follow-ups that came within that age of their prediction, "
            "against the baseline windows' follow-ups at the same age.\ncheckpoints_seconds sets the ages "
            "(empty by default: one window, one day and the horizon); a follow-up past its horizon is "
            "counted as beyond_horizon, in no window.", fontsize=8.5, color=INK, va="center", linespacing=1.4)


def windows_row(ax: Axes, m: ModelSettings, x: Callable[[float], float]) -> None:
    """Window W and its neighbours, to scale."""
    w, y = m.window_seconds, ROWS["windows"]
    for i in (-2, -1, 0, 1):
        fill, edge = WORKER if i == 0 else ("white", "#8aa9cf")
        ax.add_patch(FancyBboxPatch((x(i * w) + 0.02, y - 0.17), x(w) - x(0) - 0.04, 0.34,
                                    boxstyle="round,pad=0,rounding_size=0.04", facecolor=fill, edgecolor=edge,
                                    lw=1.2))
        ax.text(x(i * w + w / 2), y, "W" if i == 0 else f"W{i:+d}".replace("-", "−"), ha="center", va="center",
                fontsize=9.5, color=INK, weight="bold" if i == 0 else "normal")
    ax.text(x(-2 * w) - 0.08, y, "…", fontsize=10, va="center", ha="right", color=MUTED)
    ax.text(x(2 * w) + 0.1, y, f"tumbling, aligned to the epoch: window_seconds = {w} ({human(w)});\n"
            "W holds the predictions whose ts falls in it", fontsize=9, va="center", color=INK)


def baseline_row(ax: Axes, m: ModelSettings, x: Callable[[float], float]) -> None:
    """The trailing windows W is compared with."""
    y, first = ROWS["baseline"], -m.baseline_windows * m.window_seconds
    ax.add_patch(FancyBboxPatch((x(first), y - 0.14), x(0) - x(first), 0.28, boxstyle="round,pad=0,rounding_size=0.04",
                                facecolor=PURE[0], edgecolor=PURE[1], lw=1.1, hatch="///"))
    ax.text(x(0) + 0.1, y, f"baseline_windows = {m.baseline_windows}: the closed windows before W, each compared at "
            "the same age as W", fontsize=9, va="center", color=INK)


def watermark_row(ax: Axes, s: Settings, x: Callable[[float], float]) -> None:
    """The watermark at W's end: every input partition has reached W's end plus the allowed lateness."""
    y, end, lateness = ROWS["watermark"], s.defaults.window_seconds, s.defaults.allowed_lateness_seconds
    ax.plot([x(end), x(end + lateness)], [y, y], color=KAFKA[1], lw=2)
    ax.plot([x(end)], [y], marker="|", ms=14, mew=2, color=KAFKA[1])
    ax.plot([x(end + lateness)], [y], marker="o", ms=6, color=KAFKA[1])
    ax.text(x(end + lateness) + 0.12, y, f"= min over the input partitions of their newest event time − "
            f"allowed_lateness_seconds ({lateness} s)\n(a partition idle for idle_timeout_seconds, "
            f"{s.idle_timeout_seconds:g} s, is skipped); a stage is judged once the\nwatermark passes its due time, "
            "and an event that comes after its stage was judged is late", fontsize=8.5, va="center", color=INK,
            linespacing=1.35)


def follow_up_rows(ax: Axes, m: ModelSettings, x: Callable[[float], float]) -> None:
    """The actions' and outcomes' checkpoints after W's end, up to each kind's horizon."""
    end = m.window_seconds
    for kind, row, ages in (("a", "actions", m.checkpoints_ms("a")), ("o", "outcomes", m.checkpoints_ms("o"))):
        y, last = ROWS[row], x(end + ages[-1] // 1000)
        ax.plot([x(end), last], [y, y], color="#999999", lw=1.2)
        ax.plot([last, 10.85], [y, y], color="#bbbbbb", lw=1.2, ls=(0, (2, 2)))
        ax.text(10.85, y + 0.2, "beyond_horizon", fontsize=8.5, color=MUTED, ha="right", va="center",
                style="italic")
        for i, age in enumerate(ages):
            source = checkpoint_source(m, "action" if kind == "a" else "outcome", age // 1000, i == len(ages) - 1)
            stage(ax, x(end + age // 1000), y, f"{kind}{i}", source, STAGE_COLOUR[kind])


def stage(ax: Axes, at: float, y: float, name: str, caption: str, colour: str) -> None:
    """A stage's marker on its row, its name above and what sets its time beside it."""
    ax.plot([at], [y], marker="D", ms=8, color=colour)
    ax.text(at + 0.1, y + 0.2, name, fontsize=9.5, weight="bold", color=colour, va="center")
    ax.text(at + 0.1, y - 0.2, caption, fontsize=8.5, color=INK, va="center")


# --- the report's screenshot -------------------------------------------------------------------------------------

SCENARIO = "trust_decay"
REPORT_DAYS, REPORT_RATE = 3.0, 150.0  # enough windows for a baseline and a sustained alert, replayed in seconds
GENERATED = datetime(2026, 11, 20, tzinfo=timezone.utc)  # the scenario's end: the page states when it was made


def report_html() -> str:
    """The HTML report of a simulated model (stream.offline: the store's twin and the judge in memory, no broker
    or Redis), as `trustgap report` writes it from a live deployment."""
    from stream import offline, overview, report

    run = offline.replay(SCENARIO, days=REPORT_DAYS, rate=REPORT_RATE, step=None)
    history = {d.window.start: v.rate.summary for d, v in run.judged}  # each window's last stage's summary
    alerts = [a for _, a in run.alerts()]
    (model,) = overview.build({"claims": history}, alerts, Settings())
    return report.render(model, GENERATED)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWPORT = (1200, 1000)  # the 1100-px column at full width; the gate and the first two signal plots


def screenshot(page: Path, png: Path, timeout: float = 60.0) -> None:
    """The first screen of a local HTML page as PNG, from a fresh headless Chromium with its own profile."""
    if CHROMIUM is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    png.unlink(missing_ok=True)  # so that a file left from before is never taken for this run's
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
               f"--screenshot={png.resolve()}", page.resolve().as_uri()]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)  # headless Chromium exits once it wrote the file
        finally:
            stop(proc)  # only when it did not: the one way trustgap stops a process (its whole group)
    if proc.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")


def report_png(png: Path) -> None:
    """Render the report and screenshot it into `png`."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(report_html(), encoding="utf-8")
        screenshot(page, png)


# --- files -------------------------------------------------------------------------------------------------------

PICTURES: dict[str, Callable[[], str]] = {"dataflow.svg": dataflow_svg, "windows.svg": windows_svg}


def generated(img: Path = IMG) -> dict[Path, str]:
    """{path: content} of every generated SVG."""
    return {img / name: draw() for name, draw in PICTURES.items()}


def drift(img: Path = IMG) -> list[Path]:
    """Generated SVGs whose committed content differs from what the code draws now."""
    return stale(generated(img))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.docs_pictures", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report SVGs that differ")
    p.add_argument("--screenshot", action="store_true", help="also rewrite docs/img/report.png (headless Chromium)")
    args = p.parse_args(argv)
    written = write_or_check(generated(), args.check, "python -m scripts.docs_pictures")
    if args.check or not args.screenshot:
        return written
    report_png(IMG / "report.png")
    print((IMG / "report.png").relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
