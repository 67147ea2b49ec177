"""`inspector bench`: speed as ratios measured in one run, never as a timed assertion.

* decode_ms  - median plain full-resolution `cv2.imdecode` of a generated 5 MP JPEG (the floor);
* inspect_ms - median of the service's path from the same bytes to a verdict (hash, header check, reduced
               decode, segmentation, features, scoring);
* inspect_over_decode - their ratio;
* fit_s_200  - wall time to decode, fit and calibrate a profile on 200 generated JPEGs (1.3 MP each).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from inspector.config import Config
from inspector.pipeline import Inspector, fit_profile, load_training_images
from inspector.synthetic import DEFECTS, make_part

FIVE_MP = (2592, 1944)
FIT_SIZE = (1296, 972)


def _jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    """Encode a BGR image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def run(cfg: Config, runs: int = 15, n_fit: int = 200, log: Callable[[str], None] = lambda s: None) -> dict:
    """Run the benchmark and return its figures (times in ms or s, medians over `runs`)."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="inspector-bench-") as tmp:
        folder = Path(tmp)
        log(f"generating {n_fit} training JPEGs at {FIT_SIZE[0]}x{FIT_SIZE[1]} ...")
        files = []
        for i in range(n_fit):
            path = folder / f"good_{i:04d}.jpg"
            path.write_bytes(_jpeg(make_part(rng, *FIT_SIZE)))
            files.append(path)
        log("fitting ...")
        start = time.perf_counter()
        ts = load_training_images(files, cfg)
        profile = fit_profile(ts.images, cfg.profile)
        fit_s = time.perf_counter() - start
    log(f"generating 5 MP test JPEGs at {FIVE_MP[0]}x{FIVE_MP[1]} ...")
    samples = [_jpeg(make_part(rng, *FIVE_MP, defect=d)) for d in (None, *DEFECTS)]
    insp = Inspector(profile, "bench", cfg.input)
    decode_t: list[float] = []
    inspect_t: list[float] = []
    for _ in range(runs):  # interleaved, so both see the same machine state
        for data in samples:
            t0 = time.perf_counter()
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            t1 = time.perf_counter()
            insp.inspect_bytes(data, "bench.jpg")
            t2 = time.perf_counter()
            decode_t.append((t1 - t0) * 1000.0)
            inspect_t.append((t2 - t1) * 1000.0)
    decode_ms = statistics.median(decode_t)
    inspect_ms = statistics.median(inspect_t)
    return {
        "decode_ms": decode_ms,
        "inspect_ms": inspect_ms,
        "inspect_over_decode": inspect_ms / decode_ms,
        "fit_s_200": fit_s * 200.0 / n_fit,
        "n_fit": n_fit,
        "image_mb": statistics.median(len(s) for s in samples) / 1e6,
        "runs": runs * len(samples),
    }
