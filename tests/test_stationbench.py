"""`inspector bench --stations` at a tiny size: every figure present and sane, rows checked per configuration,
nothing left behind (folder, databases). No speed is asserted. The run needs a PostgreSQL server and skips
without INSPECTOR_TEST_POSTGRES_URL."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pytest

from inspector import cli
from inspector.tooling import stationbench
from inspector.cli import build_parser

RATES = ("sqlite_1_images_per_s", "pg_1_images_per_s", "pg_2_images_per_s", "pg_3_images_per_s",
         "pg_1_over_sqlite_1", "pg_2_over_sqlite_1", "pg_3_over_sqlite_1")


def test_station_bench_runs_small_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = os.environ.get("INSPECTOR_TEST_POSTGRES_URL", "").strip()
    if not url:
        pytest.skip("INSPECTOR_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp lands here, so leftovers are visible
    messages: list[str] = []
    result = stationbench.run(parts=20, max_backlog=10, pg_url=url, size=(640, 480), log=messages.append)
    for key in RATES:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, (key, result)
    assert result["rows_ok"] is True and all(result["rows_ok_by_config"].values()), result
    assert result["watcher_exits_ok"] is True
    assert result["parts"] == 20 and result["cores"] >= 1
    cores = result["cores"]
    assert result["workers_per_station"] == {"sqlite_1": cores, "pg_1": cores, "pg_2": max(1, cores // 2),
                                             "pg_3": max(1, cores // 3)}
    for label, n in (("sqlite_1", 1), ("pg_1", 1), ("pg_2", 2), ("pg_3", 3)):
        rows = result["rows_by_station"][label]
        assert len(rows) <= n and sum(rows.values()) == result["warmup_parts"][label] + 20, (label, rows)
    assert any("pg_3" in m for m in messages)
    assert result["folder"] is None and not any(tmp_path.iterdir())
    import psycopg

    with psycopg.connect(stationbench._conninfo(url), autocommit=True) as con:
        left = con.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                           (result["pg_databases"],)).fetchall()
    assert len(result["pg_databases"]) == 3 and left == []


def test_unreachable_postgres_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["bench", "--stations", "--pg-url", "postgresql+psycopg://postgres@127.0.0.1:1/test"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "cannot reach PostgreSQL" in err, err


def test_bench_help_mentions_stations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--stations", "--pg-url", "--parts", "--json"):
        assert option in out
