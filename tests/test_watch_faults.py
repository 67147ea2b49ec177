"""Fault injection: the watcher is killed with SIGKILL at random moments while parts keep arriving.

The test keeps its own ledger of every file it dropped (name -> sha256 of the bytes written) and checks the
database and the disk against that ledger, not against the database itself."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from pathlib import Path


from watchkit import atomic_drop, make_site, part_jpeg, start, starts, stop, wait_for, wait_started

N_FILES = 500
MIN_KILLS = 20


class Camera(threading.Thread):
    """Drops N distinct parts, some written in two chunks under the final name, some renamed into place."""

    def __init__(self, inbox: Path, n: int, seed: int):
        super().__init__(daemon=True)
        self.inbox, self.n, self.rng = inbox, n, random.Random(seed)
        self.ledger: dict[str, str] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.n):
                data = part_jpeg(50_000 + i, defect="spot" if i % 25 == 0 else None)
                name = f"part-{i:04d}.jpg"
                if i % 2:
                    atomic_drop(self.inbox, name, data)
                else:  # written in place in two pieces: a half-written file exists for a moment
                    with open(self.inbox / name, "wb") as fh:
                        fh.write(data[: len(data) // 2])
                        fh.flush()
                        time.sleep(0.005)
                        fh.write(data[len(data) // 2:])
                self.ledger[name] = hashlib.sha256(data).hexdigest()
                time.sleep(self.rng.uniform(0.0, 0.12))
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models, settle_s=0.2, rescan_s=1.0, stats_every_s=0)
    rng = random.Random(1234)
    camera = Camera(site.inbox, N_FILES, seed=99)
    camera.start()
    kills: list[dict] = []
    while camera.is_alive() or len(kills) < MIN_KILLS:
        started = starts(site)
        proc = start(site)
        if rng.random() < 0.25:  # while it is still starting up (importing, migrating, catching up)
            time.sleep(rng.uniform(0.05, 1.5))
        else:  # in the middle of work: timed from its `watching` line, so a slow machine still gets there
            wait_started(site, proc, count=started + 1)
            time.sleep(rng.uniform(0.2, 1.5))
        assert proc.poll() is None, f"watcher exited by itself with {proc.returncode}:\n{site.log.read_text()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        code = proc.wait(timeout=30)
        kills.append({"returncode": code, "rows": len(site.rows()), "dropped": len(camera.ledger)})
    camera.join()
    assert camera.error is None, camera.error
    ledger = camera.ledger
    assert len(ledger) == N_FILES

    # each kill landed on a live process: it died of SIGKILL, not of anything else
    assert len(kills) >= MIN_KILLS
    assert all(k["returncode"] == -signal.SIGKILL for k in kills), kills
    # ... and the kills interrupted real work: verdicts were landing between kills while files kept arriving
    assert kills[-1]["rows"] > 0 and len({k["rows"] for k in kills}) > MIN_KILLS // 2, kills

    # one clean run finishes the rest (the kills may have left nothing to do: wait until it is up, or a slow start
    # would still be importing when SIGTERM arrives and die of it)
    started = starts(site)
    proc = start(site)
    wait_started(site, proc, count=started + 1)
    wait_for(lambda: len(site.rows()) >= N_FILES and not any(site.inbox.glob("*.jpg")), 180,
             "every dropped file to be judged and archived", proc, site)
    time.sleep(1.5)  # a rescan would now find anything left over
    assert stop(proc) == 0

    rows = site.rows()
    shas = [r["sha256"] for r in rows]
    assert sorted(shas) == sorted(ledger.values()), "every dropped file has exactly one verdict, and nothing else"
    assert all(r["verdict"] in ("ok", "defect") for r in rows), [r for r in rows if r["verdict"] == "rejected"]
    # nothing left unprocessed, nothing vanished: every dropped file is in the archive, exactly once
    assert not [p for p in site.inbox.iterdir() if not p.name.startswith(".")]
    archived = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in site.archived_files())
    assert archived == sorted(ledger.values())
    by_name = {r["name"]: r for r in rows}
    assert {n: by_name[n]["sha256"] for n in ledger} == ledger
    # the archive path recorded for each row holds that row's file
    for r in rows:
        assert hashlib.sha256(Path(r["archived_path"]).read_bytes()).hexdigest() == r["sha256"]
    print(f"{len(kills)} kills; rows at each kill: {[k['rows'] for k in kills]}")
