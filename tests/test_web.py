"""The review page through Flask's test client, against a real SQLite file filled by a real `inspector watch
--once` run: pages, filters, reviews (checked with plain sqlite3), images by id, plots, and probes of every
security check (path traversal, foreign Host, cross-origin and CSRF-less POSTs, the access token)."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from inspector import config
from inspector.errors import ConfigError, InspectorError
from inspector.store import Store
from inspector.web import create_app, files, make_server, security, urls
from watchkit import Site, make_site, part_jpeg, run_once

ORIGIN = "http://localhost"
PNG = b"\x89PNG\r\n\x1a\n"
TRAVERSALS = ["/image/..%2f..%2fetc%2fpasswd", "/static/..%2f..%2fconfig.toml", "/image/1%2f..%2f..",
              "/overlay/..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/config.toml", "/image/%2e%2e%2fconfig.toml",
              "/static/", "/image/", "/image/-1", "/image/99999999999999999999999", "/overlay/0"]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Site:
    """ok, defect and rejected verdicts (one of them a symlink to a secret file) from one `watch --once` run."""
    root = tmp_path_factory.mktemp("web-site")
    site = make_site(root / "site", models)
    for i in range(3):
        (site.inbox / f"good-{i}.jpg").write_bytes(part_jpeg(41_000 + i))
    for i in range(3):
        (site.inbox / f"spot-{i}.jpg").write_bytes(part_jpeg(41_100 + i, defect="spot"))
    (site.inbox / "empty.jpg").write_bytes(b"")
    (root / "secret.jpg").write_bytes(b"\xff\xd8\xff secret bytes")
    os.symlink(root / "secret.jpg", site.inbox / "link.jpg")
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    verdicts = {r["name"]: r["verdict"] for r in site.rows()}
    assert [verdicts[f"spot-{i}.jpg"] for i in range(3)] == ["defect"] * 3, verdicts
    assert verdicts["empty.jpg"] == verdicts["link.jpg"] == "rejected"
    return site


@pytest.fixture(scope="module")
def cfg(site: Site) -> config.Config:
    return config.load(site.config)


@pytest.fixture(scope="module")
def app(cfg: config.Config) -> Flask:
    return create_app(cfg)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def with_web(cfg: config.Config, **web: object) -> config.Config:
    return dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, **web))


def row(site: Site, name: str) -> dict:
    return next(r for r in site.rows() if r["name"] == name)


def csrf(client: FlaskClient, path: str = "/") -> str:
    """The CSRF token of this client's session, from a page's hidden field."""
    page = client.get(path)
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "no CSRF field on the page"
    return found.group(1)


def reviews(site: Site, inspection_id: int) -> list[dict]:
    """The reviews of one inspection, oldest first, read with plain sqlite3."""
    con = sqlite3.connect(f"file:{site.db}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM reviews WHERE inspection_id = ? ORDER BY id",
                                             (inspection_id,))]
    finally:
        con.close()


def tiles(page: str) -> dict[str, str]:
    """The stats page's count tiles, name -> number as shown (the first of each name)."""
    found: dict[str, str] = {}
    for name, value in re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", page):
        found.setdefault(name, value)
    return found


def is_png(data: bytes) -> bool:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return data.startswith(PNG) and img is not None and img.size > 0


def is_jpeg(data: bytes) -> bool:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return data.startswith(b"\xff\xd8\xff") and img is not None and img.size > 0


# ---------------------------------------------------------------------------------------------- pages


def test_queue_shows_flagged_parts_newest_first_with_images_scores_and_buttons(client: FlaskClient,
                                                                               site: Site) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.text
    flagged = sorted((r for r in site.rows() if r["verdict"] == "defect"), key=lambda r: -r["id"])
    positions = [html.index(f'id="part-{r["id"]}"') for r in flagged]
    assert positions == sorted(positions), "newest first"
    for r in flagged:
        assert f'src="/image/{r["id"]}"' in html and f'src="/overlay/{r["id"]}"' in html
        assert f'{r["score"]:.2f}</span> against threshold {r["threshold"]:.2f}' in html
    assert html.count("Confirm defect") == html.count("False alarm") == len(flagged)
    assert "v1" in html and "not reviewed" in html
    assert "good-0.jpg" not in html and "empty.jpg" not in html  # verdict defect by default
    assert "<script" not in html


