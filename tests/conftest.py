"""Shared fixtures: synthetic parts written to tmp_path as real image files."""

from __future__ import annotations

import os

# BLAS held to one thread in every test process and the processes the tests start (as the service holds each of its
# judging workers): OpenBLAS's own threads spin while they wait, and two test workers on two cores, each with two
# spinning BLAS threads, burned a third of their CPU on it (tests/test_line_conditions.py and tests/test_core.py:
# 88-91 s of CPU against 58-59 s, measured twice each way, 2026-12-07). Set before numpy is first imported, and
# again below for a process where a plugin imported it first.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.synthetic import DEFECTS, make_part

SIZE = (200, 150)

# The test files that keep one worker busiest (about 25 s to 2 min each on a 2-core machine), longest first. A
# parallel run (pytest-xdist, --dist loadfile) hands out whole files in collection order: these go first and
# the many short files fill in behind them, so the run does not end with one worker on a long file while the
# others have nothing left to do. (xdist's own order, most tests first, put the long one- and two-test files
# such as test_quality.py and test_watch_faults.py last.) The order changes no test: every file still runs
# whole, in its own order, on one worker.
LONGEST_FIRST = (
    "test_watch.py", "test_quality.py", "test_watch_hazards.py", "test_products.py", "test_postgres.py",
    "test_hour_counts.py", "test_reads_at_scale.py", "test_retrain.py", "test_webhook.py", "test_cli_newcomer.py",
    "test_metrics.py", "test_watch_faults.py", "test_shared_folder.py", "test_watch_operator.py", "test_web.py",
    "test_mqtt.py", "test_stationbench.py", "test_demo.py", "test_watchbench.py", "test_pg_outage.py",
    "test_web_e2e.py", "test_texture.py", "test_robustness.py",
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the inspector package's bytecode once (into its __pycache__ folders, which git ignores), so the
    hundreds of Python processes the tests start (watchers, their judging processes, CLI runs) read it instead of
    each compiling the same sources again: with PYTHONDONTWRITEBYTECODE set, as on the machines here, no process
    ever writes it, and every start paid ~0.1 to 0.2 CPU seconds for that. Done by the main process only (not by
    each xdist worker); what cannot be written is simply compiled again by each process as before."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "inspector"), quiet=2)


def pytest_configure(config: pytest.Config) -> None:
    """Keep the file order of pytest_collection_modifyitems under xdist (which otherwise sorts files by their
    number of tests); hold BLAS to one thread (see the top of this file) where numpy was loaded before it."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """LONGEST_FIRST's files first, in that order; then the others, most tests first (as xdist orders them),
    otherwise in collection order. Each file's tests stay together and in their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    files = {item.path: None for item in items}
    first_seen = {path: i for i, path in enumerate(files)}
    tests = Counter(item.path for item in items)

    def key(item: pytest.Item) -> tuple[int, int, int]:
        if item.path.name in rank:
            return (0, rank[item.path.name], first_seen[item.path])
        return (1, -tests[item.path], first_seen[item.path])

    items.sort(key=key)


def write_parts(folder: Path, n: int, rng: np.random.Generator, defect: str | None = None, prefix: str = "part",
                ext: str = ".png") -> list[Path]:
    """Write n synthetic parts as image files; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}_{i:03d}{ext}"
        assert cv2.imwrite(str(p), make_part(rng, *SIZE, defect=defect))
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def mvtec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec-layout folder of synthetic parts, with masks for the spot defects."""
    root = tmp_path_factory.mktemp("mvtec")
    rng = np.random.default_rng(11)
    write_parts(root / "train" / "good", 30, rng)
    write_parts(root / "test" / "good", 10, rng)
    for d in DEFECTS:
        write_parts(root / "test" / d, 4, rng, defect=d)
    # masks: mark the whole part area for every defect (coarse but valid ground truth)
    for d in DEFECTS:
        (root / "ground_truth" / d).mkdir(parents=True)
        for p in sorted((root / "test" / d).iterdir()):
            img = cv2.imread(str(p))
            diff = np.abs(img.astype(int) - make_part(np.random.default_rng(0), *SIZE).astype(int)).sum(2)
            mask = (diff > 150).astype(np.uint8) * 255
            cv2.imwrite(str(root / "ground_truth" / d / f"{p.stem}_mask.png"), mask)
    return root


@pytest.fixture(scope="session")
def good_dir(mvtec_dir: Path) -> Path:
    """Folder of good training parts."""
    return mvtec_dir / "train" / "good"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder for the watch tests: v1 (active) and v2 (saved, not active), trained on synthetic JPEGs.
    The tests only read it (a test that changes profiles copies it first). Under pytest-xdist the workers of one
    run share it: the first to need it trains it, the others wait for that (a lock file) and use the same folder."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _train_models(tmp_path_factory.mktemp("watch-models"))
    import fcntl

    run_dir = tmp_path_factory.getbasetemp().parent  # this run's folder, above each worker's own
    root = run_dir / "watch-models"
    with open(run_dir / "watch-models.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died half-way
            root.mkdir()
            _train_models(root)
            (root / "done").touch()
    return root / "models"


def _train_models(root: Path) -> Path:
    """v1 (active) and v2 (saved) in root / "models", both trained by `inspector train` on 24 synthetic JPEGs."""
    from inspector import cli
    from watchkit import part_jpeg

    good = root / "good"
    good.mkdir()
    for i in range(24):
        (good / f"g{i:02d}.jpg").write_bytes(part_jpeg(10_000 + i))
    cfg = root / "train.toml"
    cfg.write_text(f'[models]\ndir = "{root / "models"}"\n')
    assert cli.main(["train", str(good), "--config", str(cfg)]) == 0
    assert cli.main(["train", str(good), "--config", str(cfg), "--no-activate", "--note", "second"]) == 0
    return root / "models"


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty PostgreSQL databases for one test module: each call creates
    `inspector_test_<unix time>_<random>` on the server of INSPECTOR_TEST_POSTGRES_URL (through an autocommit
    connection to its database, where nothing is ever created) and returns its SQLAlchemy URL; all of them are
    dropped when the module is done. Databases of this kind older than an hour that nobody is connected to are
    leftovers of a crashed run and are dropped first. Skips when the variable is unset."""
    base = os.environ.get("INSPECTOR_TEST_POSTGRES_URL", "").strip()
    if not base:
        pytest.skip("INSPECTOR_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    created: list[str] = []

    def drop(conn: sa.Connection, name: str, force: bool) -> None:
        if force:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')

    with admin.connect() as conn:
        names = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE 'inspector\\_test\\_%'"))
        for (name,) in names.all():
            found = re.fullmatch(r"inspector_test_(\d+)_[0-9a-f]+", name)
            if found and time.time() - int(found.group(1)) > 3600:
                try:
                    drop(conn, name, force=False)  # refused while a (concurrent, long) run is still connected
                except sa.exc.DBAPIError:
                    pass

    def new_database() -> str:
        name = f"inspector_test_{int(time.time())}_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        created.append(name)
        return sa.make_url(base).set(database=name).render_as_string(hide_password=False)

    try:
        yield new_database
    finally:
        with admin.connect() as conn:
            for name in created:
                drop(conn, name, force=True)
        admin.dispose()
