"""Noticing complete files: the Settler's stability rule, the Handler fed with dispatched watchdog events (as
watchdog's own tests do), the Matcher's scan, and one real observer with a timeout."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent, FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent,
)

from inspector import watcher
from inspector.watcher import MIN_RECHECK_S, Handler, Matcher, Settler, start_observer

PATTERNS = ("*.jpg", "*.png")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fresh(path: Path, data: bytes = b"x") -> Path:
    """Write a file whose mtime is now (so the settle time really has to pass)."""
    path.write_bytes(data)
    return path


def test_a_file_is_ready_only_after_staying_unchanged_for_the_settle_time(tmp_path: Path) -> None:
    clock = Clock()
    s = Settler(settle_s=1.0, clock=clock)
    p = fresh(tmp_path / "a.jpg")
    s.seen(str(p))
    assert s.poll() == [] and str(p) in s
    clock.t += 0.6
    with open(p, "ab") as fh:  # the writer is still writing
        fh.write(b"more")
    assert s.poll() == []
    clock.t += 0.6  # 1.2 s since first seen, but only 0.6 s since the last change
    assert s.poll() == []
    clock.t += 0.5
    ready = s.poll()
    assert [path for path, _ in ready] == [str(p)] and str(p) not in s
    assert abs(ready[0][1] - time.time()) < 5


def test_a_file_already_old_at_first_sight_needs_one_unchanged_recheck(tmp_path: Path) -> None:
    clock = Clock()
    s = Settler(settle_s=1.0, clock=clock)
    p, q = fresh(tmp_path / "old.jpg"), fresh(tmp_path / "appended.jpg")
    old = time.time() - 60
    for f in (p, q):
        os.utime(f, (old, old))
        s.seen(str(f))
    assert s.poll() == []  # looked at only once so far
    with open(q, "ab") as fh:  # an old mtime, but someone is still writing
        fh.write(b"more")
    clock.t += MIN_RECHECK_S
    assert [path for path, _ in s.poll()] == [str(p)]


def test_vanished_and_forgotten_paths_leave_the_settler(tmp_path: Path) -> None:
    clock = Clock()
    s = Settler(settle_s=0.5, clock=clock)
    a, b = fresh(tmp_path / "a.jpg"), fresh(tmp_path / "b.jpg")
    s.seen(str(a))
    s.seen(str(b))
    a.unlink()
    s.forget(str(b))
    clock.t += 1
    assert s.poll() == [] and len(s) == 0


def make_handler(tmp_path: Path, recursive: bool = False, settle_s: float = 1.0) -> tuple[Handler, Settler, Clock]:
    clock = Clock()
    settler = Settler(settle_s=settle_s, clock=clock)
    matcher = Matcher(tmp_path, PATTERNS, recursive=recursive, exclude=(tmp_path / "archive",))
    return Handler(matcher, settler), settler, clock


def test_close_after_write_makes_a_file_ready_at_once(tmp_path: Path) -> None:
    h, s, _ = make_handler(tmp_path)
    p = str(fresh(tmp_path / "a.jpg"))
    h.dispatch(FileCreatedEvent(p))
    h.dispatch(FileModifiedEvent(p))
    assert s.poll() == []
    h.dispatch(FileClosedEvent(p))
    assert s.wake.is_set()
    assert [path for path, _ in s.poll()] == [p]


def test_a_rename_into_the_folder_makes_the_destination_ready(tmp_path: Path) -> None:
    h, s, _ = make_handler(tmp_path)
    tmp, final = str(tmp_path / ".a.jpg.part"), str(fresh(tmp_path / "a.jpg"))
    h.dispatch(FileCreatedEvent(tmp))  # not a pattern match: ignored
    h.dispatch(FileMovedEvent(tmp, final))
    assert [path for path, _ in s.poll()] == [final]


def test_moved_away_or_deleted_before_ready_is_dropped(tmp_path: Path) -> None:
    h, s, clock = make_handler(tmp_path)
    a, b = str(fresh(tmp_path / "a.jpg")), str(fresh(tmp_path / "b.jpg"))
    h.dispatch(FileCreatedEvent(a))
    h.dispatch(FileCreatedEvent(b))
    h.dispatch(FileMovedEvent(a, str(tmp_path / "a.txt")))
    h.dispatch(FileDeletedEvent(b))
    clock.t += 5
    assert s.poll() == []


def test_handler_filters_patterns_subfolders_and_excluded_folders(tmp_path: Path) -> None:
    h, s, clock = make_handler(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "archive").mkdir()
    for name in ("notes.txt", "sub/x.jpg", "archive/y.jpg"):
        h.dispatch(FileClosedEvent(str(fresh(tmp_path / name))))
    h.dispatch(FileClosedEvent(str(fresh(tmp_path / ".hidden-temp.jpg"))))
    h.dispatch(FileClosedEvent(str(fresh(tmp_path / "UPPER.JPG"))))
    assert [Path(p).name for p, _ in s.poll()] == ["UPPER.JPG"]
    hr, sr, _ = make_handler(tmp_path, recursive=True)
    for name in ("sub/x.jpg", "archive/y.jpg"):
        hr.dispatch(FileClosedEvent(str(tmp_path / name)))
    assert [Path(p).name for p, _ in sr.poll()] == ["x.jpg"]


def test_a_directory_named_like_a_part_is_a_candidate(tmp_path: Path) -> None:
    h, s, clock = make_handler(tmp_path)
    d = tmp_path / "x.jpg"
    d.mkdir()
    h.dispatch(DirCreatedEvent(str(d)))
    clock.t += 2
    assert [p for p, _ in s.poll()] == [str(d)]


def test_scan_finds_candidates_and_skips_excluded_folders(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.png", "c.txt", "sub/d.jpg", "archive/ok/e.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "dir.jpg" / "inner.jpg").write_bytes(b"x")
    flat = Matcher(tmp_path, PATTERNS, recursive=False, exclude=(tmp_path / "archive",))
    assert sorted(Path(p).name for p in flat.scan()) == ["a.jpg", "b.png", "dir.jpg"]
    deep = Matcher(tmp_path, PATTERNS, recursive=True, exclude=(tmp_path / "archive",))
    assert sorted(Path(p).name for p in deep.scan()) == ["a.jpg", "b.png", "d.jpg", "inner.jpg"]  # folders descended


def test_undecodable_names_pass_through_as_surrogates(tmp_path: Path) -> None:
    h, s, _ = make_handler(tmp_path)
    raw = os.fsencode(tmp_path) + b"/bad\xff.jpg"
    with open(raw, "wb") as fh:
        fh.write(b"x")
    h.dispatch(FileClosedEvent(raw))
    [(path, _)] = s.poll()
    assert os.fsencode(path) == raw


@pytest.mark.parametrize("kind", ["native", "polling"])
def test_a_real_observer_reports_a_written_and_a_renamed_file(tmp_path: Path, kind: str) -> None:
    settler = Settler(settle_s=0.2)
    handler = Handler(Matcher(tmp_path, PATTERNS, recursive=False), settler)
    observer = start_observer(kind, 0.1, handler, recursive=False)
    try:
        (tmp_path / "a.jpg").write_bytes(b"written")
        (tmp_path / ".b.part").write_bytes(b"renamed")
        os.rename(tmp_path / ".b.part", tmp_path / "b.jpg")
        found: set[str] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(found) < 2:
            settler.wake.wait(0.1)
            found |= {Path(p).name for p, _ in settler.poll()}
        assert found == {"a.jpg", "b.jpg"}
    finally:
        observer.stop()
        observer.join(timeout=10)


class Recording(Handler):
    """A Handler that also notes the class of every event the observer hands it."""

    def __init__(self, matcher: Matcher, settler: Settler):
        super().__init__(matcher, settler)
        self.kinds: list[str] = []

    def dispatch(self, event) -> None:  # noqa: ANN001 - watchdog's signature
        self.kinds.append(type(event).__name__)
        super().dispatch(event)


def test_the_observer_hands_on_only_the_events_the_handler_acts_on(tmp_path: Path) -> None:
    """Reading a part (as the watcher itself does, and archivers and scanners) and the folder-modified events that come
    with every change are never queued: they only cost the observer's threads CPU for each part."""
    settler = Settler(settle_s=0.2)
    handler = Recording(Matcher(tmp_path, PATTERNS, recursive=False), settler)
    observer = start_observer("native", 0.1, handler, recursive=False)
    try:
        (tmp_path / ".a.part").write_bytes(b"written")
        os.rename(tmp_path / ".a.part", tmp_path / "a.jpg")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "FileMovedEvent" not in handler.kinds:
            time.sleep(0.02)
        for _ in range(3):
            assert (tmp_path / "a.jpg").read_bytes() == b"written"
        (tmp_path / "a.jpg").unlink()
        while time.monotonic() < deadline and "FileDeletedEvent" not in handler.kinds:
            time.sleep(0.02)
    finally:
        observer.stop()
        observer.join(timeout=10)
    assert "FileMovedEvent" in handler.kinds and "FileDeletedEvent" in handler.kinds
    assert {"FileOpenedEvent", "FileClosedNoWriteEvent", "DirModifiedEvent"}.isdisjoint(handler.kinds), handler.kinds
    assert set(handler.kinds) <= {cls.__name__ for cls in watcher.HANDLED_EVENTS}


