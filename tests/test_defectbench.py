"""The detection-limit benchmark (inspector/tooling/defectbench.py) and the fit-size runner (fitbench.py), at tiny
sizes; never ../shared/data. No speed or detection figure of the product is asserted beyond a defect so large
that missing it would mean the benchmark, not the detector, is broken."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from inspector import cli
from inspector.config import Config
from inspector.profile import ProfileParams
from inspector.synthetic import make_part
from inspector.tooling import defectbench as db
from inspector.tooling import fitbench

SMALL = (320, 240)


def test_min_defect_px_is_the_smallest_d_from_which_every_larger_d_reaches_90_percent():
    assert db.min_defect_px({4: 0.1, 8: 0.95, 16: 0.9, 32: 1.0}) == 8  # exactly 90% counts
    assert db.min_defect_px({4: 0.95, 8: 0.5, 16: 1.0, 32: 0.92}) == 16  # 4 reaches it, but 8 does not
    assert db.min_defect_px({4: 0.0, 32: 0.95, 64: 0.89}) is None  # the largest d falls short: not reached
    assert db.min_defect_px({64: 0.9, 4: 1.0, 16: 0.97}) == 4  # order of the table does not matter
    assert db.min_defect_px({4: 0.5, 8: 0.79}, level=0.75) == 8


def test_wilson_interval():
    lo, hi = db.wilson(36, 40)
    assert lo == pytest.approx(0.769, abs=0.002) and hi == pytest.approx(0.960, abs=0.002)
    assert db.wilson(0, 50)[0] == 0.0 and db.wilson(50, 50)[1] == 1.0


def _clean_part(seed: int = 0, size: tuple[int, int] = (640, 480)) -> tuple[np.ndarray, np.ndarray]:
    """A noise-free generated part and where it is (H, W) bool: every pixel unlike the belt's colour."""
    image = make_part(np.random.default_rng(seed), *size, noise=0.0)
    belt = image[0, 0].astype(int)
    return image, np.abs(image.astype(int) - belt).sum(axis=2) > 6


def _outline_distance(defect: db.Defect, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) distance of each pixel centre from the defect's nominal outline (negative inside)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    xx, yy = xx - defect.cx, yy - defect.cy
    if defect.kind != "scratch":
        return np.hypot(xx, yy) - defect.d / 2
    ux, uy = math.cos(defect.angle), math.sin(defect.angle)
    t = np.clip(xx * ux + yy * uy, -(defect.d - defect.width) / 2, (defect.d - defect.width) / 2)
    return np.hypot(xx - t * ux, yy - t * uy) - defect.width / 2


@pytest.mark.parametrize("kind", db.KINDS)
def test_paste_lands_on_the_part_and_changes_only_the_defect(kind: str):
    image, on_part = _clean_part()
    pm = db.part_mask(image)
    hue = db.off_palette_hue([image], [pm])
    rng = np.random.default_rng(1)
    for d in (4, 12, 48):
        for _ in range(15):
            defect = db.draw(rng, kind, d, pm, hue)
            out, contrast = db.paste(image, defect)
            changed = (out != image).any(axis=2)
            assert changed.any() and contrast > 5  # a dark spot on a dark bolt hole changes little
            assert on_part[changed].all(), f"{kind} d={d} at ({defect.cx:.0f}, {defect.cy:.0f}) left the part"
            margin = 0.5 if kind == "scratch" else db.edge_px(d) / 2
            assert (_outline_distance(defect, image.shape)[changed] <= margin + 1e-6).all()
            core = _outline_distance(defect, image.shape) <= -margin  # full coverage
            assert core.sum() >= 3
            if kind == "dark_spot":  # each pixel times f in the core
                ratio = out[core].astype(float).sum() / image[core].astype(float).sum()
                assert ratio == pytest.approx(defect.strength, abs=0.02)
            elif kind in ("light_spot", "scratch"):  # f of the way to white in the core
                room = 255.0 - image[core].astype(float)
                moved = (out[core].astype(float) - image[core].astype(float)).sum() / room.sum()
                assert moved == pytest.approx(defect.strength, abs=0.03)


def test_off_palette_hue_is_far_from_the_parts_colours():
    image, _ = _clean_part()
    hue = db.off_palette_hue([image], [db.part_mask(image)])
    for part_hue in (214.0, 51.0, 0.0):  # the flange (blue), the label (yellow), the marker (red)
        gap = abs(hue - part_hue) % 360
        assert min(gap, 360 - gap) >= 60, hue


