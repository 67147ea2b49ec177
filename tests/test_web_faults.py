"""Faults of the review page an adversarial review reproduced (issue 11, items 4, 7, 8, 14 and 15): a part's
image that is another file now, oversized request bodies, TIFF conversions, unparseable query values and an
open redirect. Real files, a real SQLite file (filled by a real `inspector watch --once` run or by the Store),
the real app through Flask's test client, and the real waitress server over http.client."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import select
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from inspector import config
from inspector.store import Store
from inspector.synthetic import make_part
from inspector.web import create_app, files, make_server, urls
from watchkit import Site, make_site, part_jpeg, run_once

CHANGED = "changed since it was judged"
TOKEN = "s3cret-token"
SVG = "{http://www.w3.org/2000/svg}"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Site:
    """Three judged parts left where they arrived (`archive = false`: archived_path stays NULL)."""
    site = make_site(tmp_path_factory.mktemp("web-faults") / "site", models, archive=False)
    for i in range(3):
        (site.inbox / f"part-{i}.jpg").write_bytes(part_jpeg(52_000 + i))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    rows = site.rows()
    assert [r["verdict"] for r in rows] == ["ok"] * 3 and all(r["archived_path"] is None for r in rows), rows
    return site


@pytest.fixture(scope="module")
def cfg(site: Site) -> config.Config:
    return config.load(site.config)


@pytest.fixture
def app(cfg: config.Config) -> Flask:
    return create_app(cfg)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def restore(site: Site) -> Iterator[None]:
    """Put every part's original bytes back after a test that overwrote some."""
    saved = {p: p.read_bytes() for p in site.inbox.iterdir() if p.is_file()}
    yield
    for path, data in saved.items():
        path.write_bytes(data)


def with_web(cfg: config.Config, **web: object) -> config.Config:
    return dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, **web))


def named(site: Site, name: str) -> dict:
    return next(r for r in site.rows() if r["name"] == name)


def images(app: Flask) -> files.Images:
    """The app's image opener (its caches and counters)."""
    return app.extensions["inspector"].images


# ---------------------------------------------------------------------------------------------- item 4


def test_a_part_whose_file_was_overwritten_is_not_shown_as_another_part(client: FlaskClient, site: Site,
                                                                        restore: None) -> None:
    one, two = named(site, "part-0.jpg"), named(site, "part-1.jpg")
    first = Path(one["source_path"])
    served = client.get(f"/image/{one['id']}")
    assert served.status_code == 200 and served.data == first.read_bytes()

    first.write_bytes(Path(two["source_path"]).read_bytes())  # the camera reused the name for part #2
    text = client.get(f"/image/{one['id']}")
    assert text.status_code == 409 and text.mimetype == "text/plain"
    assert CHANGED in text.text and text.text.count("\n") == 1 and text.headers["Cache-Control"] == "no-store"
    assert text.data != first.read_bytes()

    picture = client.get(f"/image/{one['id']}", headers={"Accept": "image/avif,image/webp,image/*,*/*;q=0.8"})
    assert picture.status_code == 409 and picture.mimetype == "image/svg+xml"  # a placeholder, not a broken image
    svg = ET.fromstring(picture.data)
    assert svg.tag == f"{SVG}svg" and CHANGED in "".join(svg.itertext())
    assert client.get("/?verdict=all").status_code == 200


