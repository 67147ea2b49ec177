"""Training at volume (issue 12, item 4): fit time, peak memory and profile size for N generated good parts.

`inspector bench --fit-sizes 200,1000,5000 [--json]`. The parent writes max(N) generated good parts as JPEGs
(quality 92, `bench.FIT_SIZE`, 1296x972, in worker processes; part i depends only on the seed and i, so each N
takes the first N of one set). Then, for each N, a fresh `python -m inspector.tooling.fitbench --child ...`
does what `inspector train` does and reports on itself:

* fit_s_<N>      - wall time to read and decode the N files (`load_training_images`, in threads) and fit and
                   calibrate the profile (`fit_profile`), with the setting of the config (default `Config()`);
* fit_rss_mb_<N> - the child's peak resident memory (VmHWM of /proc/self/status, MB = 2**20 bytes), imports
                   included; `rss_base_mb_<N>` is the same child's resident memory before it read a file (not
                   `ru_maxrss`: Linux carries that over exec, so a vfork-started child reports its parent's peak);
* profile_mb_<N> - the saved version's size on disk (`profiles.save`, with the training list `train` records);
* save_s_<N>     - time to save it (not part of fit_s);
* fit_cpu_s_<N>  - CPU seconds (user + system, all threads) the child spent in what fit_s times: on a machine
                   shared with other work, fit_s grows with the load while this mostly does not.

Each N runs in its own process, so its peak memory is its fit's alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from inspector.tooling.bench import FIT_SIZE, part_paths, write_parts


def parse_sizes(text: str) -> list[int]:
    """'200,1000,5000' -> [200, 1000, 5000]; ValueError for anything but positive integers >= 2."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--fit-sizes takes comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise ValueError(f"--fit-sizes needs at least 2 images per fit, got {text!r}")
    return sizes


def _status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (VmHWM: peak resident, VmRSS: resident now) in MB; None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    VmHWM belongs to the memory of this program alone. ru_maxrss is only the fallback: Linux carries it over
    exec, so a child started by vfork (as subprocess does) would report its parent's peak when that is higher.
    """
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_now_mb() -> float:
    """This process's resident memory now, in MB (the peak so far without /proc)."""
    now = _status_mb("VmRSS")
    return now if now is not None else _peak_rss_mb()


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used so far, all its threads together."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def child(files: Sequence[Path], models: Path, config: str | None) -> dict:
    """Fit, calibrate and save a profile on `files` as `inspector train` does; time, peak RSS and size."""
    import dataclasses

    from inspector import config as config_mod
    from inspector import profiles
    from inspector.pipeline import fit_profile, load_training_images

    cfg = config_mod.load(config)
    base = _rss_now_mb()
    cpu0 = _cpu_s()
    start = time.perf_counter()
    ts = load_training_images(files, cfg)
    decoded = time.perf_counter()
    profile = fit_profile(ts.images, cfg.profile)
    fitted = time.perf_counter()
    cpu = _cpu_s() - cpu0
    extra = {"note": "fitbench", "trained_from": str(Path(files[0]).parent),
             "training_images": [{"name": n, "sha256": h} for n, h in zip(ts.names, ts.hashes)], "config": config}
    version = profiles.save(models, profile, extra)
    saved = time.perf_counter()
    size = sum(p.stat().st_size for p in (models / version).iterdir() if p.is_file())
    return {"n": len(files), "n_train": profile.n_train_, "rejected": len(ts.rejected),
            "decode_s": decoded - start, "fit_s": fitted - start, "fit_cpu_s": cpu, "save_s": saved - fitted,
            "rss_base_mb": base, "rss_mb": _peak_rss_mb(), "profile_mb": size / 2**20, "threshold": profile.threshold_,
            "params": dataclasses.asdict(cfg.profile)}


def run_child(folder: Path, n: int, models: Path, config: str | None = None, size: tuple[int, int] = FIT_SIZE,
              seed: int = 0) -> dict:
    """Run `child` on the first n parts of `folder` in a fresh interpreter; its JSON report."""
    cmd = [sys.executable, "-m", "inspector.tooling.fitbench", "--child", "--folder", str(folder), "--n", str(n),
           "--models", str(models), "--size", f"{size[0]}x{size[1]}", "--seed", str(seed)]
    if config:
        cmd += ["--config", config]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fit of {n} images failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes: Sequence[int], config: str | None = None, size: tuple[int, int] = FIT_SIZE, seed: int = 0,
        folder: Path | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Generate max(sizes) parts (into `folder`, reused when given, else a temporary one) and fit each N apart."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inspector-fitbench-") as tmp:
        parts = folder or Path(tmp) / "parts"
        log(f"writing {max(sizes)} good parts at {size[0]}x{size[1]} to {parts} ...")
        write_parts(parts, max(sizes), size, seed, log=log)
        result: dict = {"fit_image_size": list(size), "config": config, "sizes": list(sizes)}
        for n in sizes:
            log(f"fitting on {n} images in a fresh process ...")
            r = run_child(parts, n, Path(tmp) / f"models-{n}", config, size, seed)
            log(f"  {n} images: fit {r['fit_s']:.1f} s (decode {r['decode_s']:.1f} s; CPU {r['fit_cpu_s']:.1f} s), "
                f"peak RSS {r['rss_mb']:.0f} MB, "
                f"profile {r['profile_mb']:.2f} MB")
            for key in ("fit_s", "fit_cpu_s", "decode_s", "save_s", "rss_base_mb", "profile_mb"):
                result[f"{key}_{n}"] = r[key]
            result[f"fit_rss_mb_{n}"] = r["rss_mb"]
            result[f"n_train_{n}"] = r["n_train"]
            if result.setdefault("params", r["params"]) != r["params"]:  # the config or the code changed meanwhile
                result[f"params_{n}"] = r["params"]
    result["seconds"] = time.perf_counter() - start
    return result


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m inspector.tooling.fitbench`: the fit-size benchmark, or (--child) one fit reporting itself."""
    p = argparse.ArgumentParser(prog="python -m inspector.tooling.fitbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="200,1000,5000", help="comma-separated N (default 200,1000,5000)")
    p.add_argument("--config", default=None, help="config file (default ./config.toml, else the defaults)")
    p.add_argument("--size", type=_size, default=FIT_SIZE, help="part size WxH (default 1296x972)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", type=Path, default=None, help="where the parts are (kept and reused when given)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--models", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        files = part_paths(args.folder, args.n, args.size, args.seed)
        missing = [f for f in files if not f.exists()]
        if missing:
            print(f"error: {len(missing)} of the {args.n} parts are missing, e.g. {missing[0]}", file=sys.stderr)
            return 5
        print(json.dumps(child(files, args.models, args.config)))
        return 0
    print(json.dumps(run(parse_sizes(args.sizes), args.config, args.size, args.seed, args.folder,
                         lambda s: print(s, file=sys.stderr, flush=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
