"""The review-and-retrain loop through the command line, as an operator runs it: watch, mark, retrain,
rollback; each step checked on the database or the models folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector import cli, profiles
from test_retrain import train, variant_jpeg, write_good
from watchkit import atomic_drop, make_site, part_jpeg, run_once


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_mark_retrain_and_rollback_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    models = tmp_path / "models"
    site = make_site(tmp_path / "site", models)
    cfg = str(site.config)
    train(site.config, write_good(tmp_path / "good"))
    for i in range(5):
        atomic_drop(site.inbox, f"variant_{i}.jpg", variant_jpeg(21_000 + i))
    atomic_drop(site.inbox, "spot.jpg", part_jpeg(41_000, "spot"))
    assert run_once(site).returncode == 0
    rows = {r["name"]: r for r in site.rows()}
    assert all(r["verdict"] == "defect" and r["profile_version"] == "v1" for r in rows.values())
    capsys.readouterr()  # what training printed

    # nothing reviewed yet: nothing new to train on, a one-line error
    code, _, err = run(capsys, "retrain", "--config", cfg)
    assert code == 5 and err.startswith("inspector: error: ") and err.count("\n") == 1

    for i in range(5):
        code, _, _ = run(capsys, "mark", str(rows[f"variant_{i}.jpg"]["id"]), "--as", "good", "--by", "anna",
                         "--config", cfg)
        assert code == 0
    assert run(capsys, "mark", str(rows["spot.jpg"]["id"]), "--as", "defect", "--by", "anna", "--config", cfg)[0] == 0

    code, out, _ = run(capsys, "retrain", "--json", "--config", cfg)
    result = json.loads(out)
    assert code == 0 and result["activated"] and (result["previous"], result["version"]) == ("v1", "v2")
    assert result["after"]["confirmed_caught"] == 1 and result["after"]["false_alarms_cleared"] == 5
    assert profiles.active_version(models) == "v2"

    code, out, _ = run(capsys, "profiles", "rollback", "--config", cfg)
    assert code == 0 and "active profile: v1 (rolled back from v2)" in out
    assert profiles.active_version(models) == "v1"
    code, _, err = run(capsys, "profiles", "rollback", "--config", cfg)
    assert code == 4 and err.startswith("inspector: error: ")
    code, out, _ = run(capsys, "retrain", "--config", cfg)  # table form; v3 learns the same and is activated
    assert code == 0 and "candidate v3 from v1" in out and "activated" in out
