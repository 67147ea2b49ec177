"""The stats page's plots as PNG bytes: defects per hour, and the score distribution with the threshold.

matplotlib's object API with an explicit Agg canvas: no pyplot, no global figure state. Rendering holds a lock
because the server answers from several threads and matplotlib's font and text caches are shared.

Each plot comes in two sizes (SIZES): "wide" for a desktop page, "narrow" for a phone (drawn for a 390 px
screen at twice its pixel density: the same text stays readable instead of shrinking with the picture). The
score distribution has two panels: the region around the threshold in detail (`zoom_window`; parts beyond it are
counted at its edges) over all scores on an asinh axis (linear near zero, logarithmic far out), so a few very
high scores no longer squeeze everything near the threshold into one bin.
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
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from inspector.web.data import MAX_SCORES, StatsData

_LOCK = threading.Lock()
# size -> (width in inches, height of a panel in inches, dots per inch, base font size in points)
SIZES: dict[str, tuple[float, float, int, float]] = {"wide": (9.0, 3.6, 100, 10.0), "narrow": (3.9, 3.3, 200, 8.0)}
BINS = 40
LOG_COUNTS_FROM = 20  # the tallest bar from which a histogram counts on a logarithmic axis
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


def _figure(size: str, panels: float = 1.0) -> tuple[Figure, float]:
    """A constrained-layout figure for this size and its base font size."""
    width, height, dpi, font = SIZES[size]
    return Figure(figsize=(width, height * panels), dpi=dpi, layout="constrained"), font


def defects_png(data: StatsData, size: str = "wide") -> bytes:
    """Bars of defects per hour (5 min / day for short / long ranges) in local time, split by review state."""
    end = data.end.astimezone().replace(tzinfo=None)
    start = (data.start or data.end).astimezone().replace(tzinfo=None)
    width, unit = bin_width(end - start)
    first = _floor(start, width)
    n = int((end - first) / width) + 1
    edges = [first + width * i for i in range(n)]
    stacks = {"confirmed": np.zeros(n), "unreviewed": np.zeros(n), "false alarm": np.zeros(n)}
    for at, decision, count in data.defects:  # defects per stretch of time, each stretch inside one bar
        i = int((at.astimezone().replace(tzinfo=None) - first) / width)
        if 0 <= i < n:
            key = {"defect": "confirmed", "good": "false alarm"}.get(decision or "", "unreviewed")
            stacks[key][i] += count
    with _LOCK:
        fig, font = _figure(size)
        ax = fig.add_subplot()
        ax.tick_params(labelsize=font * 0.9)
        bottom = np.zeros(n)
        days = width / timedelta(days=1)
        for key in ("confirmed", "unreviewed", "false alarm"):
            ax.bar(edges, stacks[key], width=days * 0.9, align="edge", bottom=bottom, color=COLOURS[key],
                   label=f"{key} ({int(stacks[key].sum())})")
            bottom += stacks[key]
        if not data.defect_total:
            _empty(ax, "no defects in this range")
        ax.set_xlim(first, first + width * n)
        ax.set_ylim(0, max(1.0, float(bottom.max(initial=0))) * 1.15)
        locator = mdates.AutoDateLocator(maxticks=5 if size == "narrow" else 10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.xaxis.get_offset_text().set_fontsize(font * 0.9)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"defects per {unit}", fontsize=font)
        title = f"Defects per {unit}" + ("\n" if size == "narrow" else " ")
        ax.set_title(f"{title}({data.defect_total} in range, local time)", fontsize=font * 1.1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=font * 0.9)
        return _png(fig)


def zoom_window(values: np.ndarray, threshold: float | None) -> tuple[float, float] | None:
    """The score range shown in detail around the threshold: from the low end of the scores at or below it (their
    2nd percentile and a tenth more, so one odd part does not stretch it) to as far above it. Without a threshold,
    the 1st to 99th percentile of the scores. None when there is neither a score nor a threshold."""
    v = values[np.isfinite(values)]
    if threshold is None:
        if v.size == 0:
            return None
        lo, hi = (float(q) for q in np.percentile(v, [1, 99]))
        return (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)
    below = v[v <= threshold]
    span = 1.1 * (threshold - float(np.percentile(below, 2))) if below.size else 0.0  # a margin for the lowest
    if not span > 1e-9:
        span = max(abs(threshold) * 0.5, 1.0)
    return threshold - span, threshold + span


def overview_edges(values: np.ndarray, threshold: float | None, width: float, bins: int = BINS) -> np.ndarray:
    """Bin edges over every score and the threshold, equally wide on an asinh axis of this linear width."""
    v = values[np.isfinite(values)]
    ends = [float(v.min()), float(v.max())] if v.size else []
    if threshold is not None:
        ends.append(threshold)
    lo, hi = np.arcsinh(min(ends) / width), np.arcsinh(max(ends) / width)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = width * np.sinh(np.linspace(lo, hi, bins + 1))
    edges[0], edges[-1] = min(edges[0], min(ends)), max(edges[-1], max(ends))  # sinh(arcsinh(x)) may miss x
    return edges


def count_axis(ax: Axes, peak: float, label: str, font: float | None = None) -> None:
    """The count axis of a histogram: linear with whole numbers up to LOG_COUNTS_FROM parts in the tallest bar,
    else logarithmic past 1 (symlog), so a single false alarm shows beside a thousand good parts."""
    if peak > LOG_COUNTS_FROM:
        ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
        ax.set_ylim(0, ax.get_ylim()[1])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:,.0f}"))
        ax.yaxis.set_minor_locator(NullLocator())
        label += " (log)"
    else:
        ax.set_ylim(0, max(1.0, peak) * 1.15)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label, fontsize=font)


def overview_ticks(lo: float, hi: float, threshold: float | None, width: float) -> list[float]:
    """Ticks for the asinh axis from lo to hi: the threshold, 0 and powers of ten (either sign), each kept only
    when it stands at least a tenth of the axis away from those already kept."""
    a, b = np.arcsinh(lo / width), np.arcsinh(hi / width)
    candidates = [threshold] if threshold is not None else []
    candidates.append(0.0)
    for k in range(-3, 16):
        candidates += [10.0 ** k, -(10.0 ** k)]
    kept: list[float] = []
    for x in candidates:
        if x is None or not lo <= x <= hi:
            continue
        at = np.arcsinh(x / width)
        if all(abs(at - np.arcsinh(y / width)) >= 0.1 * (b - a) for y in kept):
            kept.append(x)
    return sorted(kept)


def scores_figure(data: StatsData, size: str = "wide") -> Figure:
    """The score distribution of ok, defect and false-alarm parts with the latest threshold: the region around
    the threshold in detail (parts beyond it counted at its edges), over all of them on an asinh axis."""
    groups = [(k, v) for k, v in data.scores.items() if v.size]
    values = np.concatenate([v for _, v in groups]) if groups else np.zeros(0)
    t = data.threshold
    fig, font = _figure(size, panels=1.6)
    zoom, overview = fig.subplots(2, 1, height_ratios=[1.6, 1])
    window = zoom_window(values, t)
    peaks = {zoom: 0.0, overview: 0.0}  # the tallest bar of each panel
    others = [v for v in data.versions if v != data.profile_version]
    note = f"; also judged by {', '.join(others)}" if others else ""
    newest = f" (newest {MAX_SCORES:,} parts)" if data.scores_capped else ""
    zoom.set_title(f"Scores around the threshold{newest}{note}", fontsize=font * 1.1)
    overview.set_title("All scores (asinh axis: linear near 0, logarithmic far out)", fontsize=font)
    if values.size and window is not None:
        lo, hi = window
        edges = np.linspace(lo, hi, BINS + 1)
        wide = overview_edges(values, t, (hi - lo) / 2)
        for name, v in groups:
            inside = v[(v >= lo) & (v <= hi)]
            for ax, bins, part in ((zoom, edges, inside), (overview, wide, v)):
                ax.hist(part, bins=bins, histtype="stepfilled", alpha=0.35, color=COLOURS[name])
                n, *_ = ax.hist(part, bins=bins, histtype="step", linewidth=1.4, color=COLOURS[name],
                                label=f"{name} (n={v.size})" if ax is zoom else None)
                peaks[ax] = max(peaks[ax], float(np.max(n, initial=0)))
        below, above = int((values < lo).sum()), int((values > hi).sum())
        box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
        if below:
            zoom.text(0.01, 0.97, f"← {below} below", transform=zoom.transAxes, ha="left", va="top",
                      fontsize=font * 0.9, bbox=box)
        if above:
            zoom.text(0.99, 0.97, f"{above} above →", transform=zoom.transAxes, ha="right", va="top",
                      fontsize=font * 0.9, bbox=box)
        zoom.set_xlim(lo, hi)
        overview.set_xscale("asinh", linear_width=(hi - lo) / 2)
        overview.set_xlim(wide[0], wide[-1])
        overview.xaxis.set_major_locator(FixedLocator(overview_ticks(wide[0], wide[-1], t, (hi - lo) / 2)))
        overview.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"))
        overview.xaxis.set_minor_locator(NullLocator())
    else:
        _empty(zoom, "no scored parts in this range")
    for ax in (zoom, overview):
        if t is not None:
            ax.axvline(t, color=COLOURS["threshold"], linewidth=2,
                       label=f"threshold {t:.2f} ({data.profile_version or '?'})" if ax is zoom else None)
        count_axis(ax, peaks[ax], "parts", font)
        ax.tick_params(labelsize=font * 0.9)
        ax.grid(alpha=0.3)
    overview.set_xlabel("anomaly score (higher = more anomalous)", fontsize=font)
    if zoom.get_legend_handles_labels()[0]:
        if size == "narrow":
            fig.legend(loc="outside lower center", fontsize=font * 0.9, ncols=2)
        else:
            zoom.legend(loc="upper center", fontsize=font * 0.9)
    return fig


def scores_png(data: StatsData, size: str = "wide") -> bytes:
    """The score distribution (scores_figure) as PNG bytes."""
    with _LOCK:
        return _png(scores_figure(data, size))
