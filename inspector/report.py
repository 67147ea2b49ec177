"""Evaluation report adapter: anomaly-map overlays, ROC and score-histogram PNGs, and a static HTML page.

Only file output lives here. Plots use `matplotlib.figure.Figure` with an explicit Agg canvas, so no global
pyplot state or backend is touched. Every file is written atomically (temporary file, then `os.replace`).
A part counts as defective when its score is strictly above the threshold (as in `NormalProfile.predict`).

The score histogram shows the region around the threshold in detail (`zoom_window`: from the low end of the
scores at or below the threshold to as far above it; parts beyond are counted at its edges) over all scores on
an asinh axis, both with a logarithmic count axis, so a few very high scores or a thousand good parts no longer
hide what happens at the threshold. The page groups the overlays it is given into missed defects, false alarms
and the most anomalous of the rest, lists every missed defect and false alarm, and links each part's original
at full resolution when the caller passes it (`originals`).
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator
from sklearn.metrics import roc_auc_score, roc_curve

from inspector.overlay import MAP_CLIP, MAP_LIMIT, overlay
from inspector.overlay import check_pair as _check_pair


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif"})
_MAX_STEM = 80
_PANEL_MIN_W = 320  # overlay panels narrower than this are enlarged (nearest neighbour) so captions fit
_PANEL_MAX_W = 1024  # wider panels are reduced (area) to keep report files small
_GOOD_COLOUR = "tab:green"
_THRESHOLD_COLOUR = "red"
_BINS = 40
_LOG_COUNTS_FROM = 20  # the tallest bar from which the histogram counts on a logarithmic axis
MAX_LISTED = 48  # overlays per section of the page (missed defects, false alarms); the rest are named only
_COPIED = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}  # originals browsers show: copied as they are


# ------------------------------------------------------------------------------------------ pure helpers
def safe_name(name: str) -> str:
    """File-name-safe form of an image name: [A-Za-z0-9._-] only, image suffix dropped, at most 80 characters."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in _IMAGE_SUFFIXES else name
    stem = _UNSAFE.sub("_", stem).lstrip(".")[-_MAX_STEM:]
    return stem or "image"


def _validate(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """labels (N,) as bool and scores (N,) as float64, checked for shape agreement and finiteness."""
    lab = np.asarray(labels)
    sc = np.asarray(scores, dtype=np.float64)
    if lab.ndim != 1 or sc.ndim != 1 or lab.shape != sc.shape:
        raise ValueError(f"labels and scores must both be (N,), got {lab.shape} and {sc.shape}")
    if not np.isfinite(sc).all():
        raise ValueError("scores must all be finite")
    return lab.astype(bool), sc


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUROC, or None when only one class is present (the ROC is then undefined)."""
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


# ------------------------------------------------------------------------------------------ file writing
def _write_bytes(path: Path, data: bytes) -> None:
    """Write atomically: a temporary file in the same folder, then rename over `path` (umask-governed mode)."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # unlike mkstemp's 0600, readable per umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _save_figure(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _write_bytes(Path(path), buf.getvalue())


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, enc = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path.name} as PNG")
    _write_bytes(path, enc.tobytes())


