"""`serve`: the review page behind waitress, a production WSGI server (threads, no debugger, no reloader)."""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from types import FrameType
from typing import Any

from inspector.config import Config, is_loopback
from inspector.errors import ConfigError, InspectorError
from inspector.store import Store, shown_url
from inspector.web import access
from inspector.web.app import MAX_FORM_BYTES, create_app

THREADS = 4
# waitress refuses (413, then closes) a body of this many bytes or more as soon as it has read the headers (or,
# chunked, once that many arrived), before the app checks token or CSRF: a review form is tiny, and a body this
# small stays in memory (waitress spools to a temporary file only past its inbuf_overflow, 512 KiB)
MAX_BODY_BYTES = MAX_FORM_BYTES + 1
MIN_TOKEN = 12  # characters of [web] token at least


def bound_config(cfg: Config, host: str | None = None, port: int | None = None) -> Config:
    """cfg with [web] host/port replaced by the given ones; ConfigError for a non-loopback host without a token."""
    web = dataclasses.replace(cfg.web, host=cfg.web.host if host is None else host,
                              port=cfg.web.port if port is None else port)
    if not is_loopback(web.host) and not web.token:
        raise ConfigError(f"refusing to serve on {web.host}, which is not a loopback address, without an access "
                          "token: set [web] token")
    if web.token and (len(web.token) < MIN_TOKEN or web.token.strip() != web.token):
        # a blank or one-letter token met the rule above and let anyone in with ?token=%20 (found by an adversarial
        # test); checked here, where the token is used, so that a station's watcher never stops over it
        raise ConfigError(f"[web] token must be at least {MIN_TOKEN} characters, without spaces around it (e.g. "
                          "from `python3 -c 'import secrets; print(secrets.token_urlsafe())'`)")
    if not 0 <= web.port < 65536:
        raise ConfigError(f"port {web.port} is not between 0 and 65535")
    return dataclasses.replace(cfg, web=web)


def make_server(cfg: Config, host: str | None = None, port: int | None = None, store: Store | None = None) -> Any:
    """A waitress server for the review page, bound but not yet running (port 0 = a free port; `urls(server)`
    tells where it listens). InspectorError when the address cannot be bound."""
    from waitress.server import create_server

    cfg = bound_config(cfg, host, port)
    app = create_app(cfg, store)
    try:
        return create_server(app, host=cfg.web.host, port=cfg.web.port, threads=THREADS, ident="inspector",
                             max_request_body_size=MAX_BODY_BYTES)
    except OSError as exc:
        raise InspectorError(f"cannot listen on {cfg.web.host}:{cfg.web.port}: {exc.strerror or exc}") from None


def urls(server: Any) -> list[str]:
    """The http:// URLs a waitress server listens on (one per socket; "localhost" may bind IPv4 and IPv6)."""
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://{f'[{h}]' if ':' in str(h) else h}:{p}/" for h, p in listen]


def serve(cfg: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve the review page on [web] host:port (or the given ones) until SIGTERM or Ctrl-C, with one access-log
    line per request on standard error (inspector.web.access).

    Refuses (ConfigError, one line) a non-loopback host without [web] token; InspectorError when the address is
    taken; DatabaseError when the database cannot be opened.
    """
    server = make_server(cfg, host, port)
    access.log_to_stderr()
    token = " (access token required)" if cfg.web.token else ""
    shown = shown_url(cfg.database.url)  # which log it serves, said at once (an empty queue is then explained)
    print(f"inspector: review page on {' '.join(urls(server))}{token}, database {shown}", file=sys.stderr, flush=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()  # returns after SystemExit / KeyboardInterrupt, having closed the server
    finally:
        server.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM: leave the server loop like Ctrl-C does."""
    raise SystemExit(0)
