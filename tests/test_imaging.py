"""Tests for inspector.imaging: reading files safely, probing headers, decoding to 8-bit BGR."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import stat
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from inspector import imaging
from inspector.errors import ImageRejected
from inspector.imaging import Decoded, ImageInfo, decode, load, probe, read_file, sha256_hex

CAP = 50_000_000
RED_BGR = (0, 0, 255)
BLUE_BGR = (255, 0, 0)


# ---------------------------------------------------------------------------------------------- helpers


def reason(fn, *args, **kwargs) -> ImageRejected:
    """Call fn expecting ImageRejected and return it."""
    with pytest.raises(ImageRejected) as info:
        fn(*args, **kwargs)
    return info.value


def noisy(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 smooth noise: compresses like a real photo, not like a flat fill."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)


def encode(img: np.ndarray, ext: str, *params: int) -> bytes:
    """cv2.imencode to bytes."""
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def pil_bytes(im: Image.Image, fmt: str, **kwargs) -> bytes:
    """Pillow save to bytes."""
    out = io.BytesIO()
    im.save(out, fmt, **kwargs)
    return out.getvalue()


def write(path: Path, data: bytes) -> Path:
    """Write bytes and return the path."""
    path.write_bytes(data)
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height but carries no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def png_of_zeros(width: int, height: int, depth: int, colour_type: int, channels: int) -> bytes:
    """A PNG of all-zero samples compressed row by row: a huge image in a small file, cheap to make."""
    row = bytes(1 + width * channels * depth // 8)
    z = zlib.compressobj(1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_sof_claiming(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) patched to claim width x height over the same scan data."""
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def with_scans(data: bytes, total: int) -> bytes:
    """A progressive JPEG with its first (DC) scan repeated until it has `total` scans; each copy decodes whole."""
    first = data.index(b"\xff\xda")
    end = min(p for p in (data.find(b"\xff\xc4", first + 2), data.find(b"\xff\xda", first + 2)) if p > 0)
    return data[:end] + data[first:end] * (total - data.count(b"\xff\xda")) + data[end:]


def grey_framed(h: int, w: int) -> np.ndarray:
    """noisy() inside a 16-pixel frame of exact grey 128: its corners look like libjpeg's fill for missing data."""
    img = np.full((h, w, 3), 128, np.uint8)
    img[16:-16, 16:-16] = noisy(h - 32, w - 32)
    return img


_PEAK_SCRIPT = """
import json, sys
from inspector import imaging
from inspector.errors import ImageRejected
def kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))
data = open(sys.argv[1], "rb").read()
before = kb("VmRSS:")
try:
    imaging.decode(data, max_pixels=int(sys.argv[2]))
    reason = "ok"
except ImageRejected as exc:
    reason = exc.reason
print(json.dumps({"reason": reason, "growth": (kb("VmHWM:") - before) * 1024}))
"""


def decode_in_child(path: Path, max_pixels: int) -> dict:
    """Decode a file in a fresh interpreter: its outcome, and how far resident memory rose above where it started."""
    root = Path(imaging.__file__).resolve().parents[1]  # the package under test, not another install
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), str(max_pixels)], cwd=root,
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def exif_with(orientation: int) -> bytes:
    """EXIF blob carrying only the orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def two_tone_rgb(w: int = 80, h: int = 40) -> np.ndarray:
    """(h, w, 3) RGB: left half red, right half blue, a green top-left marker 8x8."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = (255, 0, 0)
    rgb[:, w // 2 :] = (0, 0, 255)
    rgb[:8, :8] = (0, 255, 0)
    return rgb


def pil_oriented_bgr(data: bytes) -> np.ndarray:
    """Reference: Pillow decode + exif_transpose, as (H, W, 3) uint8 BGR."""
    with Image.open(io.BytesIO(data)) as im:
        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[:, :, ::-1])


