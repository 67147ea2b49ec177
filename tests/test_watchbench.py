"""`inspector bench --watch` at a tiny size: every figure present and sane, rows checked, nothing left behind.
No speed is asserted here; the benchmark reports ratios, it is never a timed test."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest

from inspector.tooling import watchbench
from inspector.cli import build_parser

KEYS = ("watch_images_per_s", "decode_images_per_s", "watch_over_decode", "latency_p50_ms", "latency_p99_ms",
        "rss_mb_1k", "rss_mb_10k")


def test_watch_bench_runs_small_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp lands here, so leftovers are visible
    messages: list[str] = []
    result = watchbench.run(parts=30, rss_parts=60, latency_parts=10, max_backlog=12, size=(640, 480),
                            log=messages.append)
    for key in (*KEYS, "reduced_decode_images_per_s", "latency_p50_detect_ms"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, (key, result)
    assert math.isfinite(result["rss_growth"])
    assert result["rows_ok"] is True
    assert result["watcher_exit"] == 0 and result["inbox_left"] == 0
    assert result["cores"] >= 1 and result["parts"] == 30 and result["total_parts"] == 60
    assert result["latency_p99_ms"] >= result["latency_p50_ms"]
    assert sum(result["verdicts"].values()) == 60 and result["verdicts"].get("rejected", 0) == 0
    assert any(m.startswith("throughput phase") for m in messages)
    assert result["folder"] is None and not any(tmp_path.iterdir())


def test_bench_help_mentions_watch(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--watch", "--parts", "--rss-parts", "--max-backlog", "--keep", "--json"):
        assert option in out
