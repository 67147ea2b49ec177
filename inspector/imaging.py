"""Image input adapter: file or bytes in, decoded 8-bit BGR image or a typed `ImageRejected` out."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

from inspector.errors import ImageRejected

# Pillow plugins we let identify input: the formats OpenCV can also decode. Anything else is "not_an_image".
_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM", "GIF")
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO = camera JPEG with an MPF secondary image; decoded as JPEG
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La", "I;16A"})
_GREY_MODES = frozenset({"L", "I", "I;16", "I;16B"})
_REDUCTIONS = (8, 4, 2)
_JPEG_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_ORIENTATION_TAG = 0x0112
_BITS_PER_SAMPLE_TAG = 258
_READ_CHUNK = 1 << 20
_BYTES_PER_CAPPED_PIXEL = 3  # decode budget: max_pixels x 3 bytes, what an 8-bit colour image at the pixel cap holds
_STRIP_PIXELS = 1 << 20  # alpha is composited this many pixels at a time, so temporaries stay small
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk: length 0, type, CRC
_MAX_JPEG_SCANS = 100  # a normal progressive JPEG has ~10 scans; each scan is another pass over every block
_MAX_JPEG_SEGMENTS = 1000  # marker segments walked in one JPEG; real files have a few dozen
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")  # FF + marker code: skips FF00 stuffing, RSTn, fill FFs
_JPEG_RST = re.compile(rb"\xff[\xd0-\xd7]")
_MARKER_WINDOW = 4096  # bytes the regex searches before the rest (a scan's entropy-coded data) is searched by numpy
_MARKER_CHUNK = 1 << 18  # ... this many bytes at a time
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers; C4 DHT, C8 JPG, CC DAC are not
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_ZERO_BLOCK_GREY = 128  # libjpeg's output for blocks it got no data for: a scan that ran short ends in this grey
# Never 0xFF, so never a marker: a scan that ran out of data decodes these bytes, a complete scan ignores them.
_PROBE_BYTES = bytes(b % 255 for b in hashlib.shake_256(b"inspector: does this scan run short?").digest(1024))


@dataclass(frozen=True)
class ImageInfo:
    """Header facts; width/height as stored (before EXIF orientation, except TIFF which Pillow reports oriented)."""

    format: str
    width: int
    height: int
    mode: str


@dataclass(frozen=True, eq=False)  # eq=False: element-wise ndarray equality makes generated __eq__ meaningless
class Decoded:
    """A decoded image: `image` is (H, W, 3) uint8 BGR, C-contiguous, possibly reduced by `scale`."""

    image: np.ndarray
    width: int  # full-resolution width after EXIF orientation
    height: int  # full-resolution height after EXIF orientation
    format: str
    scale: int  # JPEG DCT reduction factor used: 1, 2, 4 or 8
    used_bits: int | None = None  # a 16-bit photo's: the bits its largest colour value needs (None for 8-bit)
    turned: bool = False  # its EXIF orientation (5..8) turned it: width and height are the stored ones swapped


@dataclass(frozen=True)
class _Scan:
    """One JPEG scan: its entropy-coded data, the restart interval in force, the frame components it codes."""

    start: int  # first byte of entropy-coded data
    end: int  # offset of the marker that ends it
    restart_interval: int  # MCUs between RSTn markers; 0 = none
    components: tuple[int, ...]  # indices into _JpegLayout.components


@dataclass(frozen=True)
class _JpegLayout:
    """What walking a JPEG's markers learns: progressive or not, its frame components, its scans, where it ends."""

    progressive: bool
    components: tuple[tuple[int, int, int], ...]  # (id, h, v) sampling per frame component
    scans: tuple[_Scan, ...]
    end: int  # offset just past the EOI marker; bytes after it are not part of the image