def finishes(fn, timeout: float = 5.0):
    """Run fn in a daemon thread; fail if it blocks. Returns (result, exception)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - hand it back to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "call blocked"
    return box.get("result"), box.get("error")


# ---------------------------------------------------------------------------------------------- round trips


def test_jpeg_round_trip_is_bgr_uint8(tmp_path: Path) -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:] = RED_BGR
    path = tmp_path / "red.jpg"
    assert cv2.imwrite(str(path), img)
    data, dec = load(path, max_pixels=CAP)
    assert isinstance(dec, Decoded)
    assert (dec.format, dec.width, dec.height, dec.scale) == ("JPEG", 64, 48, 1)
    assert dec.image.shape == (48, 64, 3) and dec.image.dtype == np.uint8
    assert dec.image.flags["C_CONTIGUOUS"]
    b, g, r = dec.image[24, 32].tolist()
    assert r > 240 and g < 15 and b < 15
    assert data == path.read_bytes()


def test_png_round_trip_is_exact(tmp_path: Path) -> None:
    img = noisy(30, 50)
    img[0, 0] = RED_BGR
    path = tmp_path / "a.png"
    assert cv2.imwrite(str(path), img)
    _, dec = load(path, max_pixels=CAP)
    assert (dec.format, dec.width, dec.height, dec.scale) == ("PNG", 50, 30, 1)
    assert dec.image.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(dec.image, img)
    assert dec.image[0, 0].tolist() == list(RED_BGR)


def test_png_named_jpg_is_decoded_by_content(tmp_path: Path) -> None:
    img = noisy(20, 20)
    path = write(tmp_path / "really_a_png.jpg", encode(img, ".png"))
    _, dec = load(path, max_pixels=CAP)
    assert dec.format == "PNG"
    np.testing.assert_array_equal(dec.image, img)


@pytest.mark.parametrize(("ext", "fmt"), [(".bmp", "BMP"), (".tif", "TIFF"), (".ppm", "PPM")])
def test_other_lossless_formats(ext: str, fmt: str) -> None:
    img = noisy(12, 17)
    dec = decode(encode(img, ext), max_pixels=CAP)
    assert dec.format == fmt
    np.testing.assert_array_equal(dec.image, img)


def test_webp_lossless() -> None:
    img = noisy(12, 17)
    dec = decode(encode(img, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101), max_pixels=CAP)
    assert dec.format == "WEBP"
    np.testing.assert_array_equal(dec.image, img)


def test_probe_reads_header_only() -> None:
    info = probe(encode(noisy(30, 50), ".png"), CAP)
    assert info == ImageInfo("PNG", 50, 30, "RGB")
    assert probe(encode(noisy(30, 50)[:, :, 0], ".jpg"), CAP) == ImageInfo("JPEG", 50, 30, "L")


def test_decoded_is_frozen() -> None:
    dec = decode(encode(noisy(4, 4), ".png"), max_pixels=CAP)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dec.width = 3  # type: ignore[misc]


def test_mpo_is_treated_as_jpeg() -> None:
    first = Image.fromarray(two_tone_rgb())
    data = pil_bytes(first, "MPO", save_all=True, append_images=[first.rotate(90)])
    dec = decode(data, max_pixels=CAP)
    assert (dec.format, dec.width, dec.height) == ("JPEG", 80, 40)


# ---------------------------------------------------------------------------------------------- rejections by content


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "zero.jpg", b"")
    assert reason(read_file, path).reason == "empty"
    assert reason(load, path, max_pixels=CAP).reason == "empty"
    assert reason(decode, b"", max_pixels=CAP).reason == "empty"
    assert reason(probe, b"", CAP).reason == "empty"


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.jpg", b"this is not a picture\n" * 10)
    assert reason(load, path, max_pixels=CAP).reason == "not_an_image"


def test_unsupported_format_is_not_an_image() -> None:
    data = pil_bytes(Image.new("RGB", (4, 4)), "PCX")
    assert reason(decode, data, max_pixels=CAP).reason == "not_an_image"


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg(tmp_path: Path, keep: float) -> None:
    data = encode(noisy(300, 400), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 92)
    path = write(tmp_path / "cut.jpg", data[: int(len(data) * keep)])
    err = reason(load, path, max_pixels=CAP)
    assert err.reason == "truncated"
    assert "JPEG" in err.detail


def test_jpeg_missing_only_eoi_is_truncated() -> None:
    data = encode(noisy(64, 64), ".jpg")
    assert data.endswith(b"\xff\xd9")
    assert reason(decode, data[:-2], max_pixels=CAP).reason == "truncated"


def test_jpeg_with_trailing_padding_is_accepted() -> None:
    img = noisy(64, 64)
    data = encode(img, ".jpg")
    plain = decode(data, max_pixels=CAP).image
    for tail in (b"\x00" * 5000, b"\r\n", b"\x00" * 100_000):
        np.testing.assert_array_equal(decode(data + tail, max_pixels=CAP).image, plain)


def test_truncated_png(tmp_path: Path) -> None:
    data = encode(noisy(200, 200), ".png")
    for cut in (len(data) // 2, len(data) - 12):  # mid-IDAT, and just the IEND chunk missing
        path = write(tmp_path / "cut.png", data[:cut])
        assert reason(load, path, max_pixels=CAP).reason == "truncated"


def test_truncated_webp() -> None:
    data = encode(noisy(100, 100), ".webp", cv2.IMWRITE_WEBP_QUALITY, 90)
    assert reason(decode, data[: len(data) // 2], max_pixels=CAP).reason == "truncated"


def test_corrupt_pixel_data_is_decode_failed() -> None:
    data = bytearray(encode(noisy(64, 64), ".png"))
    start = data.index(b"IDAT") + 40
    data[start : start + 200] = bytes(200)  # header and IEND intact, compressed stream broken
    assert reason(decode, bytes(data), max_pixels=CAP).reason == "decode_failed"


def test_header_claiming_more_data_than_present_is_decode_failed() -> None:
    assert reason(decode, png_claiming(20, 20), max_pixels=CAP).reason == "decode_failed"


def test_mutated_bytes_never_escape_as_other_exceptions() -> None:
    rng = np.random.default_rng(1)
    seeds = [encode(noisy(40, 60), ".jpg"), encode(noisy(40, 60), ".png"), encode(noisy(40, 60), ".bmp")]
    outcomes = set()
    for i in range(150):
        data = bytearray(seeds[i % len(seeds)])
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
            data[pos] = int(rng.integers(0, 256))
        try:
            dec = decode(bytes(data), max_pixels=CAP, need=(16, 16))
        except ImageRejected as exc:
            outcomes.add(exc.reason)
        else:
            assert dec.image.ndim == 3 and dec.image.shape[2] == 3 and dec.image.dtype == np.uint8
            outcomes.add("ok")
    assert outcomes <= {"ok", "not_an_image", "truncated", "decode_failed", "too_large"}


def test_jpeg_cut_short_then_given_an_eoi_is_truncated() -> None:
    """Half a JPEG plus FFD9 ends "complete", but libjpeg runs out of scan data and fills the rest: not judged."""
    for params in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]):
        data = encode(grey_framed(240, 320), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 92, *params)
        assert decode(data, max_pixels=CAP).image.shape == (240, 320, 3)  # grey corners alone are no damage
        cut = data[: len(data) // 2] + b"\xff\xd9"
        for need in (None, (40, 30)):
            err = reason(decode, cut, max_pixels=CAP, need=need)
            assert err.reason == "truncated" and "JPEG" in err.detail


def test_progressive_jpeg_cut_inside_its_last_scan_is_truncated() -> None:
    data = encode(noisy(240, 320), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    cut = data[: (last + end) // 2] + data[end:]  # every scan header present, the last scan's data halved
    assert reason(decode, cut, max_pixels=CAP, need=(40, 30)).reason == "truncated"


def test_jpeg_header_claiming_more_than_its_data_is_truncated() -> None:
    """A frame header claiming 2000x2200 over the scan data of a 300x300 image (the issue: 6000x6500 over 900x900)."""
    data = encode(noisy(300, 300), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 92)
    err = reason(decode, jpeg_sof_claiming(data, 2000, 2200), max_pixels=CAP, need=(128, 141))
    assert err.reason == "truncated"


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_bytes_after_the_end_marker_are_accepted(ext: str) -> None:
    """A complete image followed by more than 32 other bytes (a camera's appended data) is judged as it is."""
    data = encode(noisy(64, 64), ext)
    plain = decode(data, max_pixels=CAP).image
    rng = np.random.default_rng(5)
    for tail in (bytes(rng.integers(0, 256, 100, dtype=np.uint8)), b"\xff\xd9" * 40, b"IEND" * 40 + b"x" * 70_000):
        np.testing.assert_array_equal(decode(data + tail, max_pixels=CAP).image, plain)


def test_jpeg_scan_count_is_capped() -> None:
    """Each scan is another pass over every block (20,000 scans: 16 s): more than _MAX_JPEG_SCANS is too_large."""
    data = encode(noisy(48, 64), ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    limit = imaging._MAX_JPEG_SCANS
    assert decode(with_scans(data, limit), max_pixels=CAP).image.shape == (48, 64, 3)
    err = reason(decode, with_scans(data, limit + 1), max_pixels=CAP)
    assert err.reason == "too_large" and f"more than {limit} scans" in err.detail
    assert reason(probe, with_scans(data, 20_000), CAP).reason == "too_large"


def test_jpeg_marker_segments_are_capped() -> None:
    data = encode(noisy(16, 16), ".jpg")
    comments = (b"\xff\xfe\x00\x04hi" * (imaging._MAX_JPEG_SEGMENTS + 1))
    assert reason(decode, data[:2] + comments + data[2:], max_pixels=CAP).reason == "too_large"


# ---------------------------------------------------------------------------------------------- pixel cap


def test_over_cap_rejected_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(noisy(200, 200), ".png")

    def no_decode(*args, **kwargs):
        raise AssertionError("decoder must not run for an over-cap image")

    monkeypatch.setattr(imaging.cv2, "imdecode", no_decode)
    monkeypatch.setattr(imaging.cv2, "imdecodeWithMetadata", no_decode)
    err = reason(decode, data, max_pixels=100 * 100)
    assert err.reason == "too_large"
    assert "200x200" in err.detail and "10000" in err.detail
    assert reason(probe, data, 100 * 100).reason == "too_large"


def test_huge_header_is_too_large_without_pillow_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would raise here
        err = reason(probe, png_claiming(10_000, 10_000), CAP)  # over Pillow's warning limit, under its error
    assert err.reason == "too_large" and "10000x10000" in err.detail


def test_header_past_pillow_bomb_limit_is_too_large() -> None:
    assert reason(decode, png_claiming(100_000, 100_000), max_pixels=CAP).reason == "too_large"


def test_exactly_at_cap_is_accepted() -> None:
    dec = decode(encode(noisy(100, 100), ".png"), max_pixels=100 * 100)
    assert dec.image.shape == (100, 100, 3)


def test_decoded_bytes_count_channels_and_bit_depth() -> None:
    """The cap is on decoded bytes too: 3 bytes x max_pixels, what an 8-bit colour image at the pixel cap holds."""
    rgba16 = np.zeros((100, 100, 4), np.uint16)
    for fn in (probe, lambda data, cap: decode(data, max_pixels=cap)):
        err = reason(fn, encode(rgba16, ".png"), 100 * 100)
        assert err.reason == "too_large" and "4 channels x 16 bits" in err.detail and "80000 bytes" in err.detail
    assert reason(probe, encode(rgba16[..., :3], ".png"), 100 * 100).reason == "too_large"
    exactly = decode(encode(rgba16[:50, :, :3], ".png"), max_pixels=100 * 100)  # 100 x 50 x 3 x 2 = 30000 bytes
    assert exactly.image.shape == (50, 100, 3)


def test_progressive_jpeg_coefficients_count_against_the_cap() -> None:
    """libjpeg holds every DCT coefficient of a progressive JPEG (2 bytes a sample) whatever the output size."""
    img = noisy(100, 100)
    sampling = (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    assert decode(encode(img, ".jpg", *sampling), max_pixels=100 * 100, need=(13, 13)).scale == 8
    err = reason(decode, encode(img, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1, *sampling), max_pixels=100 * 100,
                 need=(13, 13))
    assert err.reason == "too_large" and "progressive JPEG" in err.detail


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS/VmHWM from /proc")
@pytest.mark.parametrize(("size", "depth", "max_pixels", "outcome"), [
    (6320, 16, 40_000_000, "too_large"),  # the 310 KB file: 1.57 GB and 7 s before the cap
    (2738, 8, 10_000_000, "ok"),  # 8-bit RGBA just under the decode cap
    (1936, 16, 10_000_000, "ok"),  # 16-bit RGBA just under the decode cap
])
def test_peak_memory_stays_within_three_times_the_cap(tmp_path: Path, size: int, depth: int, max_pixels: int,
                                                       outcome: str) -> None:
    """A watcher with two workers must stay under 1 GB whatever arrives: decode at most ~3x the 3-byte cap."""
    path = write(tmp_path / "rgba.png", png_of_zeros(size, size, depth, 6, 4))
    got = decode_in_child(path, max_pixels)
    assert got["reason"] == outcome
    assert got["growth"] <= 3 * 3 * max_pixels, f"resident memory rose by {got['growth'] / 2**20:.0f} MB"


# ---------------------------------------------------------------------------------------------- normalisation


def test_16bit_grey_png_scales_to_8bit() -> None:
    values = np.array([[0, 65535, 257 * 100, 128, 129, 257 * 200 + 128]], np.uint16)
    dec = decode(encode(values, ".png"), max_pixels=CAP)
    assert dec.image.shape == (1, 6, 3)
    assert dec.image[0, :, 0].tolist() == [0, 255, 100, 0, 1, 200]
    assert (dec.image[..., 0] == dec.image[..., 1]).all() and (dec.image[..., 1] == dec.image[..., 2]).all()


def test_16bit_colour_png_scales_to_8bit() -> None:
    img = np.array([[[65535, 0, 257 * 100], [257 * 7, 65535, 0]]], np.uint16)
    dec = decode(encode(img, ".png"), max_pixels=CAP)
    assert dec.image.tolist() == [[[255, 0, 100], [7, 255, 0]]]


def test_a_16bit_photo_records_the_bits_its_colour_values_use() -> None:
    """A 12-bit camera writing its samples unscaled fills only the low 12 bits of a 16-bit PNG (found by an adversarial
    test, read "exposure 0.06x"): the decoder records the bits its largest colour value needs; the image is converted
    as before (v / 257), and an alpha at 65535 does not count."""
    bgr = noisy(20, 30).astype(np.uint16)
    right_aligned = (bgr.astype(np.int64) * 4095 // 255).astype(np.uint16)
    dec = decode(encode(right_aligned, ".png"), max_pixels=CAP)
    assert dec.used_bits == 12
    np.testing.assert_array_equal(dec.image, np.rint(right_aligned / 257).astype(np.uint8))
    assert decode(encode(right_aligned[..., 0], ".png"), max_pixels=CAP).used_bits == 12  # grey
    opaque = np.dstack([right_aligned, np.full((20, 30), 65535, np.uint16)])
    assert decode(encode(opaque, ".png"), max_pixels=CAP).used_bits == 12
    assert decode(encode(bgr * 257, ".png"), max_pixels=CAP).used_bits == 16
    assert decode(encode(bgr.astype(np.uint8), ".png"), max_pixels=CAP).used_bits is None  # 8-bit
    assert decode(encode(bgr.astype(np.uint8), ".jpg"), max_pixels=CAP).used_bits is None


def test_16bit_rounding_matches_exact_division() -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(imaging._to_uint8(values), expected)


def test_rgba_png_composites_over_black() -> None:
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 0], [0, 0, 200, 128]]], np.uint8)  # RGBA order
    data = pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG")
    assert probe(data, CAP).mode == "RGBA"
    dec = decode(data, max_pixels=CAP)
    assert dec.image.shape == (1, 3, 3)
    assert dec.image[0, 0].tolist() == [0, 0, 255]  # opaque red keeps its colour (BGR)
    assert dec.image[0, 1].tolist() == [0, 0, 0]  # fully transparent -> black
    assert dec.image[0, 2].tolist() == [round(200 * 128 / 255), 0, 0]  # half alpha blue -> half


