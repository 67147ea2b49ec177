"""The robustness benchmark (inspector/tooling/robustness.py) on small generated sets; never ../shared/data."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from inspector import cli, config
from inspector.errors import DatasetError
from inspector.evaluate import evaluate
from inspector.params import ProfileParams
from inspector.profile import NormalProfile
from inspector.synthetic import make_part
from inspector.tooling import robustness as rb

W, H = 128, 96


def _write_set(root, n_train=24, n_good=6, n_spot=6, seed=0):
    """An MVTec-layout folder: train/good, test/good, test/spot with ground_truth/spot masks."""
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True)
    for i in range(n_train):
        cv2.imwrite(str(root / "train" / "good" / f"{i:03d}.png"), make_part(rng, W, H))
    for i in range(n_good):
        cv2.imwrite(str(root / "test" / "good" / f"{i:03d}.png"), make_part(rng, W, H))
    for i in range(n_spot):
        img = make_part(rng, W, H)
        mask = np.zeros((H, W), np.uint8)
        centre = (int(rng.integers(45, 83)), int(rng.integers(30, 66)))
        cv2.circle(img, centre, 7, (60, 160, 60), -1)
        cv2.circle(mask, centre, 7, 255, -1)
        cv2.imwrite(str(root / "test" / "spot" / f"{i:03d}.png"), img)
        cv2.imwrite(str(root / "ground_truth" / "spot" / f"{i:03d}_mask.png"), mask)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("robustness")
    _write_set(base / "alpha", seed=0)
    _write_set(base / "beta", n_train=16, n_good=4, n_spot=4, seed=1)
    (base / "not-a-set").mkdir()  # no train/good: ignored
    return base


@pytest.fixture
def cfg():
    return config.load(None)


def _img(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)


def test_gain_offset_gamma():
    img = _img()
    x = img.astype(np.float64)
    out = rb.perturb(img, "gain0.9").astype(np.float64)
    bright = x > 20
    assert abs(out[bright].mean() / x[bright].mean() - 0.9) < 0.005
    assert np.array_equal(out, np.rint(x * 0.9))
    up = rb.perturb(img, "gain1.1").astype(np.float64)
    unclipped = (x * 1.1 < 254.5) & (x > 20)
    assert abs(up[unclipped].mean() / x[unclipped].mean() - 1.1) < 0.005
    assert (up[x * 1.1 >= 255] == 255).all()
    assert np.array_equal(rb.perturb(img, "gain0.97"), np.rint(x * 0.97).astype(np.uint8))
    assert np.array_equal(rb.perturb(img, "offset-10"), np.clip(x - 10, 0, 255).astype(np.uint8))
    assert np.array_equal(rb.perturb(img, "offset+10"), np.clip(x + 10, 0, 255).astype(np.uint8))
    for g in (0.9, 1.1):
        want = np.clip(np.rint(255 * (x / 255) ** g), 0, 255)
        assert np.abs(rb.perturb(img, f"gamma{g}").astype(np.float64) - want).max() <= 1
    assert (rb.perturb(img, "gamma0.9") >= img).all() and (rb.perturb(img, "gamma1.1") <= img).all()
    assert rb.perturb(img, "clean") is img and rb.perturb(img, "png") is img


def test_warm_cool_change_red_and_blue_only():
    img = np.full((10, 10, 3), 100, np.uint8)  # BGR
    warm = rb.perturb(img, "warm")
    cool = rb.perturb(img, "cool")
    assert tuple(warm[0, 0]) == (95, 100, 105)  # B x0.95, G unchanged, R x1.05
    assert tuple(cool[0, 0]) == (105, 100, 95)


def test_alternate_and_jpeg80():
    img = np.full((16, 16, 3), 100, np.uint8)
    assert rb.perturb(img, "alternate", 0)[0, 0, 0] == 92
    assert rb.perturb(img, "alternate", 1)[0, 0, 0] == 108
    assert rb.perturb(img, "alternate", 2)[0, 0, 0] == 92
    part = make_part(np.random.default_rng(0), W, H)
    jpeg = rb.encode(part, "jpeg80")
    png = rb.encode(part)
    assert jpeg[:2] == b"\xff\xd8" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), part)
    back = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(float)
    assert 0 < np.abs(back - part).mean() < 6


def test_placement_is_a_rotation_with_bounded_shift():
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(200):
        m = rb.placement(rng, 200, 100)
        assert np.allclose(m[:, :2] @ m[:, :2].T, np.eye(2))  # rotation, no scale
        angles.append(math.degrees(math.atan2(-m[0, 1], m[0, 0])) % 360)
        centre = m @ np.array([99.5, 49.5, 1.0])
        assert abs(centre[0] - 99.5) <= 0.08 * 200 + 1e-9 and abs(centre[1] - 49.5) <= 0.08 * 100 + 1e-9
    assert min(angles) < 30 and max(angles) > 330  # the whole circle


def test_placed_warps_the_mask_with_the_image():
    img = np.full((120, 160, 3), 60, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    cv2.rectangle(img, (40, 30), (70, 50), (250, 250, 250), -1)
    cv2.rectangle(mask, (40, 30), (70, 50), 255, -1)
    m = rb.placement(np.random.default_rng(3), 160, 120)
    pi, pm = rb.place(img, m), rb.place_mask(mask, m)
    assert pi.shape == img.shape and pm.shape == mask.shape
    assert set(np.unique(pm)) <= {0, 255}  # nearest: still a binary mask
    bright, marked = pi[..., 0] > 155, pm > 0
    iou = (bright & marked).sum() / (bright | marked).sum()
    assert iou > 0.85
    assert not np.array_equal(pm, mask)


def test_placed_black_is_the_same_turn_with_black_corners():
    """`placed-black` turns and shifts as `placed` does; only what lies outside the photo differs: black, where
    `placed` replicates the border."""
    img = np.full((120, 160, 3), 60, np.uint8)
    cv2.rectangle(img, (40, 30), (70, 50), (250, 250, 250), -1)
    m = rb.placement(np.random.default_rng(3), 160, 120)
    replicated, black = rb.place(img, m), rb.place(img, m, black=True)
    photo = rb.place_mask(np.full((120, 160), 255, np.uint8), m)
    outside = cv2.erode(255 - photo, np.ones((3, 3), np.uint8)) > 0  # past the edge the turn blends
    inside = cv2.erode(photo, np.ones((3, 3), np.uint8)) > 0
    assert outside.mean() > 0.05
    assert (black[outside] == 0).all() and (replicated[outside] == 60).all()
    assert np.array_equal(black[inside], replicated[inside])


def test_paste_spot_marks_where_it_paints():
    img = np.full((200, 200, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    for kind in ("dark_spot", "light_spot"):
        out, mask, used = rb.paste_spot(img, rng, kind)
        assert used == kind
        inside = mask > 0
        r = math.sqrt(inside.sum() / math.pi)
        assert 0.03 * 200 / 2 - 1 <= r <= 0.06 * 200 / 2 + 1
        diff = out.astype(int) - img.astype(int)
        assert abs(np.median(diff[inside]) - (-60 if kind == "dark_spot" else 60)) <= 1
        far = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
        assert (diff[far] == 0).all()
    dark = np.full((200, 200, 3), 10, np.uint8)  # a dark spot would be clipped away: the light one is used
    assert rb.paste_spot(dark, rng, "dark_spot")[2] == "light_spot"


def test_rejected_ranks_above_every_score():
    s = rb.Scored
    scored = [s("ok", 1.0, None, None), s("defect", 5.0, None, None), s("rejected", float("inf"), "lighting", None),
              s("ok", 2.0, None, None)]
    m = rb.metrics(["good", "good", "spot", "spot"], scored, None, threshold=3.0)
    assert m["image_auroc"] == pytest.approx(0.75)  # the rejected defect outranks both goods, the 2.0 one neither
    assert (m["rejected"], m["rejected_good"], m["rejected_defect"]) == (1, 0, 1)
    assert m["false_alarms"] == 1 and m["false_alarm_rate"] == 0.5 and m["recall"] == 0.0
    assert m["rejected_reasons"] == ["lighting"] and m["reasons"] == {}
    scored[0] = s("defect", float("inf"), "not_located", None)  # flagged whatever its score: a false alarm
    m = rb.metrics(["good", "good", "spot", "spot"], scored, None, threshold=3.0)
    assert m["image_auroc"] == pytest.approx(0.375) and m["false_alarms"] == 2 and m["reasons"] == {"not_located": 1}


def test_parse_perturbations():
    assert rb.parse_perturbations(None) == list(rb.PERTURBATIONS)
    assert rb.parse_perturbations("gain0.9, placed") == ["clean", "gain0.9", "placed"]
    with pytest.raises(ValueError, match="nope"):
        rb.parse_perturbations("gain0.9,nope")


def test_every_perturbation_on_one_set(data, cfg):
    result = rb.run(data, cfg, sets=["alpha"])
    rows = {r["perturbation"]: r for r in result["rows"]}
    assert list(rows) == list(rb.PERTURBATIONS) and result["sets"] == ["alpha"]
    for r in rows.values():
        for key in ("image_auroc", "pixel_auroc", "false_alarm_rate", "recall", "rejected", "rejected_share",
                    "clean_image_auroc", "clean_pixel_auroc", "threshold"):
            assert key in r, key
        assert 0 <= r["image_auroc"] <= 1 and 0 <= r["pixel_auroc"] <= 1
    # clean is exactly what `inspector eval` measures
    ev = evaluate(data / "alpha", cfg).metrics
    assert rows["clean"]["image_auroc"] == pytest.approx(ev["image_auroc"])
    assert rows["clean"]["pixel_auroc"] == pytest.approx(ev["pixel_auroc"])
    assert rows["clean"]["false_alarm_rate"] == pytest.approx(ev["false_alarm_rate"])
    assert rows["png"]["image_auroc"] == pytest.approx(rows["clean"]["image_auroc"], abs=0.05)
    # test-only perturbations reuse the clean fit; placed and pasted refit on placed train images
    assert len({rows[p]["threshold"] for p in rb.TEST_ONLY}) == 1
    assert rows["placed"]["refit"] and rows["placed"]["threshold"] != rows["clean"]["threshold"]
    assert rows["pasted"]["threshold"] == rows["placed"]["threshold"]
    assert rows["placed-black"]["refit"] and rows["placed-black"]["n_good"] == rows["placed"]["n_good"]
    pasted = rows["pasted"]
    assert pasted["n_good"] == 6 and pasted["n_defect"] == 6
    assert set(pasted["per_type_recall"]) <= {"dark_spot", "light_spot"}
    assert pasted["pixel_auroc"] > 0.7  # the spots are marked by the map
    table = rb.markdown(result)
    assert table.count("\n| alpha |") == len(rb.PERTURBATIONS)


def test_rows_per_set_and_perturbation(data, cfg):
    result = rb.run(data, cfg, perturbations=["jpeg80", "gain0.9"])
    got = [(r["set"], r["perturbation"]) for r in result["rows"]]
    assert got == [(s, p) for s in ("alpha", "beta") for p in ("clean", "gain0.9", "jpeg80")]
    assert all(r["clean_image_auroc"] == got_clean["image_auroc"] for got_clean in result["rows"][::3]
               for r in result["rows"] if r["set"] == got_clean["set"])
    with pytest.raises(DatasetError, match="gamma"):
        rb.run(data, cfg, sets=["gamma"])
    with pytest.raises(DatasetError):
        rb.run(data / "absent", cfg)


def test_cli(data, capsys):
    code = cli.main(["bench", "--robustness", "--data", str(data), "--sets", "beta", "--perturb", "clean,gain0.9",
                     "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert [(r["set"], r["perturbation"]) for r in result["rows"]] == [("beta", "clean"), ("beta", "gain0.9")]
    assert result["rows"][1]["clean_image_auroc"] == result["rows"][0]["image_auroc"]
    assert cli.main(["bench", "--robustness", "--data", str(data), "--perturb", "bogus"]) == 1
    assert "unknown perturbation bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    help_text = capsys.readouterr().out
    for name in rb.PERTURBATIONS:
        assert name in help_text


def test_noise_is_grey_on_a_grey_photo_and_per_channel_on_a_colour_one():
    grey = np.full((60, 80, 3), 120, np.uint8)
    out = rb.perturb(grey, "noise6", 3).astype(np.float64)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])  # a mono camera
    assert abs(out.std() - 6.0) < 0.4 and abs(out.mean() - 120.0) < 0.3
    assert np.array_equal(rb.perturb(grey, "noise6", 3), rb.perturb(grey, "noise6", 3))  # the part's own noise
    assert not np.array_equal(rb.perturb(grey, "noise6", 4), rb.perturb(grey, "noise6", 3))
    colour = grey.copy()
    colour[..., 2] = 140
    noisy = rb.perturb(colour, "noise3", 0).astype(np.float64) - colour
    assert not np.array_equal(noisy[..., 0], noisy[..., 1])  # a colour camera's channels
    assert abs(noisy.std() - 3.0) < 0.2


def test_blur_keeps_the_level_and_softens_an_edge():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 200
    for name in ("blur1", "blur2"):
        out = rb.perturb(img, name).astype(np.float64)
        assert out.shape == img.shape and abs(out.mean() - img.mean()) < 0.5
        ramp = out[20, 14:26, 0]
        assert 0 < ramp[5] < 200 and (np.diff(ramp) >= 0).all()
    assert rb.perturb(img, "blur2")[20, 17, 0] > rb.perturb(img, "blur1")[20, 17, 0]  # wider defocus reaches further


def test_zoom_magnifies_about_the_centre():
    img = np.zeros((101, 201, 3), np.uint8)
    img[50, 100] = 255  # the centre
    img[50, 150] = 255  # 50 px right of it
    big, small = rb.perturb(img, "zoom1.03"), rb.perturb(img, "zoom0.97")
    assert big.shape == img.shape and big[50, 100, 0] == 255
    assert np.argmax(big[50, 120:, 0].astype(int)) + 120 in (151, 152)  # 50 * 1.03 = 51.5 px out
    assert np.argmax(small[50, 120:, 0].astype(int)) + 120 in (148, 149)  # 50 * 0.97 = 48.5 px out


def test_uneven_light_darkens_where_it_says():
    img = np.full((60, 90, 3), 200, np.uint8)
    side = rb.perturb(img, "side10")[..., 0].astype(float)
    assert side[:, 0].mean() == pytest.approx(180, abs=1.5) and side[:, -1].mean() == pytest.approx(220, abs=1.5)
    assert (np.diff(side[30]) >= 0).all()  # rising left to right
    vignette = rb.perturb(img, "vignette30")[..., 0].astype(float)
    assert vignette[0, 0] == pytest.approx(140, abs=2) and vignette[30, 45] == pytest.approx(200, abs=1)
    shadow = rb.perturb(img, "shadow20")[..., 0].astype(float)
    assert (shadow[:, :25] == 160).all() and (shadow[:, 35:] == 200).all()  # the left third, its edge soft
    assert 160 < shadow[30, 30] < 200


def test_zoom_by_5_percent():
    img = np.zeros((101, 201, 3), np.uint8)
    img[50, 150] = 255  # 50 px right of the centre
    assert np.argmax(rb.perturb(img, "zoom1.05")[50, 120:, 0].astype(int)) + 120 in (152, 153)  # 52.5 px out
    assert np.argmax(rb.perturb(img, "zoom0.95")[50, 120:, 0].astype(int)) + 120 in (147, 148)  # 47.5 px out


def test_seeds_repeat_only_the_refitted_rows_and_summarise_them(data, cfg):
    result = rb.run(data, cfg, sets=["beta"], perturbations=["gain0.9", "placed"], seeds=[0, 1])
    got = [(r["perturbation"], r["seed"]) for r in result["rows"]]
    assert got == [("clean", None), ("gain0.9", None), ("placed", 0), ("placed", 1)]
    placed = [r for r in result["rows"] if r["perturbation"] == "placed"]
    # each seed places the parts anew and refits: the two profiles differ
    assert placed[0]["threshold"] != placed[1]["threshold"]
    (entry,) = result["summary"]
    assert (entry["set"], entry["perturbation"], entry["seeds"]) == ("beta", "placed", [0, 1])
    aurocs = [r["image_auroc"] for r in placed]
    assert entry["image_auroc"] == {"median": pytest.approx(sum(aurocs) / 2), "min": min(aurocs), "max": max(aurocs)}
    assert entry["false_alarms"]["max"] == max(r["false_alarms"] for r in placed)
    # one seed: the rows of before, no summary
    single = rb.run(data, cfg, sets=["beta"], perturbations=["placed"], seeds=[1])
    assert single["summary"] == [] and single["seeds"] == [1]
    assert single["rows"][1]["threshold"] == placed[1]["threshold"]  # a seed is the same run either way
    table = rb.markdown(result)
    assert "| beta | placed (refit, seed 1) |" in table and "median of seeds 0,1" in table
    assert entry["n_good"] == 4 and f"{entry['false_alarms']['max']:.0f}) of 4 |" in table


def test_parse_seeds():
    assert rb.parse_seeds("0, 1,2,1") == [0, 1, 2]
    with pytest.raises(ValueError, match="whole numbers"):
        rb.parse_seeds("0,x")
    with pytest.raises(ValueError, match="0 or more"):
        rb.parse_seeds("-1")


def test_cli_seeds(data, capsys):
    args = ["bench", "--robustness", "--data", str(data), "--sets", "beta", "--perturb", "placed", "--json"]
    assert cli.main([*args, "--seeds", "0,x"]) == 1
    assert "--seeds takes comma-separated whole numbers" in capsys.readouterr().err
    assert cli.main([*args, "--seeds", "0,1", "--seed", "3"]) == 1
    assert "not both" in capsys.readouterr().err


def test_a_median_false_alarm_count_between_two_is_not_rounded_away():
    assert rb._spread({"median": 0.5, "min": 0, "max": 1}, 0) == "0.5 (0-1)"
    assert rb._spread({"median": 1.0, "min": 0, "max": 2}, 0) == "1 (0-2)"
    assert rb._spread({"median": 0.98312, "min": 0.97, "max": 0.99}) == "0.983 (0.970-0.990)"
    assert rb._spread(None) == "-"


def test_where_recall_goes_at_the_parts_threshold_and_the_test_goods_quantile():
    s = rb.Scored
    goods = [s("ok", float(v), None, None) for v in range(1, 101)]  # 1..100: their 99% quantile ("higher") is 100
    defects = [s("defect" if v > 120.0 else "ok", v, None, None) for v in (50.5, 99.5, 150.0, 200.0)]
    m = rb.metrics(["good"] * 100 + ["spot"] * 4, goods + defects, None, threshold=120.0, parts_threshold=60.0,
                   budget=0.01)
    assert m["recall"] == 0.5  # the verdicts: the two above 120 were flagged
    assert m["parts_threshold"] == 60.0 and m["false_alarms_at_parts_threshold"] == 40
    assert m["recall_at_parts_threshold"] == 0.75  # 99.5, 150, 200
    assert m["test_good_quantile"] == 100.0 and m["recall_at_test_good_quantile"] == 0.5  # 150, 200
    rejected = [s("rejected", float("inf"), "lighting", None)] * 2  # a good and a defect, neither caught nor flagged
    again = rb.metrics(["good"] * 100 + ["spot"] * 4 + ["good", "spot"], goods + defects + rejected, None,
                       threshold=120.0, parts_threshold=60.0, budget=0.01)
    assert {k: again[k] for k in m if "parts_threshold" in k or "test_good" in k} == {
        k: m[k] for k in m if "parts_threshold" in k or "test_good" in k}  # rejected parts stay out of them
    m = rb.metrics(["good"] * 100, goods, None, threshold=120.0)  # no defects, no parts' threshold: nothing to count
    assert m["recall_at_parts_threshold"] is None and m["recall_at_test_good_quantile"] is None
    assert m["false_alarms_at_parts_threshold"] is None


def test_parts_threshold_leaves_the_lighting_copies_out():
    rng = np.random.default_rng(3)
    params = ProfileParams(lighting_copies=1, false_alarm_rate=0.25)  # a budget that 24 parts resolve
    profile = NormalProfile(params).fit([make_part(rng, W, H) for _ in range(24)])
    parts = profile.oof_scores_[: profile.n_train_]
    assert len(profile.oof_scores_) == 2 * profile.n_train_  # each part's lighting copy follows the parts
    expected = np.quantile(parts, 0.75, method="higher")
    assert rb.parts_threshold(profile) == expected
    profile.oof_scores_[profile.n_train_:] += 100.0  # copies that score far above every part change nothing
    assert rb.parts_threshold(profile) == expected
