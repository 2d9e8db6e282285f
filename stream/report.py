"""`trustgap report`: one self-contained HTML page per model (inline SVG plots, inline CSS, no script, no network).

One plot per rate signal: the window's rate, the trailing baseline, and the alerts as shaded windows (colour by
severity). Below, the alerts table, the windows with late events, and the feature-health section.
"""

from __future__ import annotations

import html
import io
from datetime import datetime

from .detect import RATE_SIGNALS
from .overview import ModelOverview
from .times import from_ms, minute
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


def signal_svg(ov: ModelOverview, signal: str) -> str:
    """One signal's rate vs baseline over the model's windows as an inline <svg> element."""
    import matplotlib

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

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
        seen: set[str] = set()
        for a in ov.alerts:
            if a.signal != signal or a.status != "firing":
                continue
            colour = SEVERITY_COLOUR.get(a.severity, "#999")
            label = f"alert: {a.severity}" if a.severity not in seen else None
            seen.add(a.severity)
            ax.axvspan(a.window.start, a.window.end, color=colour, alpha=0.18, lw=0, label=label)  # type: ignore[arg-type]
            ax.scatter([a.window.start + (a.window.end - a.window.start) / 2], [a.observed], marker="v", s=36,  # type: ignore[arg-type]
                       color=colour, zorder=3)
        ax.margins(y=0.12)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("rate")
        ax.grid(alpha=0.3)
        if rows or seen:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]


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


def render(ov: ModelOverview, generated: datetime, has_feature_data: bool = False) -> str:
    """The whole page as a string."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>trustgap report: {e(ov.model)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>trustgap report: {e(ov.model)}</h1>",
             f"<p class='sub'>generated {generated:%Y-%m-%d %H:%M} UTC · {len(ov.windows)} closed windows"
             + (f" from {minute(ov.windows[0].start)} to {minute(ov.windows[-1].end)}"
                if ov.windows else "")
             + f" · {len(ov.alerts)} alerts, {len(ov.active)} active</p>",
             "<h2>Signals: rate vs baseline</h2>"]
    for signal in RATE_SIGNALS:
        last = ov.windows[-1].rates[signal] if ov.windows else None
        caption = (f"latest window {_pct(last.rate)} (n={last.n}) vs baseline {_pct(last.baseline)} "
                   f"(n={last.baseline_n})" if last else "no data yet")
        parts.append(f"<figure class='signal-plot' data-signal='{e(signal)}'><figcaption><b>{e(signal)}</b> — "
                     f"{e(caption)}; shaded: windows with a firing alert (any scope), ▼ its observed rate"
                     f"</figcaption>{signal_svg(ov, signal)}</figure>")
    parts.append("<h2>Alerts</h2>")
    if ov.alerts:
        parts.append("<table><tr><th>window (UTC)</th><th>status</th><th>severity</th><th>signal</th><th>scope</th>"
                     "<th>observed vs baseline</th><th>recommendation</th><th>diagnosis</th></tr>")
        for a in reversed(ov.alerts):
            scope = ", ".join(f"{k}={v}" for k, v in a.scope.items()) or "all"
            parts.append(
                f"<tr><td>{a.window.start:%Y-%m-%d %H:%M}</td><td>{e(a.status)} {e(a.classification)}</td>"
                f"<td class='sev-{e(a.severity)}'>{e(a.severity)}</td><td>{e(a.signal)}</td><td>{e(scope)}</td>"
                f"<td>{_pct(a.observed)} vs {_pct(a.baseline)} (n={a.n})</td><td>{e(a.recommendation)}</td>"
                f"<td>{e('; '.join(a.diagnosis))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class='empty'>No alerts were published for this model.</p>")
    parts += late_section(ov)
    parts.append("<h2 id='feature-health'>Feature health</h2>")
    if not has_feature_data:
        parts.append(f"<p class='empty' id='no-feature-data'>No feature-health data exists for {e(ov.model)}: "
                     "feature statistics are not computed by this trustgap version, so nothing here says the "
                     "features are healthy.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
