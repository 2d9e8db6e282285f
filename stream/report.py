"""`trustgap report`: one self-contained HTML page per model (inline SVG plots, inline CSS, no script, no network).

One plot per rate signal: the window's rate, the trailing baseline, and the alerts as shaded windows (colour by
severity); where outcomes carry values, their value per prediction for the model and each band, with the
outcome_value alerts; one per segment dimension: each value's share of the predictions, with the segment_shift
alerts. Below, the alerts table, the windows with late events, and the feature-health section.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .detect import RATE_SIGNALS
from .events import AlignmentAlert
from .overview import ModelOverview
from .times import from_ms, minute
from .views import observed
from .windows import STAGE_SIGNAL

SEVERITY_COLOUR = {"page": "#d62728", "ticket": "#ff7f0e", "info": "#1f77b4"}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} figure{margin:1.5rem 0} figcaption{color:#555}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;
text-align:left;vertical-align:top} th{background:#f6f6f6} .empty{color:#666;font-style:italic}
.sev-page{color:#d62728;font-weight:600} .sev-ticket{color:#b35900;font-weight:600} .sev-info{color:#1f77b4}
svg{max-width:100%;height:auto}
"""


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _finish(fig: Any, ax: Any, ylabel: str, legend: bool, percent: bool = True) -> str:
    """A plot's axis (percent, or plain numbers), grid and legend, rendered as an inline <svg> element."""
    from matplotlib.ticker import PercentFormatter

    ax.margins(y=0.12)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def signal_svg(ov: ModelOverview, signal: str) -> str:
    """One signal's rate vs baseline over the model's windows as an inline <svg> element."""
    import matplotlib

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    # Text as <text> (small, selectable); a salt per signal keeps clip-path ids unique across the page's plots.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"trustgap-{ov.model}-{signal}"}):
        fig = Figure(figsize=(10, 3.2), layout="constrained")
        ax = fig.add_subplot()
        rows = ov.windows
        if rows:
            mid = [from_ms((w.start + w.end) // 2) for w in rows]
            ax.plot(mid, [w.rates[signal].rate for w in rows], marker="o", markersize=3, lw=1.5, color="#222",  # type: ignore[arg-type]
                    label=f"{signal} (whole model)")
            ax.plot(mid, [w.rates[signal].baseline for w in rows], ls="--", lw=1.2, color="#2ca02c",  # type: ignore[arg-type]
                    label="trailing baseline")
            locator = AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        else:
            ax.text(0.5, 0.5, "no closed windows yet", ha="center", va="center", transform=ax.transAxes,
                    color="#666")
        seen = _shade(ax, ov, lambda a: a.signal == signal)
        return _finish(fig, ax, "rate", bool(rows or seen))


SHARE_LINES = 8  # values of a dimension drawn one by one (the largest overall); the rest as one line


def _shade(ax: Any, ov: ModelOverview, keep: Callable[[AlignmentAlert], bool]) -> set[str]:
    """Shade the windows of the firing alerts `keep` selects (colour by severity), ▼ at their observed value;
    returns the severities drawn."""
    seen: set[str] = set()
    for a in ov.alerts:
        if a.status != "firing" or not keep(a):
            continue
        colour = SEVERITY_COLOUR.get(a.severity, "#999")
        label = f"alert: {a.severity}" if a.severity not in seen else None
        seen.add(a.severity)
        ax.axvspan(a.window.start, a.window.end, color=colour, alpha=0.18, lw=0, label=label)
        ax.scatter([a.window.start + (a.window.end - a.window.start) / 2], [a.observed], marker="v", s=36,
                   color=colour, zorder=3)
    return seen


def segment_svg(ov: ModelOverview, dimension: str) -> str:
    """Each value's share of the model's predictions per window, for one segment dimension, as an inline <svg>."""
    import matplotlib

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    rows = [w for w in ov.windows if w.predictions]
    totals: dict[str, int] = {}
    for w in rows:
        for value, k in w.segments.get(dimension, {}).items():
            totals[value] = totals.get(value, 0) + k
    drawn = sorted(totals, key=lambda v: (-totals[v], v))[:SHARE_LINES]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"trustgap-{ov.model}-seg-{dimension}"}):
        fig = Figure(figsize=(10, 3.2), layout="constrained")
        ax = fig.add_subplot()
        mid = [from_ms((w.start + w.end) // 2) for w in rows]
        for value in drawn:
            ax.plot(mid, [w.segments.get(dimension, {}).get(value, 0) / w.predictions for w in rows],  # type: ignore[arg-type]
                    marker="o", markersize=2, lw=1.2, label=f"{dimension}={value}")
        if len(totals) > len(drawn):
            rest = [sum(k for v, k in w.segments.get(dimension, {}).items() if v not in drawn) / w.predictions
                    for w in rows]
            ax.plot(mid, rest, lw=1.2, color="#999", label=f"{len(totals) - len(drawn)} more values")  # type: ignore[arg-type]
        seen = _shade(ax, ov, lambda a: a.signal == "segment_shift" and dimension in a.scope)
        locator = AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        return _finish(fig, ax, "share of predictions", bool(drawn or seen))


def value_svg(ov: ModelOverview) -> str:
    """The truth outcomes' value per prediction per window, the model's and each band's, as an inline <svg>."""
    import matplotlib

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    rows = [w for w in ov.windows if w.values]
    scopes = sorted({s for w in rows for s in w.values})
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"trustgap-{ov.model}-value"}):
        fig = Figure(figsize=(10, 3.2), layout="constrained")
        ax = fig.add_subplot()
        mid = [from_ms((w.start + w.end) // 2) for w in rows]
        for scope in scopes:
            ax.plot(mid, [w.values.get(scope) for w in rows], marker="o", markersize=2,  # type: ignore[arg-type]
                    lw=1.8 if not scope else 1.1, color="#222" if not scope else None, label=scope or "whole model")
        seen = _shade(ax, ov, lambda a: a.signal == "outcome_value")
        locator = AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        return _finish(fig, ax, "value per prediction", bool(scopes or seen), percent=False)


def value_section(ov: ModelOverview) -> list[str]:
    """The value plot where the model's truth outcomes carry values; nothing otherwise."""
    if not any(w.values for w in ov.windows):
        return []
    return ["<h2 id='outcome-value'>Outcome value per prediction</h2><figure class='value-plot'><figcaption>"
            "<b>outcome_value</b> — the truth outcomes' values (claim amounts, revenue) per prediction so far, the "
            "model's and each band's; shaded: windows with a firing outcome_value alert, ▼ the value it saw"
            f"</figcaption>{value_svg(ov)}</figure>"]


def segments_section(ov: ModelOverview) -> list[str]:
    """One share plot per segment dimension the windows carry; nothing when they carry none."""
    dims = sorted({d for w in ov.windows for d in w.segments})
    if not dims:
        return []
    e = html.escape
    parts = ["<h2 id='segments'>Who the model sees: segment shares</h2>"]
    for dim in dims:
        parts.append(f"<figure class='segment-plot' data-dimension='{e(dim)}'><figcaption><b>{e(dim)}</b> — each "
                     "value's share of the window's predictions; shaded: windows with a firing segment_shift "
                     f"alert on {e(dim)}, ▼ the share it saw</figcaption>{segment_svg(ov, dim)}</figure>")
    return parts


VERDICT_COLOUR = {"go": "#2ca02c", "hold": "#b35900", "block": "#d62728"}


def gate_section(ov: ModelOverview) -> list[str]:
    """The retrain gate's verdict and cause in one sentence, then each reason with its action."""
    if ov.gate is None:
        return []
    e = html.escape
    g = ov.gate
    parts = [f"<p id='verdict' class='verdict' style='font-size:1.25rem;font-weight:600;color:"
             f"{VERDICT_COLOUR[g.verdict]}'>Retrain gate: {e(g.sentence())}</p>"]
    if g.reasons:
        parts.append("<ul class='reasons'>" + "".join(
            f"<li><b>{e(r.verdict)}</b> — {e(r.action)} ({len(r.alerts)} alert{'s' if len(r.alerts) != 1 else ''})"
            "</li>" for r in g.reasons) + "</ul>")
    if g.exclusions:
        parts.append(f"<p>{len(g.exclusions)} spans of prediction time to leave out of training: "
                     f"<code>trustgap exclusions --model {e(ov.model)}</code></p>")
    return parts


def alerts_section(ov: ModelOverview) -> list[str]:
    """Every alert published, grouped by cause (fingerprint: signal and scope), newest cause first: one row per
    cause with its windows and latest status, its newest diagnosis under it at full width."""
    e = html.escape
    parts = ["<h2>Alerts</h2>"]
    if not ov.alerts:
        return [*parts, "<p class='empty'>No alerts were published for this model.</p>"]
    causes: dict[str, list[AlignmentAlert]] = {}
    for a in ov.alerts:
        causes.setdefault(a.fingerprint, []).append(a)
    order = sorted(causes.values(), key=lambda found: max(a.window.start for a in found), reverse=True)
    parts.append("<table id='alerts'><tr><th>windows (UTC)</th><th>latest</th><th>severity</th><th>signal</th>"
                 "<th>scope</th><th>observed vs baseline</th><th>recommendation</th></tr>")
    for found in order:
        newest = max(found, key=lambda a: (a.window.start, a.ts))
        scope = ", ".join(f"{k}={v}" for k, v in newest.scope.items()) or "all"
        first, last = min(a.window.start for a in found), newest.window.start
        when = f"{first:%Y-%m-%d %H:%M}" + (f" – {last:%Y-%m-%d %H:%M}" if last != first else "")
        parts.append(
            f"<tr class='cause'><td>{when} ({len(found)})</td><td>{e(newest.status)} {e(newest.classification)}</td>"
            f"<td class='sev-{e(newest.severity)}'>{e(newest.severity)}</td><td>{e(newest.signal)}</td>"
            f"<td>{e(scope)}</td><td>{e(observed(newest))}</td><td><b>{e(newest.recommendation)}</b></td></tr>"
            f"<tr class='diagnosis'><td colspan='7'>{'<br>'.join(e(d) for d in newest.diagnosis)}</td></tr>")
    parts.append("</table>")
    return parts


def late_section(ov: ModelOverview) -> list[str]:
    """The windows some of whose events came after the window was judged for their signal, newest first."""
    parts = ["<h2 id='late-events'>Late events</h2>"]
    late = [w for w in reversed(ov.windows) if any(w.late.values())]
    if not late:
        parts.append("<p class='empty' id='no-late-events'>No event came after its window was judged (in the "
                     "windows whose counters Redis still keeps).</p>")
        return parts
    parts.append("<p>Counted, but not in the rates above: their window had already been judged for their "
                 "signal.</p><table id='late-table'><tr><th>window (UTC)</th>"
                 + "".join(f"<th>{html.escape(s)}</th>" for s in STAGE_SIGNAL.values()) + "</tr>")
    for w in late:
        parts.append(f"<tr class='late'><td>{minute(w.start)}</td>"
                     + "".join(f"<td>{n}</td>" for n in w.late_by_signal().values()) + "</tr>")
    parts.append("</table>")
    return parts


def render(ov: ModelOverview, generated: datetime) -> str:
    """The whole page as a string."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>trustgap report: {e(ov.model)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>trustgap report: {e(ov.model)}</h1>",
             f"<p class='sub'>generated {generated:%Y-%m-%d %H:%M} UTC · {len(ov.windows)} closed windows"
             + (f" from {minute(ov.windows[0].start)} to {minute(ov.windows[-1].end)}"
                if ov.windows else "")
             + f" · {len(ov.alerts)} alerts, {len(ov.active)} active</p>",
             *gate_section(ov),
             "<h2>Signals: rate vs baseline</h2>"]
    for signal in RATE_SIGNALS:
        last = ov.windows[-1].rates[signal] if ov.windows else None
        caption = (f"latest window {_pct(last.rate)} (n={last.n}) vs baseline {_pct(last.baseline)} "
                   f"(n={last.baseline_n})" if last else "no data yet")
        parts.append(f"<figure class='signal-plot' data-signal='{e(signal)}'><figcaption><b>{e(signal)}</b> — "
                     f"{e(caption)}; shaded: windows with a firing alert (any scope), ▼ its observed rate"
                     f"</figcaption>{signal_svg(ov, signal)}</figure>")
    parts += value_section(ov)
    parts += segments_section(ov)
    parts += alerts_section(ov)
    parts += late_section(ov)
    parts.append("<h2 id='feature-health'>Feature health</h2>")
    broken = [a for a in ov.alerts if a.signal.startswith("feature_") and a.status == "firing"]
    if broken:
        parts.append("<ul id='feature-alerts'>" + "".join(
            f"<li>{a.window.start:%Y-%m-%d %H:%M} <b>{e(a.signal)}</b> {e(a.scope.get('feature', ''))} "
            f"({e(a.classification)}): {e(a.diagnosis[0])}</li>" for a in reversed(broken)) + "</ul>")
    else:
        parts.append(f"<p class='empty' id='no-feature-data'>No feature-health alert was published for "
                     f"{e(ov.model)} (its features are watched when its predictions carry them).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