def test_queue_filters_and_pages(app: Flask, client: FlaskClient, cfg: config.Config) -> None:
    html = client.get("/?verdict=all&since=24h").text
    assert "empty.jpg" in html and "Rejected: <strong>empty</strong>" in html and "good-1.jpg" in html
    assert 'src="/image/' in html
    ok = client.get("/?verdict=ok").text
    assert "good-2.jpg" in ok and "spot-0.jpg" not in ok and "/overlay/" not in ok and "Confirm good" in ok
    assert "No parts match" in client.get("/?review=good&verdict=rejected").text
    for bad in ("verdict=bogus", "review=maybe", "since=3y", "page=0", "page=x"):
        assert client.get(f"/?{bad}").status_code == 400, bad
    small = create_app(with_web(cfg, page_size=2)).test_client()
    first = small.get("/").text
    older = re.search(r'<a href="(/\?page=2&amp;start=[0-9T.Z-]+)">older →</a>', first)  # pages by key (issue 15)
    assert first.count('<article class="part') == 2 and older
    second = small.get(older.group(1).replace("&amp;", "&")).text
    assert second.count('<article class="part') == 1 and "← newer" in second and "older →" not in second
    assert 'href="/">← newer</a>' in second and "page 2" in second
    assert small.get("/?page=2").text == first  # a page number without its start (an old link): the first page


def test_images_and_overlays_by_id_only(client: FlaskClient, site: Site) -> None:
    spot, good = row(site, "spot-0.jpg"), row(site, "good-0.jpg")
    image = client.get(f"/image/{spot['id']}")
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.data == Path(spot["archived_path"]).read_bytes()
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    overlay = client.get(f"/overlay/{spot['id']}")
    assert overlay.status_code == 200 and overlay.mimetype == "image/jpeg" and overlay.data[:3] == b"\xff\xd8\xff"
    assert overlay.data == Path(spot["overlay_path"]).read_bytes() and spot["overlay_path"].endswith(".jpg")
    assert client.get(f"/image/{good['id']}").status_code == 200
    assert client.get(f"/overlay/{good['id']}").status_code == 404  # ok parts have no overlay
    for name in ("empty.jpg", "link.jpg"):  # rejected: never served, the link's target least of all
        response = client.get(f"/image/{row(site, name)['id']}")
        assert response.status_code == 404 and b"secret" not in response.data
    assert client.get("/image/999999").status_code == 404


