"""Image input adapter: file or bytes in, decoded 8-bit BGR image or a typed `ImageRejected` out."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass

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
_PADDING = b"\x00 \t\r\n\f\v"  # trailing bytes some writers append after the end marker
_TAIL_WINDOW = 1 << 16
_END_SEARCH = 32
_ORIENTATION_TAG = 0x0112
_READ_CHUNK = 1 << 20


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


@dataclass(frozen=True)
class _Header:
    """What probing learns beyond ImageInfo: EXIF orientation (JPEG only), alpha, a grey PNG's tRNS key."""

    info: ImageInfo
    orientation: int
    alpha: bool
    grey_key: int | None


# ---------------------------------------------------------------------------------------------- files


def printable(path: str | bytes | os.PathLike) -> str:
    """Printable form of a path, even when the name is not valid UTF-8 (bad bytes become \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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


def _tail(data: bytes) -> bytes:
    """The last bytes of data once trailing zero/whitespace padding is stripped."""
    tail = data[-_TAIL_WINDOW:].rstrip(_PADDING)
    if not tail and len(data) > _TAIL_WINDOW:
        tail = data.rstrip(_PADDING)
    return tail[-_END_SEARCH:]


def _check_complete(data: bytes, fmt: str) -> None:
    """Reject JPEG without EOI, PNG without IEND, WebP shorter than its RIFF size: cheap truncation tests."""
    if fmt in _JPEG_FORMATS:
        missing = b"\xff\xd9" not in _tail(data)
    elif fmt == "PNG":
        missing = b"IEND" not in _tail(data)
    elif fmt == "WEBP":  # checked before Pillow sees it: libwebp's demuxer refuses short files outright
        missing = len(data) < 8 + int.from_bytes(data[4:8], "little")
    else:
        return
    if missing:
        end = {"PNG": "IEND chunk", "WEBP": "RIFF length"}.get(fmt, "EOI marker")
        raise ImageRejected("truncated", f"{fmt} data ends before its {end} ({len(data)} bytes)")


def _jpeg_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8 of a JPEG (its APP1 segment is already parsed); 1 when absent or corrupt."""
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
        orientation = _jpeg_orientation(im) if fmt in _JPEG_FORMATS else 1
    fmt = "JPEG" if fmt in _JPEG_FORMATS else fmt
    alpha = mode in _ALPHA_MODES or extra is not None
    grey_key = extra if fmt == "PNG" and mode in _GREY_MODES and isinstance(extra, int) else None
    return _Header(ImageInfo(fmt, width, height, mode), orientation, alpha, grey_key)


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


def _composite(img: np.ndarray) -> np.ndarray:
    """(H, W, 4) BGRA uint8/uint16 over black -> (H, W, 3) uint8 BGR."""
    if img.dtype == np.uint8:
        b, g, r, a = cv2.split(img)  # split/merge beats strided numpy views by ~5x
        return cv2.multiply(cv2.merge((b, g, r)), cv2.merge((a, a, a)), scale=1 / 255)
    if img.dtype == np.uint16:
        weight = img[..., 3:].astype(np.float32) * np.float32(1 / (65535 * 257))
        return np.rint(img[..., :3] * weight).astype(np.uint8)
    raise ImageRejected("decode_failed", f"unsupported sample type {img.dtype}")


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


def decode(data: bytes, *, max_pixels: int, need: tuple[int, int] | None = None) -> Decoded:
    """Probe, then decode to (H, W, 3) uint8 BGR with EXIF orientation; JPEGs shrink by DCT while >= need=(w, h)."""
    if need is not None and min(need) <= 0:
        raise ValueError(f"need must be positive, got {need}")
    header = _probe(data, max_pixels)
    fmt = header.info.format
    buf = np.frombuffer(data, np.uint8)
    if fmt == "JPEG":
        scale = _reduction(header, need)
        raw = _imdecode(buf, _JPEG_FLAGS[scale])  # OpenCV applies EXIF orientation here
        width, height = _jpeg_dims(header, raw, scale)
        image = _to_bgr(raw)
    elif header.alpha:
        raw, orientation = _imdecode_exif(buf)  # IMREAD_UNCHANGED keeps alpha but skips orientation
        image = _orient(_to_bgr(raw, header.grey_key), orientation)
        scale, (height, width) = 1, image.shape[:2]
    else:
        raw = _imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # keeps 16 bits, applies orientation
        image, scale = _to_bgr(raw), 1
        height, width = image.shape[:2]
    return Decoded(np.ascontiguousarray(image), width, height, fmt, scale)


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
