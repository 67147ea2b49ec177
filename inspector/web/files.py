"""Opening a recorded part's image or overlay for the browser, by inspection id only.

The path always comes from the database row, never from the request. The file is opened without following a
symlink at its last component and without blocking on a FIFO, must be a regular file, and its type is read from
its first bytes (not its name): JPEG, PNG, GIF, BMP and WebP are sent as they are, TIFF is converted to JPEG
(browsers do not show it); anything else counts as missing.

A part's image is served only while it still is the judged file: its size, then its sha256, must match the row
(FileChanged otherwise). `Images` remembers the digests it computed by (path, device, inode, size, mtime, ctime),
so an unchanged file is hashed once; it also keeps converted TIFFs in a cache bounded in bytes (keyed by sha256)
and converts at most CONVERTERS files at a time.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

DIGEST_ENTRIES = 4096  # remembered (file identity -> sha256) pairs
CONVERTED_BYTES = 64 * 1024 * 1024  # converted TIFFs kept, in encoded bytes
CONVERTERS = 2  # TIFF conversions at the same time (each holds a decoded image)
JPEG_QUALITY = 95
OVERLAY_TYPES = ("image/jpeg", "image/png")  # overlays are JPEG; PNG when recorded before 2026-12-06
HASH_CHUNK = 1024 * 1024

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


@dataclass(frozen=True)
class Expected:
    """What the judged file was: its sha256 (hex) and its size in bytes (None when not recorded)."""

    sha256: str
    size: int | None = None


class FileChanged(Exception):
    """The file at a recorded path is no longer the one that was judged (other size or other bytes)."""


FileKey = tuple[str, int, int, int, int, int]  # (path, device, inode, size, mtime_ns, ctime_ns)


def file_key(path: Path, st: os.stat_result) -> FileKey:
    """The identity of a file's current contents as far as stat can tell."""
    return os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _sha256_of(f: BinaryIO) -> str:
    """The hex sha256 of an open file from its start, read in chunks."""
    f.seek(0)
    digest = hashlib.sha256()
    while chunk := f.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _open_regular(path: Path) -> BinaryIO | None:
    """The file opened for reading when it is a regular file (no symlink at its last component, no FIFO wait)."""
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
    return os.fdopen(fd, "rb")


