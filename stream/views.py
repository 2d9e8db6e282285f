"""Rich renderings of the overview for the terminal (`trustgap status`)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .detect import RATE_SIGNALS
from .events import AlignmentAlert
from .overview import ConsumerLag, ModelOverview, Rate, WindowRow
from .settings import Settings
from .times import minute
from .windows import STAGE_SIGNAL

SEVERITY_STYLE = {"page": "bold red", "ticket": "bold yellow", "info": "cyan"}


def rate_cell(r: Rate, min_gap: float) -> Text:
    """'12.3% vs 10.0% (n=120)', highlighted when the gap reaches the model's practical minimum."""
    if r.rate is None:
        return Text("—", style="dim")
    base = "—" if r.baseline is None else f"{r.baseline:.1%}"
    style = "bold yellow" if r.baseline is not None and r.rate - r.baseline >= min_gap else ""
    return Text(f"{r.rate:.1%} vs {base} (n={r.n})", style=style)


def late_cell(w: WindowRow) -> Text:
    """Late events of a window by signal as 'p/a/o' ('0/2/1'), blank when none came."""
    counts = w.late_by_signal()
    if not any(counts.values()):
        return Text("")
    return Text("/".join(str(n) for n in counts.values()), style="yellow")


def model_panel(ov: ModelOverview, settings: Settings, last: int) -> Panel:
    ms = settings.for_model(ov.model)
    windows = Table(box=None, pad_edge=False, header_style="bold")
    # a narrow terminal folds a cell onto more lines; it never cuts one short
    windows.add_column("window (UTC)", overflow="fold")
    windows.add_column("version", overflow="fold")
    windows.add_column("predictions", justify="right", overflow="fold")
    for signal in RATE_SIGNALS:
        windows.add_column(f"{signal.replace('_', ' ')} vs baseline", overflow="fold")
    # events that came after the window was judged for their signal: counted, but not in the rates shown
    windows.add_column("late " + "/".join(s[0] for s in STAGE_SIGNAL.values()), justify="right", overflow="fold")
    for w in ov.windows[-last:]:
        windows.add_row(minute(w.start), w.version, str(w.predictions),
                        *(rate_cell(w.rates[s], ms.min_gap) for s in RATE_SIGNALS), late_cell(w))
    parts: list[RenderableType] = []
    if ov.gate is not None:  # the verdict and its cause first, never cut: the evidence follows
        parts += [Text.assemble(("retrain gate: ", "bold"), (ov.gate.sentence(), VERDICT_STYLE[ov.gate.verdict])),
                  Text("")]
    parts.append(windows if ov.windows else Text("no closed windows yet", style="dim"))
    if ov.active:
        parts += [Text(""), Text("active alerts, one line per cause", style="bold"), *cause_blocks(ov.active)]
    else:
        parts.append(Text("no active alerts", style="green"))
    title = f"[bold]{ov.model}[/]" + (f"  version {ov.windows[-1].version}" if ov.windows else "")
    border = "red" if any(a.severity == "page" for a in ov.active) else ("yellow" if ov.active else "green")
    return Panel(Group(*parts), title=title, title_align="left", border_style=border)


VERDICT_STYLE = {"go": "bold green", "hold": "bold yellow", "block": "bold red"}


def observed(a: AlignmentAlert) -> str:
    """An alert's observed vs baseline: money as a number, the rest as percentages."""
    if a.signal == "outcome_value":
        return f"{a.observed:,.4g} vs {a.baseline:,.4g} (n={a.n})"
    return f"{a.observed:.1%} vs {a.baseline:.1%} (n={a.n})"


def cause_blocks(active: Sequence[AlignmentAlert]) -> list[RenderableType]:
    """The active alerts grouped by cause (signal, classification and recommendation): one line each, with its
    recommendation first (a line wraps, nothing is cut), its scopes and first window; the newest alert's diagnosis
    under it, at full width."""
    groups: dict[tuple[str, str, str], list[AlignmentAlert]] = {}
    for a in active:
        groups.setdefault((a.signal, a.classification, a.recommendation), []).append(a)
    out: list[RenderableType] = []
    for (signal, classification, recommendation), found in groups.items():
        newest = max(found, key=lambda a: (a.window.start, a.ts))
        scopes = ", ".join(sorted({", ".join(f"{k}={v}" for k, v in a.scope.items()) or "all" for a in found}))
        since = min(a.window.start for a in found)
        out.append(Text.assemble((f"{newest.severity} {classification} ", SEVERITY_STYLE.get(newest.severity, "")),
                                 (recommendation, "bold"), f"  {signal} in {scopes}, since {since:%Y-%m-%d %H:%M}: ",
                                 observed(newest)))
        out.append(Padding(Text("\n".join(newest.diagnosis), style="dim"), (0, 0, 0, 4)))
    return out


def lag_view(lag: ConsumerLag) -> RenderableType:
    """Messages not applied yet per input topic, and how many of its partitions hold them."""
    if lag.unknown is not None:
        return Text(f"consumer lag unknown: {lag.unknown}", style="yellow")
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("topic")
    table.add_column("lag", justify="right")
    table.add_column("partitions behind", justify="right")
    for topic, total in lag.by_topic().items():
        mine = [p for p in lag.partitions if p.topic == topic]
        behind = sum(1 for p in mine if p.lag)
        table.add_row(topic, Text(str(total), style="yellow" if total else ""), f"{behind} of {len(mine)}")
    return Group(Text("consumer lag (messages not applied yet)", style="bold"), table)


def status_view(overviews: Sequence[ModelOverview], settings: Settings, last: int, unreadable: int = 0,
                lag: ConsumerLag | None = None) -> RenderableType:
    parts: list[RenderableType] = [model_panel(o, settings, last) for o in overviews]
    if not overviews:
        parts.append(Text("no models yet: no closed windows in Redis and no alerts published"))
    if unreadable:
        parts.append(Text(f"{unreadable} messages on the alerts topic could not be read as alerts", style="yellow"))
    if lag is not None:
        parts.append(lag_view(lag))
    return Group(*parts)
