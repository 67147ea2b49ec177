"""A part's picture that cannot be shown, said in its place: a placeholder picture for an <img> (a broken image
says nothing), one line of text for any other client. Used for a file pruned by retention (410, pruned.py), one
that changed since it was judged (409) and one moved or deleted (404, views.py)."""

from __future__ import annotations

from html import escape

from flask import Response, request

_PICTURE = ('<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" viewBox="0 0 320 240">'
            '<title>{text}</title><rect width="320" height="240" fill="#eeeeee"/>'
            '<text x="160" y="112" text-anchor="middle" font-family="sans-serif" font-size="15" fill="#555555">'
            '{head}</text><text x="160" y="136" text-anchor="middle" font-family="sans-serif" font-size="15" '
            'fill="#555555">{tail}</text></svg>')


def unavailable(status: int, head: str, tail: str, text: str) -> Response:
    """`status` with a 320 x 240 placeholder picture (`head` over `tail`, `text` as its title) when the client takes
    SVG before text, else `text` as one line; never cached."""
    headers = {"Cache-Control": "no-store"}
    if request.accept_mimetypes.best_match(["text/plain", "image/svg+xml"]) == "image/svg+xml":
        body = _PICTURE.format(text=escape(text), head=escape(head), tail=escape(tail))
        return Response(body, status, headers, mimetype="image/svg+xml")
    return Response(text + "\n", status, headers, mimetype="text/plain")