def test_a_part_whose_files_are_gone_says_so_instead_of_a_broken_image(client: FlaskClient, site: Site,
                                                                      restore: None, tmp_path: Path,
                                                                      cfg: config.Config) -> None:
    """Found by an adversarial test: a part whose file was moved or deleted (not by retention, which records it)
    showed a broken image on the review page. The picture is a placeholder saying the file is missing (404), a
    text client gets one line; a defect's overlay alike; a part without an overlay has none (a plain 404)."""
    part = named(site, "part-1.jpg")
    Path(part["source_path"]).unlink()
    text = client.get(f"/image/{part['id']}")
    assert text.status_code == 404 and text.mimetype == "text/plain" and text.text.count("\n") == 1
    assert text.text.startswith(f"part #{part['id']}: the file is missing: moved or deleted")
    picture = client.get(f"/image/{part['id']}", headers={"Accept": "image/avif,image/webp,image/*,*/*;q=0.8"})
    assert picture.status_code == 404 and picture.mimetype == "image/svg+xml"
    assert "is missing (moved or deleted)" in "".join(ET.fromstring(picture.data).itertext())
    assert client.get(f"/overlay/{part['id']}").status_code == 404 and "missing" not in client.get(
        f"/overlay/{part['id']}").text  # an ok part: no overlay was drawn

    import sqlalchemy as sa

    archived = tmp_path / "archived.jpg"
    archived.write_bytes(part_jpeg(53_010))
    with Store(record(tmp_path / "o.db", [(archived, tmp_path / "src.jpg")])) as store:
        with store.engine.begin() as conn:  # a defect whose overlay file is gone
            conn.execute(sa.text("UPDATE inspections SET verdict = 'defect', overlay_path = :p"),
                         {"p": str(tmp_path / "gone.jpg")})
        other = create_app(cfg, store).test_client()
        id = store.list(limit=1)[0]["id"]
        gone = other.get(f"/overlay/{id}", headers={"Accept": "image/*"})
        assert gone.status_code == 404 and gone.mimetype == "image/svg+xml" and b"is missing" in gone.data
        assert other.get(f"/image/{id}").status_code == 200


def test_same_size_other_bytes_is_refused_and_the_original_bytes_are_served_again(client: FlaskClient, site: Site,
                                                                                   restore: None) -> None:
    part = named(site, "part-2.jpg")
    path = Path(part["source_path"])
    original = path.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(tampered))
    assert path.stat().st_size == part["size"]
    response = client.get(f"/image/{part['id']}")
    assert response.status_code == 409 and CHANGED in response.text
    path.write_bytes(original)
    again = client.get(f"/image/{part['id']}")
    assert again.status_code == 200 and again.data == original


def test_an_archived_file_that_changed_is_refused_too(tmp_path: Path, cfg: config.Config) -> None:
    archived = tmp_path / "archived.jpg"
    archived.write_bytes(part_jpeg(53_000))
    recorded = record(tmp_path / "a.db", [(archived, tmp_path / "gone.jpg")])
    with Store(recorded) as store:
        client = create_app(cfg, store).test_client()
        id = store.list(limit=1)[0]["id"]
        assert client.get(f"/image/{id}").status_code == 200
        archived.write_bytes(part_jpeg(53_001))
        assert client.get(f"/image/{id}").status_code == 409
        archived.unlink()  # neither file there: missing, not changed
        assert client.get(f"/image/{id}").status_code == 404


def test_an_unchanged_file_is_hashed_once_and_again_after_it_was_touched(app: Flask, client: FlaskClient,
                                                                         site: Site) -> None:
    part = named(site, "part-0.jpg")
    opener = images(app)
    for _ in range(5):
        assert client.get(f"/image/{part['id']}").status_code == 200
    assert opener.counts["hashed"] == 1
    os.utime(part["source_path"])  # same bytes, but stat can no longer vouch for them
    assert client.get(f"/image/{part['id']}").status_code == 200
    assert opener.counts["hashed"] == 2


# ---------------------------------------------------------------------------------------------- item 8


def record(db: Path, parts: list[tuple[Path, Path]]) -> str:
    """Record judged parts (archived path, source path) in a fresh SQLite file; returns its URL."""
    url = f"sqlite:///{db}"
    now = datetime.now(timezone.utc)
    rows = []
    for archived, source in parts:
        data = archived.read_bytes()
        rows.append({"sha256": hashlib.sha256(data).hexdigest(), "name": source.name, "source_path": str(source),
                     "archived_path": str(archived), "size": len(data), "received_at": now, "inspected_at": now,
                     "verdict": "ok", "score": 0.5, "threshold": 1.0, "profile_version": "v1", "station": "s",
                     "line": "l", "camera": "c"})
    with Store(url) as store:
        store.record(rows)
    return url


def write_tiff(path: Path, seed: int, size: tuple[int, int] = (1200, 900)) -> Path:
    """A synthetic part as an LZW TIFF."""
    img = make_part(np.random.default_rng(seed), *size)
    ok, data = cv2.imencode(".tif", img, [cv2.IMWRITE_TIFF_COMPRESSION, 5])  # 5 = LZW
    assert ok
    path.write_bytes(data.tobytes())
    return path


