"""The committer thread on a real SQLite file: what it takes as one batch (group commit without waiting)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from inspector.committer import STOP, Committer, Job, Outcome
from inspector.config import WatchConfig
from inspector.store import Store


def _outcome(i: int) -> Outcome:
    return Outcome(Job(f"/in/part-{i}.jpg", None))  # type: ignore[arg-type]


def _batches(tmp_path: Path, items: list[object], **kwargs: float) -> list[int]:
    """Run a committer over `items` (already queued) until the sentinel; the sizes of the batches it handed on."""
    results: queue.Queue = queue.Queue()
    for item in items:
        results.put(item)
    sizes: list[int] = []
    with Store(f"sqlite:///{tmp_path / 'v.db'}") as store:
        committer = Committer(store, results, threading.Event(), lambda *a, **k: None, **kwargs)
        committer.run(lambda batch: sizes.append(len(batch)), lambda exc, batch: None)
    return sizes


def test_the_default_commits_what_is_queued_without_waiting_for_more() -> None:
    """batch_wait_s = 0: a part alone on a steady line is recorded at once, not 50 ms later (publish latency)."""
    assert WatchConfig().batch_wait_s == 0.0


def test_queued_verdicts_share_one_commit_up_to_batch_size(tmp_path: Path) -> None:
    items = [_outcome(i) for i in range(5)]
    assert _batches(tmp_path, [*items, STOP], batch_size=64, batch_wait_s=0.0) == [5]
    assert _batches(tmp_path, [*items, STOP], batch_size=2, batch_wait_s=0.0) == [2, 2, 1]


def test_a_lone_verdict_is_handed_on_while_the_queue_stays_open(tmp_path: Path) -> None:
    """With no wait the first verdict goes to the commit although no sentinel or second verdict follows."""
    results: queue.Queue = queue.Queue()
    results.put(_outcome(0))
    handed = threading.Event()
    with Store(f"sqlite:///{tmp_path / 'v.db'}") as store:
        committer = Committer(store, results, threading.Event(), lambda *a, **k: None, batch_size=64,
                              batch_wait_s=0.0)
        thread = threading.Thread(target=committer.run, args=(lambda batch: handed.set(), lambda exc, batch: None))
        thread.start()
        try:
            assert handed.wait(10.0)
        finally:
            results.put(STOP)
            thread.join(10.0)
    assert not thread.is_alive()


def _batches_of_trickle(tmp_path: Path, busy: bool, gap_s: float, n: int) -> list[int]:
    """Batch sizes when `n` verdicts arrive `gap_s` apart, with parts queued for judging (`busy`) or not."""
    results: queue.Queue = queue.Queue()
    sizes: list[int] = []
    with Store(f"sqlite:///{tmp_path / 'v.db'}") as store:
        committer = Committer(store, results, threading.Event(), lambda *a, **k: None, batch_size=64,
                              batch_wait_s=0.0, busy_wait_s=gap_s * (n + 2), busy=lambda: busy)
        thread = threading.Thread(target=committer.run,
                                  args=(lambda batch: sizes.append(len(batch)), lambda exc, batch: None))
        thread.start()
        try:
            for i in range(n):
                results.put(_outcome(i))
                threading.Event().wait(gap_s)
        finally:
            results.put(STOP)
            thread.join(30.0)
    assert not thread.is_alive()
    return sizes


def test_while_parts_queue_for_judging_verdicts_wait_to_share_a_commit(tmp_path: Path) -> None:
    """At capacity (parts waiting for a judge) verdicts arriving 0.2 s apart share one commit: fewer commits leave
    more of the cores to judging. Without a queue each is recorded at once (a lone part is not held back). The gap
    is wide so that a loaded runner's thread scheduling cannot merge the idle case's batches."""
    assert WatchConfig().batch_wait_busy_s > 0
    assert _batches_of_trickle(tmp_path / "busy", busy=True, gap_s=0.2, n=4) == [4]
    assert _batches_of_trickle(tmp_path / "idle", busy=False, gap_s=0.2, n=4) == [1, 1, 1, 1]
