"""The Flask app factory of the review page: config and store are passed in, nothing is global."""

from __future__ import annotations

import logging
import os
from datetime import datetime

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from inspector.config import Config
from inspector.store import DatabaseError, Store, open_recorded
from inspector.web import security
from inspector.web.access import AccessLog
from inspector.web.views import Context, bp

MAX_FORM_BYTES = 64 * 1024


def allowed_hosts(cfg: Config) -> tuple[str, ...]:
    """The Host header allowlist: [web] allowed_hosts plus the bind host."""
    return (*cfg.web.allowed_hosts, cfg.web.host)


def _local(value: datetime | None) -> str:
    """A UTC datetime as local wall-clock time, for the templates."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def create_app(cfg: Config, store: Store | None = None) -> Flask:
    """The review page for `cfg`, reading and writing `store` (opened from [database] when not given).

    The signing key of the session cookie (which carries the CSRF token) is random per process: after a restart
    an open page needs a reload before its buttons work again, and no key sits on disk.
    """
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.urandom(32),
        SESSION_COOKIE_NAME="inspector_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=MAX_FORM_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_BYTES,
        TEMPLATES_AUTO_RELOAD=False,
    )
    if store is None:  # never created nor migrated by the review page (see store.open_recorded)
        store = open_recorded(cfg.database.url, busy_timeout_ms=cfg.database.busy_timeout_ms)
    base = cfg.source.parent if cfg.source is not None else None
    app.extensions["inspector"] = Context(cfg=cfg, store=store, base=base)
    app.jinja_env.filters["local"] = _local
    security.install(app, allowed_hosts(cfg), cfg.web.token)
    app.register_blueprint(bp)
    app.register_error_handler(DatabaseError, _database_unavailable)
    app.register_error_handler(SQLAlchemyError, _database_unavailable)
    app.wsgi_app = AccessLog(app.wsgi_app)  # type: ignore[method-assign]  # one line per request, token redacted
    return app


def _database_unavailable(exc: Exception) -> tuple[str, int, dict[str, str]]:
    """503 with one line for the operator when the database cannot be read or written (no traceback)."""
    app_log = logging.getLogger("inspector.web")
    app_log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return ("The verdict database is unavailable right now; the page will work again once it is back. "
            "Please retry in a moment.\n", 503, {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "5"})
