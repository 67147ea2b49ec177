"""Tests for inspector.report: overlays, ROC and histogram PNGs, and the static HTML evaluation report."""

from __future__ import annotations

import html
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.report import captioned_overlay, histogram_png, overlay, roc_png, safe_name, write_eval_report


def _image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 200, size=(h, w, 3), dtype=np.uint8)


def _corner_map(gh: int = 8, gw: int = 8) -> np.ndarray:
    amap = np.full((gh, gw), 0.2, np.float32)
    amap[:2, :2] = 1.9  # high in the top-left corner only
    return amap


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    types = ["good"] * 30 + ["scratch"] * 12 + ["crack"] * 8
    labels = np.array([t != "good" for t in types])
    scores = np.where(labels, rng.normal(2.5, 1.0, labels.size), rng.normal(0.0, 1.0, labels.size))
    names = [f"{t}/{i:03d}.png" for i, t in enumerate(types)]
    return labels, scores, names, types


def _png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None
    return img


# ------------------------------------------------------------------------------------------ overlay
def test_overlay_keeps_shape_and_dtype() -> None:
    img = _image(97, 131)
    out = overlay(img, np.random.default_rng(1).random((7, 9), dtype=np.float32) * 2)
    assert out.shape == img.shape
    assert out.dtype == np.uint8


def test_overlay_changes_pixels_only_where_the_map_is_high() -> None:
    img = _image(160, 160)
    out = overlay(img, _corner_map())
    changed = np.any(out != img, axis=2)
    # the anomalous cells cover the top-left 40x40 pixels; bilinear upsampling spreads them by half a cell
    corner = changed[:60, :60]
    elsewhere = changed.copy()
    elsewhere[:60, :60] = False
    assert corner[:35, :35].mean() > 0.95
    assert not elsewhere.any()
    assert changed[:60, :60].sum() / changed.sum() == 1.0


def test_overlay_low_map_leaves_the_image_untouched_and_is_pure() -> None:
    img = _image()
    before = img.copy()
    amap = np.full((6, 6), 0.3, np.float32)
    assert np.array_equal(overlay(img, amap), img)
    overlay(img, _corner_map())
    assert np.array_equal(img, before)


def test_overlay_draws_a_white_contour_around_the_anomaly() -> None:
    img = np.full((160, 160, 3), 100, np.uint8)
    out = overlay(img, _corner_map())
    white = np.all(out == 255, axis=2)
    assert white.any()
    ys, xs = np.nonzero(white)
    assert ys.max() < 60 and xs.max() < 60


def test_overlay_colours_high_values_red_and_alpha_zero_only_draws_the_contour() -> None:
    img = np.full((80, 80, 3), 128, np.uint8)
    amap = np.full((4, 4), 2.0, np.float32)
    out = overlay(img, amap)
    centre = out[40, 40].astype(int)  # BGR: JET at the top of the scale is red
    assert centre[2] > centre[0] + 40
    assert np.array_equal(overlay(img, np.zeros((4, 4), np.float32), alpha=0.0), img)


def test_overlay_blends_each_pixel_by_its_map_value_within_one_grey_level() -> None:
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    amap = rng.normal(0.9, 0.8, (9, 12)).astype(np.float32)
    amap[amap > 1.0] = 0.9  # no contour: the blend alone
    out = overlay(img, amap, alpha=0.45)
    up = cv2.resize(amap, (120, 90), interpolation=cv2.INTER_LINEAR)
    shades = np.round(np.clip(up / 2.0, 0.0, 1.0) * 255.0).astype(np.uint8)
    colour = cv2.applyColorMap(shades, cv2.COLORMAP_JET).astype(np.float64)
    weight = 0.45 * np.clip(up - 0.5, 0.0, 1.0)[..., None]
    expected = np.round(img * (1.0 - weight) + colour * weight)
    assert np.abs(out - expected).max() <= 1.0
    assert np.array_equal(out[up[..., None].repeat(3, axis=2) <= 0.5], img[up[..., None].repeat(3, axis=2) <= 0.5])


