"""`make demo`: generate a demo product, train a profile on it, and judge a demo batch with the CLI.

Until the watch service exists this is the end-to-end demo: good parts in demo/good, a mixed batch in
demo/batch (good parts and each kind of defect), a config in demo/config.toml that keeps the demo's
profiles in demo/models, then `inspector train` and `inspector score` exactly as an operator runs them.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from contextlib import redirect_stdout
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from inspector.cli import main as cli
from inspector.synthetic import DEFECTS, make_part


def generate(root: Path, n_good: int = 60, n_batch_good: int = 12, per_defect: int = 3) -> list[Path]:
    """Write the demo product under root; return the batch files."""
    rng = np.random.default_rng(7)
    if root.exists():
        shutil.rmtree(root)
    (root / "good").mkdir(parents=True)
    (root / "batch").mkdir()
    (root / "config.toml").write_text('# demo: defaults, with profiles kept beside this file\n[models]\ndir = "models"\n')
    for i in range(n_good):
        cv2.imwrite(str(root / "good" / f"part_{i:03d}.jpg"), make_part(rng, 640, 480))
    batch = [(f"good_{i:02d}", None) for i in range(n_batch_good)]
    batch += [(f"{d}_{i}", d) for d in DEFECTS for i in range(per_defect)]
    files = []
    for name, defect in batch:
        path = root / "batch" / f"{name}.jpg"
        cv2.imwrite(str(path), make_part(rng, 640, 480, defect=defect))
        files.append(path)
    broken = root / "batch" / "truncated.jpg"
    broken.write_bytes(files[0].read_bytes()[:5000])
    return files + [broken]


def run(root: Path = Path("demo")) -> int:
    """Generate, train, score; print a summary. Returns an exit code."""
    files = generate(root)
    cfg = str(root / "config.toml")
    print(f"== generated {len(list((root / 'good').iterdir()))} good parts and a batch of {len(files)} in {root}/")
    print(f"== inspector train {root}/good")
    if cli(["train", str(root / "good"), "--config", cfg, "--note", "demo"]) != 0:
        return 1
    print(f"== inspector score --json {root}/batch/*")
    buf = io.StringIO()
    with redirect_stdout(buf):
        cli(["score", "--config", cfg, "--json", "--exit-zero", *map(str, files)])
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    for r in rows:
        score = "" if r["score"] is None else f"score {r['score']:7.2f} / threshold {r['threshold']:.2f}"
        print(f"  {r['name']:<16} {r['verdict']:<9} {score or r['reason']}")
    verdicts = Counter(r["verdict"] for r in rows)
    expected_defect = [r for r in rows if not r["name"].startswith(("good", "truncated"))]
    caught = sum(r["verdict"] == "defect" for r in expected_defect)
    false_alarms = sum(r["verdict"] == "defect" for r in rows if r["name"].startswith("good"))
    print(f"== summary: {dict(verdicts)}; defects caught {caught}/{len(expected_defect)}, "
          f"false alarms {false_alarms}/{sum(r['name'].startswith('good') for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
