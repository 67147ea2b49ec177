"""Opening a recorded part's image or overlay for the browser, by inspection id only.

The path always comes from the database row, never from the request. The file is opened without following a
symlink at its last component and without blocking on a FIFO, must be a regular file, and its type is read from
its first bytes (not its name): JPEG, PNG, GIF, BMP and WebP are sent as they are, TIFF is converted to PNG
(browsers do not show it); anything else counts as missing.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (  # (magic, offset, mimetype)
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"WEBP", 8, "image/webp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
)


def sniff(head: bytes) -> str | None:
    """The image mimetype of a file's first 16 bytes, or None when it is not a known image format."""
    for magic, offset, mimetype in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            if mimetype == "image/webp" and head[:4] != b"RIFF":
                continue
            return mimetype
    return None


def resolve(path: str | None, base: Path | None) -> Path | None:
    """A recorded path as a Path (a relative one against `base`, the config folder), None when not recorded."""
    if not path:
        return None
    p = Path(path)
    return p if p.is_absolute() or base is None else base / p


def open_image(path: Path | None, only: tuple[str, ...] | None = None) -> tuple[BinaryIO, str] | None:
    """(an open binary file positioned at 0, its mimetype) for a regular image file, else None. `only` limits the
    accepted mimetypes (overlays are PNG). TIFF comes back converted to PNG in memory."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):  # missing, a symlink, unreadable, a NUL in the name
        return None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        return None
    f = os.fdopen(fd, "rb")
    try:
        mimetype = sniff(f.read(16))
        if mimetype is None or (only is not None and mimetype not in only):
            raise OSError("not an image")
        f.seek(0)
        if mimetype == "image/tiff":
            return _tiff_as_png(f), "image/png"
        return f, mimetype
    except OSError:
        f.close()
        return None


def _tiff_as_png(f: BinaryIO) -> BinaryIO:
    """Decode a TIFF and return it as PNG bytes in memory (OSError when it does not decode)."""
    import cv2
    import numpy as np

    with f:
        img = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError("TIFF does not decode")
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise OSError("cannot encode PNG")
    return io.BytesIO(png.tobytes())
