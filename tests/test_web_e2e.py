"""The review page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for Python
through `executable_path`; no Playwright browser download) against `serve` running in its own process on a
free port, over a database filled by a real `inspector watch --once` run.

It opens the queue, clicks "False alarm" on a flagged part, checks with plain sqlite3 that the part's latest
review became "good", and saves screenshots to tmp_path (and to $INSPECTOR_SCREENSHOT_DIR when set). On a site of
their own, the keyboard: focus order, access keys for the full-size view, false alarm, undo, next and confirm;
and a 390 px phone: the stats page (and the queue and a part) without sideways scrolling, with plots drawn for
that width. It skips, saying why, only when there is no browser: no chromium binary, or Playwright is not
importable.
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
from contextlib import contextmanager
from io import BytesIO
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


def judged_site(root: Path, models: Path, seed: int) -> Site:
    """Two good and three flagged parts, judged by a real `watch --once` run."""
    site = make_site(root / "site", models)
    for i in range(2):
        (site.inbox / f"good-{i}.jpg").write_bytes(part_jpeg(seed + i))
    for i in range(3):
        (site.inbox / f"spot-{i}.jpg").write_bytes(part_jpeg(seed + 100 + i, defect="spot"))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert sum(r["verdict"] == "defect" for r in site.rows()) == 3
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Site:
    return judged_site(tmp_path_factory.mktemp("web-e2e"), models, 51_000)


@pytest.fixture(scope="module")
def keys_site(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Site:
    """A site of its own for the keyboard and phone tests (their reviews leave the other test's queue alone)."""
    return judged_site(tmp_path_factory.mktemp("web-e2e-keys"), models, 52_000)


@pytest.fixture
def server(site: Site, tmp_path: Path) -> Iterator[str]:
    with serving(site, tmp_path) as url:
        yield url


@pytest.fixture
def keys_server(keys_site: Site, tmp_path: Path) -> Iterator[str]:
    with serving(keys_site, tmp_path) as url:
        yield url


@contextmanager
def serving(site: Site, tmp_path: Path) -> Iterator[str]:
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

            # 3. the database row's review changed, read independently; the part left the unreviewed queue
            assert latest_review(site, part_id) == ("good", NOTE)
            assert page.locator(f"#part-{part_id}").count() == 0
            page.goto(server + "?review=all")
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

            # 5. a part whose file was moved away: its picture says so (a placeholder served with its 404), not a
            # broken image (an ok part: its picture was never loaded above, so not in the browser's cache)
            assert problems == [], problems
            gone = next(r for r in site.rows() if r["verdict"] == "ok")
            Path(gone["archived_path"] or gone["source_path"]).unlink()
            page.goto(server + "?verdict=ok&review=all")
            img = page.locator(f"#part-{gone['id']} img").first
            img.scroll_into_view_if_needed()
            page.wait_for_function("i => i.complete", arg=img.element_handle())
            assert img.evaluate("i => i.naturalWidth > 0"), img.get_attribute("src")
            expected = f"404 {server}image/{gone['id']}"
            assert expected in problems, problems
            problems[:] = [p for p in problems if p != expected and "status of 404" not in p]
        finally:
            browser.close()
    assert problems == [], problems
    for s in (shot, stats_shot):
        assert s.read_bytes().startswith(b"\x89PNG")
        save(s)


# ---------------------------------------------------------------------------------------------- keyboard, phone


def access_key(page: Any, letter: str) -> None:
    """Press Alt+letter as a keyboard on Linux delivers it (a key down, then the character it types, then the key
    up): that is what Chromium's access keys answer to. Playwright's keyboard.press("Alt+x") sends no character
    with Alt held, so Chromium would never see an access key; the DevTools protocol can send one."""
    cdp = page.context.new_cdp_session(page)
    try:
        key = {"modifiers": 1, "key": letter, "code": f"Key{letter.upper()}",
               "windowsVirtualKeyCode": ord(letter.upper())}
        cdp.send("Input.dispatchKeyEvent", {"type": "rawKeyDown", **key})
        cdp.send("Input.dispatchKeyEvent", {"type": "char", **key, "text": letter, "unmodifiedText": letter})
        cdp.send("Input.dispatchKeyEvent", {"type": "keyUp", **key})
    finally:
        cdp.detach()


def pressed(page: Any, letter: str) -> None:
    """Alt+letter, waiting for the page it leads to."""
    with page.expect_navigation():
        access_key(page, letter)


def focused(page: Any) -> str:
    """A short description of the element that has the focus: tag, class and text."""
    return page.evaluate("(() => { const e = document.activeElement; const card = e.closest('article');"
                         " return `${card ? card.dataset.id : '-'} ${e.tagName.toLowerCase()}.${e.className} "
                         "${e.textContent.trim()}`; })()")


def current_part(page: Any) -> int:
    """The id of the part the keys act on (the highlighted card)."""
    cards = page.locator("article.part[aria-current=true]")
    assert cards.count() == 1
    return int(cards.get_attribute("data-id") or 0)


def test_zoom_keyboard_review_and_undo_in_chromium(browser_tools: tuple[str, Any], keys_site: Site,
                                                    keys_server: str, tmp_path: Path) -> None:
    binary, sync_playwright = browser_tools
    flagged = sorted((r["id"] for r in keys_site.rows() if r["verdict"] == "defect"), reverse=True)
    first, second = flagged[0], flagged[1]
    problems: list[str] = []
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            # 1. the queue opens on the unreviewed defects, counted, with the focus on the newest one's Confirm
            page.goto(keys_server)
            assert "3 unreviewed of 3 flagged parts" in " ".join(page.locator("#tally").inner_text().split())
            assert current_part(page) == first
            assert focused(page) == f"{first} button.confirm Confirm defect C"
            page.keyboard.press("Tab")
            assert focused(page) == f"{first} button.clear False alarm G"
            page.keyboard.press("Tab")
            assert focused(page) == f"{first} a.next Next part N"

            # 2. Z opens it at full size: original and anomaly map side by side, the marked region boxed on both
            pressed(page, "z")
            assert page.url.split("?")[0] == f"{keys_server}inspections/{first}"
            assert page.locator(".side-by-side").first.locator("svg.shot").count() == 2
            # each marked region boxed on both (spot-0 of this site is marked in two places, the others in one; which
            # of them is the newest depends on the order the judging processes finished: a CI run found 4 == 2)
            shots_here = page.locator(".side-by-side").first.locator("svg.shot")
            boxed = [shots_here.nth(i).locator("rect.region").count() for i in range(2)]
            assert boxed[0] == boxed[1] >= 1, boxed
            loaded = page.evaluate("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
            assert f"/image/{first}" in loaded and f"/overlay/{first}" in loaded
            shown = page.locator("svg.shot").first.bounding_box()
            assert shown is not None and shown["width"] > 480  # half the page, not a 320 x 240 thumbnail
            box = page.locator("svg.shot").first.locator("rect.region").first.bounding_box()
            assert box is not None and shown["x"] <= box["x"] and box["x"] + box["width"] <= shown["x"] + shown["width"]
            shots.append(tmp_path / "review-zoom.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # 3. Q goes back to the queue, on the same part
            pressed(page, "q")
            assert current_part(page) == first

            # 4. G: false alarm; the part leaves the unreviewed queue and the next one is current
            pressed(page, "g")
            assert latest_review(keys_site, first) == ("good", None)
            assert "false alarm, recorded for operator" in page.locator(".flash").inner_text()
            assert "2 unreviewed of 3 flagged parts" in " ".join(page.locator("#tally").inner_text().split())
            assert page.locator(f"#part-{first}").count() == 0
            assert current_part(page) == second and focused(page).startswith(f"{second} button.confirm")
            shots.append(tmp_path / "review-undo-banner.png")
            page.screenshot(path=str(shots[-1]))

            # 5. U: undo from the banner; the part is back, not reviewed, and current again
            pressed(page, "u")
            assert latest_review(keys_site, first) is None
            assert "undone, back to not reviewed" in page.locator(".flash").inner_text()
            assert "3 unreviewed of 3 flagged parts" in " ".join(page.locator("#tally").inner_text().split())
            assert current_part(page) == first

            # 6. N: the next part; C: confirm it
            pressed(page, "n")
            assert current_part(page) == second
            pressed(page, "c")
            assert latest_review(keys_site, second) == ("defect", None)
            assert latest_review(keys_site, first) is None

            # 7. a click on a thumbnail opens the full-size view too
            with page.expect_navigation():
                page.locator(f"#part-{first} a.zoom").first.click()
            assert page.url.split("?")[0] == f"{keys_server}inspections/{first}"
        finally:
            browser.close()
    assert problems == [], problems
    for shot in shots:
        assert shot.read_bytes().startswith(b"\x89PNG")
        save(shot)


PHONE = {"width": 390, "height": 844}


def no_sideways_scroll(page: Any) -> list[str]:
    """Elements reaching past the right edge of the screen, and the page width when it scrolls sideways."""
    return page.evaluate(
        "(() => { const w = document.documentElement.clientWidth; const out = [];"
        " if (document.documentElement.scrollWidth > w) out.push(`page ${document.documentElement.scrollWidth}px`);"
        " for (const e of document.body.querySelectorAll('*')) { const r = e.getBoundingClientRect();"
        "   if (e.ownerSVGElement) continue;"  # inside a drawing: clipped to it (a close-up shows part of a picture)
        "   if (r.width && r.right > w + 0.5) out.push(`${e.tagName.toLowerCase()} ${Math.round(r.right)}`); }"
        " return out; })()")


def test_stats_page_fits_a_390_px_phone(browser_tools: tuple[str, Any], keys_site: Site, keys_server: str,
                                        tmp_path: Path) -> None:
    from PIL import Image

    binary, sync_playwright = browser_tools
    problems: list[str] = []
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport=PHONE, device_scale_factor=3, is_mobile=True, has_touch=True)
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            page.goto(keys_server + "stats?since=all")
            plots = page.locator("figure.plot img").all()
            assert len(plots) == 2
            for img in plots:
                img.scroll_into_view_if_needed()
                assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("src")
            assert no_sideways_scroll(page) == []
            counts = page.locator("#counts > div").all()
            assert len(counts) == 8 and all(c.is_visible() for c in counts)
            # readable plots: drawn for this width, so a point of their text is as big on the phone as on a desktop
            # page (1.39 CSS px there: 100 dpi shown at its own size), not a 900 px picture shrunk to 370 px (0.57)
            for img in plots:
                shown, natural, src = img.evaluate("i => [i.clientWidth, i.naturalWidth, i.currentSrc]")
                dpi = Image.open(BytesIO(page.request.get(src).body())).info["dpi"][0]
                css_px_per_point = shown / natural * dpi / 72
                assert css_px_per_point >= 1.2, (src, shown, natural, dpi)
            shots.append(tmp_path / "stats-390px.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # the queue and a part at full size fit too
            page.goto(keys_server + "?review=all")
            assert no_sideways_scroll(page) == []
            shots.append(tmp_path / "queue-390px.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            flagged = max(r["id"] for r in keys_site.rows() if r["verdict"] == "defect")
            page.goto(f"{keys_server}inspections/{flagged}")
            assert no_sideways_scroll(page) == []
            shots.append(tmp_path / "zoom-390px.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            context.close()
        finally:
            browser.close()
    assert problems == [], problems
    for shot in shots:
        save(shot)
