"""`inspector list`, `show` and `db` against a database the real watcher filled."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from inspector import cli
from watchkit import Site, make_site, part_jpeg, run_once

KEYS = {"id", "sha256", "name", "verdict", "reason", "score", "threshold", "profile_version", "inspected_at"}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Site:
    """A site whose database holds ok, defect and rejected verdicts from one `watch --once` run."""
    site = make_site(tmp_path_factory.mktemp("cli-site") / "site", models)
    for i in range(4):
        (site.inbox / f"good-{i}.jpg").write_bytes(part_jpeg(31_000 + i))
    (site.inbox / "spot.jpg").write_bytes(part_jpeg(31_100, defect="spot"))
    (site.inbox / "empty.jpg").write_bytes(b"")
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert len(site.rows()) == 6
    return site


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_newest_first_with_the_required_keys(filled: Site, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "list", "--json", "--config", str(filled.config))
    rows = json.loads(out)
    assert code == 0 and len(rows) == 6
    assert KEYS <= set(rows[0])
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert {r["sha256"] for r in rows if r["sha256"]} == {r["sha256"] for r in filled.rows() if r["sha256"]}
    empty = next(r for r in rows if r["name"] == "empty.jpg")
    assert empty["verdict"] == "rejected" and empty["reason"] == "empty" and empty["score"] is None


def test_list_filters(filled: Site, capsys: pytest.CaptureFixture) -> None:
    cfg = str(filled.config)
    _, out, _ = run(capsys, "list", "--json", "--verdict", "rejected", "--config", cfg)
    assert [r["name"] for r in json.loads(out)] == ["empty.jpg"]
    _, out, _ = run(capsys, "list", "--json", "--verdict", "defect", "--config", cfg)
    assert "spot.jpg" in [r["name"] for r in json.loads(out)]
    _, out, _ = run(capsys, "list", "--json", "--limit", "2", "--config", cfg)
    assert len(json.loads(out)) == 2
    _, out, _ = run(capsys, "list", "--json", "--since", "8h", "--config", cfg)
    assert len(json.loads(out)) == 6
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    _, out, _ = run(capsys, "list", "--json", "--since", future, "--config", cfg)
    assert json.loads(out) == []
    code, out, _ = run(capsys, "list", "--config", cfg)
    assert code == 0 and len(out.strip().splitlines()) == 6 and "spot.jpg" in out


def test_list_rejects_bad_arguments_in_one_line(filled: Site, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, "list", "--since", "yesterday-ish", "--config", str(filled.config))
    assert code == 1 and err.startswith("inspector: error: --since") and err.count("\n") == 1
    code, _, err = run(capsys, "list", "--limit", "0", "--config", str(filled.config))
    assert code == 1 and "--limit" in err


def test_show_prints_one_inspection_in_full(filled: Site, capsys: pytest.CaptureFixture) -> None:
    row = next(r for r in filled.rows() if r["name"] == "spot.jpg")
    code, out, _ = run(capsys, "show", str(row["id"]), "--json", "--config", str(filled.config))
    shown = json.loads(out)
    assert code == 0 and shown["sha256"] == row["sha256"] and shown["station"] == "test-station"
    for key in ("archived_path", "size", "width", "height", "received_at", "inspected_at", "overlay_path", "ms",
                "line", "camera", "threshold", "profile_version"):
        assert key in shown
    code, out, _ = run(capsys, "show", str(row["id"]), "--config", str(filled.config))
    assert code == 0 and row["sha256"] in out and "overlay_path" in out
    code, _, err = run(capsys, "show", "99999", "--config", str(filled.config))
    assert code == 1 and "no inspection #99999" in err


def test_db_upgrade_creates_the_schema_and_current_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "sqlite:///data/v.db"\n')
    code, out, err = run(capsys, "db", "current", "--config", str(cfg))  # a read: it creates nothing (issue 14)
    assert code == 6 and f"no database at {tmp_path / 'data' / 'v.db'}" in err and not (tmp_path / "data").exists()
    code, out, _ = run(capsys, "db", "upgrade", "--config", str(cfg))
    assert code == 0 and "revision 0013" in out and "was empty" in out
    con = sqlite3.connect(tmp_path / "data" / "v.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0013"
    code, out, _ = run(capsys, "db", "upgrade", "--config", str(cfg))
    assert code == 0 and out.strip() == "database at revision 0013"
