"""The review page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for Python
through `executable_path`; no Playwright browser download) against `serve` running in its own process on a
free port, over a database filled by a real `inspector watch --once` run.

It opens the queue, clicks "False alarm" on a flagged part, checks with plain sqlite3 that the part's latest
review became "good", and saves screenshots to tmp_path (and to $INSPECTOR_SCREENSHOT_DIR when set). It skips,
saying why, only when there is no browser: no chromium binary, or Playwright is not importable.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watchkit import Site, make_site, part_jpeg, run_once

SERVE = ("import sys; from inspector import config; from inspector.web import serve; "
         "serve(config.load(sys.argv[1]), port=0)")
NOTE = "reflection from the lamp, part is fine"


@pytest.fixture(scope="module")
def browser_tools() -> tuple[str, Any]:
    """(the Chromium binary, Playwright's sync_playwright); skips, saying why, when either is missing. The
    binary: $INSPECTOR_CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium."""
    binary = next((c for c in (os.environ.get("INSPECTOR_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium")
                   if c and os.access(c, os.X_OK)), None)
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, as .ci/run does, failed or was not run)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"Playwright for Python is not importable ({exc}): pip install -e '.[test]'")
    return binary, sync_playwright


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Site:
    """Two good and three flagged parts, judged by a real `watch --once` run."""
    site = make_site(tmp_path_factory.mktemp("web-e2e") / "site", models)
    for i in range(2):
        (site.inbox / f"good-{i}.jpg").write_bytes(part_jpeg(51_000 + i))
    for i in range(3):
        (site.inbox / f"spot-{i}.jpg").write_bytes(part_jpeg(51_100 + i, defect="spot"))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert sum(r["verdict"] == "defect" for r in site.rows()) == 3
    return site


@pytest.fixture
def server(site: Site, tmp_path: Path) -> Iterator[str]:
    """`serve` in its own process on a free port; yields its URL, stops it with SIGTERM (which must exit 0)."""
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(site.config)], cwd=site.root, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"review page on (http://\S+/)", log_path.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.05)
        yield found.group(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def latest_review(site: Site, inspection_id: int) -> tuple[str, str | None] | None:
    """(decision, note) of the newest review of an inspection, read with plain sqlite3."""
    con = sqlite3.connect(f"file:{site.db}?mode=ro", uri=True)
    try:
        found = con.execute("SELECT decision, note FROM reviews WHERE inspection_id = ? ORDER BY id DESC LIMIT 1",
                            (inspection_id,)).fetchone()
    finally:
        con.close()
    return tuple(found) if found else None


def save(shot: Path) -> None:
    """Copy a screenshot to $INSPECTOR_SCREENSHOT_DIR too, when set."""
    target = os.environ.get("INSPECTOR_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


def test_false_alarm_clicked_in_chromium_is_recorded(browser_tools: tuple[str, Any], site: Site, server: str,
                                                      tmp_path: Path) -> None:
    binary, sync_playwright = browser_tools
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)  # CSP violations
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            # 1. open the queue: flagged parts with both images loaded
            page.goto(server)
            assert page.title() == "Queue · inspector"
            cards = page.locator("article.part.defect")
            assert cards.count() == 3
            card = cards.first
            part_id = int(card.get_attribute("data-id") or 0)
            assert latest_review(site, part_id) is None
            for img in card.locator("img").all():
                img.scroll_into_view_if_needed()
                assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("src")

            # 2. click "False alarm" on it, with a note
            card.locator("input[name=note]").fill(NOTE)
            with page.expect_navigation():
                card.get_by_role("button", name="False alarm").click()
            assert "false alarm, recorded for operator" in page.locator(".flash").inner_text()

            # 3. the database row's review changed, read independently
            assert latest_review(site, part_id) == ("good", NOTE)
            state = page.locator(f"#part-{part_id} .review-state").inner_text()
            assert "false alarm" in state and NOTE in state

            # 4. screenshots
            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "review-queue.png"
            page.screenshot(path=str(shot), full_page=True)
            page.goto(server + "stats?since=all")
            for img in page.locator("figure.plot img").all():
                assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("src")
            stats_shot = tmp_path / "review-stats.png"
            page.screenshot(path=str(stats_shot), full_page=True)
        finally:
            browser.close()
    assert problems == [], problems
    for s in (shot, stats_shot):
        assert s.read_bytes().startswith(b"\x89PNG")
        save(s)