def test_a_paired_move_is_handed_on_without_waiting_out_the_pairing_window() -> None:
    """watchdog's delayed queue slept out an IN_MOVED_FROM's whole window even once its IN_MOVED_TO had paired it;
    ours wakes when the pair is made. A 60 s window: the consumer gets the pair long before it, the unpaired
    event behind it only after its own window, and close() ends a wait."""
    from watchdog.utils.delayed_queue import DelayedQueue

    queue = watcher.prompt_delayed_queue(DelayedQueue)(60.0)
    got: list = []
    consumer = threading.Thread(target=lambda: [got.append(queue.get()) for _ in range(2)], daemon=True)
    queue.put("from", delay=True)
    consumer.start()
    time.sleep(0.2)  # the consumer now waits on the moved-from's window
    assert got == []
    assert queue.remove(lambda item: item == "from") == "from"  # what the grouper does when the moved-to arrives
    queue.put(("from", "to"))
    queue.put("unpaired", delay=True)
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [("from", "to")]  # not after 60 s: the unpaired one still waits its own window
    queue.close()
    consumer.join(20)
    assert not consumer.is_alive() and got == [("from", "to"), None]


class Keeper:
    """An ObserverKeeper on a real folder with a real native observer, its log lines kept, its clock by hand."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.settler = Settler(settle_s=0.2)
        self.lines: list[tuple[str, str]] = []
        self.keeper = watcher.ObserverKeeper(
            folder, "native", 0.1, lambda: Handler(Matcher(folder, PATTERNS, recursive=False), self.settler),
            False, lambda event, level, text, **fields: self.lines.append((event, text)), rescan_s=7.0)
        self.now = 1000.0

    def keep(self, after: float) -> bool:
        self.now += after
        return self.keeper.keep(self.now)

    def notices(self, name: str) -> bool:
        """A file written into the folder reaches the settler through the running observer."""
        (self.folder / name).write_bytes(b"x")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.settler.wake.wait(0.1)
            if any(Path(p).name == name for p, _ in self.settler.poll()):
                return True
        return False


@pytest.fixture
def kept(tmp_path: Path):
    k = Keeper(tmp_path / "inbox")
    k.folder.mkdir()
    k.keeper.start()
    yield k
    k.keeper.stop()


def test_the_keeper_leaves_a_running_observer_alone(kept: Keeper) -> None:
    first = kept.keeper.observer
    assert [kept.keep(0.3) for _ in range(10)] == [False] * 10
    assert kept.keeper.observer is first and kept.keeper.down is None and kept.lines == []
    assert kept.notices("a.jpg")


def test_the_keeper_restarts_an_observer_whose_thread_died(kept: Keeper) -> None:
    first = kept.keeper.observer
    first.stop()
    first.join(10)
    assert kept.keep(0.1) is True
    assert kept.keeper.observer is not first and kept.keeper.alive() and kept.keeper.down is None
    assert [text for _, text in kept.lines] == ["observer thread died; restarting it and rescanning"]
    assert kept.notices("after.jpg")


def test_while_the_folder_is_gone_the_keeper_backs_off_logs_once_and_resumes_when_it_is_back(kept: Keeper) -> None:
    os.rmdir(kept.folder)
    deadline = time.monotonic() + 10
    while kept.keeper.alive() and time.monotonic() < deadline:  # watchdog's emitter ends on its folder's deletion
        time.sleep(0.05)
    assert not kept.keeper.alive()
    assert kept.keep(1.0) is False
    assert kept.keeper.down == "gone"
    tries = []
    for _ in range(8):  # the retry waits double from 0.5 s to at most 3 s
        tries.append(kept.keeper._retry_at - kept.now)
        assert kept.keep(kept.keeper._retry_at - kept.now) is False
    assert tries == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert kept.keep(0.01) is False  # not before the next try is due
    gone = [text for _, text in kept.lines]
    assert len(gone) == 1 and "is gone" in gone[0]
    kept.folder.mkdir()
    assert kept.keep(3.0) is True
    assert kept.keeper.down is None and kept.keeper.alive()
    assert "is there again" in kept.lines[-1][1] and len(kept.lines) == 2
    assert kept.notices("back.jpg")


def test_a_folder_replaced_under_a_live_observer_is_watched_anew(kept: Keeper) -> None:
    first = kept.keeper.observer
    os.rename(kept.folder, kept.folder.with_name("old-inbox"))
    kept.folder.mkdir()
    assert kept.keeper.alive()  # it lives on, watching the folder that moved away: only the identity tells
    assert kept.keep(1.0) is True
    assert kept.keeper.observer is not first
    assert [text for _, text in kept.lines] == [
        f"watch folder {kept.folder} was replaced by another folder; watching that one and rescanning"]
    assert kept.notices("new.jpg")
