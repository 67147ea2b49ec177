"""What a newcomer and an operator tripped over (issue 14, items 3 to 9): read commands that created databases,
two meanings of "confirmed defects", eval's run-together labels, score's file names and typos, train on a
dataset root, activating a version that does not exist, and a retrain gate that took memorising for learning.

Real image files, real SQLite files, the real command line (in-process, or a real `inspector watch`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import write_parts
from inspector import cli, profiles
from inspector.store import Store
from test_retrain import record, variant_jpeg, write_good

READ_COMMANDS = (["list"], ["stats"], ["show", "1"], ["export", "--csv", "out.csv"],
                 ["mark", "1", "--as", "good", "--by", "ana"], ["db", "current"], ["retrain"])


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tree(root: Path) -> list[str]:
    """Every path under root, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, good_dir: Path) -> Path:
    """A folder with a config (models only, no database yet) and a trained, active v1 and a saved v2."""
    root = tmp_path_factory.mktemp("newcomer")
    (root / "config.toml").write_text('[models]\ndir = "models"\n')
    assert cli.main(["train", str(good_dir), "--config", str(root / "config.toml")]) == 0
    assert cli.main(["train", str(good_dir), "--config", str(root / "config.toml"), "--no-activate"]) == 0
    return root


# ---------------------------------------------------------------------------------------------- item 3


def test_read_commands_in_a_folder_without_config_create_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in READ_COMMANDS:
        code, out, err = run(capsys, *argv)
        assert code == 6, (argv, err)
        assert err.count("\n") == 1 and err.startswith("inspector: error: no database at "), (argv, err)
        assert str(tmp_path / "inspector.db") in err and "built-in defaults" in err, (argv, err)
        assert out == ""
        assert tree(tmp_path) == [], argv  # no inspector.db, no out.csv, nothing