def test_overlay_tolerates_non_finite_map_values() -> None:
    amap = _corner_map()
    amap[5, 5] = np.nan
    amap[6, 6] = np.inf
    out = overlay(_image(), amap)
    assert out.shape == (120, 160, 3)


@pytest.mark.parametrize(
    ("image", "amap", "alpha"),
    [
        (np.zeros((10, 10), np.uint8), np.zeros((2, 2), np.float32), 0.5),
        (np.zeros((10, 10, 3), np.float32), np.zeros((2, 2), np.float32), 0.5),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((2, 2, 1), np.float32), 0.5),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((2, 2), np.float32), 1.5),
    ],
)
def test_overlay_rejects_bad_input(image: np.ndarray, amap: np.ndarray, alpha: float) -> None:
    with pytest.raises(ValueError):
        overlay(image, amap, alpha)


# ------------------------------------------------------------------------------------------ plots
def test_roc_png_writes_a_square_png(tmp_path: Path) -> None:
    labels, scores, _, _ = _data()
    path = tmp_path / "roc.png"
    roc_png(path, labels, scores, "bottle")
    img = _png(path)
    assert 500 <= img.shape[0] <= 700 and 500 <= img.shape[1] <= 700
    assert img.std() > 10  # not blank
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]  # no temporary left behind


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_written_files_get_umask_permissions_not_private_temp_ones(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        roc_png(tmp_path / "roc.png", np.array([True, False]), np.array([1.0, 0.0]), "t")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "roc.png").stat().st_mode) == 0o644


def test_roc_png_with_a_single_class_still_writes(tmp_path: Path) -> None:
    path = tmp_path / "roc.png"
    roc_png(path, np.zeros(5, bool), np.arange(5.0), "only good")
    _png(path)


def test_histogram_png_writes_a_png_with_and_without_types(tmp_path: Path) -> None:
    labels, scores, _, types = _data()
    for name, t in (("plain.png", None), ("typed.png", types)):
        histogram_png(tmp_path / name, labels, scores, 1.5, "bottle", types=t)
        img = _png(tmp_path / name)
        assert 400 <= img.shape[0] <= 800 and 700 <= img.shape[1] <= 900  # two panels: 800 x 750
        # the threshold line: a strongly red column of pixels somewhere in the plot
        red = (img[..., 2] > 200) & (img[..., 1] < 60) & (img[..., 0] < 60)
        assert red.sum(axis=0).max() > 200


def test_histogram_png_threshold_outside_the_scores_and_constant_scores(tmp_path: Path) -> None:
    histogram_png(tmp_path / "a.png", np.array([False, True]), np.array([1.0, 1.0]), 1.0, "flat")
    histogram_png(tmp_path / "b.png", np.array([False, True, True]), np.array([0.0, 0.5, 1.0]), 9.0, "far")
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")


def test_plots_reject_mismatched_or_non_finite_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        roc_png(tmp_path / "r.png", np.array([True, False]), np.array([1.0]), "x")
    with pytest.raises(ValueError):
        histogram_png(tmp_path / "h.png", np.array([True, False]), np.array([1.0, np.nan]), 0.0, "x")
    with pytest.raises(ValueError):
        histogram_png(tmp_path / "h.png", np.array([True, False]), np.array([1.0, 0.0]), 0.0, "x", types=["a"])
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ report
def test_safe_name() -> None:
    assert safe_name("bottle/broken large/000.png") == "bottle_broken_large_000"
    assert safe_name("<b>&.png") == "_b__"
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert safe_name("...") == "image"
    assert safe_name("données.jpg") == "donn_es"
    assert len(safe_name("x" * 500)) == 80
    assert re.fullmatch(r"[A-Za-z0-9._-]+", safe_name("a b/c\\d:e*f?g\"h<i>j|k\x00"))


