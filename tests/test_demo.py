"""`make demo` end to end (a smaller camera programme), and its failure paths: a watcher that cannot start, and
one that never judges and ignores SIGTERM. The demo must exit non-zero with one line and leave no watcher."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.tooling import demo


def test_demo_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "inspector.tooling.demo", "--train", "30", "--good", "6", "--per-defect",
                           "1", "--seconds", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for text in ("== summary, read back from demo/inspector.db", "planted defects flagged", "good parts passed",
                 "rejected                #", ": truncated (", ": empty (", "resend", "list --config demo/config.toml",
                 "stopped: ", "product flange", "product cap"):
        assert text in out, text
    root = tmp_path / "demo"
    drops = json.loads((root / "camera.json").read_text())
    assert len(drops) == 13 and {d["how"] for d in drops} == {"direct", "slow", "renamed", "resend"}
    con = sqlite3.connect(root / "inspector.db")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM inspections")]
    con.close()
    by_sha = {r["sha256"]: r for r in rows if r["sha256"]}
    by_name = {r["name"]: r for r in rows}
    distinct = {d["sha256"] or d["name"] for d in drops}
    assert len(rows) == len(distinct) == 12  # one row per distinct content: the resend has none
    for d in drops:
        row = by_sha.get(d["sha256"]) if d["sha256"] else by_name.get(d["name"])
        assert row is not None, d
        if d["planted"] in ("truncated", "empty"):
            assert (row["verdict"], row["reason"]) == ("rejected", d["planted"])
        elif d["how"] != "resend":
            assert row["verdict"] in ("ok", "defect") and row["size"] == d["size"] and row["name"] == d["name"]
            assert row["product"] == d["product"] and row["name"].startswith(d["product"] + "_")  # two products
    assert {r["station"] for r in rows} == {"demo-station"}
    assert {d["product"] for d in drops} == {"flange", "cap"}
    assert not any((root / "inbox").iterdir())
    assert sum(p.is_file() for p in (root / "archive").rglob("*")) == len(drops)
    assert "stopped: 12 verdicts" in (root / "watch.log").read_text()


def _fake_watcher(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_watch.py"
    script.write_text(f"import os, signal, sys, time\nopen({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
                      + body)
    return [sys.executable, str(script)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_watcher_that_cannot_start_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    cmd = _fake_watcher(tmp_path, "print('inspector: error: no active profile', file=sys.stderr); sys.exit(4)\n")
    monkeypatch.setattr(demo, "watch_command", lambda cfg: cmd)
    assert demo.run(tmp_path / "demo", n_train=12, n_good=2, per_defect=0, seconds=0.5) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("demo: error: the watcher exited with code 4 before it started: inspector: error: no active "
                       "profile")


def test_a_stuck_watcher_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    """It says `watching`, never judges, and ignores SIGTERM: the demo gives up, kills it, exits 1."""
    cmd = _fake_watcher(tmp_path, "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                  "print('2024-01-01T00:00:00 watching inbox', flush=True)\ntime.sleep(300)\n")
    monkeypatch.setattr(demo, "watch_command", lambda cfg: cmd)
    monkeypatch.setattr(demo, "DRAIN_TIMEOUT_S", 1.0)
    monkeypatch.setattr(demo, "KILL_GRACE_S", 1.0)
    assert demo.run(tmp_path / "demo", n_train=12, n_good=2, per_defect=0, seconds=0.5) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("demo: error: ") and "verdicts missing" in err[-1]
    assert _gone(int((tmp_path / "pid").read_text()))


def test_the_demo_refuses_a_folder_it_did_not_make_and_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Found by an adversarial test: `--dir .` deleted the folder's files and `--dir notes.txt` the file, before the
    demo failed. It removes only an empty folder or a previous demo's (one holding its mark)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep")
    monkeypatch.chdir(work)
    for target in (work, Path("."), work / "notes.txt", tmp_path):
        assert demo.run(target, n_train=12, n_good=2, per_defect=0, seconds=0.5) == 1, target
        assert "demo: error:" in capsys.readouterr().err
        assert (work / "notes.txt").read_text() == "keep"
    (tmp_path / "link").symlink_to(work)
    assert demo.run(tmp_path / "link", n_train=12, n_good=2, per_defect=0, seconds=0.5) == 1
    assert (work / "notes.txt").read_text() == "keep" and (tmp_path / "link").is_symlink()
    for marks in ([demo.MARK], ["camera.json", "config.toml", "watch.log"]):  # a previous demo's folder is removed
        old = tmp_path / "old-demo"  # (the three files: an older demo's, before the mark)
        old.mkdir()
        for mark in marks:
            (old / mark).write_text("[]")
        (old / "stale.txt").write_text("x")
        demo.clear(old)
        assert not old.exists()
    line = tmp_path / "line3"  # a folder of someone's own with a camera.json in it: kept
    line.mkdir()
    (line / "camera.json").write_text("{}")
    (line / "notes.txt").write_text("keep")
    assert demo.run(line, n_train=12, n_good=2, per_defect=0, seconds=0.5) == 1
    assert (line / "notes.txt").read_text() == "keep"
    demo.clear(tmp_path / "new")  # nothing there: nothing to do