def test_a_typo_in_the_database_url_creates_no_folder_and_names_the_config(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[models]\ndir = "models"\n\n[database]\nurl = "sqlite:///dtaa/inspector.db"\n')
    for argv in READ_COMMANDS:
        code, _, err = run(capsys, *argv, "--config", str(config))
        assert code == 6 and err.count("\n") == 1, (argv, err)
        assert str(tmp_path / "dtaa" / "inspector.db") in err and str(config) in err, (argv, err)
        assert tree(tmp_path) == ["config.toml"], argv
    # once the url is right and the database exists (`db upgrade` is the explicit way to create one), they read it
    config.write_text('[models]\ndir = "models"\n\n[database]\nurl = "sqlite:///data/inspector.db"\n')
    assert run(capsys, "db", "upgrade", "--config", str(config))[0] == 0
    code, out, err = run(capsys, "list", "--config", str(config))
    assert code == 0 and out == "" and "no inspections match" in err
    assert run(capsys, "db", "current", "--config", str(config))[0] == 0


def test_watch_once_without_a_profile_creates_neither_archive_nor_database(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "config.toml").write_text('[models]\ndir = "models"\n\n[watch]\ndir = "inbox"\n')
    done = subprocess.run([sys.executable, "-m", "inspector", "watch", "--once"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and done.stderr.startswith("inspector: error: no active profile"), done.stderr
    assert done.stderr.count("\n") == 1
    assert tree(tmp_path) == ["config.toml", "inbox"]  # no archive/, no inspector.db


# ---------------------------------------------------------------------------------------------- item 4


def test_inspector_stats_and_the_review_page_count_confirmed_defects_alike(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    from inspector.web import data

    config = tmp_path / "config.toml"
    config.write_text(f'[models]\ndir = "{tmp_path / "models"}"\n\n[database]\nurl = "sqlite:///inspector.db"\n')
    # (verdict, decisions oldest first): every combination a line produces
    parts = [("defect", ("defect",)), ("defect", ("good", "defect")), ("defect", ("good",)), ("ok", ("defect",)),
             ("ok", ("good",)), ("ok", ()), ("defect", ()), ("rejected", ())]
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    with Store(f"sqlite:///{tmp_path / 'inspector.db'}") as store:
        rows = [{"sha256": f"{i:064x}", "name": f"p{i}.jpg", "source_path": f"/in/p{i}.jpg", "received_at": now,
                 "inspected_at": now + timedelta(seconds=i), "verdict": verdict,
                 "reason": "truncated" if verdict == "rejected" else None,
                 "score": None if verdict == "rejected" else (2.0 if verdict == "defect" else 0.5),
                 "threshold": None if verdict == "rejected" else 1.0, "profile_version": "v1", "station": "s",
                 "line": "l", "camera": "c"} for i, (verdict, _) in enumerate(parts)]
        for id_, (_, decisions) in zip(store.record(rows), parts):
            for decision in decisions:
                store.add_review(id_, decision, "ana")
        page = data.stats_data(store, "all")
    code, out, err = run(capsys, "stats", "--since", "all", "--by", "day", "--json", "--config", str(config))
    assert code == 0, err
    total = json.loads(out)["total"]
    cli_counts = {"confirmed": total["confirmed_defects"], "false_alarm": total["false_alarms"],
                  "missed": total["missed_defects"]}
    page_counts = {k: page.counts[k] for k in ("confirmed", "false_alarm", "missed")}
    assert cli_counts == page_counts
    # judged defect and marked defect (the latest decision counts); a missed defect is not a confirmed one
    assert cli_counts == {"confirmed": 2, "false_alarm": 1, "missed": 1}
    assert total["reviewed"] == 5


# ---------------------------------------------------------------------------------------------- item 5


def test_eval_per_type_recall_keeps_long_labels_apart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(21)
    write_parts(tmp_path / "set" / "train" / "good", 12, rng)
    write_parts(tmp_path / "set" / "test" / "good", 3, rng)
    write_parts(tmp_path / "set" / "test" / "broken_large", 2, rng, defect="spot")
    write_parts(tmp_path / "set" / "test" / "scratch", 2, rng, defect="scratch")
    (tmp_path / "defaults.toml").write_text("")  # the built-in defaults, whatever ./config.toml says
    code, out, err = run(capsys, "eval", str(tmp_path / "set"), "--config", str(tmp_path / "defaults.toml"))
    assert code == 0, err
    recall = [line for line in out.splitlines() if line.startswith("  recall ")]
    assert len(recall) == 2
    for line, kind in zip(recall, ("broken_large", "scratch")):
        assert re.fullmatch(rf"  recall {kind} {{2,}}\d\.\d{{3}}", line), line
    assert len({line.rindex(" ") for line in recall}) == 1  # the figures line up


# ---------------------------------------------------------------------------------------------- items 6, 7


def test_score_json_gives_the_path_as_given(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    for folder, defect in (("good", None), ("broken_small", "spot")):
        (tmp_path / folder).mkdir()
        write_parts(tmp_path / folder, 1, rng, defect=defect)[0].rename(tmp_path / folder / "000.png")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "score", "good/000.png", "broken_small/000.png", "--json",
                       "--config", str(site / "config.toml"))
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [(r["path"], r["name"], r["verdict"]) for r in rows] == [("good/000.png", "000.png", "ok"),
                                                                   ("broken_small/000.png", "000.png", "defect")]


def test_score_a_missing_file_is_a_usage_error(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                               good_dir: Path) -> None:
    cfg = str(site / "config.toml")
    real = str(next(good_dir.iterdir()))
    for argv in (["nope.png"], [real, str(tmp_path / "nope.png")], [str(tmp_path)]):
        code, out, err = run(capsys, "score", *argv, "--config", cfg)
        assert code == 2, (argv, out, err)
        assert out == "" and "rejected" not in err  # nothing scored, no verdict printed
        assert err.startswith("inspector: error: ") and err.count("\n") == 1
    assert "no such file: nope.png" in run(capsys, "score", "nope.png", "--config", cfg)[2]


# ---------------------------------------------------------------------------------------------- item 8


def test_train_on_a_dataset_root_names_train_good(mvtec_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "config.toml").write_text('[models]\ndir = "models"\n')
    code, _, err = run(capsys, "train", str(mvtec_dir), "--config", str(tmp_path / "config.toml"))
    assert code == 5 and err.count("\n") == 1  # a dataset error, as README's exit-code table says
    assert str(mvtec_dir / "train" / "good") in err
    assert not (tmp_path / "models").exists()
    code, _, err = run(capsys, "train", str(mvtec_dir / "test"), "--config", str(tmp_path / "config.toml"))
    assert code == 5 and "good/" in err and "scratch/" in err  # where the images are instead


def test_activating_a_version_that_does_not_exist_lists_those_that_do(site: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, "profiles", "activate", "v9", "--config", str(site / "config.toml"))
    assert code == 4 and err.count("\n") == 1
    assert "no profile v9" in err and "saved: v1, v2" in err and "active: v1" in err
    assert profiles.active_version(site / "models") == "v1"


# ---------------------------------------------------------------------------------------------- item 9


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[float], Path]:
    """The models folder of a v1 trained by `inspector train` on 24 good parts at a false-alarm budget, trained
    once per budget for the module (its good parts stay where v1 records them; the tests copy the folder)."""
    done: dict[float, Path] = {}

    def at(budget: float) -> Path:
        if budget not in done:
            root = tmp_path_factory.mktemp(f"trained-{budget}")
            config = root / "config.toml"
            config.write_text(f'[models]\ndir = "{root / "models"}"\n\n[profile]\nfalse_alarm_rate = {budget}\n')
            assert cli.main(["train", str(write_good(root / "good")), "--config", str(config)]) == 0
            done[budget] = root / "models"
        return done[budget]

    return at


def retrain_site(root: Path, trained: Callable[[float], Path], budget: float,
                 retrain_budget: float | None = None, odd: int = 1) -> Path:
    """v1 trained on 24 good parts at false-alarm budget `budget` (a copy of `trained`'s); `odd` parts of a new label
    colour judged defect and marked good in the database; the config then carries `retrain_budget` (default: the
    same)."""
    config = root / "config.toml"
    base = f'[models]\ndir = "{root / "models"}"\n\n[database]\nurl = "sqlite:///inspector.db"\n\n[profile]\n'
    shutil.copytree(trained(budget), root / "models")
    with Store(f"sqlite:///{root / 'inspector.db'}") as store:
        for i in range(odd):
            record(store, root / "archive", "odd.jpg" if i == 0 else f"odd{i}.jpg", variant_jpeg(20_000 + i),
                   review="good")
    config.write_text(base + f"false_alarm_rate = {retrain_budget or budget}\n")
    return config


def test_a_false_alarm_cleared_only_in_training_is_called_memorised(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                    trained: Callable[[float], Path]) -> None:
    config = retrain_site(tmp_path, trained, 0.05)
    capsys.readouterr()
    code, out, err = run(capsys, "retrain", "--json", "--config", str(config))
    result = json.loads(out)
    (part,) = result["parts"]
    # the candidate clears it in-sample, but held out it still flags it: nothing was learned
    assert part["after_heldout"] > part["after_threshold"] > part["after_score"]
    assert part["outcome"] == "MEMORISED" and result["memorised"] == [part["inspection_id"]]
    assert result["after"]["false_alarms_cleared"] == 1 and result["after"]["false_alarms_cleared_heldout"] == 0
    assert result["after"]["false_alarms_memorised"] == 1
    assert any(w.startswith("memorised, not learned: 1 of the 1 false alarm(s) v2 clears (#1)")
               for w in result["warnings"])
    # memorising also harms: the part (its held-out score sets a threshold of fewer than 100 parts) widens what the
    # candidate accepts, which the sensitivity probe shows, and the refusal names it (the gate let it through
    # before 2026-12-06)
    assert code == 7 and not result["activated"] and result["less_sensitive"]
    assert result["reason"].startswith("not activated: it is less sensitive: ")
    assert "the likeliest cause: #1;" in result["reason"]
    code, out, _ = run(capsys, "retrain", "--force", "--config", str(config))  # the table, as printed
    assert code == 0 and "MEMORISED (in training; held out" in out and "LESS SENSITIVE" in out
    assert "1 of 1 (held out: 0 of 1), 1 only memorised" in out and "warning: memorised, not learned" in out
    assert "activated by force although it is less sensitive" in out


def test_the_gate_holds_the_cross_fitted_false_alarm_rate_to_the_active_budget(
        tmp_path: Path, capsys: pytest.CaptureFixture, trained: Callable[[float], Path]) -> None:
    config = retrain_site(tmp_path, trained, 0.01, retrain_budget=0.2)  # someone loosened the budget in the config
    capsys.readouterr()
    code, out, _ = run(capsys, "retrain", "--json", "--config", str(config))
    result = json.loads(out)
    assert code == 7 and not result["activated"] and not result["gate_passed"] and result["over_budget"]
    assert result["after"]["cross_fitted_false_alarm_rate"] > 0.01
    assert result["reason"].startswith("not activated: its cross-fitted false-alarm rate ")
    assert "over the budget of 1.0% v1 was calibrated for" in result["reason"]
    assert profiles.active_version(tmp_path / "models") == "v1"
    code, out, _ = run(capsys, "retrain", "--config", str(config))
    assert code == 7 and "OVER v1's budget 1.0%" in out
    code, out, _ = run(capsys, "retrain", "--force", "--json", "--config", str(config))
    result = json.loads(out)
    assert code == 0 and result["activated"] and result["forced"]
    assert result["reason"].startswith("v4 activated by force although its cross-fitted false-alarm rate")


def test_retrain_no_activate_is_a_dry_run_and_keeps_the_note(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             trained: Callable[[float], Path]) -> None:
    config = retrain_site(tmp_path, trained, 0.05, odd=8)  # eight of the new colour: learned, not memorised
    capsys.readouterr()
    code, out, _ = run(capsys, "retrain", "--no-activate", "--note", "label supplier B", "--json",
                       "--config", str(config))
    result = json.loads(out)
    assert code == 0 and result["dry_run"] and result["gate_passed"] and not result["activated"]
    assert result["reason"].startswith("not activated (dry run): v2 is saved; the gate would activate it: ")
    assert profiles.active_version(tmp_path / "models") == "v1" and profiles.versions(tmp_path / "models") == [
        "v1", "v2"]
    assert profiles.load(tmp_path / "models", "v2").meta["note"] == "label supplier B"
    code, out, _ = run(capsys, "profiles", "list", "--config", str(config))
    assert "label supplier B" in out
    # a dry run of a candidate the gate refuses exits 7, as the real run would
    config.write_text(config.read_text().replace("false_alarm_rate = 0.05", "false_alarm_rate = 0.3"))
    code, out, _ = run(capsys, "retrain", "--no-activate", "--config", str(config))
    assert code == 7 and "not activated (dry run): v3 is saved; the gate would refuse it: " in out
    assert "over the budget" in out
    assert profiles.active_version(tmp_path / "models") == "v1"
    with pytest.raises(SystemExit) as info:  # contradictory: argparse's usage error
        cli.main(["retrain", "--no-activate", "--force", "--config", str(config)])
    assert info.value.code == 2