@dataclass(frozen=True)
class _Header:
    """What probing learns beyond ImageInfo: EXIF orientation (JPEG and TIFF), alpha, a grey PNG's tRNS key."""

    info: ImageInfo
    orientation: int
    alpha: bool
    grey_key: int | None
    sample_bytes: int = 1  # bytes per sample OpenCV decodes to: 2 for 16-bit, 4 or 8 for float TIFF/PFM
    jpeg: _JpegLayout | None = None


# ---------------------------------------------------------------------------------------------- files


def printable(path: str | bytes | os.PathLike) -> str:
    """Printable form of a path, even when the name is not valid UTF-8 (bad bytes become \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


def unprintable(text: str) -> str | None:
    """The path a printable() form stands for when it holds \\xNN escapes (bytes of a name that is not valid
    UTF-8), as an OS path (surrogate escapes); None when it holds none."""
    if not _ESCAPE.search(text):
        return None
    parts = _ESCAPE.split(text)  # text, hex, text, hex, ..., text
    return os.fsdecode(b"".join(bytes([int(piece, 16)]) if i % 2 else piece.encode("utf-8", "surrogateescape")
                                for i, piece in enumerate(parts)))


def recorded_path(recorded: str) -> str:
    """Where a path recorded as text (printable(), in the database) lies on disk: itself, or, where it is not there
    and holds \\xNN escapes, the path they stand for when that one is there (a name that is not valid UTF-8)."""
    if os.path.lexists(recorded):
        return recorded
    raw = unprintable(recorded)
    return raw if raw is not None and os.path.lexists(raw) else recorded


_show = printable


def _unreadable(path: str | bytes | os.PathLike, exc: OSError) -> ImageRejected:
    """An "unreadable" rejection carrying the errno text."""
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return ImageRejected("unreadable", f"{_show(path)}: {text}", errno=exc.errno)


def _require_regular(path: str | bytes | os.PathLike, st: os.stat_result) -> None:
    """Reject anything that is not a regular file (symlink, FIFO, directory, device, socket)."""
    if stat.S_ISLNK(st.st_mode):
        raise ImageRejected("symlink", f"{_show(path)} is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise ImageRejected("not_a_file", f"{_show(path)} is not a regular file")


def _too_large_file(path: str | bytes | os.PathLike, size: int, max_bytes: int) -> ImageRejected:
    """A "too_large" rejection for a file over the byte cap."""
    return ImageRejected("too_large", f"{_show(path)} has more than {max_bytes} bytes ({size} seen)")


def _read_fd(path: str | bytes | os.PathLike, fd: int, size_hint: int, max_bytes: int | None) -> bytes:
    """Read an open fd to EOF in one pass, stopping as soon as more than max_bytes arrive."""
    chunks: list[bytes] = []
    total = 0
    want = size_hint + 1 if size_hint else _READ_CHUNK  # +1: a file of known size ends in two reads
    while True:
        if max_bytes is not None:
            want = min(want, max_bytes + 1 - total)
        chunk = os.read(fd, want)
        if not chunk:
            return b"".join(chunks)  # join of one item returns it without copying
        chunks.append(chunk)
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise _too_large_file(path, total, max_bytes)
        want = _READ_CHUNK


def read_file(path: str | bytes | os.PathLike, max_bytes: int | None = None) -> bytes:
    """Read a regular file's bytes once; never follows a final symlink or blocks on a FIFO."""
    try:
        _require_regular(path, os.lstat(path))  # FIFOs and devices are never even opened
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except ImageRejected:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW: swapped for a symlink after lstat
            raise ImageRejected("symlink", f"{_show(path)} is a symbolic link") from None
        raise _unreadable(path, exc) from None
    except ValueError:  # embedded NUL byte: no such file can exist
        raise ImageRejected("unreadable", f"{_show(path)}: path contains a NUL byte") from None
    try:
        st = os.fstat(fd)
        _require_regular(path, st)  # the name may have been swapped since lstat
        if max_bytes is not None and st.st_size > max_bytes:
            raise _too_large_file(path, st.st_size, max_bytes)
        data = _read_fd(path, fd, st.st_size, max_bytes)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    if not data:
        raise ImageRejected("empty", f"{_show(path)} is empty (0 bytes)")
    return data


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of the bytes."""
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- probing


def _open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Let Pillow parse only the header; our own pixel cap replaces its decompression-bomb guard."""
    try:
        with warnings.catch_warnings():  # touches the process-wide filter list, but only for this one category
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_large", f"{exc} (our cap is {max_pixels} pixels)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many exception types on hostile bytes
        kind = "not an image in a supported format (JPEG, PNG, WebP, BMP, TIFF, PNM, GIF)"
        raise ImageRejected("not_an_image", f"{kind}: {type(exc).__name__}") from None


