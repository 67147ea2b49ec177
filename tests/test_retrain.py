"""Retraining with a gate and rollback (issue 4): real image files, a real SQLite store, real watcher runs.

The scenario: a profile trained on parts with a yellow label band flags the same parts with an orange band
(a legitimate variant: a new label supplier); an operator clears those eight false alarms and confirms two real defects;
retraining learns the variant, keeps both defects flagged and is activated; rollback returns to the old
profile, and each new row records the version that judged it. The unit tests construct a candidate that
would miss a confirmed defect (the operator wrongly marked four parts with a missing bolt hole as good) and
check that the gate refuses it unless forced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector import cli, config, profiles, retrain
from inspector.errors import DatasetError, NoActiveProfile
from inspector.pipeline import Inspector
from inspector.store import Store
from inspector.synthetic import make_part
from watchkit import Site, atomic_drop, make_site, part_jpeg, run_once

N_GOOD = 24


def variant_jpeg(seed: int) -> bytes:
    """A good part of a legitimate variant: its label band is orange instead of yellow (a new label supplier).
    Only the band changes, so lighting normalisation cannot take it for a warmer lamp."""
    img = make_part(np.random.default_rng(seed), 200, 150).astype(np.float32)
    band = np.linalg.norm(img - np.array([40.0, 200.0, 230.0]), axis=2) < 60.0
    img[band] = img[band] * np.array([1.0, 0.6, 1.0])
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def write_good(folder: Path, n: int = N_GOOD, first_seed: int = 10_000) -> Path:
    """The narrow training set: n good parts under the usual lamp."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"g{i:02d}.jpg").write_bytes(part_jpeg(first_seed + i))
    return folder


def train(cfg_path: Path, folder: Path) -> None:
    """`inspector train DIR` as an engineer runs it (records trained_from and training_images)."""
    assert cli.main(["train", str(folder), "--config", str(cfg_path)]) == 0


def new_rows(site: Site, before: int) -> list[dict]:
    return [r for r in site.rows() if r["id"] > before]


# ---------------------------------------------------------------------------------------------- the scenario