def test_an_alpha_channel_zero_everywhere_is_padding_not_transparency(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by an adversarial test: a camera or driver writing a 4th channel as 0 (RGBX) had every photo composited
    to black, and the part read as grey-scale or "exposure 0.00x". An alpha 0 everywhere is padding: the colours are
    used. One pixel with alpha, even in the last strip, makes it transparency again, composited as before."""
    bgr = noisy(20, 30)
    for depth, scale in ((np.uint8, 1), (np.uint16, 257)):
        bgrx = np.dstack([bgr.astype(depth) * depth(scale), np.zeros((20, 30), depth)])
        dec = decode(encode(bgrx, ".png"), max_pixels=CAP)
        np.testing.assert_array_equal(dec.image, bgr)
    rgbx = Image.fromarray(np.dstack([bgr[..., ::-1], np.zeros((20, 30), np.uint8)]), "RGBA")
    np.testing.assert_array_equal(decode(pil_bytes(rgbx, "PNG"), max_pixels=CAP).image, bgr)
    monkeypatch.setattr(imaging, "_STRIP_PIXELS", 64)  # the one opaque pixel lies in the last of 10 strips
    bgra = np.dstack([bgr, np.zeros((20, 30), np.uint8)])
    bgra[-1, -1, 3] = 255
    dec = decode(encode(bgra, ".png"), max_pixels=CAP)
    assert dec.image[-1, -1].tolist() == bgr[-1, -1].tolist() and not dec.image[:-1].any()


def test_16bit_rgba_png_composites_over_black() -> None:
    bgra = np.array([[[0, 0, 65535, 65535], [0, 65535, 0, 0], [65535, 0, 0, 32768]]], np.uint16)
    dec = decode(encode(bgra, ".png"), max_pixels=CAP)
    assert dec.image.tolist() == [[[0, 0, 255], [0, 0, 0], [128, 0, 0]]]


def test_la_png_composites_over_black() -> None:
    la = np.array([[[100, 255], [200, 0]]], np.uint8)
    dec = decode(pil_bytes(Image.fromarray(la, "LA"), "PNG"), max_pixels=CAP)
    assert dec.image.tolist() == [[[100, 100, 100], [0, 0, 0]]]


def test_palette_with_transparency_composites_over_black() -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putdata([0, 1])
    dec = decode(pil_bytes(pal, "PNG", transparency=0), max_pixels=CAP)
    assert dec.image.tolist() == [[[0, 0, 0], [0, 255, 0]]]
    plain = decode(pil_bytes(pal, "PNG"), max_pixels=CAP)
    assert plain.image.tolist() == [[[0, 0, 255], [0, 255, 0]]]


def test_gif_transparency_composites_over_black() -> None:
    gif = Image.new("P", (2, 1))
    gif.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    gif.putdata([0, 1])
    dec = decode(pil_bytes(gif, "GIF", transparency=0), max_pixels=CAP)
    assert (dec.format, dec.image.tolist()) == ("GIF", [[[0, 0, 0], [0, 255, 0]]])


def test_grey_png_with_colour_key_transparency() -> None:
    grey = Image.fromarray(np.array([[10, 20]], np.uint8), "L")
    dec = decode(pil_bytes(grey, "PNG", transparency=10), max_pixels=CAP)
    assert dec.image.tolist() == [[[0, 0, 0], [20, 20, 20]]]


def test_rgb_png_with_colour_key_transparency() -> None:
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8))
    dec = decode(pil_bytes(rgb, "PNG", transparency=(255, 0, 0)), max_pixels=CAP)
    assert dec.image.tolist() == [[[0, 0, 0], [0, 255, 0]]]


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_grayscale_becomes_three_equal_channels(ext: str) -> None:
    grey = noisy(20, 30)[:, :, 1]
    dec = decode(encode(grey, ext), max_pixels=CAP)
    assert dec.image.shape == (20, 30, 3) and dec.image.dtype == np.uint8
    assert (dec.image[..., 0] == dec.image[..., 1]).all() and (dec.image[..., 1] == dec.image[..., 2]).all()
    if ext == ".png":
        np.testing.assert_array_equal(dec.image[..., 0], grey)


def test_cmyk_jpeg_becomes_bgr() -> None:
    data = pil_bytes(Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK"), "JPEG", quality=95)
    assert probe(data, CAP).mode == "CMYK"
    b, g, r = decode(data, max_pixels=CAP).image[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60


# ---------------------------------------------------------------------------------------------- orientation


def test_jpeg_exif_orientation_6_rotates_clockwise(tmp_path: Path) -> None:
    path = write(tmp_path / "rot.jpg", pil_bytes(Image.fromarray(two_tone_rgb()), "JPEG", exif=exif_with(6), quality=95))
    assert probe(path.read_bytes(), CAP) == ImageInfo("JPEG", 80, 40, "RGB")  # header dims, as stored
    _, dec = load(path, max_pixels=CAP)
    assert (dec.width, dec.height) == (40, 80)
    assert dec.image.shape == (80, 40, 3)
    # 90 degrees clockwise: stored left half (red) becomes the top half; the green corner goes top-right.
    top, bottom = dec.image[20, 20].tolist(), dec.image[60, 20].tolist()
    assert top[2] > 240 and top[0] < 20, top
    assert bottom[0] > 240 and bottom[2] < 20, bottom
    assert dec.image[3, 36, 1] > 200 and dec.image[3, 3, 1] < 50


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_orientation_matches_pillow(orientation: int, mode: str) -> None:
    im = Image.fromarray(two_tone_rgb(30, 20)).convert(mode)  # RGBA takes the IMREAD_UNCHANGED path
    data = pil_bytes(im, "PNG", exif=exif_with(orientation))
    dec = decode(data, max_pixels=CAP)
    expected = pil_oriented_bgr(data)
    np.testing.assert_array_equal(dec.image, expected)
    assert (dec.height, dec.width) == expected.shape[:2]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_matches_pillow(orientation: int) -> None:
    data = pil_bytes(Image.fromarray(two_tone_rgb(32, 16)), "JPEG", exif=exif_with(orientation), quality=100)
    dec = decode(data, max_pixels=CAP)
    expected = pil_oriented_bgr(data)
    assert dec.image.shape == expected.shape
    assert (dec.height, dec.width) == expected.shape[:2]
    assert np.abs(dec.image.astype(int) - expected).mean() < 3


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB"),
                                           ("WEBP", "RGBA"), ("TIFF", "RGB"), ("TIFF", "RGBA")])
def test_decoded_says_whether_exif_orientation_turned_the_photo(fmt: str, mode: str) -> None:
    """The Inspector names EXIF orientation when a turned photo has another shape than the trained ones (found by an
    adversarial test: a camera writing orientation inconsistently read "camera replaced"): orientations 5..8 swap
    width and height, which `turned` says (a square photo keeps its shape: not turned); 1..4 never."""
    kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    for (w, h), orientation, turned in (((30, 20), 6, True), ((30, 20), 5, True), ((30, 20), 8, True),
                                        ((30, 20), 3, False), ((30, 20), 1, False), ((24, 24), 6, False)):
        im = Image.fromarray(two_tone_rgb(w, h)).convert(mode)
        dec = decode(pil_bytes(im, fmt, exif=exif_with(orientation), **kwargs), max_pixels=CAP)
        assert (dec.turned, (dec.width, dec.height)) == (turned, (h, w) if turned else (w, h)), (orientation, w, h)


def test_webp_with_alpha_applies_orientation() -> None:
    im = Image.fromarray(two_tone_rgb(30, 20)).convert("RGBA")
    data = pil_bytes(im, "WEBP", exif=exif_with(6), lossless=True)
    dec = decode(data, max_pixels=CAP)
    np.testing.assert_array_equal(dec.image, pil_oriented_bgr(data))
    assert (dec.width, dec.height) == (20, 30)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_tiff_orientation_is_applied_once(orientation: int, mode: str) -> None:
    data = pil_bytes(Image.fromarray(two_tone_rgb(30, 20)).convert(mode), "TIFF", exif=exif_with(orientation))
    dec = decode(data, max_pixels=CAP)
    expected = pil_oriented_bgr(data)
    np.testing.assert_array_equal(dec.image, expected)
    assert (dec.height, dec.width) == expected.shape[:2]


# ---------------------------------------------------------------------------------------------- reduced JPEG decode


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode(noisy(1200, 1600), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)


@pytest.mark.parametrize(
    ("need", "scale", "shape"),
    [
        ((128, 96), 8, (150, 200, 3)),
        ((200, 150), 8, (150, 200, 3)),
        ((201, 150), 4, (300, 400, 3)),
        ((500, 400), 2, (600, 800, 3)),
        ((801, 10), 1, (1200, 1600, 3)),
        ((5000, 5000), 1, (1200, 1600, 3)),
        (None, 1, (1200, 1600, 3)),
    ],
)
def test_reduced_jpeg_decode(big_jpeg: bytes, need, scale: int, shape) -> None:
    dec = decode(big_jpeg, max_pixels=CAP, need=need)
    assert (dec.scale, dec.image.shape) == (scale, shape)
    assert (dec.width, dec.height) == (1600, 1200)
    assert dec.image.flags["C_CONTIGUOUS"] and dec.image.dtype == np.uint8


def test_reduced_decode_ceil_dims_and_content() -> None:
    img = noisy(1001, 1503)
    dec = decode(encode(img, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95), max_pixels=CAP, need=(188, 126))
    assert dec.scale == 8 and dec.image.shape == (126, 188, 3)
    small = cv2.resize(img, (188, 126), interpolation=cv2.INTER_AREA)
    assert np.abs(dec.image.astype(int) - small).mean() < 6


def test_reduced_decode_respects_orientation() -> None:
    rgb = cv2.resize(two_tone_rgb(), (1600, 800), interpolation=cv2.INTER_NEAREST)
    data = pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif_with(6), quality=90)
    # Oriented 800x1600; need (100, 200) fits at 1/8 only because of the swap (stored 1600x800 / 8 = 200x100).
    dec = decode(data, max_pixels=CAP, need=(100, 200))
    assert dec.scale == 8 and dec.image.shape == (200, 100, 3)
    assert (dec.width, dec.height) == (800, 1600)
    dec = decode(data, max_pixels=CAP, need=(150, 150))
    assert dec.scale == 4 and dec.image.shape == (400, 200, 3)


def test_need_is_ignored_for_png() -> None:
    dec = decode(encode(noisy(64, 64), ".png"), max_pixels=CAP, need=(8, 8))
    assert dec.scale == 1 and dec.image.shape == (64, 64, 3)


def test_bad_arguments_are_value_errors(big_jpeg: bytes) -> None:
    with pytest.raises(ValueError):
        decode(big_jpeg, max_pixels=CAP, need=(0, 10))
    with pytest.raises(ValueError):
        decode(encode(noisy(4, 4), ".png"), max_pixels=CAP, need=(10, -1))
    with pytest.raises(ValueError):
        decode(big_jpeg, max_pixels=0)


# ---------------------------------------------------------------------------------------------- files


def test_symlink_is_rejected(tmp_path: Path) -> None:
    target = write(tmp_path / "real.png", encode(noisy(8, 8), ".png"))
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert reason(read_file, link).reason == "symlink"
    assert reason(load, link, max_pixels=CAP).reason == "symlink"
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "nowhere")
    assert reason(read_file, dangling).reason == "symlink"


def test_symlink_swapped_in_after_lstat_is_caught_by_nofollow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write(tmp_path / "real.png", encode(noisy(8, 8), ".png"))
    link = tmp_path / "link.png"
    link.symlink_to(target)
    monkeypatch.setattr(imaging.os, "lstat", lambda p: os.stat(target))  # the race: lstat saw a file
    assert reason(read_file, link).reason == "symlink"


def test_fifo_is_not_a_file_and_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    _, err = finishes(lambda: read_file(fifo))
    assert isinstance(err, ImageRejected) and err.reason == "not_a_file"


def test_fifo_swapped_in_after_lstat_does_not_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    regular = write(tmp_path / "r.jpg", b"x")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    monkeypatch.setattr(imaging.os, "lstat", lambda p: os.stat(regular))  # open() must still not block
    _, err = finishes(lambda: read_file(fifo))
    assert isinstance(err, ImageRejected) and err.reason == "not_a_file"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "x.jpg"
    folder.mkdir()
    assert reason(read_file, folder).reason == "not_a_file"
    assert reason(load, folder, max_pixels=CAP).reason == "not_a_file"


def test_device_is_not_a_file() -> None:
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("/dev/null is not a character device here")
    assert reason(read_file, "/dev/null").reason == "not_a_file"


def test_mode_000_is_unreadable(tmp_path: Path) -> None:
    """A real mode-000 file. As root, in a child without CAP_DAC_OVERRIDE (root otherwise reads anything)."""
    import subprocess
    import sys

    from watchkit import drop_dac_override

    path = write(tmp_path / "locked.jpg", encode(noisy(8, 8), ".jpg"))
    path.chmod(0)
    code = ("import sys\nfrom inspector.imaging import read_file\nfrom inspector.errors import ImageRejected\n"
            "try:\n    read_file(sys.argv[1])\nexcept ImageRejected as e:\n    print(e.reason, '|', e.detail)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                              preexec_fn=drop_dac_override if os.geteuid() == 0 else None)
    finally:
        path.chmod(0o600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unreadable |") and "Permission denied" in done.stdout


def test_permission_error_on_open_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "locked.jpg", b"data")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(imaging.os, "open", denied)
    err = reason(read_file, path)
    assert err.reason == "unreadable" and "Permission denied" in err.detail


def test_io_error_while_reading_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "flaky.jpg", b"data")

    def eio(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as patch:
        patch.setattr(imaging.os, "read", eio)
        err = reason(read_file, path)
    assert err.reason == "unreadable" and os.strerror(errno.EIO) in err.detail


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    err = reason(read_file, tmp_path / "gone.jpg")
    assert err.reason == "unreadable" and "No such file" in err.detail


def test_nul_in_path_is_unreadable(tmp_path: Path) -> None:
    assert reason(read_file, str(tmp_path / "a\x00b.jpg")).reason == "unreadable"


def test_max_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "a.png", encode(noisy(16, 16), ".png"))
    size = path.stat().st_size
    assert read_file(path, max_bytes=size) == path.read_bytes()
    err = reason(read_file, path, max_bytes=size - 1)
    assert err.reason == "too_large" and str(size - 1) in err.detail
    assert reason(load, path, max_pixels=CAP, max_bytes=10).reason == "too_large"


def test_file_growing_past_max_bytes_is_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "a.bin", b"x" * 100)
    real_fstat = os.fstat

    def small_fstat(fd: int):
        st = real_fstat(fd)
        return os.stat_result((st.st_mode, *st[1:6], 10, *st[7:]))  # claims 10 bytes

    monkeypatch.setattr(imaging.os, "fstat", small_fstat)
    assert reason(read_file, path, max_bytes=50).reason == "too_large"
    assert read_file(path) == b"x" * 100


def test_large_file_reads_completely(tmp_path: Path) -> None:
    payload = os.urandom(3 * (1 << 20) + 17)
    assert read_file(write(tmp_path / "big.bin", payload)) == payload


def test_non_utf8_file_name_is_readable(tmp_path: Path) -> None:
    data = encode(noisy(10, 12), ".png")
    raw = os.path.join(os.fsencode(tmp_path), b"bad\xff.jpg")
    with open(raw, "wb") as fh:
        fh.write(data)
    assert read_file(raw) == data
    got, dec = load(os.fsdecode(raw), max_pixels=CAP)  # str with a surrogate escape
    assert got == data and dec.image.shape == (10, 12, 3)


def test_non_utf8_name_in_rejection_is_printable(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"empty\xff.jpg")
    open(raw, "wb").close()
    err = reason(read_file, raw)
    assert err.reason == "empty"
    str(err).encode("utf-8")  # no lone surrogates: safe to log or print
    assert "\\xff" in err.detail


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(b"") == hashlib.sha256(b"").hexdigest()


def test_load_returns_the_bytes_it_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "a.png", encode(noisy(10, 10), ".png"))
    calls = []
    real_open = os.open
    monkeypatch.setattr(imaging.os, "open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    data, dec = load(path, max_pixels=CAP)
    assert len(calls) == 1
    assert sha256_hex(data) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dec.image.shape == (10, 10, 3)


def test_the_marker_search_finds_what_the_regex_finds():
    """_next_marker (regex near pos, numpy in chunks beyond) returns the first match of _JPEG_MARKER, wherever it
    lies: inside the window, across its last byte, across a chunk's edge, or nowhere."""
    from inspector import imaging as im

    rng = np.random.default_rng(5)
    window, chunk = im._MARKER_WINDOW, im._MARKER_CHUNK
    cases = []
    for size in (10, window - 1, window, window + 1, window + chunk - 3, window + chunk + 5, 3 * chunk):
        for _ in range(4):  # entropy-coded-like data: FF always stuffed (FF00) or a restart (FFD0-D7) or fill (FFFF)
            body = rng.integers(0, 255, size, dtype=np.uint8)
            ffs = rng.choice(size - 1, size=min(size - 1, 40), replace=False)
            body[ffs] = 0xFF
            body[ffs + 1] = rng.choice([0x00, 0xD3, 0xFF], size=len(ffs))
            body[body == 0xFF] = 0xFF
            cases.append(body)
    placed = []
    for body in cases:
        data = bytearray(body.tobytes())
        for where in (len(data) // 2, window - 1, window, window + chunk - 1, window + chunk, len(data) - 2):
            if 0 <= where < len(data) - 1:
                marked = bytearray(data)
                marked[where : where + 2] = b"\xff\xd9"
                placed.append(bytes(marked))
        placed.append(bytes(data))
    for data in placed:
        for pos in (0, 1, 7):
            expected = im._JPEG_MARKER.search(data, pos)
            assert im._next_marker(data, pos) == (None if expected is None else expected.start())
