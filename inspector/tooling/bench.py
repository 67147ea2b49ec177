"""`inspector bench`: speed as ratios measured in one run, never as a timed assertion.

* decode_ms  - median plain full-resolution `cv2.imdecode` of a generated 5 MP JPEG (the floor);
* inspect_ms - median of the service's path from the same bytes to a verdict (hash, header check, reduced
               decode, segmentation, features, scoring), with BLAS held to one thread as in the service's
               workers (a second BLAS thread that must be woken for each small product costs up to ~8 ms on a
               busy machine);
* inspect_over_decode - their ratio;
* fit_s_200  - wall time to decode, fit and calibrate a profile on 200 generated JPEGs (1.3 MP each).

`speed` (the ratio), `speed_samples` and `write_parts` are shared with `defectbench` (detection limit, `bench
--defects`) and `fitbench` (training at volume, `bench --fit-sizes`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

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
    samples = speed_samples(rng)
    insp = Inspector(profile, "bench", cfg.input)
    return {
        **speed(insp, samples, runs),
        "fit_s_200": fit_s * 200.0 / n_fit,
        "n_fit": n_fit,
        "image_mb": statistics.median(len(s) for s in samples) / 1e6,
        "runs": runs * len(samples),
    }


def speed(insp: Inspector, samples: Sequence[bytes], runs: int) -> dict[str, float]:
    """decode_ms, inspect_ms (medians) and inspect_over_decode of the same JPEGs, decode and inspect interleaved."""
    decode_t: list[float] = []
    inspect_t: list[float] = []
    with threadpool_limits(limits=1, user_api="blas"):  # as each of the service's workers runs
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
    return {"decode_ms": decode_ms, "inspect_ms": inspect_ms, "inspect_over_decode": inspect_ms / decode_ms}


def speed_samples(rng: np.random.Generator, size: tuple[int, int] = FIVE_MP) -> list[bytes]:
    """The JPEGs `run` times: one good generated part and one of each synthetic defect, at `size` (w, h)."""
    return [_jpeg(make_part(rng, *size, defect=d)) for d in (None, *DEFECTS)]


def _write_part(job: tuple[Path, int, int, int, int]) -> Path:
    """Worker: render good part `index` of `seed` at (w, h) and write it as a JPEG at `path`."""
    path, w, h, seed, index = job
    tmp = path.with_name(f".{path.name}.tmp")  # renamed into place: a killed run leaves no half file to reuse
    tmp.write_bytes(_jpeg(make_part(np.random.default_rng([seed, index]), w, h)))
    os.replace(tmp, path)
    return path


def part_paths(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """The file names `write_parts` gives the first n parts of (size, seed) in folder."""
    return [folder / f"good_{size[0]}x{size[1]}_s{seed}_{i:05d}.jpg" for i in range(n)]


def write_parts(folder: Path, n: int, size: tuple[int, int], seed: int = 0, workers: int | None = None,
                log: Callable[[str], None] = lambda s: None, reuse: bool = True) -> list[Path]:
    """Write n generated good parts of `size` (w, h) as JPEGs (quality 92) to folder, in worker processes.

    Part i depends only on (seed, i), so a set of n is the first n of any larger set; with `reuse`, files
    already present (from an earlier call with the same seed and size) are kept.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = part_paths(folder, n, size, seed)
    jobs = [(p, size[0], size[1], seed, i) for i, p in enumerate(paths) if not (reuse and p.exists())]
    if not jobs:
        return paths
    workers = workers or os.cpu_count() or 2
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(_write_part, jobs, chunksize=4), 1):
            if done % 250 == 0 or done == len(jobs):
                log(f"  generated {done}/{len(jobs)} JPEGs at {size[0]}x{size[1]} "
                    f"({time.perf_counter() - start:.0f} s)")
    return paths
