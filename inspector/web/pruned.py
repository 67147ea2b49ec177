"""What the review page shows for a part whose file retention deleted (issue 15, item 2): "file pruned on <date>".

The row stays with its verdict, score and reviews; its image and overlay routes answer 410 Gone with a placeholder
picture (for an <img>) or one line of text, instead of a broken image or a 404 that reads like a fault.
"""

from __future__ import annotations

from datetime import datetime

from flask import Response

from inspector.web.placeholder import unavailable


def day(when: datetime) -> str:
    """The local date a file was pruned, as YYYY-MM-DD."""
    return when.astimezone().strftime("%Y-%m-%d")


def file_pruned(id: int, when: datetime, what: str = "file") -> Response:
    """410: the part's file (or overlay) was deleted by retention on `when`; a placeholder picture for an <img>,
    else one line of text."""
    return unavailable(410, f"Part #{id}", f"file pruned on {day(when)}",
                       f"part #{id}: {what} pruned on {day(when)} (retention)")