def test_variant_is_learned_defects_stay_flagged_and_rollback_restores(tmp_path: Path, base: Path) -> None:
    models = tmp_path / "models"
    site = make_site(tmp_path / "site", models)
    cfg = config.load(site.config)

    # 1. a profile trained on a narrow set of good parts (`inspector train` on N_GOOD parts: the module's v1, copied)
    shutil.copytree(base / "models", models)
    assert profiles.active_version(models) == "v1"

    # 2. the variant gets flagged by the watcher (and so do two real defects; ordinary parts pass)
    for i in range(8):
        atomic_drop(site.inbox, f"variant_{i:02d}.jpg", variant_jpeg(20_000 + i))
    atomic_drop(site.inbox, "spot.jpg", part_jpeg(40_000, "spot"))
    atomic_drop(site.inbox, "missing.jpg", part_jpeg(40_002, "missing"))
    for i in range(2):
        atomic_drop(site.inbox, f"usual_{i}.jpg", part_jpeg(50_000 + i))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in site.rows()}
    assert len(rows) == 12
    assert all(r["profile_version"] == "v1" for r in rows.values())
    variant = sorted((r for n, r in rows.items() if n.startswith("variant_")), key=lambda r: r["id"])
    assert [r["verdict"] for r in variant] == ["defect"] * 8, [(r["name"], r["score"]) for r in variant]
    assert rows["spot.jpg"]["verdict"] == rows["missing.jpg"]["verdict"] == "defect"
    assert rows["usual_0.jpg"]["verdict"] == rows["usual_1.jpg"]["verdict"] == "ok"

    # 3. an operator clears the eight flagged variant parts and confirms the two defects
    with Store(cfg.database.url) as store:
        for r in variant:
            store.add_review(r["id"], "good", "anna", note="new label supplier; part is fine")
        for name in ("spot.jpg", "missing.jpg"):
            store.add_review(rows[name]["id"], "defect", "anna")

        # 4. retrain: the candidate learns the variant, keeps both defects, passes the gate and is activated
        calls: list[int] = []

        def progress(iterable, total):
            calls.append(total)
            return iterable

        result = retrain.retrain(cfg, store, note="orange labels", progress=progress)
    assert calls == [N_GOOD + 8, 10]  # training images read; reviewed parts re-scored
    assert result.activated and not result.forced, result.reason
    assert (result.previous, result.version) == ("v1", "v2")
    assert profiles.active_version(models) == "v2"
    assert result.sources == {"profile": N_GOOD, "false_alarm": 8, "added": 0, "total": N_GOOD + 8}
    assert result.skipped == [] and result.missed == []
    b, a = result.before, result.after
    assert (b.confirmed, b.confirmed_caught, a.confirmed_caught) == (2, 2, 2)
    assert (b.false_alarms, b.false_alarms_cleared, a.false_alarms_cleared) == (8, 0, 8)
    assert a.false_alarms_in_training == 8 and a.false_alarms_cleared_heldout == 8  # generalises, not memorised
    assert (b.n_train, a.n_train) == (N_GOOD, N_GOOD + 8)
    assert b.cross_fitted_false_alarm_rate <= 0.05 and a.cross_fitted_false_alarm_rate <= 0.05
    assert {p.outcome for p in result.parts if p.review == "good"} == {"cleared"}
    assert {p.outcome for p in result.parts if p.review == "defect"} == {"still caught"}
    meta = profiles.load(models, "v2").meta
    assert meta["note"] == "orange labels" and meta["retrained_from"] == "v1"
    assert meta["sources"] == result.sources
    by_source = [im for im in meta["training_images"] if im["source"] == "false_alarm"]
    assert sorted(im["inspection_id"] for im in by_source) == [r["id"] for r in variant]
    assert all(Path(im["path"]).is_file() and "archive" in im["path"] for im in by_source)

    table = retrain.format_table(result)
    assert "candidate v2 from v1: 24 images of v1 + 8 parts marked good + 0 added = 32 good images" in table
    assert "confirmed defects caught" in table and "2 of 2" in table
    assert "false alarms cleared       0 of 8" in table and "8 of 8 (held out: 8 of 8)" in table
    assert table.count("cleared (in training; held out") == 8 and table.count("still caught") == 2
    assert table.rstrip().endswith(result.reason)
    assert json.loads(json.dumps(result.as_dict()))["parts"][0]["outcome"] in ("cleared", "still caught")

    # ... the variant now passes: fresh variant parts judged by v2 in a new watcher run. Eight examples do not
    # cover every pose of a local variant (the label band): a fresh variant part may still score above v2's
    # threshold, so the test allows one of twenty, where v1 flags all twenty (variant_new_05 scores ~9 against
    # ~4 under each of 12 orders of the eight tried). The candidate is the same
    # whatever order the watcher's workers committed the eight in (see the order test below); before that was
    # so, one order in six also flagged a second part.
    before = max(r["id"] for r in site.rows())
    for i in range(20):
        atomic_drop(site.inbox, f"variant_new_{i:02d}.jpg", variant_jpeg(30_000 + i))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    fresh = new_rows(site, before)
    assert len(fresh) == 20 and {r["profile_version"] for r in fresh} == {"v2"}
    flagged = [(r["name"], round(r["score"], 2), round(r["threshold"], 2)) for r in fresh if r["verdict"] != "ok"]
    assert len(flagged) <= 1, flagged
    v1 = profiles.load(models, "v1")
    old_judge = Inspector(v1.profile, v1.version, cfg.input)
    assert all(old_judge.inspect_file(Path(r["archived_path"])).verdict == "defect" for r in fresh)

    # ... and both confirmed defects are still flagged by the new profile (their archived files re-scored)
    v2 = profiles.load(models, "v2")
    judge = Inspector(v2.profile, v2.version, cfg.input)
    for name in ("spot.jpg", "missing.jpg"):
        verdict = judge.inspect_file(Path(rows[name]["archived_path"]))
        assert (verdict.verdict, verdict.profile_version) == ("defect", "v2"), (name, verdict.score)

    # 5. rollback restores v1; rows from the next run record the version that judged them
    assert profiles.rollback(models) == ("v2", "v1")
    assert profiles.active_version(models) == "v1"
    before = max(r["id"] for r in site.rows())
    for i in range(3):
        atomic_drop(site.inbox, f"variant_after_rollback_{i}.jpg", variant_jpeg(31_000 + i))
    atomic_drop(site.inbox, "usual_after_rollback.jpg", part_jpeg(51_000))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    after = {r["name"]: r for r in new_rows(site, before)}
    assert len(after) == 4
    assert {r["profile_version"] for r in after.values()} == {"v1"}
    assert after["usual_after_rollback.jpg"]["verdict"] == "ok"
    assert {after[f"variant_after_rollback_{i}.jpg"]["verdict"] for i in range(3)} == {"defect"}  # v1's view again
    assert [r["profile_version"] for r in fresh] == ["v2"] * 20  # earlier rows keep the version that judged them
    assert [e.version for e in profiles.history(models)] == ["v1", "v2", "v1"]


