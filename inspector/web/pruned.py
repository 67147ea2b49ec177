"""What the review page shows for a part whose file retention deleted (issue 15, item 2): "file pruned on <date>".

The row stays with its verdict, score and reviews; its image and overlay routes answer 410 Gone with a placeholder
picture (for an <img>) or one line of text, instead of a broken image or a 404 that reads like a fault.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from flask import Response, request

_PICTURE = ('<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" viewBox="0 0 320 240">'
            '<title>{text}</title><rect width="320" height="240" fill="#f2f2f2"/>'
            '<text x="160" y="112" text-anchor="middle" font-family="sans-serif" font-size="15" fill="#555555">'
            '{head}</text><text x="160" y="136" text-anchor="middle" font-family="sans-serif" font-size="15" '
            'fill="#555555">file pruned on {day}</text></svg>')


def day(when: datetime) -> str:
    """The local date a file was pruned, as YYYY-MM-DD."""
    return when.astimezone().strftime("%Y-%m-%d")


def file_pruned(id: int, when: datetime, what: str = "file") -> Response:
    """410: the part's file (or overlay) was deleted by retention on `when`; a placeholder picture for an <img>,
    else one line of text."""
    text = f"part #{id}: {what} pruned on {day(when)} (retention)"
    headers = {"Cache-Control": "no-store"}
    if request.accept_mimetypes.best_match(["text/plain", "image/svg+xml"]) == "image/svg+xml":
        body = _PICTURE.format(text=escape(text), head=f"Part #{id}", day=day(when))
        return Response(body, 410, headers, mimetype="image/svg+xml")
    return Response(text + "\n", 410, headers, mimetype="text/plain")
