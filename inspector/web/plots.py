"""The stats page's plots as PNG bytes: defects per hour, and the score distribution with the threshold.

matplotlib's object API with an explicit Agg canvas: no pyplot, no global figure state. Rendering holds a lock
because the server answers from several threads and matplotlib's font and text caches are shared.
"""

from __future__ import annotations

import io
import threading
from datetime import datetime, timedelta

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from inspector.web.data import MAX_SCORES, StatsData

_LOCK = threading.Lock()
COLOURS = {"ok": "#4c9a5f", "defect": "#d9822b", "confirmed": "#c0392b", "false alarm": "#7f8c8d",
           "unreviewed": "#d9822b", "threshold": "#1f3b73"}


def _png(fig: Figure) -> bytes:
    """The figure rendered to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _empty(ax: Axes, text: str) -> None:
    """A centred note on an empty plot."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="grey")


def bin_width(span: timedelta) -> tuple[timedelta, str]:
    """Bars of 5 minutes up to a 2 h range, of an hour up to 7 days, else of a day."""
    if span <= timedelta(hours=2):
        return timedelta(minutes=5), "5 min"
    if span <= timedelta(days=7):
        return timedelta(hours=1), "hour"
    return timedelta(days=1), "day"


def _floor(t: datetime, width: timedelta) -> datetime:
    """t rounded down to a multiple of width (local wall-clock time, naive)."""
    if width >= timedelta(days=1):
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if width >= timedelta(hours=1):
        return t.replace(minute=0, second=0, microsecond=0)
    step = int(width.total_seconds() // 60)
    return t.replace(minute=t.minute - t.minute % step, second=0, microsecond=0)


def defects_png(data: StatsData) -> bytes:
    """Bars of defects per hour (5 min / day for short / long ranges) in local time, split by review state."""
    end = data.end.astimezone().replace(tzinfo=None)
    start = (data.start or data.end).astimezone().replace(tzinfo=None)
    width, unit = bin_width(end - start)
    first = _floor(start, width)
    n = int((end - first) / width) + 1
    edges = [first + width * i for i in range(n)]
    stacks = {"confirmed": np.zeros(n), "unreviewed": np.zeros(n), "false alarm": np.zeros(n)}
    for at, decision in zip(data.defect_times, data.defect_reviews):
        i = int((at.astimezone().replace(tzinfo=None) - first) / width)
        if 0 <= i < n:
            key = {"defect": "confirmed", "good": "false alarm"}.get(decision or "", "unreviewed")
            stacks[key][i] += 1
    with _LOCK:
        fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        bottom = np.zeros(n)
        days = width / timedelta(days=1)
        for key in ("confirmed", "unreviewed", "false alarm"):
            ax.bar(edges, stacks[key], width=days * 0.9, align="edge", bottom=bottom, color=COLOURS[key],
                   label=f"{key} ({int(stacks[key].sum())})")
            bottom += stacks[key]
        if not data.defect_times:
            _empty(ax, "no defects in this range")
        ax.set_xlim(first, first + width * n)
        ax.set_ylim(0, max(1.0, float(bottom.max(initial=0))) * 1.15)
        ax.xaxis.set_major_locator(mdates.AutoDateLocator())
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"defects per {unit}")
        ax.set_title(f"Defects per {unit} ({len(data.defect_times)} in range, local time)", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
        return _png(fig)


def scores_png(data: StatsData) -> bytes:
    """Histogram of ok, defect and false-alarm scores with the threshold of the latest profile as a line."""
    groups = [(k, v) for k, v in data.scores.items() if v.size]
    values = np.concatenate([v for _, v in groups]) if groups else np.zeros(0)
    t = data.threshold
    with _LOCK:
        fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        if values.size:
            lo = min(float(values.min()), t if t is not None else np.inf)
            hi = max(float(values.max()), t if t is not None else -np.inf)
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5
            edges = np.linspace(lo, hi, 41)
            for name, v in groups:
                ax.hist(v, bins=edges, histtype="stepfilled", alpha=0.45, color=COLOURS[name],
                        label=f"{name} (n={v.size})")
        else:
            _empty(ax, "no scored parts in this range")
        if t is not None:
            ax.axvline(t, color=COLOURS["threshold"], linewidth=2,
                       label=f"threshold {t:.2f} ({data.profile_version or '?'})")
        others = [v for v in data.versions if v != data.profile_version]
        note = f"; also judged by {', '.join(others)}" if others else ""
        newest = f" (newest {MAX_SCORES:,} parts)" if data.scores_capped else ""
        ax.set_title(f"Score distribution{newest}{note}", fontsize=11)
        ax.set_xlabel("anomaly score (higher = more anomalous)")
        ax.set_ylabel("parts")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=9)
        return _png(fig)
