"""Review across stations: `list`, `stats`, `export` and the review page filter by station and line, and
aggregate across them by default."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from inspector import cli, config
from inspector.store import Store
from inspector.web import create_app

NOW = datetime.now(timezone.utc).replace(microsecond=0)
# (station, line, verdicts): three stations on two lines
PLAN = [("press-1", "L1", ["ok", "ok", "defect"]), ("press-2", "L1", ["ok", "defect", "defect"]),
        ("paint-1", "L2", ["ok", "ok", "ok", "ok"])]


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    """A config whose database holds the inspections of PLAN."""
    path = tmp_path / "config.toml"
    path.write_text('[database]\nurl = "sqlite:///inspector.db"\n')
    cfg = config.load(path)
    rows, n = [], 0
    for station, line, verdicts in PLAN:
        for verdict in verdicts:
            n += 1
            rows.append({"sha256": f"{n:064x}", "name": f"{station}-{n}.jpg", "source_path": f"/in/{n}.jpg",
                         "received_at": NOW - timedelta(minutes=30 - n), "inspected_at": NOW - timedelta(minutes=30 - n),
                         "verdict": verdict, "score": 5.0 if verdict == "defect" else 1.0, "threshold": 3.0,
                         "profile_version": "v1", "station": station, "line": line, "camera": "cam"})
    with Store(cfg.database.url) as store:
        store.record(rows)
    return path


def run(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_list_stats_and_export_filter_by_station_and_line(cfg_path: Path, capsys: pytest.CaptureFixture,
                                                          tmp_path: Path) -> None:
    c = str(cfg_path)
    names = {r["name"] for r in json.loads(run(capsys, "list", "--json", "--station", "press-2", "--config", c))}
    assert names == {"press-2-4.jpg", "press-2-5.jpg", "press-2-6.jpg"}
    assert len(json.loads(run(capsys, "list", "--json", "--line", "L1", "--config", c))) == 6
    assert len(json.loads(run(capsys, "list", "--json", "--config", c))) == 10  # all stations together

    def totals(*extra: str) -> tuple[int, int, int]:
        periods = json.loads(run(capsys, "stats", "--by", "day", "--since", "all", "--json", *extra, "--config",
                                 c))["periods"]
        return (sum(p["parts"] for p in periods), sum(p["ok"] for p in periods), sum(p["defect"] for p in periods))

    assert totals() == (10, 7, 3)
    assert totals("--line", "L1") == (6, 3, 3)
    assert totals("--station", "paint-1") == (4, 4, 0)
    assert totals("--station", "press-1", "--line", "L1") == (3, 2, 1)
    out = tmp_path / "l2.csv"
    run(capsys, "export", "--csv", str(out), "--line", "L2", "--config", c)
    assert len(out.read_text().strip().splitlines()) == 1 + 4


def tiles(html: str) -> tuple[str, ...]:
    """The stats page's first four count tiles: inspected, ok, defect, rejected."""
    return tuple(re.search(rf"<dt>{name}</dt><dd>(\d+)</dd>", html).group(1)
                 for name in ("inspected", "ok", "defect", "rejected"))


def test_review_page_filters_by_station_and_line(cfg_path: Path) -> None:
    client = create_app(config.load(cfg_path)).test_client()
    everything = client.get("/?verdict=all").text
    assert len(re.findall(r'id="part-\d+"', everything)) == 10
    press2 = client.get("/?verdict=all&station=press-2").text
    assert sorted(re.findall(r'id="part-(\d+)"', press2)) == ["4", "5", "6"]
    assert '<option value="press-2" selected>' in press2 and '<option value="L2">' in press2
    l2 = client.get("/?verdict=all&line=L2").text
    assert sorted(re.findall(r'id="part-(\d+)"', l2)) == ["10", "7", "8", "9"]
    stats_all = client.get("/stats?since=all").text
    assert tiles(stats_all) == ("10", "7", "3", "0")  # inspected, ok, defect, rejected
    stats_l1 = client.get("/stats?since=all&line=L1").text
    assert tiles(stats_l1) == ("6", "3", "3", "0")
    assert 'src="/stats/defects.png?since=all&amp;line=L1"' in stats_l1
    assert client.get("/stats/defects.png?since=all&station=press-1").status_code == 200
    assert client.get("/?station=" + "x" * 65).status_code == 400