def test_captioned_overlay_puts_a_band_above_two_panels() -> None:
    img = _image(100, 150)
    out = captioned_overlay("bottle/001.png", 3.2, 1.0, img, _corner_map())
    assert out.dtype == np.uint8 and out.ndim == 3
    # small panels are enlarged by an integer factor (here 3) so the caption is readable
    assert out.shape[1] > 2 * 150 * 3
    band = out[: out.shape[0] - 300]
    assert band.shape[0] > 20
    assert np.array_equal(out[-300:, :450], cv2.resize(img, (450, 300), interpolation=cv2.INTER_NEAREST))


def test_captioned_overlay_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        captioned_overlay("x", 1.0, 0.5, np.zeros((0, 5, 3), np.uint8), _corner_map())
    with pytest.raises(ValueError):
        captioned_overlay("x", 1.0, 0.5, _image(), np.zeros(4, np.float32))


def test_write_eval_report_writes_all_files_and_escapes_names(tmp_path: Path) -> None:
    labels, scores, names, types = _data()
    names[-1] = "<b>&.png"
    out_dir = tmp_path / "deep" / "report"
    top = [
        (names[-1], float(scores[-1]), _image(64, 96, 1), _corner_map()),
        ("crack/é 7.png", 2.0, _image(64, 96, 2), _corner_map(4, 6)),
    ]
    paths = write_eval_report(out_dir, labels=labels, scores=scores, threshold=1.5, names=names, types=types,
                              top_images=top, title="bottle <test>")
    assert [p.name for p in paths] == ["roc.png", "histogram.png", "overlay_01__b__.png",
                                       "overlay_02_crack___7.png", "index.html"]
    assert all(p.parent == out_dir and p.is_file() for p in paths)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in paths)
    for p in paths[:-1]:
        _png(p)
    ov = _png(paths[2])
    assert ov.shape[1] > 2 * 96

    page = paths[-1].read_text("utf-8")
    for p in paths[:-1]:
        assert f'src="{p.name}"' in page
    assert "<b>&.png" not in page
    assert html.escape("<b>&.png") in page
    assert "bottle &lt;test&gt;" in page
    assert "crack/é 7.png" in page
    assert "<script" not in page.lower()
    assert page.count("<tr") == len(scores) + 1  # header + one row per part


def test_write_eval_report_without_top_images_and_reusing_the_folder(tmp_path: Path) -> None:
    labels, scores, names, types = _data()
    kw = dict(labels=labels, scores=scores, threshold=0.5, names=names, types=types, top_images=[], title="t")
    first = write_eval_report(tmp_path, **kw)
    second = write_eval_report(tmp_path, **kw)
    assert [p.name for p in first] == [p.name for p in second] == ["roc.png", "histogram.png", "index.html"]


def test_write_eval_report_rejects_mismatched_names(tmp_path: Path) -> None:
    labels, scores, names, types = _data()
    with pytest.raises(ValueError):
        write_eval_report(tmp_path / "r", labels=labels, scores=scores, threshold=0.5, names=names[:-1],
                          types=types, top_images=[], title="t")
    assert not (tmp_path / "r").exists()


