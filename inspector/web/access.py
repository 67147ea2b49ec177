"""The review page's access log: one line per request, written when the response starts.

    2026-12-02T05:10:51.911+00:00 127.0.0.1 GET /stats?since=24h 200 12 ms

Time (UTC), client address, method, path and query, status, and the milliseconds the app took to answer (until the
response started; a file is then streamed by the server). The access token never reaches the log: the value of a
`token` query parameter is written as `[redacted]`, and no header (Authorization, Cookie) is logged. The path is
percent-encoded again and the line has its control characters escaped, so a request cannot forge log lines;
both path and query are cut at MAX_PATH characters.

`AccessLog` wraps a WSGI app (the app factory installs it on every review-page app); the lines go to the logger
`inspector.web.access` at INFO, which `serve` sends to standard error.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote_plus

from inspector.text import escape_controls

LOGGER = "inspector.web.access"
MAX_PATH = 1000
REDACTED = "[redacted]"
SECRET_PARAMETERS = frozenset({"token"})
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def redact_query(query: str) -> str:
    """A query string with the value of every secret parameter (`token`, however its name is encoded) replaced."""
    if not query:
        return ""
    out = []
    for item in query.split("&"):
        name, sep, _value = item.partition("=")
        if unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
            item = f"{name}={REDACTED}"
        out.append(item)
    return "&".join(out)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_PATH else text[:MAX_PATH] + "..."


def request_target(environ: dict[str, Any]) -> str:
    """The request's path (percent-encoded) and query (secret values redacted), as one log field."""
    raw = environ.get("PATH_INFO", "")
    try:
        path = quote(raw.encode("latin-1"), safe=_PATH_SAFE)
    except UnicodeEncodeError:
        path = quote(raw, safe=_PATH_SAFE)
    path = quote(environ.get("SCRIPT_NAME", ""), safe=_PATH_SAFE) + path
    query = redact_query(environ.get("QUERY_STRING", ""))
    return _cut(path) + ("?" + _cut(query) if query else "")


def line(environ: dict[str, Any], status: str, ms: float, at: datetime | None = None) -> str:
    """One access-log line."""
    when = (at or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")
    client = environ.get("REMOTE_ADDR") or "-"
    method = environ.get("REQUEST_METHOD", "-")[:16]
    return escape_controls(f"{when} {client} {method} {request_target(environ)} {status} {ms:.0f} ms")


class AccessLog:
    """WSGI middleware: one line per request on `logger` (at INFO) once the app starts its response; a request
    whose app raised is logged with status 500 before the error goes on to the server."""

    def __init__(self, app: Callable[..., Iterable[bytes]], logger: logging.Logger | None = None) -> None:
        self.app = app
        self.log = logger or logging.getLogger(LOGGER)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        began = time.perf_counter()
        logged = False

        def starting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal logged
            if not logged:
                logged = True
                self._write(environ, status.split(" ", 1)[0], began)
            return start_response(status, headers, exc_info) if exc_info is not None else start_response(status,
                                                                                                         headers)

        try:
            return self.app(environ, starting)
        except BaseException:
            if not logged:
                self._write(environ, "500", began)
            raise

    def _write(self, environ: dict[str, Any], status: str, began: float) -> None:
        if self.log.isEnabledFor(logging.INFO):
            self.log.info("%s", line(environ, status, (time.perf_counter() - began) * 1000.0))


def log_to_stderr() -> None:
    """Send the access log to standard error, one line per request (once; `serve` calls it)."""
    log = logging.getLogger(LOGGER)
    if not any(getattr(h, "inspector_access", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.inspector_access = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