def test_tiffs_are_converted_once_and_never_more_than_two_at_a_time(tmp_path: Path, cfg: config.Config) -> None:
    tiffs = [write_tiff(tmp_path / f"t{i}.tif", 54_000 + i) for i in range(3)]
    with Store(record(tmp_path / "t.db", [(t, t) for t in tiffs])) as store:
        app = create_app(cfg, store)
        ids = sorted(r["id"] for r in store.list(limit=10))
        requests = [ids[i % 3] for i in range(12)]  # 12 at once, 4 per TIFF
        start = threading.Barrier(len(requests))
        answers: dict[int, list[tuple[int, str, bytes]]] = {id: [] for id in ids}

        def fetch(id: int) -> None:
            client = app.test_client()
            start.wait(timeout=60)
            r = client.get(f"/image/{id}")
            answers[id].append((r.status_code, r.mimetype, r.data))

        threads = [threading.Thread(target=fetch, args=(id,)) for id in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        opener = images(app)
        assert opener.counts["converted"] == 3 and 1 <= opener.counts["peak_converting"] <= 2
        for id in ids:
            assert len(answers[id]) == 4 and {(s, m) for s, m, _ in answers[id]} == {(200, "image/jpeg")}
            assert len({d for *_, d in answers[id]}) == 1  # one conversion, the same bytes for every request
            img = cv2.imdecode(np.frombuffer(answers[id][0][2], np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape[:2] == (900, 1200)
        for id in ids:  # from the cache from now on
            assert app.test_client().get(f"/image/{id}").status_code == 200
        assert opener.counts["converted"] == 3


def test_the_converted_tiff_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    a, b = write_tiff(tmp_path / "a.tif", 55_000), write_tiff(tmp_path / "b.tif", 55_001)

    def jpeg(opener: files.Images, path: Path) -> bytes:
        opened = opener.open(path)
        assert opened is not None and opened[1] == "image/jpeg"
        return opened[0].read()

    one = len(jpeg(files.Images(), a))
    small = files.Images(converted_bytes=one + 10)  # room for one of them
    for path in (a, b, a):
        jpeg(small, path)
    assert small.counts["converted"] == 3  # b pushed a out
    roomy = files.Images()
    for path in (a, b, a, b):
        jpeg(roomy, path)
    assert roomy.counts["converted"] == 2


# ---------------------------------------------------------------------------------------------- item 7


@pytest.fixture
def server(cfg: config.Config) -> Iterator[tuple[str, int]]:
    """The real waitress server of the review page (token mode), on a free port."""
    srv = make_server(with_web(cfg, token=TOKEN), port=0)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        parts = urlsplit(urls(srv)[0])
        yield parts.hostname, parts.port
    finally:
        srv.trigger.pull_trigger(srv.close)
        thread.join(timeout=10)
        srv.task_dispatcher.shutdown()


def post_headers(conn: http.client.HTTPConnection, host: str, port: int, **extra: str) -> None:
    conn.putrequest("POST", "/reviewer", skip_host=True, skip_accept_encoding=True)
    for name, value in {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}",
                        "Content-Type": "application/x-www-form-urlencoded", **extra}.items():
        conn.putheader(name.replace("_", "-"), value)
    conn.endheaders()


def test_an_oversized_body_is_refused_from_its_headers_before_it_is_read(server: tuple[str, int]) -> None:
    host, port = server
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        post_headers(conn, host, port, Content_Length=str(900 * 1024 * 1024))  # and not one byte of it
        response = conn.getresponse()  # before the fix: waitress waits for the 900 MB (the read times out)
        assert response.status == 413
        response.read()
    finally:
        conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:  # a form larger than any review, sent in full, is refused too
        conn.request("POST", "/reviewer", body=b"reviewer=" + b"x" * 100_000,
                     headers={"Host": f"{host}:{port}", "Content-Type": "application/x-www-form-urlencoded"})
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_an_oversized_chunked_body_is_refused_after_little_of_it(server: tuple[str, int]) -> None:
    host, port = server
    conn = http.client.HTTPConnection(host, port, timeout=30)
    chunk = b"x" * 65536
    limit = 32 * 1024 * 1024  # refused after 64 KiB; what the socket buffers took on top is a few MB at most
    sent = 0
    try:
        post_headers(conn, host, port, Transfer_Encoding="chunked")
        while sent < limit and not select.select([conn.sock], [], [], 0)[0]:
            try:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        assert sent < limit, "the server kept reading the body"
        response = conn.getresponse()
        assert response.status == 413
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- item 15


def browser_target(location: str, base: str = "http://localhost/") -> str:
    """Where a browser goes for a Location header: tabs and newlines dropped, C0 controls and spaces trimmed,
    backslashes read as slashes (the WHATWG URL parser for http)."""
    cleaned = "".join(c for c in location if c not in "\t\n\r").strip("".join(map(chr, range(0x21))))
    return urlsplit(urljoin(base, cleaned.replace("\\", "/"))).netloc


REDIRECT_PATHS = ["\t/evil.example", "/\t/evil.example", "\n/evil.example", "\r\n/evil.example", "/\\evil.example",
                  "\\\\evil.example", "/ /evil.example", "/\x00/evil.example", "/\x7f/evil.example",
                  "/\xe2\x80\xa8/evil.example",  # U+2028, as WSGI's latin-1 PATH_INFO
                  "//evil.example", "///evil.example"]


def test_the_token_redirect_stays_on_the_site(cfg: config.Config) -> None:
    client = create_app(with_web(cfg, token=TOKEN)).test_client()
    for path in REDIRECT_PATHS:
        response = client.get("/", query_string=f"token={TOKEN}", environ_overrides={"PATH_INFO": path})
        assert response.status_code == 303, (path, response.status_code)
        location = response.headers["Location"]
        assert location.startswith("/") and location[1:2] not in ("/", "\\"), (path, location)
        assert all(c.isprintable() and not c.isspace() for c in location), (path, location)
        assert browser_target(location) == "localhost", (path, location)


def test_the_token_redirect_of_the_reported_url(cfg: config.Config) -> None:
    client = create_app(with_web(cfg, token=TOKEN)).test_client()
    for url in (f"/%09/evil.com?token={TOKEN}", f"/%0a/evil.com?token={TOKEN}", f"/%5c/evil.com?token={TOKEN}"):
        response = client.get(url)
        assert response.status_code == 303, url
        assert browser_target(response.headers["Location"]) == "localhost", (url, response.headers["Location"])
    kept = client.get(f"/stats?since=7d&token={TOKEN}")
    assert kept.status_code == 303 and kept.headers["Location"] == "/stats?since=7d"


# ---------------------------------------------------------------------------------------------- item 14


BAD_QUERIES = ["page=²", "page=١", "page=" + "9" * 5000, "page=99999999999999999999", "page=+1", "page=0x1",
               "station=a%01b", "line=%1b[31m"]


def test_bad_query_values_are_400_not_500(client: FlaskClient) -> None:
    for query in BAD_QUERIES:
        for path in ("/", "/stats"):
            if path == "/stats" and query.startswith("page"):
                continue  # the stats page has no pages
            response = client.get(f"{path}?{query}")
            assert response.status_code == 400, (path, query[:20], response.status_code)
            if query.startswith("page"):
                assert b"page must be a number" in response.data


def test_a_bad_page_in_a_review_form_is_400(client: FlaskClient, site: Site) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/?verdict=all").text).group(1)
    part = named(site, "part-0.jpg")
    response = client.post(f"/inspections/{part['id']}/review", headers={"Origin": "http://localhost"},
                           data={"csrf_token": token, "decision": "good", "page": "²"})
    assert response.status_code == 400


TOKEN_URLS = ["/?token=%0a", f"/?token={TOKEN}%0a", "/?token=%00", "/?token=%ff", f"/%0a?token={TOKEN}",
              f"/stats%0d%0a?token={TOKEN}", f"/%0d%0aSet-Cookie:%20x=1?token={TOKEN}"]


def test_control_characters_in_token_mode_are_a_clear_answer(cfg: config.Config) -> None:
    client = create_app(with_web(cfg, token=TOKEN)).test_client()
    for url in TOKEN_URLS:
        response = client.get(url)
        assert response.status_code in (303, 403), (url, response.status_code)
        if response.status_code == 303:
            assert response.headers["Location"] == "/", (url, response.headers["Location"])
    entered = client.get(f"/?token={TOKEN}")
    assert entered.status_code == 303 and client.get("/?page=²").status_code == 400
