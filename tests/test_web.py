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
    first, second = small.get("/").text, small.get("/?page=2").text
    assert first.count('<article class="part') == 2 and "older →" in first and 'href="/?page=2"' in first
    assert second.count('<article class="part') == 1 and "← newer" in second and "older →" not in second


def test_images_and_overlays_by_id_only(client: FlaskClient, site: Site) -> None:
    spot, good = row(site, "spot-0.jpg"), row(site, "good-0.jpg")
    image = client.get(f"/image/{spot['id']}")
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.data == Path(spot["archived_path"]).read_bytes()
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    overlay = client.get(f"/overlay/{spot['id']}")
    assert overlay.status_code == 200 and overlay.mimetype == "image/png" and is_png(overlay.data)
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
    assert re.search(r"<td>8</td><td>3</td><td>3</td><td>2</td>", page.text), "inspected, ok, defect, rejected"
    for since in ("1h", "24h", "7d", "all"):
        for plot in ("defects", "scores"):
            response = client.get(f"/stats/{plot}.png?since={since}")
            assert response.status_code == 200 and response.mimetype == "image/png", (plot, since)
            assert is_png(response.data)
    assert client.get("/stats?since=forever").status_code == 400


def test_stats_plots_on_an_empty_database(tmp_path: Path, cfg: config.Config) -> None:
    with Store(f"sqlite:///{tmp_path / 'empty.db'}") as store:
        client = create_app(cfg, store).test_client()
        assert "<td>0</td>" in client.get("/stats?since=all").text
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
        assert day.defect_reviews == ["defect", "good"] and day.start == now - timedelta(hours=24)
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
    assert response.headers["Location"] == f"/?since=24h#part-{target['id']}"
    history = reviews(site, target["id"])
    assert len(history) == before + 1
    assert (history[-1]["decision"], history[-1]["note"], history[-1]["reviewer"]) == (
        "good", "glare on the lens", "operator")
    page = client.get("/?since=24h").text
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
