"""Evaluation report adapter: anomaly-map overlays, ROC and score-histogram PNGs, and a static HTML page.

Only file output lives here. Plots use `matplotlib.figure.Figure` with an explicit Agg canvas, so no global
pyplot state or backend is touched. Every file is written atomically (temporary file, then `os.replace`).
A part counts as defective when its score is strictly above the threshold (as in `NormalProfile.predict`).
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
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


def histogram_png(path: Path, labels: np.ndarray, scores: np.ndarray, threshold: float, title: str,
                  types: Sequence[str] | None = None) -> None:
    """Write an 800x500 PNG of overlapping score histograms (good vs defective, or per type) with the threshold."""
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
    lo, hi = min(float(sc.min(initial=threshold)), threshold), max(float(sc.max(initial=threshold)), threshold)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    n_bins = int(np.clip(np.histogram_bin_edges(sc, bins="auto", range=(lo, hi)).size - 1, 15, 50)) if sc.size else 15
    edges = np.linspace(lo, hi, n_bins + 1)

    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name, values, colour in groups:
        if values.size == 0:
            continue
        fill = 0.35 if len(groups) <= 2 or colour == _GOOD_COLOUR else 0.15  # many types: keep overlaps legible
        ax.hist(values, bins=edges, histtype="stepfilled", color=colour, alpha=fill)
        ax.hist(values, bins=edges, histtype="step", color=colour, linewidth=1.8, label=f"{name} (n={values.size})")
    ax.axvline(threshold, color=_THRESHOLD_COLOUR, linewidth=2, label=f"threshold = {threshold:.2f}")
    right = threshold > (lo + hi) / 2  # put the label on the roomier side of the line
    ax.annotate(f"threshold = {threshold:.2f}", xy=(threshold, 1.0), xycoords=("data", "axes fraction"),
                xytext=(-4 if right else 4, -4), textcoords="offset points", ha="right" if right else "left",
                va="top", color=_THRESHOLD_COLOUR, fontsize=10,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    flagged = sc > threshold
    sub = []
    if (~lab).any():
        sub.append(f"false alarms {flagged[~lab].mean():.1%}")
    if lab.any():
        sub.append(f"defects caught {flagged[lab].mean():.1%}")
    ax.set_title(title + (f"\n{', '.join(sub)} (score > threshold)" if sub else ""), fontsize=12)
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.set_ylabel("number of parts")
    ax.grid(alpha=0.3)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=9)
    _save_figure(fig, path)


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
def write_eval_report(out_dir: Path, *, labels: np.ndarray, scores: np.ndarray, threshold: float,
                      names: Sequence[str], types: Sequence[str],
                      top_images: Sequence[tuple[str, float, np.ndarray, np.ndarray]], title: str) -> list[Path]:
    """Write roc.png, histogram.png, overlay_NN_<name>.png per top image and index.html; return their paths."""
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

    figures: list[tuple[Path, str, float]] = []
    for i, (name, score, image, amap) in enumerate(top_images, start=1):
        p = out_dir / f"overlay_{i:02d}_{safe_name(str(name))}.png"
        _write_png(p, captioned_overlay(str(name), float(score), threshold, image, amap))
        written.append(p)
        figures.append((p, str(name), float(score)))

    index = out_dir / "index.html"
    _write_bytes(index, _html(title, lab, sc, threshold, names, types, roc, hist, figures).encode("utf-8"))
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
          types: Sequence[str], roc: Path, hist: Path, figures: list[tuple[Path, str, float]]) -> str:
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

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
           "<ul>" + "".join(f"<li>{f}</li>" for f in facts) + "</ul>",
           '<div class="plots">',
           f'<img src="{src(roc)}" alt="ROC curve" width="600">',
           f'<img src="{src(hist)}" alt="score histogram" width="800">',
           "</div>"]
    if figures:
        out.append(f"<h2>Most anomalous parts</h2><p>Left: original. Right: anomaly map in map units, blue 0 to "
                   f"red {MAP_CLIP:g}; the white contour encloses values above {MAP_LIMIT:g} "
                   "(top of the normal range).</p>")
        for p, name, score in figures:
            verdict = '<span class="defect">defect</span>' if score > threshold else "ok"
            out.append(f'<figure><img src="{src(p)}" alt="{e(name)}"><figcaption><b>{e(name)}</b> &mdash; '
                       f"score {score:.3f}, threshold {threshold:.3f}: {verdict}</figcaption></figure>")
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