def test_plotting_does_not_load_pyplot_or_switch_the_backend(tmp_path: Path) -> None:
    out = str(tmp_path / "r.png")
    code = (
        "import sys, numpy as np, matplotlib\n"
        "before = dict.__getitem__(matplotlib.rcParams, 'backend')\n"  # get_backend() would import pyplot
        "from inspector.report import roc_png\n"
        f"roc_png(__import__('pathlib').Path({out!r}), np.array([True, False]), np.array([1.0, 0.0]), 't')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    _png(tmp_path / "r.png")


# ------------------------------------------------------------------------------------------ issue 14
def test_histogram_shows_the_region_around_the_threshold_and_keeps_outliers(tmp_path: Path) -> None:
    from inspector.report import histogram_figure

    rng = np.random.default_rng(3)
    scores = np.r_[rng.normal(1.0, 0.4, 500), rng.normal(3.2, 0.4, 30), 10_000.0]
    labels = np.r_[np.zeros(500, bool), np.ones(31, bool)]
    fig = histogram_figure(labels, scores, 2.5, "outlier")
    zoom, overview = fig.axes[:2]
    lo, hi = zoom.get_xlim()
    assert lo < 2.5 < hi and hi - lo < 10  # not 0 to 10,000, where everything near 2.5 is one bin
    assert lo <= np.percentile(scores[:500], 5)  # the good parts' bulk is in view
    assert any("1 above" in t.get_text() for t in zoom.texts)  # the outlier is counted, not lost
    assert overview.get_xscale() == "asinh" and overview.get_xlim()[1] >= 10_000
    histogram_png(tmp_path / "h.png", labels, scores, 2.5, "outlier")
    _png(tmp_path / "h.png")


def test_report_shows_missed_defects_and_false_alarms_with_originals_at_full_resolution(tmp_path: Path) -> None:
    labels, scores, names, types = _data()
    threshold = 1.5
    flagged = scores > threshold
    missed = [i for i in np.argsort(-scores, kind="stable") if labels[i] and not flagged[i]]
    alarms = [i for i in np.argsort(-scores, kind="stable") if flagged[i] and not labels[i]]
    caught = [i for i in np.argsort(-scores, kind="stable") if flagged[i] and labels[i]]
    assert len(missed) >= 2 and alarms and caught
    src = tmp_path / "src"
    src.mkdir()
    full = _image(900, 1200, 5)  # wider than an overlay panel (1024 px): the original is not reduced
    png, jpg, tif = src / "a.png", src / "b.jpg", src / "c.tif"
    assert cv2.imwrite(str(png), full) and cv2.imwrite(str(jpg), full) and cv2.imwrite(str(tif), full)
    originals = {names[missed[0]]: png, names[alarms[0]]: jpg, names[missed[1]]: tif}
    top = [(names[i], float(scores[i]), _image(120, 160, k), _corner_map()) for k, i in
           enumerate((alarms[0], missed[0], caught[0]), start=1)]
    out = tmp_path / "report"
    paths = write_eval_report(out, labels=labels, scores=scores, threshold=threshold, names=names, types=types,
                              top_images=top, title="t", originals=originals)
    page = (out / "index.html").read_text("utf-8")
    starts = [page.index(h) for h in ('<h2 id="missed">', '<h2 id="alarms">', '<h2 id="top">', "<h2>All parts")]
    assert starts == sorted(starts)
    missed_part, alarm_part, top_part = (page[a:b] for a, b in zip(starts, starts[1:]))
    assert f"Missed defects ({len(missed)})" in missed_part and f"False alarms ({len(alarms)})" in alarm_part
    ov = {p.name.split("_")[1]: p.name for p in paths if p.name.startswith("overlay_")}
    assert f'<img src="{ov["02"]}"' in missed_part and f'<img src="{ov["01"]}"' in alarm_part
    assert f'<img src="{ov["03"]}"' in top_part and "overlay_" not in page[starts[3]:]
    for i in missed[1:]:  # every missed defect is named, overlay or not
        assert html.escape(names[i]) in missed_part
    for i in alarms:
        assert html.escape(names[i]) in alarm_part

    written = {p.name: p for p in paths if p.name.startswith("original_")}
    assert len(written) == 3
    by_source = {}
    for name, p in written.items():
        assert f'href="{name}"' in page
        by_source[p.suffix] = p
    assert by_source[".jpg"].read_bytes() == jpg.read_bytes()  # copied as it is, at full resolution
    assert {p.read_bytes() for p in written.values() if p.suffix == ".png"} >= {png.read_bytes()}
    for p in written.values():
        assert cv2.imread(str(p)).shape[:2] == (900, 1200)
    assert page.count("original at full resolution, 1200 &times; 900 px") == 3
    jpg_name = next(n for n, p in written.items() if p.suffix == ".jpg")
    assert f'href="{jpg_name}"' in alarm_part