def test_part_mask_covers_the_part_and_little_else():
    image, on_part = _clean_part(size=(1200, 900))
    pm = db.part_mask(image)
    import cv2

    mask = cv2.resize(pm.mask.astype(np.uint8), (1200, 900), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert (mask & on_part).sum() / on_part.sum() > 0.9
    assert (mask & ~on_part).sum() / mask.sum() < 0.01


def test_settings_follow_the_profile_params():
    settings, notes = db.settings_for(ProfileParams(), 1024)
    if any(f.name == "fine_width" for f in dataclasses.fields(ProfileParams)):
        assert [s.name for s in settings] == ["default", "finest"] and settings[1].overrides == {"fine_width": 1024}
        assert not notes
    NoFine = dataclasses.make_dataclass("NoFine", [("width", int, 128)], frozen=True)
    settings, notes = db.settings_for(NoFine(), 1024)
    assert [s.name for s in settings] == ["default"] and "fine_width" in notes[0]
    cfg = db.with_setting(Config(), db.Setting("wide", {"width": 192}))
    assert cfg.profile.width == 192 and Config().profile.width != 192


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One `inspector bench --defects --json --plot` run at a tiny size (320x240 parts)."""
    plot = tmp_path_factory.mktemp("defectbench") / "curve.png"
    mp = pytest.MonkeyPatch()
    mp.setattr(db, "SIZE", SMALL)
    import contextlib
    import io

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = cli.main(["bench", "--defects", "--json", "--parts", "4", "--good", "10", "--train-parts", "24",
                             "--diameters", "4,100", "--runs", "1", "--plot", str(plot)])
    finally:
        mp.undo()
    assert code == 0
    return json.loads(out.getvalue()), plot


def test_bench_reports_every_figure(bench_json: tuple[dict, Path]):
    result, plot = bench_json
    assert plot.stat().st_size > 1000
    assert result["kinds"] == list(db.KINDS) and result["diameters"] == [4, 100]
    assert [s["name"] for s in result["settings"]] == [r["setting"] for r in result["results"]]
    for r in result["results"]:
        assert r["source"] == "synthetic" and r["n_good"] == 10 and 0 <= r["bases_flagged"] <= r["bases"] == 4
        assert 0.0 <= r["false_alarm_rate"] <= 1.0 and r["inspect_over_decode"] > 0
        for kind in db.KINDS:
            for d in ("4", "100"):
                c = r["caught"][kind][d]
                assert c["n"] == 4 and c["caught"] == round(c["share"] * 4)
            assert kind in r["min_defect_px_90"] and r["contrast_grey_levels"][kind] > 20
        assert r["caught_all"]["100"]["n"] == 16
        assert r["params"]["width"] > 0 and all(r["params"][k] == v for k, v in r["overrides"].items())
        assert set(r["min_defect_px_90"]) == {"all", *db.KINDS}
    assert set(result["summary"]) == {s["name"] for s in result["settings"]}


def test_a_large_pasted_defect_is_caught(bench_json: tuple[dict, Path]):
    """A spot 100 px across on a 320 px image (40 working pixels) must be caught, and reported as such."""
    result, _ = bench_json
    default = next(r for r in result["results"] if r["setting"] == "default")
    for kind in ("dark_spot", "light_spot", "colour_speck"):
        assert default["caught"][kind]["100"]["share"] == 1.0, kind
        assert default["min_defect_px_90"][kind] in (4, 100)
    assert default["caught_all"]["100"]["share"] >= 0.75


def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(db, "SIZE", SMALL)  # tiny, should a check be missing and the bench run
    tiny = ["--parts", "1", "--good", "1", "--train-parts", "2", "--diameters", "4", "--runs", "1"]
    assert cli.main(["bench", "--defects", "--kinds", "dent", *tiny]) == 1
    assert "dent" in capsys.readouterr().err
    assert cli.main(["bench", "--defects", "--diameters", "4,0", *tiny[:-4]]) == 1
    assert cli.main(["bench", "--defects", "--watch", *tiny]) == 1
    assert cli.main(["bench", "--fit-sizes", "200,x"]) == 1
    assert "--fit-sizes" in capsys.readouterr().err


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def test_fit_size_runner_measures_each_fit_in_its_own_process(tmp_path: Path):
    ballast = np.ones(300_000_000, np.uint8)  # 300 MB touched here: no child may report this peak as its own
    result = fitbench.run([12, 20], size=SMALL, folder=tmp_path / "parts")
    del ballast
    assert len(list((tmp_path / "parts").glob("*.jpg"))) == 20
    for n in (12, 20):
        assert result[f"n_train_{n}"] == n
        assert result[f"fit_s_{n}"] > 0 and result[f"decode_s_{n}"] <= result[f"fit_s_{n}"]
        assert 0 < result[f"fit_cpu_s_{n}"] < 4 * result[f"fit_s_{n}"] + 1  # at most a few cores busy
        assert result[f"fit_rss_mb_{n}"] > result[f"rss_base_mb_{n}"] > 20
        assert result[f"fit_rss_mb_{n}"] < _peak_mb() - 150, "the child reported the parent's peak"
        assert 0 < result[f"profile_mb_{n}"] < 100
    assert result["profile_mb_20"] > result["profile_mb_12"]  # the profile keeps what it learned from each part
