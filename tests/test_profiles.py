"""Tests for inspector.profiles: versioned profile storage, the ACTIVE pointer, integrity checks, atomic saves.

A small profile is fitted once per module on synthetic parts; every test writes to its own tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import os
import subprocess
import sys
import textwrap
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from inspector import profiles
from inspector.errors import NoActiveProfile, ProfileError
from inspector.profile import FORMAT_VERSION, READABLE_FORMATS, NormalProfile
from inspector.synthetic import DEFECTS, make_part

W, H = 256, 192


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def fitted() -> NormalProfile:
    rng = np.random.default_rng(0)
    return NormalProfile(seed=0).fit([make_part(rng, W, H) for _ in range(16)])


@pytest.fixture(scope="module")
def probe_images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [make_part(rng, W, H) for _ in range(3)] + [make_part(rng, W, H, d) for d in DEFECTS]


@pytest.fixture
def models(tmp_path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def saved(models, fitted) -> Path:
    """A models dir holding v1; returns the v1 folder."""
    assert profiles.save(models, fitted) == "v1"
    return models / "v1"


def read_meta(folder: Path) -> dict:
    return json.loads((folder / profiles.META).read_text(encoding="utf-8"))


def write_meta(folder: Path, meta: dict) -> None:
    (folder / profiles.META).write_text(json.dumps(meta), encoding="utf-8")


def read_arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / profiles.ARRAYS, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def write_npz_bytes(folder: Path, raw: bytes) -> None:
    """Replace profile.npz and record its checksum, so the load gets past the integrity check."""
    (folder / profiles.ARRAYS).write_bytes(raw)
    meta = read_meta(folder)
    meta["arrays_sha256"] = hashlib.sha256(raw).hexdigest()
    write_meta(folder, meta)


def write_arrays(folder: Path, arrays: dict[str, np.ndarray], allow_pickle: bool = False) -> None:
    buf = io.BytesIO()
    if allow_pickle:  # numpy >= 2.1 refuses object arrays unless asked; older numpy pickles them anyway
        np.savez(buf, allow_pickle=True, **arrays)
    else:
        np.savez(buf, **arrays)
    write_npz_bytes(folder, buf.getvalue())


def refused(models: Path, version: str | None = "v1") -> ProfileError:
    """Load expecting a ProfileError (and nothing else); return it."""
    with pytest.raises(ProfileError) as info:
        profiles.load(models, version)
    assert str(info.value).strip(), "the refusal must carry a message"
    return info.value


def leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if ".tmp-" in p.name)


# ---------------------------------------------------------------------------------------------- round trip


def test_save_load_round_trip_scores_the_same(models, saved, fitted, probe_images):
    stored = profiles.load(models, "v1")
    assert stored.version == "v1"
    loaded = stored.profile
    assert loaded.threshold_ == fitted.threshold_
    assert loaded.offset_ == fitted.offset_
    assert loaded.calibration_ == fitted.calibration_
    assert loaded.layout_ == fitted.layout_
    assert loaded.params == fitted.params
    np.testing.assert_array_equal(loaded.palette_.centres_, fitted.palette_.centres_)
    np.testing.assert_array_equal(loaded.palette_.lut_labels_, fitted.palette_.lut_labels_)
    np.testing.assert_array_equal(loaded.oof_scores_, fitted.oof_scores_)
    a, maps_a = fitted.score_images(probe_images)
    b, maps_b = loaded.score_images(probe_images)
    # ref cells are stored as float16, so allow a small difference
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=5e-3)
    np.testing.assert_allclose(maps_b, maps_a, atol=5e-3)
    np.testing.assert_array_equal(loaded.predict(probe_images), fitted.predict(probe_images))
    assert (loaded.predict(probe_images)[3:] == -1).all()  # the defects are still caught


def test_a_large_profile_holds_its_cells_in_float16_and_judges_exactly_alike(models, fitted, probe_images,
                                                                            monkeypatch):
    """Past LEAN_CELLS_BYTES the reference cells stay float16 (as saved) in training and once loaded: half the
    memory, the very same scores, threshold and maps as a profile holding them in float32."""
    import inspector.profile as core

    assert fitted.ref_cells_.dtype == np.float32  # 16 small parts: under the limit
    monkeypatch.setattr(core, "LEAN_CELLS_BYTES", 0)
    rng = np.random.default_rng(0)
    lean = NormalProfile(seed=0).fit([make_part(rng, W, H) for _ in range(16)])  # the images `fitted` saw
    assert lean.ref_cells_.dtype == np.float16
    assert lean.ref_cells_.nbytes * 2 == fitted.ref_cells_.nbytes
    assert lean.threshold_ == fitted.threshold_
    np.testing.assert_array_equal(lean.oof_scores_, fitted.oof_scores_)
    np.testing.assert_array_equal(lean.ref_cells_.astype(np.float32), fitted.ref_cells_)
    a, maps_a = fitted.score_images(probe_images)
    b, maps_b = lean.score_images(probe_images)
    np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(maps_b, maps_a)
    profiles.save(models, fitted)
    loaded = profiles.load(models, "v1").profile
    assert loaded.ref_cells_.dtype == np.float16
    monkeypatch.setattr(core, "LEAN_CELLS_BYTES", 2**40)
    loaded_wide = profiles.load(models, "v1").profile
    assert loaded_wide.ref_cells_.dtype == np.float32
    np.testing.assert_array_equal(loaded.score_images(probe_images)[0], loaded_wide.score_images(probe_images)[0])


def test_meta_records_provenance_and_keeps_extra_keys(models, fitted):
    name = profiles.save(models, fitted, extra={"note": "line 3", "training_hashes": ["ab", "cd"], "n_images": 16})
    meta = profiles.load(models, name).meta
    assert meta["version"] == name == "v1"
    assert meta["format_version"] == FORMAT_VERSION
    assert datetime.fromisoformat(meta["created_at"]).tzinfo is not None
    raw = (models / name / profiles.ARRAYS).read_bytes()
    assert meta["arrays_sha256"] == hashlib.sha256(raw).hexdigest()
    assert meta["note"] == "line 3"
    assert meta["training_hashes"] == ["ab", "cd"]
    assert meta["n_images"] == 16
    assert meta["threshold"] == fitted.threshold_
    assert meta["n_train"] == 16
    assert read_meta(models / name) == meta  # what load returns is what is on disk


def test_npz_holds_plain_numeric_arrays_only(saved):
    arrays = read_arrays(saved)  # allow_pickle=False: would raise on any object array
    assert arrays, "no arrays saved"
    for name, arr in arrays.items():
        assert arr.dtype.kind in "fiu", (name, arr.dtype)
    assert arrays["ref_cells"].dtype == np.float16


# ---------------------------------------------------------------------------------------------- versions, ACTIVE


def test_versions_increase_and_activate_sets_active(models, fitted):
    assert profiles.versions(models) == []
    assert profiles.save(models, fitted) == "v1"
    assert profiles.save(models, fitted) == "v2"
    assert profiles.versions(models) == ["v1", "v2"]
    with pytest.raises(NoActiveProfile):
        profiles.active_version(models)
    with pytest.raises(NoActiveProfile):
        profiles.load(models)  # version=None loads the active one, and there is none
    profiles.activate(models, "v2")
    assert (models / profiles.ACTIVE).read_text().strip() == "v2"
    assert profiles.active_version(models) == "v2"
    assert profiles.load(models).version == "v2"
    profiles.activate(models, "v1")
    assert profiles.active_version(models) == "v1"
    stored = profiles.load(models, None)
    assert stored.version == "v1" and stored.meta["version"] == "v1"
    assert profiles.save(models, fitted) == "v3"  # saving does not change the active version
    assert profiles.active_version(models) == "v1"


def test_versions_sort_numerically_and_continue_after_the_highest(models, fitted):
    models.mkdir()
    for n in (2, 10, 9):
        (models / f"v{n}").mkdir()
    (models / "notes").mkdir()
    (models / "v1.bak").mkdir()
    assert profiles.versions(models) == ["v2", "v9", "v10"]
    assert profiles.save(models, fitted) == "v11"


def test_no_active_profile_is_a_profile_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(NoActiveProfile) as info:
        profiles.active_version(missing)
    assert isinstance(info.value, ProfileError)
    assert profiles.versions(missing) == []
    assert profiles.describe(missing) == []


def test_activate_refuses_a_corrupt_version_and_keeps_the_old_pointer(models, saved, fitted):
    profiles.activate(models, "v1")
    assert profiles.save(models, fitted) == "v2"
    (models / "v2" / profiles.ARRAYS).write_bytes(b"garbage")
    with pytest.raises(ProfileError):
        profiles.activate(models, "v2")
    with pytest.raises(ProfileError):
        profiles.activate(models, "v7")
    assert profiles.active_version(models) == "v1"


def test_concurrent_saves_get_distinct_versions(models, fitted):
    names: list[str] = []
    errors: list[BaseException] = []

    def work():
        try:
            names.append(profiles.save(models, fitted))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(names, key=lambda n: int(n[1:])) == ["v1", "v2", "v3", "v4"]
    for name in names:
        assert profiles.load(models, name).meta["version"] == name
    assert leftovers(models) == []


# ---------------------------------------------------------------------------------------------- refusals


def test_truncated_npz_is_refused(models, saved):
    raw = (saved / profiles.ARRAYS).read_bytes()
    (saved / profiles.ARRAYS).write_bytes(raw[: len(raw) // 2])
    assert "checksum" in str(refused(models))


def test_truncated_npz_with_matching_checksum_is_refused(models, saved):
    raw = (saved / profiles.ARRAYS).read_bytes()
    write_npz_bytes(saved, raw[: len(raw) // 2])
    refused(models)


def test_flipped_byte_is_refused_by_checksum(models, saved):
    raw = bytearray((saved / profiles.ARRAYS).read_bytes())
    raw[len(raw) // 3] ^= 0x01
    (saved / profiles.ARRAYS).write_bytes(bytes(raw))
    assert "checksum" in str(refused(models))


def test_missing_npz_is_refused(models, saved):
    (saved / profiles.ARRAYS).unlink()
    refused(models)


def test_missing_json_is_refused(models, saved):
    (saved / profiles.META).unlink()
    assert "v1" in str(refused(models))


def test_invalid_json_is_refused(models, saved):
    (saved / profiles.META).write_text('{"version": "v1", ', encoding="utf-8")
    refused(models)


def test_json_that_is_not_an_object_is_refused(models, saved):
    (saved / profiles.META).write_text("[1, 2, 3]", encoding="utf-8")
    refused(models)


def test_non_utf8_json_is_refused(models, saved):
    (saved / profiles.META).write_bytes(b"\xff\xfe{}")
    refused(models)


def test_wrong_format_version_is_refused(models, saved):
    meta = read_meta(saved)
    meta["format_version"] = max(READABLE_FORMATS) + 1
    write_meta(saved, meta)  # the checksum covers only the npz
    assert "format" in str(refused(models))


@pytest.mark.parametrize("key", ["params", "layout", "calibration", "threshold", "novel_distance"])
def test_json_missing_a_key_is_refused(models, saved, key):
    meta = read_meta(saved)
    del meta[key]
    write_meta(saved, meta)
    refused(models)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m.__setitem__("threshold", "high"), id="threshold-str"),
        pytest.param(lambda m: m.__setitem__("threshold", float("nan")), id="threshold-nan"),
        pytest.param(lambda m: m.__setitem__("n_train", 3), id="n_train-mismatch"),
        pytest.param(lambda m: m["params"].__setitem__("bogus", 1), id="unknown-param"),
        pytest.param(lambda m: m.__setitem__("layout", [128, 96]), id="layout-list"),
        pytest.param(lambda m: m["layout"].__setitem__("width", 64), id="layout-width"),
        pytest.param(lambda m: m.__setitem__("calibration", None), id="calibration-null"),
    ],
)
def test_inconsistent_json_is_refused(models, saved, edit):
    meta = read_meta(saved)
    edit(meta)
    write_meta(saved, meta)
    refused(models)


def test_json_layout_with_zero_stride_is_refused(models, saved):
    """Regression: stride 0 made FeatureLayout.grid raise ZeroDivisionError out of load."""
    meta = read_meta(saved)
    meta["layout"]["stride"] = 0
    write_meta(saved, meta)
    refused(models)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m.__setitem__("map_scale", 0.0), id="map_scale-zero"),
        pytest.param(lambda m: m.__setitem__("map_scale", -1.0), id="map_scale-negative"),
        pytest.param(lambda m: m["params"].__setitem__("n_rings", m["layout"]["n_rings"] + 6), id="n_rings-mismatch"),
    ],
)
def test_json_that_loads_but_would_score_wrongly_is_refused(models, saved, edit):
    meta = read_meta(saved)
    edit(meta)
    write_meta(saved, meta)
    refused(models)


def test_npz_array_of_wrong_shape_is_refused(models, saved):
    arrays = read_arrays(saved)
    arrays["ref_cells"] = arrays["ref_cells"][:, :-5]  # fewer cells than the layout has
    write_arrays(saved, arrays)
    assert "shape" in str(refused(models))


def test_npz_missing_an_array_is_refused(models, saved):
    arrays = read_arrays(saved)
    del arrays["ref_global"]
    write_arrays(saved, arrays)
    refused(models)


@pytest.mark.parametrize(
    "name, value",
    [
        pytest.param("global_scale", np.ones(5, np.float32), id="global_scale"),
        pytest.param("local_stats", np.ones(1), id="local_stats-short"),
        pytest.param("local_stats", np.ones((2, 2)), id="local_stats-2d"),
        pytest.param("global_stats", np.ones(1), id="global_stats"),
    ],
)
def test_npz_other_array_of_wrong_shape_is_refused(models, saved, name, value):
    """Regression: only ref_cells/ref_global shapes were checked; these loaded and then broke scoring."""
    arrays = read_arrays(saved)
    arrays[name] = value
    write_arrays(saved, arrays)
    refused(models)


def test_npz_with_non_finite_statistics_is_refused(models, saved):
    """Regression: NaN statistics loaded, every score became NaN and predict() passed defective parts."""
    arrays = read_arrays(saved)
    arrays["local_stats"] = np.array([np.nan, 1.0])
    write_arrays(saved, arrays)
    refused(models)


def test_npz_with_one_dimensional_palette_is_refused_without_a_huge_allocation(models, saved):
    """Run the load in a child process whose address space is capped, so the bug cannot exhaust memory."""
    arrays = read_arrays(saved)
    arrays["palette_centres"] = np.ones(3, np.float32)
    write_arrays(saved, arrays)
    child = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from pathlib import Path
        from inspector import profiles
        from inspector.errors import ProfileError
        try:
            profiles.load(Path({str(models)!r}), "v1")
        except ProfileError:
            print("ProfileError")
        except BaseException as exc:
            print(type(exc).__name__)
        else:
            print("loaded")
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.strip().splitlines()[-1:] == ["ProfileError"], (out.stdout, out.stderr[-2000:])


def test_npz_with_object_array_is_refused(models, saved):
    arrays: dict[str, np.ndarray] = dict(read_arrays(saved))
    arrays["ref_cells"] = np.array([{"a": 1}, None, "x"], dtype=object)
    write_arrays(saved, arrays, allow_pickle=True)
    message = str(refused(models))
    assert "allow_pickle" in message or "object" in message.lower()


def test_npz_that_is_not_a_zip_is_refused(models, saved):
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))  # a bare .npy, not an archive
    write_npz_bytes(saved, buf.getvalue())
    refused(models)
    write_npz_bytes(saved, b"not numpy at all" * 10)
    refused(models)


def test_empty_npz_with_matching_checksum_is_refused(models, saved):
    """Regression: np.load of empty bytes raises EOFError, which load let through."""
    write_npz_bytes(saved, b"")
    refused(models)


@pytest.mark.parametrize("pointer", ["../etc", "v1/../../etc", "latest", "", "v-1", "/etc/passwd"])
def test_active_pointer_naming_garbage_is_refused(models, saved, pointer):
    (models / profiles.ACTIVE).write_text(pointer + "\n", encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        profiles.active_version(models)
    assert not isinstance(info.value, NoActiveProfile)
    refused(models, None)


def test_active_pointer_to_a_missing_version_is_refused(models, saved):
    (models / profiles.ACTIVE).write_text("v9\n", encoding="utf-8")
    assert "v9" in str(refused(models, None))


def test_active_pointer_with_invalid_utf8_is_refused(models, saved):
    """Regression: UnicodeDecodeError escaped from active_version, load(None) and describe."""
    (models / profiles.ACTIVE).write_bytes(b"\xff\xfev1")
    with pytest.raises(ProfileError):
        profiles.active_version(models)
    refused(models, None)
    assert [r["active"] for r in profiles.describe(models)] == [False]


@pytest.mark.parametrize("version", ["v9", "v0", "../v1", "v1/", "1", "V1", "v1/../v1"])
def test_unknown_or_malformed_version_is_refused(models, saved, version):
    refused(models, version)


def test_version_that_is_a_file_is_refused(models, saved):
    (models / "v5").write_text("not a folder")
    refused(models, "v5")


# ---------------------------------------------------------------------------------------------- atomicity


def test_save_leaves_no_temporary_directories(models, fitted):
    profiles.save(models, fitted)
    profiles.save(models, fitted)
    profiles.activate(models, "v2")
    assert leftovers(models) == []
    assert sorted(p.name for p in models.iterdir()) == ["ACTIVE", "HISTORY", "v1", "v2"]
    assert sorted(p.name for p in (models / "v1").iterdir()) == [profiles.META, profiles.ARRAYS]


def test_failed_save_leaves_nothing_behind(models, saved, fitted):
    before = sorted(p.name for p in models.iterdir())
    with pytest.raises(TypeError):
        profiles.save(models, fitted, extra={"note": object()})  # not JSON-serialisable
    assert sorted(p.name for p in models.iterdir()) == before == ["v1"]
    assert leftovers(models) == []
    assert profiles.versions(models) == ["v1"]
    assert profiles.save(models, fitted) == "v2"  # the failed attempt did not burn or block a number


def test_failed_first_save_leaves_an_empty_models_dir(models, fitted):
    with pytest.raises(TypeError):
        profiles.save(models, fitted, extra={"bad": {1, 2}})
    assert list(models.iterdir()) == []


# ---------------------------------------------------------------------------------------------- describe


def test_describe_lists_versions_with_the_active_flag(models, fitted):
    assert profiles.describe(models) == []
    profiles.save(models, fitted, extra={"note": "first"})
    profiles.save(models, fitted)
    profiles.activate(models, "v2")
    rows = profiles.describe(models)
    assert [r["version"] for r in rows] == ["v1", "v2"]
    assert [r["active"] for r in rows] == [False, True]
    assert rows[0]["note"] == "first" and rows[1]["note"] == ""
    for row in rows:
        assert row["threshold"] == fitted.threshold_
        assert row["n_train"] == 16
        assert row["created_at"]
    profiles.activate(models, "v1")
    assert [r["active"] for r in profiles.describe(models)] == [True, False]


def test_describe_without_active_and_with_an_unreadable_version(models, fitted):
    profiles.save(models, fitted)
    profiles.save(models, fitted)
    (models / "v1" / profiles.META).write_text("{broken", encoding="utf-8")
    rows = profiles.describe(models)
    assert [r["version"] for r in rows] == ["v1", "v2"]
    assert not any(r["active"] for r in rows)
    assert rows[0]["note"] == "unreadable" and rows[0]["threshold"] is None
    assert rows[1]["threshold"] == fitted.threshold_
    (models / profiles.ACTIVE).write_text("../etc\n")  # a garbage pointer: nothing is active, no crash
    assert not any(r["active"] for r in profiles.describe(models))


def test_a_version_without_its_arrays_or_its_checksum_says_so(models, fitted):
    """Found by an adversarial test: with profile.npz deleted `profiles list` showed the version as usable, and a
    profile.json of `{}` read "its arrays do not match the recorded checksum" where none was recorded."""
    profiles.save(models, fitted)
    profiles.save(models, fitted)
    (models / "v1" / profiles.ARRAYS).unlink()
    assert [r["note"] == "unreadable" for r in profiles.describe(models)] == [True, False]
    with pytest.raises(profiles.ProfileError, match="unreadable or corrupt"):
        profiles.verify(models, "v1")
    (models / "v2" / profiles.META).write_text("{}", encoding="utf-8")
    for check in (profiles.load, profiles.verify):
        with pytest.raises(profiles.ProfileError, match="records no checksum of its arrays"):
            check(models, "v2")


def test_describe_with_a_json_that_is_not_an_object(models, fitted):
    """Regression: describe called .get on a JSON list and raised AttributeError."""
    profiles.save(models, fitted)
    (models / "v1" / profiles.META).write_text("[]", encoding="utf-8")
    rows = profiles.describe(models)
    assert rows[0]["note"] == "unreadable"


@pytest.mark.parametrize("field, value", [("threshold", "x"), ("threshold", [1.0]), ("threshold", True),
                                          ("threshold", float("nan")), ("n_train", "12"), ("n_train", 1.5),
                                          ("note", 5), ("created_at", 7)])
def test_a_field_edited_by_hand_lists_that_version_as_unreadable(models, fitted, tmp_path, capsys, field, value):
    """Found by an adversarial test: `inspector profiles` crashed with a traceback on "threshold": "x" and listed
    none of the versions after it."""
    from inspector import cli

    for _ in range(3):
        profiles.save(models, fitted)
    meta_path = models / "v2" / profiles.META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, field: value}), encoding="utf-8")
    rows = profiles.describe(models)
    assert [(r["version"], r["note"] == "unreadable") for r in rows] == [("v1", False), ("v2", True), ("v3", False)]
    config = tmp_path / "config.toml"
    config.write_text(f'[models]\ndir = "{models}"\n')
    assert cli.main(["profiles", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert [re.match(r"[ *] (v\d+) ", line).group(1) for line in out.splitlines()] == ["v1", "v2", "v3"]
    assert "unreadable" in out.splitlines()[1]
    assert cli.main(["profiles", "--json", "--config", str(config)]) == 0
    assert [r["note"] == "unreadable" for r in json.loads(capsys.readouterr().out)] == [False, True, False]


# ---------------------------------------------------------------------------------------------- history, rollback


def _three_versions(models: Path, fitted: NormalProfile) -> None:
    for expected in ("v1", "v2", "v3"):
        assert profiles.save(models, fitted) == expected


def test_activate_appends_a_history_line(models, fitted):
    _three_versions(models, fitted)
    assert profiles.history(models) == []
    profiles.activate(models, "v1")
    profiles.activate(models, "v3")
    lines = (models / profiles.HISTORY).read_text().splitlines()
    assert [line.split()[1:] for line in lines] == [["v1", "activate"], ["v3", "activate"]]
    for line in lines:
        assert datetime.fromisoformat(line.split()[0]).tzinfo is not None
    assert [(e.version, e.action) for e in profiles.history(models)] == [("v1", "activate"), ("v3", "activate")]


def test_rollback_undoes_the_last_activation_and_twice_goes_further_back(models, fitted):
    _three_versions(models, fitted)
    for v in ("v1", "v2", "v3"):
        profiles.activate(models, v)
    assert profiles.rollback(models) == ("v3", "v2")
    assert profiles.active_version(models) == "v2"
    assert profiles.rollback(models) == ("v2", "v1")  # not back to v3: undo, not toggle
    assert profiles.active_version(models) == "v1"
    with pytest.raises(ProfileError, match="nothing to roll back to: v1") as info:
        profiles.rollback(models)
    assert "\n" not in str(info.value)
    assert profiles.active_version(models) == "v1"
    assert [(e.version, e.action) for e in profiles.history(models)][-2:] == [("v2", "rollback"), ("v1", "rollback")]
    profiles.activate(models, "v3")  # a new activation after rollbacks is undone to where we were
    assert profiles.rollback(models) == ("v3", "v1")


def test_rollback_skips_repeated_activations_of_the_same_version(models, fitted):
    _three_versions(models, fitted)
    profiles.activate(models, "v1")
    profiles.activate(models, "v2")
    profiles.activate(models, "v2")
    assert profiles.rollback(models) == ("v2", "v1")


def test_rollback_after_activating_an_older_version_returns_to_the_newer_one(models, fitted):
    _three_versions(models, fitted)
    profiles.activate(models, "v2")
    profiles.activate(models, "v1")  # a manual "rollback" by activate is an activation like any other
    assert profiles.rollback(models) == ("v1", "v2")


def test_nothing_to_roll_back_to(tmp_path, models, fitted):
    with pytest.raises(NoActiveProfile):
        profiles.rollback(tmp_path / "nowhere")
    _three_versions(models, fitted)
    with pytest.raises(NoActiveProfile):
        profiles.rollback(models)
    profiles.activate(models, "v2")
    with pytest.raises(ProfileError, match="nothing to roll back to"):
        profiles.rollback(models)
    assert profiles.active_version(models) == "v2"


def test_rollback_to_a_version_that_no_longer_loads_keeps_the_pointer(models, fitted):
    _three_versions(models, fitted)
    profiles.activate(models, "v1")
    profiles.activate(models, "v2")
    (models / "v1" / profiles.ARRAYS).write_bytes(b"garbage")
    with pytest.raises(ProfileError, match="cannot roll back from v2 to v1"):
        profiles.rollback(models)
    assert profiles.active_version(models) == "v2"
    assert profiles.history(models)[-1].version == "v2"


def test_a_models_folder_from_before_history_can_undo_its_first_new_activation(models, fitted):
    _three_versions(models, fitted)
    (models / profiles.ACTIVE).write_text("v1\n")  # as the old code left it: ACTIVE, no HISTORY
    profiles.activate(models, "v3")
    assert [e.version for e in profiles.history(models)] == ["v1", "v3"]
    assert profiles.rollback(models) == ("v3", "v1")


def test_rollback_when_active_was_changed_outside_returns_to_the_last_recorded_version(models, fitted):
    _three_versions(models, fitted)
    profiles.activate(models, "v1")
    profiles.activate(models, "v2")
    (models / profiles.ACTIVE).write_text("v3\n")  # someone edited the pointer by hand
    assert profiles.rollback(models) == ("v3", "v2")
    assert profiles.rollback(models) == ("v2", "v1")


def test_torn_and_garbage_history_lines_are_ignored(models, fitted):
    _three_versions(models, fitted)
    profiles.activate(models, "v1")
    profiles.activate(models, "v2")
    with open(models / profiles.HISTORY, "ab") as fh:
        fh.write(b"garbage\n2026-01-01T00:00:00+00:00 ../etc activate\nnot-a-time v1 activate\n\xff\xfe\n2026-01-0")
    assert [e.version for e in profiles.history(models)] == ["v1", "v2"]
    assert profiles.rollback(models) == ("v2", "v1")
    assert profiles.history(models)[-1].version == "v1"  # the new line is whole despite the torn tail before it


def test_concurrent_activations_each_leave_one_whole_line(models, fitted):
    _three_versions(models, fitted)
    errors: list[BaseException] = []

    def worker(v: str) -> None:
        try:
            for _ in range(5):
                profiles.activate(models, v)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(v,)) for v in ("v1", "v2", "v3", "v1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = profiles.history(models)
    assert len(entries) == len((models / profiles.HISTORY).read_text().splitlines()) == 20
    assert entries[-1].version == profiles.active_version(models)


def test_describe_shows_when_each_version_was_last_activated(models, fitted):
    _three_versions(models, fitted)
    profiles.activate(models, "v2")
    rows = {r["version"]: r for r in profiles.describe(models)}
    assert rows["v1"]["activated_at"] is None and rows["v3"]["activated_at"] is None
    assert datetime.fromisoformat(rows["v2"]["activated_at"]).tzinfo is not None
