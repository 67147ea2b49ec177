"""Request checks of the review page: the Host allowlist, the access token, same-origin and CSRF checks for
every POST, and the security headers of every response.

Pure helpers (`split_host`, `host_allowed`, `same_origin`, `token_cookie_value`) take plain strings; `install`
registers the checks on an app. Order per request: Host (400) -> access token (401 none given, 403 wrong) ->
for a POST, same origin (403) and CSRF token (403).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, abort, redirect, request, session

TOKEN_COOKIE = "inspector_token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_COOKIE_MAX_AGE = 30 * 24 * 3600
CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # our own POSTs keep a Referer, nothing leaks to other sites
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def split_host(value: str) -> tuple[str, str | None]:
    """A Host header or allowlist entry as (lower-case name, port or None); ("", None) when malformed.

    "Name:8080" -> ("name", "8080"); "[::1]:8080" -> ("::1", "8080"); a bare IPv6 address "::1" -> ("::1", None).
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "", None
        name, rest = value[1:end], value[end + 1:]
        if not rest:
            return name, None
        return (name, rest[1:]) if rest[0] == ":" and rest[1:].isdigit() else ("", None)
    if value.count(":") > 1:
        return value, None
    name, sep, port = value.partition(":")
    if sep and not port.isdigit():
        return "", None
    return name, port if sep else None


def host_allowed(header: str, allowed: Iterable[str]) -> bool:
    """True when the Host header names an allowed host; an entry without a port allows any port."""
    name, port = split_host(header)
    if not name:
        return False
    for entry in allowed:
        e_name, e_port = split_host(entry)
        if e_name == name and (e_port is None or e_port == port):
            return True
    return False


def same_origin(url: str, host_header: str) -> bool:
    """True when an Origin or Referer value names the host and port of the Host header (default ports allowed)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return False
    default = "80" if parts.scheme == "http" else "443"
    o_name, o_port = split_host(parts.netloc)
    h_name, h_port = split_host(host_header)
    return bool(o_name) and o_name == h_name and (o_port or default) == (h_port or default)


def same_site_path(path: str) -> str:
    """A redirect target on this site for a request path: "/" and the path without its leading slashes, or "/"
    when the path holds a control character, white space or a backslash (browsers drop tabs and newlines and read
    "\\" as "/", which would turn "/<tab>/evil.example" into "//evil.example", another site)."""
    if any(c == "\\" or c.isspace() or not c.isprintable() for c in path):
        return "/"
    target = "/" + path.lstrip("/")
    return target if target[1:2] not in ("/", "\\") else "/"


def token_cookie_value(token: str) -> str:
    """What the access cookie holds: a keyed hash of the token (stable across restarts, not the token itself)."""
    return hmac.new(token.encode(), b"inspector-web-access-cookie", hashlib.sha256).hexdigest()


def _equal(given: str, expected: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(given.encode(), expected.encode())


def csrf_token() -> str:
    """This session's CSRF token (created on first use, kept in the signed session cookie)."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_host(allowed: tuple[str, ...]) -> None:
    """400 unless the Host header names an allowed host (DNS rebinding defence)."""
    if not host_allowed(request.environ.get("HTTP_HOST", ""), allowed):
        abort(400, description="Host header not allowed: add the name to web.allowed_hosts")


def check_token(token: str) -> Response | None:
    """When an access token is configured: accept `?token=` once (set the cookie, redirect to the same page without
    it), the cookie, or `Authorization: Bearer`; 401 when none is given, 403 when a wrong one is."""
    if not token:
        return None
    given = request.args.get("token")
    if given is not None and request.method in SAFE_METHODS:
        if not _equal(given, token):
            abort(403, description="wrong access token")
        rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        target = same_site_path(request.path) + ("?" + urlencode(rest) if rest else "")  # never //other.host
        response = redirect(target, 303)
        response.set_cookie(TOKEN_COOKIE, token_cookie_value(token), max_age=TOKEN_COOKIE_MAX_AGE, httponly=True,
                            samesite="Strict", path="/")
        return response
    cookie = request.cookies.get(TOKEN_COOKIE)
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    if cookie is not None and _equal(cookie, token_cookie_value(token)):
        return None
    if scheme.lower() == "bearer" and bearer and _equal(bearer.strip(), token):
        return None
    if cookie is None and not bearer:
        response = Response("access token required: open the page once with ?token=...\n", 401,
                            {"WWW-Authenticate": 'Bearer realm="inspector"'}, mimetype="text/plain")
        abort(response)
    abort(403, description="wrong access token")


def check_post() -> None:
    """For any method but GET/HEAD/OPTIONS: 403 unless the request is same-origin (Origin, else Referer; neither
    -> refused) and carries this session's CSRF token in the form."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    source = origin if origin is not None else request.headers.get("Referer")
    if not source or not same_origin(source, request.environ.get("HTTP_HOST", "")):
        abort(403, description="cross-origin request refused")
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not given or not _equal(given, expected):
        abort(403, description="missing or invalid CSRF token: reload the page and try again")


def add_headers(response: Response) -> Response:
    """Security headers on every response; pages (not images or plots) are never cached."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def install(app: Flask, allowed_hosts: tuple[str, ...], token: str) -> None:
    """Register the checks (before every request, static files included) and the headers (after every response)."""

    @app.before_request
    def _guard() -> Response | None:
        check_host(allowed_hosts)
        early = check_token(token)
        if early is not None:
            return early
        check_post()
        return None

    app.after_request(add_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["csrf_field"] = CSRF_FIELD