# ---------------------------------------------------------------------------------------------- the gate and errors


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good folder and a models folder with v1 trained on it (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("retrain-base")
    cfg_path = root / "config.toml"
    cfg_path.write_text(f'[models]\ndir = "{root / "models"}"\n')
    train(cfg_path, write_good(root / "good"))
    return root


@pytest.fixture
def station(tmp_path: Path, base: Path) -> tuple[config.Config, Store]:
    """A config whose models folder is a fresh copy of the base one, and an empty verdict store."""
    shutil.copytree(base / "models", tmp_path / "models")
    path = tmp_path / "config.toml"
    path.write_text(f'[models]\ndir = "{tmp_path / "models"}"\n\n[database]\nurl = "sqlite:///inspector.db"\n')
    cfg = config.load(path)
    store = Store(cfg.database.url)
    yield cfg, store
    store.close()


def record(store: Store, folder: Path, name: str, data: bytes, verdict: str = "defect",
           review: str | None = None) -> int:
    """A judged part as the watcher leaves it: the file in the archive and its row; optionally reviewed."""
    from datetime import datetime, timezone

    from inspector import imaging

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    now = datetime.now(timezone.utc)
    (row_id,) = store.record([{
        "sha256": imaging.sha256_hex(data), "name": name, "source_path": str(folder.parent / "inbox" / name),
        "archived_path": str(path), "size": len(data), "received_at": now, "inspected_at": now,
        "verdict": verdict, "score": 5.0, "threshold": 3.5, "profile_version": "v1", "station": "s", "line": "l",
        "camera": "c",
    }])
    assert row_id is not None
    if review:
        store.add_review(row_id, review, "anna")
    return row_id


def test_gate_refuses_a_candidate_that_would_miss_a_confirmed_defect_and_force_overrides(station, tmp_path):
    cfg, store = station
    archive = tmp_path / "archive"
    # the operator wrongly cleared four parts with a missing bolt hole, so the candidate learns that look ...
    wrongly_cleared = [record(store, archive, f"miss_{i}.jpg", part_jpeg(60_000 + i, "missing"), review="good")
                       for i in range(4)]
    # ... while two other parts with a missing hole were confirmed as defects
    confirmed = [record(store, archive, f"miss_{i}.jpg", part_jpeg(60_000 + i, "missing"), review="defect")
                 for i in (4, 5)]

    result = retrain.retrain(cfg, store)
    assert not result.activated and not result.forced
    assert result.version == "v2" and profiles.versions(cfg.models.dir) == ["v1", "v2"]  # saved, not active
    assert profiles.active_version(cfg.models.dir) == "v1"
    assert result.missed == confirmed
    assert result.before.confirmed_caught == 2 and result.after.confirmed_caught == 0
    assert result.reason.startswith("not activated: 2 confirmed defect(s) that v1 catches would be missed by v2")
    assert "\n" not in result.reason
    assert {p.inspection_id for p in result.parts if p.outcome == "MISSED"} == set(confirmed)
    assert sorted(p.inspection_id for p in result.parts if p.review == "good") == wrongly_cleared
    assert "MISSED" in retrain.format_table(result)

    forced = retrain.retrain(cfg, store, force=True, note="forced")
    assert forced.activated and forced.forced and forced.version == "v3"
    assert forced.missed == confirmed
    assert forced.reason.startswith("v3 activated by force although it misses 2 confirmed defect(s)")
    assert profiles.active_version(cfg.models.dir) == "v3"
    assert profiles.rollback(cfg.models.dir) == ("v3", "v1")  # the undo for a forced mistake


def test_a_single_unusual_part_cleared_as_good_is_memorised_not_learned(station, tmp_path):
    """Found by an adversarial test: one variant part cleared by an operator, in a training set of fewer than 100
    parts, sets the candidate's threshold (the 99% quantile of 25 held-out scores and their lighting copies' is the
    largest of them: its own, or its copy's), so compared with that threshold its held-out score never lay above it
    and the table said "held out it clears 1 of 1". Compared with the threshold the other parts set, it is what it
    is: memorised."""
    cfg, store = station
    [variant] = [record(store, tmp_path / "archive", "variant.jpg", variant_jpeg(20_000), review="good")]
    result = retrain.retrain(cfg, store, activate=False)
    [part] = result.parts
    assert part.inspection_id == variant and part.after_heldout is not None
    assert part.after_heldout <= result.after.threshold  # it (or its lighting copy) set the threshold
    assert part.heldout_threshold < part.after_heldout  # the other parts' threshold
    assert part.before_flagged and not part.after_flagged and part.outcome == "MEMORISED"
    assert result.memorised == [variant] and result.after.false_alarms_cleared_heldout == 0
    assert any(w.startswith("memorised, not learned") for w in result.warnings)
    candidate = profiles.load(cfg.models.dir, result.version).profile
    assert candidate.threshold_without(0) == candidate.threshold_  # an ordinary part: the variant still sets it


def sticker_jpeg(seed: int) -> bytes:
    """A part with a blue label stuck on its flange: unusual, and what an operator might wave through as good."""
    img = make_part(np.random.default_rng(seed), 200, 150)
    img[65:80, 70:85] = (200, 60, 20)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def test_a_candidate_that_lost_sensitivity_to_small_defects_is_refused(station, tmp_path):
    """Found by an adversarial test: one unusual part cleared as good widens what the candidate accepts (below 100
    parts its held-out score sets the threshold), so small defects nobody has confirmed start to pass, and the gate,
    which re-checks only the confirmed ones, let it through. The sensitivity probe (specks pasted on the active
    profile's training images) shows it; the loss it shows is real, on parts with real spots."""
    cfg, store = station
    archive = tmp_path / "archive"
    [odd] = [record(store, archive, "sticker.jpg", sticker_jpeg(40_000), review="good")]
    record(store, archive, "blob.jpg", part_jpeg(40_001, "spot"), review="defect")  # confirmed: still caught

    result = retrain.retrain(cfg, store)
    assert not result.activated and result.less_sensitive and result.missed == []
    assert profiles.active_version(cfg.models.dir) == "v1"
    b, a = result.before, result.after
    assert result.specks == 12 and len(b.specks_caught) == len(a.specks_caught) == 8
    assert b.specks_reach >= retrain.SENSITIVITY_MIN and a.specks_reach < retrain.SENSITIVITY_KEPT * b.specks_reach
    assert sum(a.specks_caught) < sum(b.specks_caught)
    assert result.reason == (f"not activated: it is less sensitive: specks pasted on good parts reach "
                             f"{a.specks_reach:.2f} of the way to its threshold against v1's {b.specks_reach:.2f} (at "
                             f"least 85% kept); it flags {sum(a.specks_caught)} of 96 where v1 flags "
                             f"{sum(b.specks_caught)}; parts marked good that it still flags held out, the likeliest "
                             f"cause: #{odd}; v1 stays active (--force activates it anyway)")
    assert "LESS SENSITIVE" in retrain.format_table(result)
    probe_json = result.as_dict()["probe"]
    assert probe_json["status"] == "compared" and probe_json["lineage"] is None and probe_json["specks_per_size"] == 12
    assert probe_json["weaker_than"] == f"v1's {b.specks_reach:.2f}"

    # the loss is real: parts with a real spot that v1 flags pass the candidate
    v1 = profiles.load(cfg.models.dir, "v1")
    v2 = profiles.load(cfg.models.dir, result.version)
    spots = [part_jpeg(70_000 + i, "spot") for i in range(12)]
    flagged = {name: sum(Inspector(p.profile, p.version, cfg.input).inspect_bytes(b, "s.jpg").verdict == "defect"
                         for b in spots) for name, p in (("v1", v1), ("v2", v2))}
    assert flagged["v2"] < flagged["v1"], flagged

    forced = retrain.retrain(cfg, store, force=True)
    assert forced.activated and forced.forced and forced.less_sensitive
    assert forced.reason.startswith(f"{forced.version} activated by force although it is less sensitive")


def test_the_lineage_first_version_is_compared_on_its_own_parts_and_a_broken_lineage_is_said(station, tmp_path):
    """v2 activated by force although less sensitive; the next retrain compares with v1 on v1's parts too (so a
    lineage does not give sensitivity away a little at a time), says the lineage is below v1, and says so when v1
    can no longer be read rather than comparing with whatever version is oldest."""
    cfg, store = station
    archive = tmp_path / "archive"
    record(store, archive, "sticker.jpg", sticker_jpeg(40_000), review="good")
    forced = retrain.retrain(cfg, store, force=True)
    assert forced.activated and forced.less_sensitive and forced.lineage is None  # v1 is active: no lineage
    for i in range(8):
        record(store, archive, f"more{i}.jpg", part_jpeg(45_000 + i), review="good")
    third = retrain.retrain(cfg, store, activate=False)
    assert third.previous == forced.version and third.lineage is not None and third.lineage.version == "v1"
    first = third.lineage
    assert first.active_reach < retrain.SENSITIVITY_KEPT * first.reach  # the forced v2, on v1's parts
    assert any(w.startswith("this lineage has lost sensitivity since v1") for w in third.warnings), third.warnings
    assert third.as_dict()["probe"]["lineage"]["version"] == "v1"
    assert "specks: reach on v1's parts" in retrain.format_table(third)
    (cfg.models.dir / "v1" / "profile.json").write_text("{not json")
    fourth = retrain.retrain(cfg, store, activate=False)
    assert fourth.lineage is None and any(
        w.startswith("the sensitivity probe could not follow this lineage to its first version: profile v1 is "
                     "unreadable or corrupt") for w in fourth.warnings), fourth.warnings


def test_the_probe_lets_a_variant_learned_from_many_parts_through(station, tmp_path):
    """The probe's tolerance: eight parts of a legitimate variant (an orange label band) cleared as good make the
    candidate a little less sensitive (it accepts more), not a refusal."""
    cfg, store = station
    for i in range(8):
        record(store, tmp_path / "archive", f"orange{i}.jpg", variant_jpeg(21_000 + i), review="good")
    result = retrain.retrain(cfg, store, activate=False)
    assert result.gate_passed and not result.less_sensitive, result.reason
    assert result.after.specks_reach >= retrain.SENSITIVITY_KEPT * result.before.specks_reach


def test_a_training_image_confirmed_as_a_defect_is_not_reported_missing(station, tmp_path):
    """Found by an adversarial test: a training image an operator confirmed as a defect was skipped, rightly, and
    also counted among the training images "not found or changed"."""
    cfg, store = station
    record(store, tmp_path / "archive", "g00.jpg", part_jpeg(10_000), review="defect")  # write_good's first image
    record(store, tmp_path / "archive", "variant.jpg", variant_jpeg(20_000), review="good")  # something to learn
    result = retrain.retrain(cfg, store, activate=False)
    assert result.sources["profile"] == N_GOOD - 1
    assert [s.reason for s in result.skipped if s.source == "profile"] == [
        "the same image is confirmed defect #1 g00.jpg"]
    assert f"1 of the {N_GOOD} images profile v1 was trained on are confirmed defects now; the candidate does not " \
           "learn from them" in result.warnings
    assert not any("not found or have changed" in w for w in result.warnings), result.warnings


def test_the_candidate_does_not_depend_on_the_order_parts_were_committed_in(base, tmp_path):
    """Two workers (or stations) commit the same false alarms in a different order: same candidate, same threshold.
    Before, false alarms were read in id order, which moved the palette sample and the cross-fitting folds."""
    thresholds = []
    for run, order in (("a", range(6)), ("b", reversed(range(6)))):
        shutil.copytree(base / "models", tmp_path / run / "models")
        path = tmp_path / run / "config.toml"
        path.write_text(f'[models]\ndir = "{tmp_path / run / "models"}"\n\n[database]\nurl = "sqlite:///{tmp_path / run / "db"}"\n')
        cfg = config.load(path)
        with Store(cfg.database.url) as store:
            for i in order:
                record(store, tmp_path / run / "archive", f"variant_{i}.jpg", variant_jpeg(20_000 + i), review="good")
            result = retrain.retrain(cfg, store)
        meta = profiles.load(cfg.models.dir, result.version).meta
        thresholds.append((result.after.threshold, [im["sha256"] for im in meta["training_images"]]))
    assert thresholds[0] == thresholds[1]


def test_sources_are_verified_deduplicated_and_skips_are_listed(tmp_path):
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(f'[models]\ndir = "{tmp_path / "models"}"\n\n[database]\nurl = "sqlite:///inspector.db"\n')
    good = write_good(tmp_path / "good", n=12)
    train(cfg_path, good)
    cfg = config.load(cfg_path)
    (good / "g00.jpg").unlink()  # gone since training
    (good / "g01.jpg").write_bytes(part_jpeg(99_999))  # replaced by another image since training
    archive = tmp_path / "archive"
    defect_bytes = part_jpeg(40_000, "spot")
    with Store(cfg.database.url) as store:
        kept = record(store, archive, "variant_a.jpg", variant_jpeg(20_000), review="good")
        gone = record(store, archive, "variant_b.jpg", variant_jpeg(20_001), review="good")
        (archive / "variant_b.jpg").unlink()
        record(store, archive, "spot.jpg", defect_bytes, review="defect")
        record(store, archive, "later_ok.jpg", variant_jpeg(20_002), verdict="ok")  # not reviewed: not used
        changed_mind = record(store, archive, "variant_c.jpg", variant_jpeg(20_003), review="good")
        store.add_review(changed_mind, "defect", "bob", note="looked again: a defect after all")
        extra = tmp_path / "extra"
        extra.mkdir()
        shutil.copy(good / "g02.jpg", extra / "dup_of_g02.jpg")  # same content as a training image: once
        (extra / "spot_copy.jpg").write_bytes(defect_bytes)  # a confirmed defect is never trained on
        for i in range(2):
            (extra / f"variant_extra_{i}.jpg").write_bytes(variant_jpeg(21_000 + i))
        (extra / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        result = retrain.retrain(cfg, store, add_dirs=[extra])

    assert result.sources == {"profile": 10, "false_alarm": 1, "added": 2, "total": 13}
    reasons = {(s.source, s.item): s.reason for s in result.skipped}
    assert reasons[("profile", "g00.jpg")].startswith("missing: ")
    assert reasons[("profile", "g01.jpg")].startswith("changed since it was recorded")
    assert reasons[("false_alarm", f"#{gone} variant_b.jpg")].startswith("missing: ")
    # every place looked in is named, the archive first (it named only where the part arrived: found by an
    # adversarial test)
    assert " nor " in reasons[("false_alarm", f"#{gone} variant_b.jpg")]
    assert reasons[("added", str(extra / "spot_copy.jpg"))].startswith("the same image is confirmed defect #")
    assert reasons[("added", str(extra / "broken.jpg"))]
    assert ("review", f"#{gone} variant_b.jpg") in reasons  # nor can it be re-scored
    assert not any(str(extra / "dup_of_g02.jpg") == item for _, item in reasons)  # a duplicate, not an error
    assert any("2 of the 12 images profile v1 was trained on" in w for w in result.warnings)
    reviewed = {p.inspection_id: p.review for p in result.parts}
    assert reviewed[kept] == "good" and reviewed[changed_mind] == "defect"  # the latest decision counts
    meta = profiles.load(cfg.models.dir, result.version).meta
    names = [im["name"] for im in meta["training_images"]]
    assert "variant_a.jpg" in names and "variant_c.jpg" not in names and "spot_copy.jpg" not in names
    assert sorted(meta["trained_from"]) == sorted({str(archive.resolve()), str(good.resolve()),
                                                   str(extra.resolve())})
    table = retrain.format_table(result)
    assert "(5 files skipped, listed below)" in table
    assert f"skipped (profile) g00.jpg: missing: {good / 'g00.jpg'}" in table


def test_a_retrained_profile_can_be_retrained_again_from_its_recorded_paths(station, tmp_path):
    cfg, store = station
    archive = tmp_path / "archive"
    for i in range(3):
        record(store, archive, f"variant_{i}.jpg", variant_jpeg(20_000 + i), review="good")
    first = retrain.retrain(cfg, store)
    assert first.activated and first.sources["total"] == N_GOOD + 3
    record(store, archive, "variant_3.jpg", variant_jpeg(20_003), review="good")
    second = retrain.retrain(cfg, store)
    # v2's own images (24 good + 3 cleared) are found again by path; the cleared ones are not counted twice
    assert second.sources == {"profile": N_GOOD + 3, "false_alarm": 1, "added": 0, "total": N_GOOD + 4}
    assert second.skipped == [] and second.activated


def test_no_activation_when_the_active_profile_changes_while_retraining(station, tmp_path):
    cfg, store = station
    for i in range(8):  # a variant the gate would accept
        record(store, tmp_path / "archive", f"variant{i}.jpg", variant_jpeg(20_000 + i), review="good")
    other = profiles.save(cfg.models.dir, profiles.load(cfg.models.dir, "v1").profile, {"note": "hand-made"})

    def progress(iterable, total):
        profiles.activate(cfg.models.dir, other)  # someone activates another version meanwhile
        return iterable

    result = retrain.retrain(cfg, store, progress=progress)
    assert not result.activated
    assert result.reason.startswith(f"not activated: the active profile changed from v1 to {other}")
    assert profiles.active_version(cfg.models.dir) == other


def test_errors_are_one_line(station, tmp_path):
    cfg, store = station
    with pytest.raises(DatasetError, match="nothing new to train on") as info:
        retrain.retrain(cfg, store)  # nothing reviewed good, nothing added
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="not a folder"):
        retrain.retrain(cfg, store, add_dirs=[tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images matching"):
        retrain.retrain(cfg, store, add_dirs=[tmp_path / "empty"])
    # a folder added whose images are all trained on already: it was added (it said "no folder was added")
    trained_from = profiles.load(cfg.models.dir).meta["trained_from"]
    folder = Path(trained_from if isinstance(trained_from, str) else trained_from[0])
    same = tmp_path / "same"
    same.mkdir()
    for i, src in enumerate(sorted(folder.glob("*.jpg"))[:3]):
        shutil.copy(src, same / f"again_{i}.jpg")
    assert len(list(same.iterdir())) == 3
    with pytest.raises(DatasetError, match="none of the images of the folder added is new"):
        retrain.retrain(cfg, store, add_dirs=[same])
    assert profiles.versions(cfg.models.dir) == ["v1"]  # nothing was saved

    # a profile that records no training images cannot be extended without a folder of good images
    bare = profiles.save(cfg.models.dir, profiles.load(cfg.models.dir, "v1").profile)
    profiles.activate(cfg.models.dir, bare)
    record(store, tmp_path / "archive", "variant.jpg", variant_jpeg(20_000), review="good")
    with pytest.raises(DatasetError, match=f"cannot retrain profile {bare}: it records no training images"):
        retrain.retrain(cfg, store)

    (cfg.models.dir / profiles.ACTIVE).unlink()
    with pytest.raises(NoActiveProfile):
        retrain.retrain(cfg, store)