@pytest.mark.parametrize("path", TRAVERSALS)
def test_encoded_path_traversal_is_404(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, path
    assert b"root:" not in response.data and b"[database]" not in response.data


def test_static_css_is_served(client: FlaskClient) -> None:
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and b"article.part" in css.data


def test_an_overlay_recorded_as_png_before_overlays_were_jpeg_is_still_served(client: FlaskClient, site: Site) -> None:
    spot = row(site, "spot-1.jpg")
    drawn = cv2.imdecode(np.frombuffer(Path(spot["overlay_path"]).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    old = Path(spot["overlay_path"]).with_suffix(".png")
    old.write_bytes(cv2.imencode(".png", drawn)[1].tobytes())

    def record(path: str) -> None:
        with sqlite3.connect(site.db) as db:
            db.execute("UPDATE inspections SET overlay_path = ? WHERE id = ?", (path, spot["id"]))

    record(str(old))
    try:
        response = client.get(f"/overlay/{spot['id']}")
        assert response.status_code == 200 and response.mimetype == "image/png" and is_png(response.data)
        page = client.get(f"/inspections/{spot['id']}")  # its regions are found on the PNG too
        assert page.status_code == 200 and '<rect class="region"' in page.text
    finally:
        record(spot["overlay_path"])
    assert files.open_image(old, only=("image/jpeg",)) is None  # the accepted types are what lets it through


def test_open_image_refuses_links_fifos_folders_and_non_images(tmp_path: Path) -> None:
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(part_jpeg(1))
    opened = files.open_image(jpeg)
    assert opened is not None and opened[1] == "image/jpeg"
    opened[0].close()
    (tmp_path / "link.jpg").symlink_to(jpeg)
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "text.jpg").write_text("root:x:0:0")
    for name in ("link.jpg", "fifo.jpg", "dir.jpg", "text.jpg", "missing.jpg"):
        assert files.open_image(tmp_path / name) is None, name
    assert files.open_image(jpeg, only=("image/png",)) is None
    ok, tiff = cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "t.tif").write_bytes(tiff.tobytes())
    converted = files.open_image(tmp_path / "t.tif")
    assert converted is not None and converted[1] == "image/jpeg" and is_jpeg(converted[0].read())


def test_stats_page_and_plots(client: FlaskClient) -> None:
    page = client.get("/stats")
    assert page.status_code == 200
    assert 'src="/stats/defects.png?since=24h"' in page.text and 'src="/stats/scores.png?since=24h"' in page.text
    counts = tiles(page.text)
    assert (counts["inspected"], counts["ok"], counts["defect"], counts["rejected"]) == ("8", "3", "3", "2")
    for since in ("1h", "24h", "7d", "all"):
        for plot in ("defects", "scores"):
            response = client.get(f"/stats/{plot}.png?since={since}")
            assert response.status_code == 200 and response.mimetype == "image/png", (plot, since)
            assert is_png(response.data)
    assert client.get("/stats?since=forever").status_code == 400


def test_stats_plots_on_an_empty_database(tmp_path: Path, cfg: config.Config) -> None:
    with Store(f"sqlite:///{tmp_path / 'empty.db'}") as store:
        client = create_app(cfg, store).test_client()
        assert tiles(client.get("/stats?since=all").text)["inspected"] == "0"
        for plot in ("defects", "scores"):
            assert is_png(client.get(f"/stats/{plot}.png?since=all").data)


def test_stats_numbers_follow_the_latest_review(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timedelta, timezone

    from inspector.web import data, plots

    now = datetime.now(timezone.utc)
    old = now - timedelta(days=3)

    def part(i: int, verdict: str, score: float | None, at: datetime) -> dict:
        return {"sha256": f"{i:064x}", "name": f"p{i}.jpg", "source_path": f"/in/p{i}.jpg", "received_at": at,
                "inspected_at": at, "verdict": verdict, "score": score, "threshold": 1.0 if score else None,
                "profile_version": "v1" if score else None, "station": "s", "line": "l", "camera": "c"}

    with Store(f"sqlite:///{tmp_path / 'stats.db'}") as store:
        ids = store.record([part(1, "ok", 0.5, old), part(2, "ok", 0.6, now), part(3, "ok", 0.7, now),
                            part(4, "defect", 2.0, now), part(5, "defect", 3.0, now), part(6, "rejected", None, now)])
        store.add_review(ids[3], "good", "a")
        store.add_review(ids[3], "defect", "b")  # the latest decision counts: confirmed
        store.add_review(ids[4], "good", "a")  # a false alarm
        store.add_review(ids[2], "defect", "a")  # missed on a part judged ok
        day = data.stats_data(store, "24h", now)
        assert day.counts == {"ok": 2, "defect": 2, "rejected": 1, "confirmed": 1, "false_alarm": 1, "missed": 1}
        assert [(d, n) for _, d, n in day.defects] == [("defect", 1), ("good", 1)] and day.defect_total == 2
        assert day.start == now - timedelta(hours=24)
        assert sorted(day.scores["false alarm"]) == [3.0] and sorted(day.scores["ok"]) == [0.6, 0.7]
        assert day.threshold == 1.0 and day.profile_version == "v1" and day.versions == ["v1"]
        everything = data.stats_data(store, "all", now)
        assert everything.counts["ok"] == 3 and everything.start == old
        monkeypatch.setattr(data, "MAX_SCORES", 2)
        capped = data.stats_data(store, "all", now)
        assert capped.scores_capped and sum(v.size for v in capped.scores.values()) == 2
        assert is_png(plots.defects_png(everything)) and is_png(plots.scores_png(capped))
    assert plots.bin_width(timedelta(hours=1))[1] == "5 min" and plots.bin_width(timedelta(days=1))[1] == "hour"
    assert plots.bin_width(timedelta(days=30))[1] == "day"


# ---------------------------------------------------------------------------------------------- reviews


def test_false_alarm_is_recorded_in_the_reviews_table(client: FlaskClient, site: Site) -> None:
    target = row(site, "spot-1.jpg")
    before = len(reviews(site, target["id"]))
    token = csrf(client, "/?since=24h")
    response = client.post(f"/inspections/{target['id']}/review", headers={"Origin": ORIGIN},
                           data={"csrf_token": token, "decision": "good", "note": "glare on the lens",
                                 "verdict": "defect", "since": "24h", "page": "1", "review": "all"})
    assert response.status_code == 303
    older = [r["id"] for r in site.rows() if r["verdict"] == "defect" and r["id"] < target["id"]]
    following = f"&at={max(older)}" if older else ""  # back at the next part down the queue, now current
    assert response.headers["Location"] == f"/?review=all&since=24h{following}"
    history = reviews(site, target["id"])
    assert len(history) == before + 1
    assert (history[-1]["decision"], history[-1]["note"], history[-1]["reviewer"]) == (
        "good", "glare on the lens", "operator")
    page = client.get("/?since=24h&review=all").text
    assert "recorded for operator" in page and "glare on the lens" in page and "false alarm" in page
    assert f'id="part-{target["id"]}"' not in client.get("/?review=unreviewed").text


def test_reviewer_name_is_remembered_in_a_cookie(client: FlaskClient, site: Site) -> None:
    target = row(site, "spot-2.jpg")
    token = csrf(client)
    response = client.post("/reviewer", headers={"Origin": ORIGIN}, data={"csrf_token": token, "reviewer": "Anna K"})
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert "inspector_reviewer=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert 'value="Anna K"' in client.get("/").text
    referer = {"Referer": "http://localhost/?verdict=defect"}  # no Origin: the Referer must be same-origin
    assert client.post(f"/inspections/{target['id']}/review", headers=referer,
                       data={"csrf_token": token, "decision": "defect"}).status_code == 303
    last = reviews(site, target["id"])[-1]
    assert (last["decision"], last["reviewer"], last["note"]) == ("defect", "Anna K", None)
    assert client.post("/reviewer", headers={"Origin": ORIGIN},
                       data={"csrf_token": token, "reviewer": " "}).status_code == 400


def test_bad_reviews_are_refused(client: FlaskClient, site: Site) -> None:
    token = csrf(client)
    post = lambda id, **form: client.post(f"/inspections/{id}/review", headers={"Origin": ORIGIN},  # noqa: E731
                                          data={"csrf_token": token, **form})
    spot = row(site, "spot-0.jpg")["id"]
    before = len(reviews(site, spot))
    assert post(999999, decision="good").status_code == 404
    assert post(spot, decision="maybe").status_code == 400
    assert post(spot, decision="good", note="x" * 501).status_code == 400
    assert post(spot, decision="good", verdict="bogus").status_code == 400
    assert post(row(site, "empty.jpg")["id"], decision="good").status_code == 400
    assert client.get(f"/inspections/{spot}/review").status_code == 405
    assert len(reviews(site, spot)) == before


# ---------------------------------------------------------------------------------------------- security probes


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.2", "localhost.evil.example",
                                  "[::1]:8080", "", "localhost:80x"])
