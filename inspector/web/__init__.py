"""The review page (`inspector serve`): a queue of flagged parts with their images, anomaly maps and review
buttons, and a stats page with plots. Flask with server-side Jinja templates, served by waitress.

- `app.py`: `create_app(cfg, store)`, the app factory;
- `security.py`: Host allowlist, access token, same-origin and CSRF checks, security headers;
- `views.py`: the routes; `data.py`: what they read; `files.py`: opening a part's files by inspection id;
- `regions.py`: where a part's overlay marks the defect, boxed on the full-size view;
- `plots.py`: the stats plots (matplotlib Agg);
- `access.py`: the access log, one line per request (the token redacted);
- `server.py`: `serve(cfg, host, port)` behind waitress.
"""

from __future__ import annotations

from inspector.web.app import create_app
from inspector.web.server import make_server, serve, urls

__all__ = ["create_app", "make_server", "serve", "urls"]