@dataclass
class _Gate:
    """Serialises the conversions of one content: the lock, and how many requests use it now."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class Images:
    """Opens images for the routes: checks a part's file against its row (digests remembered per file identity),
    converts TIFF to JPEG once per content (a cache bounded in bytes) and at most `converters` at a time."""

    def __init__(self, converted_bytes: int = CONVERTED_BYTES, converters: int = CONVERTERS,
                 digest_entries: int = DIGEST_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._digests: OrderedDict[FileKey, str] = OrderedDict()
        self._digest_entries = digest_entries
        self._converted: OrderedDict[str, bytes] = OrderedDict()
        self._converted_size = 0
        self._converted_bytes = converted_bytes
        self._slots = threading.BoundedSemaphore(converters)
        self._gates: dict[str, _Gate] = {}  # one conversion per content at a time
        self._converting = 0
        self.counts = {"hashed": 0, "converted": 0, "peak_converting": 0}

    def open(self, path: Path | None, only: tuple[str, ...] | None = None,
             expect: Expected | None = None) -> tuple[BinaryIO, str] | None:
        """(an open binary file at 0, its mimetype) for a regular image file, else None; FileChanged when `expect`
        is given and the file is not that one. `only` limits the mimetypes; TIFF comes back as JPEG bytes."""
        if path is None:
            return None
        f = _open_regular(path)
        if f is None:
            return None
        try:
            key = file_key(path, os.fstat(f.fileno()))
            if expect is not None:
                self._verify(f, key, expect)
            f.seek(0)
            mimetype = sniff(f.read(16))
            if mimetype is None or (only is not None and mimetype not in only):
                raise OSError("not an image")
            f.seek(0)
            if mimetype == "image/tiff":
                content = expect.sha256 if expect is not None else repr(key)
                with f:
                    return io.BytesIO(self._converted_for(content, f, expect)), "image/jpeg"
            return f, mimetype
        except OSError:
            f.close()
            return None
        except FileChanged:
            f.close()
            raise

    def _verify(self, f: BinaryIO, key: FileKey, expect: Expected) -> None:
        """FileChanged unless the open file has the expected size, then the expected sha256 (hashed once per
        file identity)."""
        if expect.size is not None and key[3] != expect.size:
            raise FileChanged(f"{key[3]} bytes, judged {expect.size}")
        with self._lock:
            digest = self._digests.get(key)
            if digest is not None:
                self._digests.move_to_end(key)
        if digest is None:
            digest = _sha256_of(f)
            with self._lock:
                self.counts["hashed"] += 1
            if file_key(Path(key[0]), os.fstat(f.fileno())) != key:
                raise FileChanged("written to while it was read")
            with self._lock:
                self._digests[key] = digest
                while len(self._digests) > self._digest_entries:
                    self._digests.popitem(last=False)
        if not hmac.compare_digest(digest, expect.sha256.lower()):
            raise FileChanged("other bytes than the judged file")

    def _cached(self, content: str) -> bytes | None:
        """The converted bytes of this content, when cached (marked as recently used)."""
        with self._lock:
            data = self._converted.get(content)
            if data is not None:
                self._converted.move_to_end(content)
            return data

    def _keep(self, content: str, data: bytes) -> None:
        """Cache converted bytes, dropping the least recently used beyond the byte budget (too big: not kept)."""
        if len(data) > self._converted_bytes:
            return
        with self._lock:
            if content in self._converted:
                return
            self._converted[content] = data
            self._converted_size += len(data)
            while self._converted_size > self._converted_bytes:
                _, dropped = self._converted.popitem(last=False)
                self._converted_size -= len(dropped)

    def _converted_for(self, content: str, f: BinaryIO, expect: Expected | None) -> bytes:
        """The TIFF in `f` as JPEG bytes: from the cache, else converted (one conversion per content at a time,
        at most `converters` in all). OSError when it does not decode, FileChanged when its bytes moved on."""
        data = self._cached(content)
        if data is not None:
            return data
        with self._lock:
            gate = self._gates.setdefault(content, _Gate())
            gate.users += 1
        try:
            with gate.lock:
                data = self._cached(content)
                if data is None:
                    with self._slots:
                        data = self._convert(f, expect)
                    self._keep(content, data)
            return data
        finally:
            with self._lock:
                gate.users -= 1
                if gate.users == 0:
                    del self._gates[content]

    def _convert(self, f: BinaryIO, expect: Expected | None) -> bytes:
        """Read, check and convert one TIFF (the caller holds a conversion slot)."""
        with self._lock:
            self._converting += 1
            self.counts["converted"] += 1
            self.counts["peak_converting"] = max(self.counts["peak_converting"], self._converting)
        try:
            f.seek(0)
            raw = f.read()
            if expect is not None and not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), expect.sha256.lower()):
                raise FileChanged("other bytes than the judged file")
            return tiff_as_jpeg(raw)
        finally:
            with self._lock:
                self._converting -= 1


def open_image(path: Path | None, only: tuple[str, ...] | None = None) -> tuple[BinaryIO, str] | None:
    """(an open binary file positioned at 0, its mimetype) for a regular image file, else None, without a cache.
    `only` limits the accepted mimetypes (OVERLAY_TYPES for overlays). TIFF comes back converted to JPEG in memory."""
    return Images(converted_bytes=0, digest_entries=0).open(path, only)


def tiff_as_jpeg(raw: bytes) -> bytes:
    """Decode TIFF bytes and encode them as JPEG (OSError when they do not decode)."""
    import cv2
    import numpy as np

    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise OSError(f"TIFF does not decode: {exc}") from None
    if img is None:
        raise OSError("TIFF does not decode")
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("cannot encode JPEG")
    return jpeg.tobytes()