def test_foreign_host_header_is_400(client: FlaskClient, host: str) -> None:
    assert client.get("/", headers={"Host": host}).status_code == 400
    assert client.get("/image/1", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:8080"])
def test_allowed_host_headers(client: FlaskClient, host: str) -> None:
    assert client.get("/", headers={"Host": host}).status_code == 200


def test_bind_host_is_allowed_too(cfg: config.Config) -> None:
    client = create_app(with_web(cfg, host="::1", allowed_hosts=())).test_client()
    assert client.get("/", headers={"Host": "[::1]:8080"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 400


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost:8081"},
    {"Origin": "https://localhost.evil.example"},
    {"Origin": "null"},
    {"Origin": "http://evil.example", "Referer": "http://localhost/"},
    {"Referer": "http://evil.example/?verdict=defect"},
    {"Referer": "http://localhost@evil.example/"},
    {},  # neither Origin nor Referer
])
def test_cross_origin_post_is_403(client: FlaskClient, site: Site, headers: dict) -> None:
    spot = row(site, "spot-0.jpg")["id"]
    before = len(reviews(site, spot))
    token = csrf(client)
    response = client.post(f"/inspections/{spot}/review", headers=headers,
                           data={"csrf_token": token, "decision": "good"})
    assert response.status_code == 403
    assert len(reviews(site, spot)) == before


def test_post_without_a_valid_csrf_token_is_403(app: Flask, client: FlaskClient, site: Site) -> None:
    spot = row(site, "spot-0.jpg")["id"]
    before = len(reviews(site, spot))
    other = csrf(app.test_client())  # a valid token, but of another session
    csrf(client)
    for data in ({"decision": "good"}, {"decision": "good", "csrf_token": ""},
                 {"decision": "good", "csrf_token": other}):
        response = client.post(f"/inspections/{spot}/review", headers={"Origin": ORIGIN}, data=data)
        assert response.status_code == 403 and b"CSRF" in response.data
    fresh = app.test_client()  # no session cookie at all
    assert fresh.post(f"/inspections/{spot}/review", headers={"Origin": ORIGIN},
                      data={"decision": "good", "csrf_token": other}).status_code == 403
    assert fresh.post("/reviewer", headers={"Origin": ORIGIN}, data={"reviewer": "x"}).status_code == 403
    assert len(reviews(site, spot)) == before


def test_security_headers_and_cookies(client: FlaskClient) -> None:
    page = client.get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "script-src" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    session = page.headers["Set-Cookie"]
    assert session.startswith("inspector_session=") and "HttpOnly" in session and "SameSite=Strict" in session
    error = client.get("/", headers={"Host": "evil.example"})
    assert error.headers["X-Frame-Options"] == "DENY"


def test_access_token_when_configured(cfg: config.Config, site: Site) -> None:
    app = create_app(with_web(cfg, token="s3cret-token"))
    client = app.test_client()
    for path in ("/", "/stats", "/static/style.css", f"/image/{row(site, 'spot-0.jpg')['id']}", "/stats/scores.png"):
        assert client.get(path).status_code == 401, path
    assert client.get("/").headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/?token=wrong").status_code == 403
    entered = client.get("/?token=s3cret-token&verdict=all")
    assert entered.status_code == 303 and entered.headers["Location"] == "/?verdict=all"
    cookie = entered.headers["Set-Cookie"]
    assert "inspector_token=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "s3cret-token" not in cookie  # the cookie holds a keyed hash, not the token
    assert client.get("/").status_code == 200 and client.get("/static/style.css").status_code == 200
    double = client.get("/", query_string="token=s3cret-token", environ_overrides={"PATH_INFO": "//evil.example/"})
    assert double.status_code == 303 and double.headers["Location"] == "/evil.example/"  # never //other.host
    bearer = app.test_client()
    assert bearer.get("/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert bearer.get("/", headers={"Authorization": "Bearer nope"}).status_code == 403
    forged = app.test_client()
    forged.set_cookie("inspector_token", "0" * 64)
    assert forged.get("/").status_code == 403
    # with the token, POSTs still need the CSRF token and the same origin
    spot = row(site, "spot-0.jpg")["id"]
    assert client.post(f"/inspections/{spot}/review", headers={"Origin": ORIGIN},
                       data={"decision": "good"}).status_code == 403


def test_helpers_parse_hosts_and_origins() -> None:
    assert security.split_host("Name:8080") == ("name", "8080")
    assert security.split_host("[::1]:8080") == ("::1", "8080")
    assert security.split_host("[::1]") == ("::1", None)
    assert security.split_host("::1") == ("::1", None)
    assert security.split_host("host:") == ("", None) and security.split_host("[::1") == ("", None)
    assert security.host_allowed("box:9000", ["box"]) and not security.host_allowed("box:9000", ["box:8080"])
    assert security.host_allowed("box:8080", ["box:8080"]) and not security.host_allowed("box", ["box:8080"])
    assert security.same_origin("http://box:8080", "box:8080")
    assert security.same_origin("https://box", "box") and security.same_origin("http://box:80/x", "box")
    assert not security.same_origin("https://box", "box:80")
    assert not security.same_origin("http://box:8080", "box:8081")
    assert not security.same_origin("javascript:alert(1)", "box")
    assert not security.same_origin("http://[::1", "box")


# ---------------------------------------------------------------------------------------------- serve


def test_serve_refuses_a_non_loopback_host_without_a_token(cfg: config.Config) -> None:
    from inspector.web import serve

    with pytest.raises(ConfigError) as err:
        serve(cfg, host="0.0.0.0")
    assert "0.0.0.0" in str(err.value) and "token" in str(err.value) and "\n" not in str(err.value)


def test_make_server_answers_over_http_and_reports_a_taken_port(cfg: config.Config) -> None:
    server = make_server(cfg, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = urls(server)[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"Confirm defect" in response.read()
            assert response.headers["Server"] == "inspector"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url, headers={"Host": "evil.example"}), timeout=10)
        assert err.value.code == 400
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(InspectorError, match="cannot listen on 127.0.0.1"):
            make_server(cfg, port=port)
    finally:
        server.trigger.pull_trigger(server.close)  # closed inside its own loop: run() returns, no EBADF in select
        thread.join(timeout=10)
        assert not thread.is_alive()
        server.task_dispatcher.shutdown()
    with socket.socket() as s:  # the listening socket is closed (connections may linger in TIME_WAIT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_a_locked_database_is_a_503_with_one_line_not_a_traceback(cfg: config.Config, site: Site) -> None:
    quick = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, busy_timeout_ms=100))
    client = create_app(quick).test_client()
    target = row(site, "spot-0.jpg")
    token = csrf(client)
    blocker = sqlite3.connect(site.db, isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database past the busy timeout
    try:
        response = client.post(f"/inspections/{target['id']}/review", headers={"Origin": ORIGIN},
                               data={"csrf_token": token, "decision": "defect", "note": ""})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.text.count("\n") == 1 and "Traceback" not in response.text


# ---------------------------------------------------------------------------------------------- a night shift's review
# (issue 14, items 10 to 16) on a site of its own: its reviews leave the other tests' parts alone


@pytest.fixture(scope="module")
def review_site(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Site:
    """Two good and three flagged parts from one `watch --once` run, reviewed only by the tests below."""
    site = make_site(tmp_path_factory.mktemp("web-review") / "site", models)
    for i in range(2):
        (site.inbox / f"good-{i}.jpg").write_bytes(part_jpeg(43_000 + i))
    for i in range(3):
        (site.inbox / f"spot-{i}.jpg").write_bytes(part_jpeg(43_100 + i, defect="spot"))
    (site.inbox / "empty.jpg").write_bytes(b"")
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert sorted(r["verdict"] for r in site.rows()) == ["defect"] * 3 + ["ok"] * 2 + ["rejected"]
    return site


@pytest.fixture(scope="module")
def review_app(review_site: Site) -> Flask:
    return create_app(config.load(review_site.config))


def unreviewed_defects(site: Site) -> list[int]:
    """Ids of the flagged parts nobody reviewed, newest first (plain sqlite3)."""
    con = sqlite3.connect(f"file:{site.db}?mode=ro", uri=True)
    try:
        return [i for (i,) in con.execute("SELECT id FROM inspections WHERE verdict = 'defect' AND id NOT IN "
                                          "(SELECT inspection_id FROM reviews) ORDER BY id DESC")]
    finally:
        con.close()


def cards(page: str) -> list[int]:
    """The part ids of the queue's cards, top to bottom."""
    return [int(i) for i in re.findall(r'<article class="part[^"]*" id="part-(\d+)"', page)]


def text_of(page: str, pattern: str) -> str:
    """The text (tags dropped, white space collapsed) of the first match of a regular expression."""
    found = re.search(pattern, page, re.S)
    assert found, pattern
    return " ".join(re.sub(r"<[^>]+>", " ", found.group()).split())


def card(page: str, id: int) -> str:
    """The HTML of one card of the queue."""
    found = re.search(rf'<article class="part[^"]*" id="part-{id}".*?</article>', page, re.S)
    assert found, f"no card for part #{id}"
    return found.group()


def spot_centre(path: str) -> tuple[float, float]:
    """Where the green spot of a synthetic part is, found from its pixels (the only green in the picture)."""
    img = cv2.imread(path).astype(int)
    green = (img[..., 1] - np.maximum(img[..., 0], img[..., 2])) > 50
    ys, xs = np.nonzero(green)
    assert xs.size > 20, "no spot"
    return float(xs.mean()), float(ys.mean())


def review(client: FlaskClient, id: int, decision: str, **form: str):  # noqa: ANN201
    return client.post(f"/inspections/{id}/review", headers={"Origin": ORIGIN},
                       data={"csrf_token": csrf(client), "decision": decision, **form})


def test_queue_defaults_to_unreviewed_defects_and_counts_them(review_app: Flask, review_site: Site) -> None:
    client = review_app.test_client()
    todo = unreviewed_defects(review_site)
    flagged = sum(r["verdict"] == "defect" for r in review_site.rows())
    page = client.get("/").text
    assert cards(page) == todo
    assert text_of(page, r'<p class="tally".*?</p>').startswith(f"{len(todo)} unreviewed of {flagged} flagged parts")
    assert f'<option value="unreviewed" selected>unreviewed ({len(todo)})</option>' in page
    assert f'<option value="all">all ({flagged})</option>' in page

    assert review(client, todo[0], "defect").status_code == 303
    page = client.get("/").text
    assert cards(page) == todo[1:]
    assert text_of(page, r'<p class="tally".*?</p>').startswith(
        f"{len(todo) - 1} unreviewed of {flagged} flagged parts")
    assert '<option value="defect">confirmed defect (1)</option>' in page
    assert todo[0] in cards(client.get("/?review=all").text)
    ok = client.get("/?verdict=ok").text
    assert text_of(ok, r'<p class="tally".*?</p>').startswith("2 unreviewed of 2 parts judged ok")


def test_a_thumbnail_opens_the_part_full_size_with_the_defect_region_boxed(review_app: Flask,
                                                                           review_site: Site) -> None:
    client = review_app.test_client()
    queue = client.get("/?review=all").text
    for r in (r for r in review_site.rows() if r["verdict"] == "defect"):
        found = re.search(rf'<a class="zoom" href="([^"]+)"[^>]*><figure><img src="/image/{r["id"]}"', queue)
        assert found, f"the thumbnail of #{r['id']} links nowhere"
        assert found.group(1) == f"/inspections/{r['id']}?review=all"
        page = client.get(found.group(1))
        assert page.status_code == 200 and "<script" not in page.text
        html = page.text
        # the original and the overlay side by side, each in a drawing of the original's pixel size
        assert f'viewBox="0 0 {r["width"]} {r["height"]}"' in html
        assert f'<image href="/image/{r["id"]}" x="0" y="0" width="{r["width"]}"' in html
        assert f'<image href="/overlay/{r["id"]}" x="0" y="0" width="{r["width"]}"' in html
        assert f'<a href="/image/{r["id"]}">open at full resolution</a>' in html
        # the region the overlay marks is boxed where the defect really is, and shown close up
        x, y = spot_centre(r["archived_path"])
        boxes = [tuple(map(int, b)) for b in
                 re.findall(r'<rect class="region" x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"/>', html)]
        assert boxes and any(bx <= x <= bx + bw and by <= y <= by + bh for bx, by, bw, bh in boxes), (x, y, boxes)
        views = [tuple(map(int, v)) for v in re.findall(r'<svg class="shot" viewBox="(\d+) (\d+) (\d+) (\d+)"', html)]
        close = [v for v in views if v != (0, 0, r["width"], r["height"])]
        assert close and all(vw < r["width"] and vh < r["height"] for _, _, vw, vh in close)
        assert any(vx <= x <= vx + vw and vy <= y <= vy + vh for vx, vy, vw, vh in close)
        assert client.get(f"/image/{r['id']}").data == Path(r["archived_path"]).read_bytes()  # full resolution
    good = next(r for r in review_site.rows() if r["verdict"] == "ok")
    html = client.get(f"/inspections/{good['id']}").text
    assert f'<image href="/image/{good["id"]}"' in html and "/overlay/" not in html and 'class="region"' not in html
    rejected = next(r for r in review_site.rows() if r["verdict"] == "rejected")
    html = client.get(f"/inspections/{rejected['id']}").text
    assert "Rejected: <strong>empty</strong>" in html and "/image/" not in html
    assert client.get("/inspections/999999").status_code == 404
    assert client.get(f"/inspections/{good['id']}?review=maybe").status_code == 400


def test_the_current_part_carries_access_keys_and_focus_in_review_order(review_app: Flask,
                                                                        review_site: Site) -> None:
    client = review_app.test_client()
    page = client.get("/?review=all").text
    assert "<script" not in page
    ids = cards(page)
    first, second = ids[0], ids[1]
    for key in "cgnz":  # confirm, false alarm (good), next, full size (zoom): once on the page, on one part
        assert page.count(f'accesskey="{key}"') == 1, key
        assert f'accesskey="{key}"' in card(page, first)
    assert page.count(" autofocus") == 1 and 'aria-current="true"' in card(page, first)
    form = card(page, first)
    order = [form.index(s) for s in ('class="confirm" accesskey="c"', 'class="clear" accesskey="g"',
                                     'class="next" href="', 'name="note"')]
    assert order == sorted(order), "focus order: confirm, false alarm, next, note"
    following = re.search(r'class="next" href="([^"]+)"', form)
    assert following and sorted(following.group(1).split("?")[1].split("&amp;")) == ["at=%d" % second, "review=all"]
    assert "Confirm defect <kbd>C</kbd>" in form and "False alarm <kbd>G</kbd>" in form
    moved = client.get(f"/?review=all&at={second}").text
    assert 'accesskey="c"' in card(moved, second) and 'accesskey="c"' not in card(moved, first)
    assert " autofocus" in card(moved, second)
    for bad in ("abc", "-1", "1e3", "99999999999999999999"):
        assert client.get(f"/?at={bad}").status_code == 400, bad
    # after a review, the part below it is the current one, focused (a #fragment would stop the focus)
    response = review(client, first, "good", review="all")
    assert response.status_code == 303 and response.headers["Location"] == f"/?review=all&at={second}"
    # the full-size view has the same keys for its part, and Q back to the queue
    full = client.get(f"/inspections/{second}?review=all").text
    for key in "cgnq":
        assert full.count(f'accesskey="{key}"') == 1, key
    assert f'href="/?at={second}&amp;review=all" accesskey="q"' in full


def undo_form(page: str) -> int:
    """The review id the banner's Undo takes back."""
    found = re.search(r'<form method="post" action="/reviews/(\d+)/undo" class="undo">.*?accesskey="u"', page, re.S)
    assert found, "no undo in the banner"
    return int(found.group(1))


def test_the_banner_undoes_the_review_just_made(review_app: Flask, review_site: Site) -> None:
    client = review_app.test_client()
    target = unreviewed_defects(review_site)[0]
    response = review(client, target, "good", note="glare")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).text
    assert "false alarm, recorded for operator" in text_of(page, r'<div class="flash".*?</div>')
    rid = undo_form(page)
    assert [r["id"] for r in reviews(review_site, target)] == [rid]

    token = csrf(client)
    undone = client.post(f"/reviews/{rid}/undo", headers={"Origin": ORIGIN}, data={"csrf_token": token})
    assert undone.status_code == 303 and undone.headers["Location"] == f"/?at={target}"
    assert reviews(review_site, target) == []
    page = client.get(undone.headers["Location"]).text
    assert "false alarm by operator undone, back to not reviewed" in page
    assert target in cards(page) and 'aria-current="true"' in card(page, target)
    assert client.post(f"/reviews/{rid}/undo", headers={"Origin": ORIGIN},
                       data={"csrf_token": token}).status_code == 403  # gone, and no longer this browser's

    # another browser's review is not ours to undo; nor without the CSRF token or from another site
    other = review_app.test_client()
    assert review(other, target, "defect").status_code == 303
    theirs = reviews(review_site, target)[-1]["id"]
    assert client.post(f"/reviews/{theirs}/undo", headers={"Origin": ORIGIN},
                       data={"csrf_token": csrf(client)}).status_code == 403
    assert other.post(f"/reviews/{theirs}/undo", headers={"Origin": ORIGIN}, data={}).status_code == 403
    assert other.post(f"/reviews/{theirs}/undo", headers={"Origin": "http://evil.example"},
                      data={"csrf_token": csrf(other)}).status_code == 403
    assert [r["id"] for r in reviews(review_site, target)] == [theirs]

    # undo brings back the decision before; a review that is no longer the newest is left alone
    assert review(client, target, "good").status_code == 303
    mine = reviews(review_site, target)[-1]["id"]
    assert review(other, target, "defect").status_code == 303
    refused = client.post(f"/reviews/{mine}/undo", headers={"Origin": ORIGIN}, data={"csrf_token": csrf(client)})
    assert refused.status_code == 303
    assert "Not undone: part #%d was reviewed again since" % target in client.get(refused.headers["Location"]).text
    assert len(reviews(review_site, target)) == 3
    newest = reviews(review_site, target)[-1]["id"]
    response = other.post(f"/reviews/{newest}/undo", headers={"Origin": ORIGIN}, data={"csrf_token": csrf(other)})
    assert response.status_code == 303
    assert [r["decision"] for r in reviews(review_site, target)] == ["defect", "good"]
    assert "undone, back to false alarm by operator" in other.get(response.headers["Location"]).text


def test_stats_page_serves_plots_drawn_for_a_phone(review_app: Flask) -> None:
    from io import BytesIO

    from PIL import Image

    client = review_app.test_client()
    page = client.get("/stats?since=all").text
    assert "<table" not in page  # tiles that wrap, not a row of eight columns
    for plot in ("defects", "scores"):
        assert (f'<source media="(max-width: 40rem)" srcset="/stats/{plot}.png?since=all&amp;size=narrow">'
                in page)
        wide = Image.open(BytesIO(client.get(f"/stats/{plot}.png?since=all").data))
        narrow = Image.open(BytesIO(client.get(f"/stats/{plot}.png?since=all&size=narrow").data))
        # drawn for a 390 px screen at twice its density: about 2 x 390 px wide, a point of text 2.8 px
        assert narrow.size[0] < wide.size[0] and 700 <= narrow.size[0] <= 800
        assert narrow.info["dpi"][0] >= 2 * wide.info["dpi"][0] - 1
    assert client.get("/stats/scores.png?size=huge").status_code == 400


def scores_data(threshold: float = 2.5):  # noqa: ANN201
    from datetime import datetime, timezone

    from inspector.web.data import StatsData

    rng = np.random.default_rng(7)
    now = datetime.now(timezone.utc)
    return StatsData(start=None, end=now, threshold=threshold, profile_version="v1", versions=["v1"],
                     scores={"ok": rng.normal(1.0, 0.4, 2000), "defect": np.r_[rng.normal(3.2, 0.3, 20), 10_000.0],
                             "false alarm": np.array([2.6, 2.7])})


def test_the_score_histogram_shows_the_region_around_the_threshold(review_app: Flask) -> None:
    from inspector.web import plots

    data = scores_data()
    fig = plots.scores_figure(data)
    zoom, overview = fig.axes[:2]
    lo, hi = zoom.get_xlim()
    assert lo < 2.5 < hi and hi - lo < 10  # not 0 to 10,000, where everything near 2.5 is one bin
    ok = data.scores["ok"]
    bins = [p for p in zoom.patches if p.get_visible()]
    assert bins, "no histogram drawn"
    width = (hi - lo) / plots.BINS
    assert (2.5 - np.percentile(ok, 5)) / width >= 10, "at least ten bins between the good parts and the threshold"
    assert any("1 above" in t.get_text() for t in zoom.texts)  # the part beyond the zoom is counted, not lost
    assert overview.get_xscale() == "asinh" and overview.get_xlim()[1] >= 10_000
    assert is_png(plots.scores_png(data, "narrow"))


# ---------------------------------------------------------------------------------------------- access log


def test_serve_logs_one_line_per_request_and_never_the_token(site: Site, tmp_path: Path) -> None:
    import http.client
    import signal
    import subprocess
    import sys
    import time

    secret = "tok-3f9a-SECRET-value"
    conf = site.root / "config-token.toml"
    conf.write_text(site.config.read_text() + f'\n[web]\ntoken = "{secret}"\n')
    log_path = tmp_path / "serve.log"
    serve = ("import sys; from inspector import config; from inspector.web import serve; "
             "serve(config.load(sys.argv[1]), port=0)")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", serve, str(conf)], cwd=site.root, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"review page on http://([\d.]+):(\d+)/", log_path.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        host, port = found.group(1), int(found.group(2))
        bearer = {"Authorization": f"Bearer {secret}"}
        asked = [("GET", f"/?token={secret}&verdict=all", {}, 303, "/?token=[redacted]&verdict=all"),
                 ("GET", "/stats?since=all", bearer, 200, "/stats?since=all"),
                 ("GET", "/image/999999", bearer, 404, "/image/999999"),
                 ("GET", f"/?%74oken={secret}", {}, 303, "/?%74oken=[redacted]"),
                 ("GET", "/nope%0A2026-01-01T00:00:00.000+00:00 1.2.3.4 GET /forged", bearer, 404, None),
                 ("GET", "/", {}, 401, "/"),
                 ("POST", "/reviewer", bearer, 403, "/reviewer")]
        for method, path, headers, status, _ in asked:
            conn = http.client.HTTPConnection(host, port, timeout=30)
            try:
                conn.request(method, path.replace(" ", "%20"), headers=headers)
                assert conn.getresponse().status == status, path
            finally:
                conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert secret not in text
    lines = [ln for ln in text.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", ln)]
    assert len(lines) == len(asked), text  # one line per request, the forged one included
    for ln, (method, _path, _headers, status, shown) in zip(lines, asked):
        found = re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00 127\.0\.0\.1 (\S+) (\S+) (\d{3}) \d+ ms", ln)
        assert found, ln
        assert found.group(1) == method and found.group(3) == str(status)
        if shown is not None:
            assert found.group(2) == shown
    assert lines[4].split()[3].startswith("/nope%0A2026-01-01")  # the newline stays escaped: no forged line