# ------------------------------------------------------------------------------------------ plots
def roc_png(path: Path, labels: np.ndarray, scores: np.ndarray, title: str) -> None:
    """Write a 600x600 PNG of the ROC curve of scores (N,) against labels (N,) bool (True = defective)."""
    lab, sc = _validate(labels, scores)
    fig = Figure(figsize=(6, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    auc = _auroc(lab, sc)
    if auc is None:
        ax.text(0.5, 0.5, "ROC undefined:\nneeds both good and defective parts", ha="center", va="center",
                transform=ax.transAxes, fontsize=11, bbox={"facecolor": "white", "edgecolor": "grey"})
    else:
        fpr, tpr, _ = roc_curve(lab, sc)
        ax.plot(fpr, tpr, color="tab:blue", linewidth=2, label=f"AUROC = {auc:.3f}")
    n_bad = int(lab.sum())
    ax.set_title(f"{title}\n{len(lab) - n_bad} good, {n_bad} defective", fontsize=12)
    ax.set_xlabel("false positive rate (good parts flagged)")
    ax.set_ylabel("true positive rate (defects caught)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save_figure(fig, path)


def zoom_window(scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """The score range shown in detail around the threshold: from the low end of the scores at or below it (their
    2nd percentile and a tenth more, so one odd part does not stretch it) to as far above it."""
    below = scores[scores <= threshold]
    span = 1.1 * (threshold - float(np.percentile(below, 2))) if below.size else 0.0  # a margin for the lowest
    if not span > 1e-9:
        span = max(abs(threshold) * 0.5, 1.0)
    return threshold - span, threshold + span


def _overview_ticks(lo: float, hi: float, threshold: float, width: float) -> list[float]:
    """Ticks for the asinh axis: the threshold, 0 and powers of ten, each at least a tenth of the axis apart."""
    a, b = np.arcsinh(lo / width), np.arcsinh(hi / width)
    candidates = [threshold, 0.0] + [s * 10.0 ** k for k in range(-3, 16) for s in (1, -1)]
    kept: list[float] = []
    for x in candidates:
        if lo <= x <= hi and all(abs(np.arcsinh(x / width) - np.arcsinh(y / width)) >= 0.1 * (b - a) for y in kept):
            kept.append(x)
    return sorted(kept)


def histogram_figure(labels: np.ndarray, scores: np.ndarray, threshold: float, title: str,
                     types: Sequence[str] | None = None) -> Figure:
    """Overlapping score histograms (good vs defective, or per type) with the threshold, 800 x 750 px: the region
    around the threshold in detail (parts beyond it counted at its edges) over all scores on an asinh axis."""
    lab, sc = _validate(labels, scores)
    if types is not None and len(types) != len(sc):
        raise ValueError(f"types must have one entry per score ({len(sc)}), got {len(types)}")
    if not math.isfinite(threshold):
        raise ValueError("threshold must be finite")
    groups: list[tuple[str, np.ndarray, str]] = [("good", sc[~lab], _GOOD_COLOUR)]
    if types is None:
        groups.append(("defective", sc[lab], "tab:orange"))
    else:
        typ = np.asarray([str(t) for t in types], dtype=object)
        names = sorted(set(typ[lab]))
        for i, name in enumerate(names):
            groups.append((name, sc[lab & (typ == name)], _type_colour(i)))
    lo, hi = zoom_window(sc, threshold)
    width = (hi - lo) / 2
    ends = [float(sc.min(initial=threshold)), float(sc.max(initial=threshold)), threshold]
    a, b = np.arcsinh(min(ends) / width), np.arcsinh(max(ends) / width)
    if b - a < 1e-9:
        a, b = a - 0.5, b + 0.5
    wide = width * np.sinh(np.linspace(a, b, _BINS + 1))
    wide[0], wide[-1] = min(wide[0], min(ends)), max(wide[-1], max(ends))  # sinh(arcsinh(x)) may miss x
    edges = np.linspace(lo, hi, _BINS + 1)

    fig = Figure(figsize=(8, 7.5), dpi=100, layout="constrained")
    zoom, overview = fig.subplots(2, 1, height_ratios=[1.7, 1])
    peaks = {zoom: 0.0, overview: 0.0}  # the tallest bar of each panel
    for name, values, colour in groups:
        if values.size == 0:
            continue
        fill = 0.35 if len(groups) <= 2 or colour == _GOOD_COLOUR else 0.15  # many types: keep overlaps legible
        inside = values[(values >= lo) & (values <= hi)]
        for ax, bins, part in ((zoom, edges, inside), (overview, wide, values)):
            ax.hist(part, bins=bins, histtype="stepfilled", color=colour, alpha=fill)
            n, *_ = ax.hist(part, bins=bins, histtype="step", color=colour, linewidth=1.8,
                            label=f"{name} (n={values.size})" if ax is zoom else None)
            peaks[ax] = max(peaks[ax], float(np.max(n, initial=0)))
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
    below, above = int((sc < lo).sum()), int((sc > hi).sum())
    if below:
        zoom.text(0.01, 0.97, f"\u2190 {below} below", transform=zoom.transAxes, ha="left", va="top", fontsize=9,
                  bbox=box)
    if above:
        zoom.text(0.99, 0.97, f"{above} above \u2192", transform=zoom.transAxes, ha="right", va="top", fontsize=9,
                  bbox=box)
    zoom.set_xlim(lo, hi)
    overview.set_xscale("asinh", linear_width=width)
    overview.set_xlim(wide[0], wide[-1])
    overview.xaxis.set_major_locator(FixedLocator(_overview_ticks(wide[0], wide[-1], threshold, width)))
    overview.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"))
    overview.xaxis.set_minor_locator(NullLocator())
    for ax in (zoom, overview):
        ax.axvline(threshold, color=_THRESHOLD_COLOUR, linewidth=2,
                   label=f"threshold = {threshold:.2f}" if ax is zoom else None)
        if peaks[ax] > _LOG_COUNTS_FROM:  # one missed defect shows beside 1,000 good parts
            ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
            ax.set_ylim(0, ax.get_ylim()[1])
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _p: f"{y:,.0f}"))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_ylabel("number of parts (log)")
        else:
            ax.set_ylim(0, max(1.0, peaks[ax]) * 1.15)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("number of parts")
        ax.grid(alpha=0.3)
    flagged = sc > threshold
    sub = []
    if (~lab).any():
        sub.append(f"false alarms {flagged[~lab].mean():.1%}")
    if lab.any():
        sub.append(f"defects caught {flagged[lab].mean():.1%}")
    zoom.set_title(title + (f"\n{', '.join(sub)} (score > threshold)" if sub else "") + "\naround the threshold",
                   fontsize=12)
    overview.set_title("all scores (asinh axis: linear near 0, logarithmic far out)", fontsize=10)
    overview.set_xlabel("anomaly score (higher = more anomalous)")
    zoom.legend(loc="upper center", fontsize=9)
    return fig


def histogram_png(path: Path, labels: np.ndarray, scores: np.ndarray, threshold: float, title: str,
                  types: Sequence[str] | None = None) -> None:
    """Write histogram_figure as an 800x750 PNG."""
    _save_figure(histogram_figure(labels, scores, threshold, title, types), path)


def _type_colour(i: int) -> str:
    """Distinct colours for defect types, never green (reserved for good parts)."""
    palette = ["tab:orange", "tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray",
               "tab:red", "gold", "navy", "maroon", "teal", "black"]
    return palette[i % len(palette)]


# ------------------------------------------------------------------------------------------ overlay panels
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BAND_BG = (32, 32, 32)
_TEXT = (240, 240, 240)
_DEFECT_TEXT = (90, 90, 255)
_OK_TEXT = (120, 220, 120)


def _ascii(text: str) -> str:
    """Hershey fonts only draw ASCII: replace everything else by '?'."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _fit(text: str, width: int, scale: float, thick: int) -> str:
    """Shorten text from the left ('...' prefix) until it fits `width` pixels."""
    if cv2.getTextSize(text, _FONT, scale, thick)[0][0] <= width:
        return text
    while len(text) > 1 and cv2.getTextSize("..." + text, _FONT, scale, thick)[0][0] > width:
        text = text[1:]
    return "..." + text


def _panel_resize(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if w < _PANEL_MIN_W:
        f = math.ceil(_PANEL_MIN_W / w)
        return cv2.resize(img, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    if w > _PANEL_MAX_W:
        return cv2.resize(img, (_PANEL_MAX_W, max(1, round(h * _PANEL_MAX_W / w))), interpolation=cv2.INTER_AREA)
    return img


def captioned_overlay(name: str, score: float, threshold: float, image: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """[original | overlay] side by side under a caption band (name, score, threshold, verdict); uint8 BGR."""
    image, amap = _check_pair(image, amap)
    left = _panel_resize(image)
    right = overlay(left, amap)  # drawn at panel size so the contour stays thin on enlarged small images
    h, w = left.shape[:2]
    sep = max(4, w // 100)
    body = np.full((h, 2 * w + sep, 3), _BAND_BG, np.uint8)
    body[:, :w] = left
    body[:, w + sep:] = right
    width = body.shape[1]
    scale = float(np.clip(width / 1100, 0.45, 1.0))
    thick = 1 if scale < 0.75 else 2
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    line = th + base + max(4, th // 2)
    pad = max(6, th // 2)
    defect = score > threshold
    rows = [
        (_fit(_ascii(name), width - 2 * pad, scale, thick), _TEXT),
        (f"score {score:.3f}   threshold {threshold:.3f}   {'DEFECT' if defect else 'ok'}",
         _DEFECT_TEXT if defect else _OK_TEXT),
    ]
    band = np.full((pad + line * (len(rows) + 1), width, 3), _BAND_BG, np.uint8)
    for i, (text, colour) in enumerate(rows):
        cv2.putText(band, text, (pad, pad + th + i * line), _FONT, scale, colour, thick, cv2.LINE_AA)
    y = pad + th + len(rows) * line
    small = scale * 0.85
    cv2.putText(band, "original", (pad, y), _FONT, small, (180, 180, 180), 1, cv2.LINE_AA)
    cv2.putText(band, _fit(f"anomaly map (0-{MAP_CLIP:g}, contour > {MAP_LIMIT:g})", w - 2 * pad, small, 1),
                (w + sep + pad, y), _FONT, small, (180, 180, 180), 1, cv2.LINE_AA)
    return np.vstack([band, body])


# ------------------------------------------------------------------------------------------ the report
Original = Path | np.ndarray  # a part's original image: its file, or the decoded BGR pixels


@dataclass
class _Shown:
    """One part on the page: where it belongs, its overlay and its original as written (None when not given)."""

    name: str
    score: float
    kind: str  # "missed", "alarm" or "top"
    overlay: Path | None = None
    original: Path | None = None
    size: tuple[int, int] | None = None  # the original's width and height


def _kind(name: str, score: float, threshold: float, where: dict[str, int], lab: np.ndarray,
          sc: np.ndarray) -> str:
    """"missed" (defective, not flagged), "alarm" (good, flagged) or "top" (right, or not among the parts)."""
    i = where.get(name)
    if i is None:
        return "top"
    bad, flagged = bool(lab[i]), bool(sc[i] > threshold)
    return "missed" if bad and not flagged else "alarm" if flagged and not bad else "top"


def _write_original(stem: Path, source: Original) -> tuple[Path, tuple[int, int]] | None:
    """A part's original at full resolution beside the report: a PNG or JPEG file copied as it is, any other
    file (TIFF, BMP, ...) or pixels written as PNG. (path, (width, height)); None when it cannot be read."""
    if isinstance(source, np.ndarray):
        image = np.asarray(source)
        if image.ndim not in (2, 3) or 0 in image.shape:
            return None
        path = stem.with_name(stem.name + ".png")
        _write_png(path, image)
        return path, (image.shape[1], image.shape[0])
    try:
        raw = Path(source).read_bytes()
    except OSError:
        return None
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    size = (int(image.shape[1]), int(image.shape[0]))
    suffix = next((ext for magic, ext in _COPIED.items() if raw.startswith(magic)), None)
    if suffix is not None:
        path = stem.with_name(stem.name + suffix)
        _write_bytes(path, raw)
        return path, size
    colour = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if colour is None:
        return None
    path = stem.with_name(stem.name + ".png")
    _write_png(path, colour)
    return path, size


def write_eval_report(out_dir: Path, *, labels: np.ndarray, scores: np.ndarray, threshold: float,
                      names: Sequence[str], types: Sequence[str],
                      top_images: Sequence[tuple[str, float, np.ndarray, np.ndarray]], title: str,
                      originals: Mapping[str, Original] | None = None) -> list[Path]:
    """Write roc.png, histogram.png, overlay_NN_<name>.png per given overlay, original_NN_<name>.<ext> per part
    shown whose original is in `originals` (by name), and index.html; return their paths.

    `top_images` are the overlays to show, (name, score, image, map): the page puts each one whose name is a
    missed defect (defective, score at or below the threshold) or a false alarm (good, score above it) in that
    section, and the rest under "most anomalous parts". Every missed defect and false alarm is listed, with its
    overlay when one was given (up to MAX_LISTED per section; a name given twice is drawn once). `originals` maps
    names to the original file (copied as it is when PNG or JPEG, else converted to PNG) or its full-resolution
    pixels; each shown part links to it.
    """
    lab, sc = _validate(labels, scores)
    if len(names) != len(sc) or len(types) != len(sc):
        raise ValueError(f"names and types must have one entry per score ({len(sc)}), "
                         f"got {len(names)} and {len(types)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    roc = out_dir / "roc.png"
    roc_png(roc, lab, sc, title)
    written.append(roc)
    hist = out_dir / "histogram.png"
    histogram_png(hist, lab, sc, threshold, title, types=types)
    written.append(hist)

    where: dict[str, int] = {}
    for i, n in enumerate(names):
        where.setdefault(str(n), i)
    shown: list[_Shown] = []
    for name, score, image, amap in top_images:
        if any(s.name == str(name) for s in shown):  # given twice (a top score that is also a false alarm)
            continue
        p = out_dir / f"overlay_{len(shown) + 1:02d}_{safe_name(str(name))}.png"
        _write_png(p, captioned_overlay(str(name), float(score), threshold, image, amap))
        written.append(p)
        shown.append(_Shown(str(name), float(score), _kind(str(name), float(score), threshold, where, lab, sc), p))
    with_overlay = {s.name for s in shown}
    for i in np.argsort(-sc, kind="stable"):  # the missed defects and false alarms no overlay was given for
        name = str(names[i])
        kind = _kind(name, float(sc[i]), threshold, where, lab, sc)
        if kind != "top" and name not in with_overlay and where[name] == i:
            shown.append(_Shown(name, float(sc[i]), kind))
    if originals:
        listed = {"missed": 0, "alarm": 0, "top": 0}
        for n, part in enumerate(shown, start=1):
            listed[part.kind] += 1
            if part.name in originals and (part.overlay is not None or listed[part.kind] <= MAX_LISTED):
                found = _write_original(out_dir / f"original_{n:02d}_{safe_name(part.name)}", originals[part.name])
                if found is not None:
                    part.original, part.size = found
                    written.append(found[0])

    index = out_dir / "index.html"
    _write_bytes(index, _html(title, lab, sc, threshold, names, types, roc, hist, shown).encode("utf-8"))
    written.append(index)
    return written


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
.plots img{max-width:100%;margin-right:1em;border:1px solid #ccc}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ccc}figcaption{font-size:.9em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
td.num{text-align:right;font-family:monospace}tr.miss{background:#fdd}tr.alarm{background:#ffe9c6}
.defect{color:#c00;font-weight:bold}"""


def _html(title: str, lab: np.ndarray, sc: np.ndarray, threshold: float, names: Sequence[str],
          types: Sequence[str], roc: Path, hist: Path, shown: list[_Shown]) -> str:
    e = html.escape

    def src(p: Path) -> str:
        return e(quote(p.name))

    flagged = sc > threshold
    n_bad = int(lab.sum())
    auc = _auroc(lab, sc)
    facts = [f"{len(sc) - n_bad} good and {n_bad} defective parts",
             f"threshold {threshold:.4g} (defective when score &gt; threshold)"]
    facts.append(f"AUROC {auc:.3f}" if auc is not None else "AUROC undefined (one class only)")
    if (~lab).any():
        facts.append(f"false alarms {int(flagged[~lab].sum())}/{len(sc) - n_bad} ({flagged[~lab].mean():.1%})")
    if lab.any():
        facts.append(f"defects caught {int(flagged[lab].sum())}/{n_bad} ({flagged[lab].mean():.1%})")

    def original(part: _Shown) -> str:
        if part.original is None or part.size is None:
            return ""
        return (f' &middot; <a class="original" href="{src(part.original)}">original at full resolution, '
                f"{part.size[0]} &times; {part.size[1]} px</a>")

    def figure(part: _Shown) -> str:
        assert part.overlay is not None
        verdict = '<span class="defect">defect</span>' if part.score > threshold else "ok"
        return (f'<figure><a href="{src(part.overlay)}"><img src="{src(part.overlay)}" alt="{e(part.name)}"></a>'
                f"<figcaption><b>{e(part.name)}</b> &mdash; score {part.score:.3f}, threshold {threshold:.3f}: "
                f"{verdict}{original(part)}</figcaption></figure>")

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
           "<ul>" + "".join(f"<li>{f}</li>" for f in facts) + "</ul>",
           '<div class="plots">',
           f'<img src="{src(roc)}" alt="ROC curve" width="600">',
           f'<img src="{src(hist)}" alt="score histogram, around the threshold and in full" width="800">',
           "</div>"]
    if any(p.overlay is not None for p in shown):
        out.append(f"<p>Overlays, left: original; right: anomaly map in map units, blue 0 to red {MAP_CLIP:g}; "
                   f"the white contour encloses values above {MAP_LIMIT:g} (top of the normal range). Click one for "
                   "its full size.</p>")
    sections = (("missed", "missed", "Missed defects", "defective parts scored at or below the threshold"),
                ("alarm", "alarms", "False alarms", "good parts scored above the threshold"))
    for kind, anchor, heading, what in sections:
        parts = [p for p in shown if p.kind == kind]
        out.append(f'<h2 id="{anchor}">{heading} ({len(parts)})</h2>')
        if not parts:
            out.append(f"<p>None: no {what}.</p>")
            continue
        out.append(f"<p>The {what}, highest score first among those without an overlay.</p>")
        out += [figure(p) for p in parts if p.overlay is not None][:MAX_LISTED]
        rest = [p for p in parts if p.overlay is None]
        if rest:
            items = "".join(f"<li>{e(p.name)} &mdash; score {p.score:.3f}{original(p)}</li>" for p in rest)
            out.append(f'<p>Without an overlay in this report:</p><ul class="rest">{items}</ul>')
    top = [p for p in shown if p.kind == "top" and p.overlay is not None]
    if top:
        out.append('<h2 id="top">Most anomalous parts</h2>')
        out += [figure(p) for p in top]
    out.append("<h2>All parts by score</h2><table><thead><tr><th>#</th><th>name</th><th>type</th><th>truth</th>"
               "<th>score</th><th>verdict</th></tr></thead><tbody>")
    for rank, i in enumerate(np.argsort(-sc, kind="stable"), start=1):
        bad, flag = bool(lab[i]), bool(flagged[i])
        cls = ' class="miss"' if bad and not flag else ' class="alarm"' if flag and not bad else ""
        out.append(f"<tr{cls}><td class=num>{rank}</td><td>{e(str(names[i]))}</td><td>{e(str(types[i]))}</td>"
                   f"<td>{'defective' if bad else 'good'}</td><td class=num>{sc[i]:.4f}</td>"
                   f"<td>{'defect' if flag else 'ok'}</td></tr>")
    out.append("</tbody></table>")
    out.append("<p>Rows in red: missed defects; in orange: false alarms.</p></body></html>")
    return "\n".join(out) + "\n"