def _check_complete(data: bytes, fmt: str) -> None:
    """Reject PNG without its IEND chunk, WebP shorter than its RIFF size; bytes after the end are fine."""
    if fmt == "PNG":
        missing = data.rfind(_PNG_IEND) < 0
    elif fmt == "WEBP":  # checked before Pillow sees it: libwebp's demuxer refuses short files outright
        missing = len(data) < 8 + int.from_bytes(data[4:8], "little")
    else:
        return
    if missing:
        end = {"PNG": "IEND chunk", "WEBP": "RIFF length"}[fmt]
        raise ImageRejected("truncated", f"{fmt} data ends before its {end} ({len(data)} bytes)")


def _jpeg_cut(data: bytes) -> ImageRejected:
    """A "truncated" rejection for a JPEG that ends before its EOI marker."""
    return ImageRejected("truncated", f"JPEG data ends before its EOI marker ({len(data)} bytes)")


def _sof_components(body: bytes) -> tuple[tuple[int, int, int], ...]:
    """(id, h, v) per component from an SOF segment's body; () when it is malformed."""
    count = body[5] if len(body) > 5 else 0
    if len(body) < 6 + 3 * count:
        return ()
    return tuple((body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(count))


def _sos_components(body: bytes, components: tuple[tuple[int, int, int], ...]) -> tuple[int, ...]:
    """Indices of the frame components an SOS segment's body selects (unknown ids are left out)."""
    ids = [c[0] for c in components]
    count = body[0] if body else 0
    selected = body[1 : 1 + 2 * count : 2]
    return tuple(ids.index(c) for c in selected if c in ids)


def _next_marker(data: bytes, pos: int) -> int | None:
    """Where the next marker (FF and a code _JPEG_MARKER takes) starts at or after pos; None when there is none.
    Markers in the header lie a few bytes apart: the regex finds them; past _MARKER_WINDOW bytes (a scan's
    entropy-coded data, most of a file) numpy compares every byte at once (the walk of a 5 MP JPEG: 0.47 -> 0.28 ms)."""
    end = pos + _MARKER_WINDOW
    found = _JPEG_MARKER.search(data, pos, end)
    if found is not None or end >= len(data):
        return None if found is None else found.start()
    whole = np.frombuffer(data, np.uint8)
    start = end - 1  # a marker whose FF is the window's last byte was not seen by the regex
    while start < len(data) - 1:  # in chunks: a progressive JPEG's next scan is near, not at the end
        chunk = whole[start : start + _MARKER_CHUNK + 1]  # one byte more: the code after a last FF
        ffs = np.flatnonzero(chunk[:-1] == 0xFF)
        codes = chunk[ffs + 1]
        hits = ffs[((codes >= 0x01) & (codes <= 0xCF)) | ((codes >= 0xD8) & (codes <= 0xFE))]
        if len(hits):
            return start + int(hits[0])
        start += _MARKER_CHUNK
    return None


def _walk_jpeg(data: bytes) -> _JpegLayout:
    """Walk marker segments from SOI to EOI, skipping scan data; no EOI is "truncated", too many scans "too_large"."""
    progressive, restart, pos = False, 0, 2
    components: tuple[tuple[int, int, int], ...] = ()
    scans: list[_Scan] = []
    pending: _Scan | None = None  # the scan whose entropy-coded data is being skipped
    for _ in range(_MAX_JPEG_SEGMENTS):
        at = _next_marker(data, pos)  # scan data and stray bytes are skipped in C, as libjpeg skips them
        if at is None:
            raise _jpeg_cut(data)
        if pending is not None:
            scans.append(replace(pending, end=at))
            pending = None
        code, pos = data[at + 1], at + 2
        if code == 0xD9:  # EOI
            return _JpegLayout(progressive, components, tuple(scans), pos)
        if code in (0x01, 0xD8):  # TEM, SOI: no length field
            continue
        length = max(int.from_bytes(data[pos : pos + 2], "big"), 2)  # a bogus length is the decoder's to refuse
        if pos + length > len(data):
            raise _jpeg_cut(data)
        body = data[pos + 2 : pos + length] if code == 0xDA or code == 0xDD or code in _JPEG_SOF else b""
        if code == 0xDA:  # SOS: entropy-coded data follows the header
            if len(scans) >= _MAX_JPEG_SCANS:
                raise ImageRejected("too_large", f"JPEG has more than {_MAX_JPEG_SCANS} scans (a normal progressive "
                                                 "JPEG has about 10; each scan is another pass over the image)")
            pending = _Scan(pos + length, -1, restart, _sos_components(body, components))
        elif code == 0xDD:  # DRI
            restart = int.from_bytes(body[:2], "big")
        elif code in _JPEG_SOF:
            progressive, components = code in _JPEG_PROGRESSIVE, _sof_components(body)
        pos += length
    raise ImageRejected("too_large", f"JPEG has more than {_MAX_JPEG_SEGMENTS} marker segments")


def _sample_bytes(im: Image.Image, data: bytes, fmt: str) -> int:
    """Bytes per sample OpenCV decodes this file to: 2 for 16-bit PNG, TIFF and PNM, 4 or 8 for float TIFF/PFM."""
    if fmt == "PNG":
        return 2 if data[24:25] == b"\x10" else 1  # IHDR bit depth
    if fmt == "TIFF":
        bits = im.tag_v2.get(_BITS_PER_SAMPLE_TAG, 8)
        return max(1, -(-max(bits if isinstance(bits, tuple) else (bits,)) // 8))
    if fmt == "PPM":
        args = im.tile[0].args if im.tile else None
        maxval = args[-1] if isinstance(args, tuple) and isinstance(args[-1], int) else 255
        return 4 if im.mode == "F" else 2 if im.mode == "I" or maxval > 255 else 1
    return 1


def _max_sampling(layout: _JpegLayout) -> tuple[int, int]:
    """The largest (h, v) sampling factors of the frame (1, 1 when it has none)."""
    return max(1, *(h for _, h, _ in layout.components)), max(1, *(v for _, _, v in layout.components))


def _coefficient_bytes(info: ImageInfo, layout: _JpegLayout) -> int:
    """The whole-image DCT coefficient buffer libjpeg keeps for a progressive or multi-scan JPEG (0 otherwise)."""
    if not (layout.progressive or len(layout.scans) > 1):
        return 0
    hmax, vmax = _max_sampling(layout)
    mcu_cols, mcu_rows = -(-info.width // (8 * hmax)), -(-info.height // (8 * vmax))
    return sum(mcu_cols * h * mcu_rows * v for _, h, v in layout.components) * 64 * 2  # 64 int16 per 8x8 block


def _decoded_bytes(header: _Header, scale: int) -> int:
    """Bytes a decode holds at once: output samples, plus a progressive JPEG's coefficients."""
    info = header.info
    if header.jpeg is not None:  # OpenCV decodes JPEG to 3 channels of 8 bits, reduced by scale
        return -(-info.width // scale) * -(-info.height // scale) * 3 + _coefficient_bytes(info, header.jpeg)
    return info.width * info.height * (4 if header.alpha else 3) * header.sample_bytes


def _check_budget(header: _Header, scale: int, max_pixels: int) -> None:
    """Reject an image whose decode holds more bytes than an 8-bit colour image at the pixel cap would."""
    need, budget = _decoded_bytes(header, scale), _BYTES_PER_CAPPED_PIXEL * max_pixels
    if need <= budget:
        return
    info = header.info
    if header.jpeg is not None:
        kind = "progressive JPEG" if header.jpeg.progressive else "JPEG"
        what = f"{kind} {info.width}x{info.height} with its coefficients"
    else:
        channels = 4 if header.alpha else 3
        what = f"{info.format} {info.width}x{info.height} at {channels} channels x {8 * header.sample_bytes} bits"
    raise ImageRejected("too_large", f"{what} decodes to {need} bytes, over the cap of {budget} "
                                     f"({_BYTES_PER_CAPPED_PIXEL} bytes x {max_pixels} max_pixels)")


def _header_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8 of a JPEG or TIFF (its APP1 segment or IFD is already parsed); 1 when absent or corrupt."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - corrupt EXIF must not reject an otherwise fine image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _probe(data: bytes, max_pixels: int) -> _Header:
    """Header facts plus the decode hints; raises ImageRejected for empty, foreign, huge or truncated data."""
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if not data:
        raise ImageRejected("empty", "0 bytes")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        _check_complete(data, "WEBP")
    with _open_header(data, max_pixels) as im:
        fmt, (width, height), mode, extra = im.format or "", im.size, im.mode, im.info.get("transparency")
        if width * height > max_pixels:
            raise ImageRejected("too_large", f"{width}x{height} = {width * height} pixels exceeds cap of {max_pixels}")
        _check_complete(data, fmt)
        jpeg = _walk_jpeg(data) if fmt in _JPEG_FORMATS else None
        orientation = _header_orientation(im) if fmt in _JPEG_FORMATS or fmt == "TIFF" else 1
        sample_bytes = _sample_bytes(im, data, fmt)
    fmt = "JPEG" if fmt in _JPEG_FORMATS else fmt
    alpha = mode in _ALPHA_MODES or extra is not None
    grey_key = extra if fmt == "PNG" and mode in _GREY_MODES and isinstance(extra, int) else None
    header = _Header(ImageInfo(fmt, width, height, mode), orientation, alpha, grey_key, sample_bytes, jpeg)
    _check_budget(header, _REDUCTIONS[0] if jpeg else 1, max_pixels)  # JPEG again in decode(), at its real scale
    return header


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """Format, size and mode from the header only; rejects empty, unidentifiable, over-cap and truncated data."""
    return _probe(data, max_pixels).info


# ---------------------------------------------------------------------------------------------- decoding


def _reduction(header: _Header, need: tuple[int, int] | None) -> int:
    """Largest JPEG DCT factor f whose ceil(dims / f) still covers need=(w, h) in oriented space."""
    if need is None or header.info.format != "JPEG":
        return 1
    want_w, want_h = need
    width, height = header.info.width, header.info.height
    if header.orientation >= 5:  # 5..8 transpose the image
        width, height = height, width
    for f in _REDUCTIONS:
        if -(-width // f) >= want_w and -(-height // f) >= want_h:
            return f
    return 1


def _decode_failed(exc: Exception) -> ImageRejected:
    """A "decode_failed" rejection naming the last line of an OpenCV error."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return ImageRejected("decode_failed", f"OpenCV: {lines[-1]}")


def _imdecode(buf: np.ndarray, flags: int) -> np.ndarray:
    """cv2.imdecode that turns every failure into ImageRejected("decode_failed")."""
    try:
        img = cv2.imdecode(buf, flags)
    except Exception as exc:  # noqa: BLE001 - cv2.error and friends on hostile bytes
        raise _decode_failed(exc) from None
    if img is None or img.size == 0:
        raise ImageRejected("decode_failed", "OpenCV could not decode the data")
    return img


def _imdecode_exif(buf: np.ndarray) -> tuple[np.ndarray, int]:
    """IMREAD_UNCHANGED decode (keeps alpha, skips orientation) plus the EXIF orientation OpenCV found."""
    try:
        img, kinds, blobs = cv2.imdecodeWithMetadata(buf, cv2.IMREAD_UNCHANGED)
    except Exception as exc:  # noqa: BLE001 - cv2.error and friends on hostile bytes
        raise _decode_failed(exc) from None
    if img is None or img.size == 0:
        raise ImageRejected("decode_failed", "OpenCV could not decode the data")
    orientation = 1
    for kind, blob in zip(np.asarray(kinds).ravel().tolist(), blobs):
        if kind == cv2.IMAGE_METADATA_EXIF:
            orientation = _exif_orientation(np.asarray(blob).tobytes())
    return img, orientation


def _exif_orientation(blob: bytes) -> int:
    """Orientation tag 1..8 from a raw EXIF (TIFF-structured) blob; 1 when absent or corrupt."""
    try:
        exif = Image.Exif()
        exif.load(blob)
        value = exif.get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - corrupt EXIF must not reject an otherwise fine image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1..8 to an (H, W, C) array, like PIL.ImageOps.exif_transpose."""
    if orientation == 2:
        return cv2.flip(img, 1)
    if orientation == 3:
        return cv2.rotate(img, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(img, 0)
    if orientation == 5:
        return cv2.transpose(img)
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(img), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """uint8 stays; uint16 becomes round(v / 257) so 65535 -> 255; other depths are rejected."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return cv2.convertScaleAbs(img, alpha=1 / 257)  # rounds and saturates; exact for all 65536 values
    raise ImageRejected("decode_failed", f"unsupported sample type {img.dtype}")


def _used_bits(raw: np.ndarray) -> int | None:
    """Bits a 16-bit decode's colour values need (12 for a 12-bit camera's unscaled samples); None for 8-bit."""
    if raw.dtype != np.uint16:
        return None
    raw = np.ascontiguousarray(raw)
    if raw.ndim == 3 and raw.shape[2] == 4:  # OR each pixel's 4 samples as one word (a strided max: ~20x slower)
        lanes = np.bitwise_or.reduce(raw.reshape(-1).view(np.uint64), keepdims=True).view(np.uint16)  # B, G, R, A
        return int(np.bitwise_or.reduce(lanes[:3])).bit_length()
    return int(raw.max()).bit_length()


def _composite(img: np.ndarray) -> np.ndarray:
    """(H, W, 4) BGRA uint8/uint16 over black -> (H, W, 3) uint8 BGR in strips; an alpha 0 everywhere is padding."""
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageRejected("decode_failed", f"unsupported sample type {img.dtype}")
    pixels = np.ascontiguousarray(img).reshape(-1, 1, 4)  # (N, 1, 4): OpenCV sees N pixels of 4 channels
    strips = range(0, pixels.shape[0], _STRIP_PIXELS)
    # alpha 0 everywhere is a 4th channel written as padding (RGBX: a camera or driver filling it with 0), not a
    # transparent photo: composited, every part read as black (found by an adversarial test); its colours are used
    padding = not any(cv2.countNonZero(cv2.extractChannel(_row(pixels[s : s + _STRIP_PIXELS]), 3)) for s in strips)
    out = np.empty((pixels.shape[0], 1, 3), np.uint8)
    for start in strips:
        strip = pixels[start : start + _STRIP_PIXELS]
        out[start : start + _STRIP_PIXELS] = (
            _to_uint8(cv2.cvtColor(_row(strip), cv2.COLOR_BGRA2BGR)).reshape(-1, 1, 3) if padding
            else _composite_strip(strip))
    return out.reshape(img.shape[0], img.shape[1], 3)


def _row(px: np.ndarray) -> np.ndarray:
    """(N, 1, C) pixels as one row (1, N, C): OpenCV's per-pixel functions take ~20x longer over N rows of one."""
    return px.reshape(1, -1, px.shape[-1])


def _composite_strip(px: np.ndarray) -> np.ndarray:
    """(N, 1, 4) BGRA uint8/uint16 over black -> (N, 1, 3) uint8 BGR."""
    if px.dtype == np.uint8:
        b, g, r, a = cv2.split(px)  # split/merge beats strided numpy views by ~5x
        return cv2.multiply(cv2.merge((b, g, r)), cv2.merge((a, a, a)), scale=1 / 255)
    weight = px[..., 3:].astype(np.float32) * np.float32(1 / (65535 * 257))
    return np.rint(px[..., :3] * weight).astype(np.uint8)


def _to_bgr(img: np.ndarray, grey_key: int | None = None) -> np.ndarray:
    """Any OpenCV result ((H, W), (H, W, 1|3|4), uint8/uint16) -> (H, W, 3) uint8 BGR, alpha over black."""
    if img.ndim == 3 and img.shape[2] == 4:
        return _composite(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        # OpenCV ignores a grey tRNS colour key; Pillow reports it, so honour it here.
        key = img == grey_key if grey_key is not None else None
        img = cv2.cvtColor(_to_uint8(img), cv2.COLOR_GRAY2BGR)
        if key is not None:
            img[key] = 0
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return _to_uint8(img)
    raise ImageRejected("decode_failed", f"unsupported pixel layout {img.shape}")


def _jpeg_dims(header: _Header, img: np.ndarray, scale: int) -> tuple[int, int]:
    """Full-size oriented (width, height), trusting OpenCV's output shape for whether it rotated 90 degrees."""
    width, height = header.info.width, header.info.height
    plain = (-(-height // scale), -(-width // scale))
    if img.shape[:2] == plain:
        return width, height
    if img.shape[:2] == plain[::-1]:
        return height, width
    raise ImageRejected("decode_failed", f"decoder returned {img.shape[1]}x{img.shape[0]} for {width}x{height}")


def _may_have_run_short(image: np.ndarray, layout: _JpegLayout) -> bool:
    """Cheap sign a scan may have run out of data: several scans, CMYK, or a corner of exact zero-block grey."""
    if layout.progressive or len(layout.scans) > 1 or len(layout.components) == 4:
        return True  # a cut scan need not leave grey blocks here: earlier scans or CMYK conversion colour them
    corners = image[[0, 0, -1, -1], [0, -1, 0, -1]].reshape(4, -1)  # the last block lands in one, whatever EXIF says
    return bool((corners == _ZERO_BLOCK_GREY).all(axis=1).any())


def _scan_mcus(info: ImageInfo, layout: _JpegLayout, scan: _Scan) -> int:
    """MCUs in a scan as libjpeg counts them: the blocks of its one component, else the MCUs of the frame."""
    hmax, vmax = _max_sampling(layout)
    if len(scan.components) == 1:
        _, h, v = layout.components[scan.components[0]]
        return -(-info.width * h // (8 * hmax)) * -(-info.height * v // (8 * vmax))
    return -(-info.width // (8 * hmax)) * -(-info.height // (8 * vmax))


def _restarts_missing(data: bytes, info: ImageInfo, layout: _JpegLayout) -> bool:
    """True when a scan with restart intervals holds fewer RSTn markers than its MCUs need: its data ran short."""
    for scan in layout.scans:
        if scan.restart_interval and scan.components:
            needed = -(-_scan_mcus(info, layout, scan) // scan.restart_interval) - 1
            if len(_JPEG_RST.findall(data, scan.start, scan.end)) < needed:
                return True
    return False


def _with_probe_bytes(data: bytes, layout: _JpegLayout) -> bytes:
    """The JPEG up to its EOI with _PROBE_BYTES after every scan's data, where a complete scan ignores them."""
    parts: list[bytes] = []
    start = 0
    for scan in layout.scans:
        parts += [data[start : scan.end], _PROBE_BYTES]
        start = scan.end
    parts.append(data[start : layout.end])
    return b"".join(parts)


def _pillow_pixels(data: bytes, scale: int) -> bytes:
    """Pillow's decode of a JPEG reduced by up to `scale`; its libjpeg stays silent about corrupt data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=("JPEG", "MPO")) as im:
            im.draft(None, (max(1, im.width // scale), max(1, im.height // scale)))
            return im.tobytes()


def _probe_changes_pixels(data: bytes, layout: _JpegLayout) -> bool:
    """True when bytes added after each scan's data change Pillow's decode: a scan ran short and decoded them."""
    scale = 2 if layout.progressive else 8  # sequential: a short scan changes DC, seen at 1/8; progressive: any band
    try:
        plain = _pillow_pixels(data[: layout.end], scale)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many exception types on hostile bytes
        raise ImageRejected("decode_failed", f"JPEG data Pillow cannot decode: {type(exc).__name__}") from None
    try:
        return _pillow_pixels(_with_probe_bytes(data, layout), scale) != plain
    except Exception:  # noqa: BLE001 - the added bytes were decoded, so a scan ran short
        return True


def _check_scans_complete(data: bytes, header: _Header, image: np.ndarray) -> None:
    """Reject a JPEG whose scan data ran out before covering the frame, which libjpeg only warns about on stderr.

    libjpeg fills what a short scan lacks with zero coefficients. Restart markers show it exactly where there are
    any; otherwise bytes added after each scan's data are decoded in place of the missing data and change the
    pixels, while a complete scan skips them. Both run only when `_may_have_run_short`.
    """
    layout = header.jpeg
    if layout is None or not _may_have_run_short(image, layout):
        return
    if _restarts_missing(data, header.info, layout) or _probe_changes_pixels(data, layout):
        raise ImageRejected("truncated", "JPEG scan data ends before the image is complete (cut short or damaged; "
                                         "the decoder would make up the rest)")


def decode(data: bytes, *, max_pixels: int, need: tuple[int, int] | None = None) -> Decoded:
    """Probe, then decode to (H, W, 3) uint8 BGR with EXIF orientation; JPEGs shrink by DCT while >= need=(w, h)."""
    if need is not None and min(need) <= 0:
        raise ValueError(f"need must be positive, got {need}")
    header = _probe(data, max_pixels)
    fmt = header.info.format
    buf = np.frombuffer(data, np.uint8)
    if fmt == "JPEG":
        scale = _reduction(header, need)
        _check_budget(header, scale, max_pixels)
        raw = _imdecode(buf, _JPEG_FLAGS[scale])  # OpenCV applies EXIF orientation here
        width, height = _jpeg_dims(header, raw, scale)
        _check_scans_complete(data, header, raw)
        image = _to_bgr(raw)
    elif header.alpha:
        raw, orientation = _imdecode_exif(buf)  # IMREAD_UNCHANGED keeps alpha but skips orientation
        image = _orient(_to_bgr(raw, header.grey_key), orientation)
        scale, (height, width) = 1, image.shape[:2]
    else:
        raw = _imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # keeps 16 bits, applies orientation
        image, scale = _to_bgr(raw), 1
        height, width = image.shape[:2]
    turned = width != height and (header.orientation >= 5 if fmt == "TIFF"  # Pillow reports a TIFF's size turned
                                  else (width, height) == (header.info.height, header.info.width))
    return Decoded(np.ascontiguousarray(image), width, height, fmt, scale, _used_bits(raw), turned)


def load(
    path: str | bytes | os.PathLike,
    *,
    max_pixels: int,
    need: tuple[int, int] | None = None,
    max_bytes: int | None = None,
) -> tuple[bytes, Decoded]:
    """read_file then decode the same bytes; returns them so the caller can hash without re-reading."""
    data = read_file(path, max_bytes)
    return data, decode(data, max_pixels=max_pixels, need=need)
