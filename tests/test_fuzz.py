"""Hostile input: generated and mutated images, stroke recordings, profiles and bundle manifests.

Each input is either accepted or refused with the documented EdgeVerifyError subclass (ImageError,
CaptureError, ProfileError, ModelError); nothing else may escape and nothing may hang. Oversized
images (decompression bombs) are refused from their header, before any pixel is decoded.

Examples per target: 200 by default (CI); EDGE_VERIFY_FUZZ_EXAMPLES=10000 for the long run:
    EDGE_VERIFY_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/test_fuzz.py
"""
import base64
import hashlib
import io
import json
import os
import resource
import struct
import tracemalloc
import zlib
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from edge_verify.edge import api, transfer
from edge_verify.edge.bundle import Bundle
from edge_verify.edge.capture import pad
from edge_verify.edge.capture.pad import read_strokes, render_strokes
from edge_verify.edge.errors import CaptureError, EdgeVerifyError, ImageError, ModelError, ProfileError
from edge_verify.edge.image_io import load_image
from edge_verify.edge.limits import MAX_DECODED_BYTES, MAX_LINE, MAX_PIXELS, MAX_SIDE
from edge_verify.edge.store import Store
from edge_verify.edge.inference import load_bundle
from edge_verify.edge.preprocess import INPUT_SIZE, PREPROCESS_VERSION, preprocess
from edge_verify.edge.profiles import SCHEMA, load_profile

EXAMPLES = int(os.environ.get("EDGE_VERIFY_FUZZ_EXAMPLES", "200"))
# The deadline only catches hangs: one input taking seconds is a bug, a slow machine is not.
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------- (a) images


def _seed_images() -> list[bytes]:
    """Small real encodings of a grey, a colour and a transparent image in every accepted format."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    colour = rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (17, 19, 4), dtype=np.uint8)
    seeds = []
    for suffix in (".png", ".jpg", ".bmp", ".tiff", ".webp"):
        for image in (grey, colour) + ((alpha,) if suffix in (".png", ".tiff", ".webp") else ()):
            ok, encoded = cv2.imencode(suffix, image)
            assert ok, suffix
            seeds.append(encoded.tobytes())
    ok, progressive = cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    seeds.append(progressive.tobytes())
    ok, sixteen = cv2.imencode(".png", grey.astype(np.uint16) * 257)
    seeds.append(sixteen.tobytes())
    return seeds


SEED_IMAGES = _seed_images()
MAGIC = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*",
         b"RIFF\x00\x00\x00\x00WEBPVP8X", b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8 "]


@st.composite
def mutated(draw, seeds):
    """A seed with a few bytes flipped, inserted, deleted or the tail cut off."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


image_bytes = st.one_of(
    mutated(SEED_IMAGES),
    st.binary(max_size=512),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=64)),
)


@FUZZ
@given(image_bytes)
def test_load_image_takes_any_bytes(data):
    try:
        image = load_image(data)
    except ImageError:
        return
    assert image.dtype == np.uint8
    assert image.ndim == 2 or image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.size > 0


@st.composite
def images(draw):
    """uint8 grey, BGR or BGRA arrays of random shapes (empty, tiny, thin, ordinary) and content."""
    height, width = draw(st.one_of(
        st.tuples(st.integers(0, 300), st.integers(0, 300)),
        st.tuples(st.integers(16, 24), st.integers(16_000, 40_000)),  # thin strips, shrunk to < 1 px high
    ))
    if draw(st.booleans()):
        height, width = width, height
    channels = draw(st.sampled_from([None, 3, 4]))
    shape = (height, width) if channels is None else (height, width, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "constant", "strokes", "sparse", "extremes"]))
    if kind == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "constant":
        return np.full(shape, draw(st.integers(0, 255)), np.uint8)
    if kind == "extremes":
        return rng.choice(np.array([0, 255], np.uint8), shape)
    image = np.full(shape, draw(st.integers(120, 255)), np.uint8)
    if kind == "sparse":
        image[rng.random(shape[:2]) < draw(st.floats(0, 0.2))] = 0
        return image
    for _ in range(draw(st.integers(1, 8)) if image.size else 0):  # pen strokes
        points = rng.integers(-5, max(height, width) + 5, (2, 2))
        cv2.line(image, tuple(map(int, points[0])), tuple(map(int, points[1])),
                 (0, 0, 0, 255) if channels else 0, int(rng.integers(1, 6)))
    return image


@FUZZ
@given(images())
@example(np.tile(np.array([[0, 255, 255]], np.uint8), (16, 11_000)))  # found: resized to 0 px high
@example(np.zeros((40_000, 17, 3), np.uint8))
def test_preprocess_takes_any_image(image):
    try:
        signature = preprocess(image)
    except ImageError as error:
        assert error.reason in ("too_small", "blank")
        return
    assert signature.shape == INPUT_SIZE and signature.dtype == np.float32
    assert np.isfinite(signature).all() and signature.min() >= 0 and signature.max() <= 1


@FUZZ
@given(st.sampled_from([(20, 20, 1), (20, 20, 2), (20, 20, 5), (20,), (2, 20, 20, 3)]),
       st.sampled_from([np.uint8, np.uint16, np.float32, np.int8, bool]))
def test_preprocess_refuses_other_arrays_with_value_error(shape, dtype):
    assume(not (dtype is np.uint8 and len(shape) == 3 and shape[2] in (3, 4)))
    with pytest.raises(ValueError, match="preprocess takes"):
        preprocess(np.zeros(shape, dtype))


def _png_header(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _jpeg_header(width, height):
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" \
        + b"\xff\xc0" + struct.pack(">H", 2 + len(sof)) + sof + b"\xff\xda" + b"\x00" * 64


def _bmp_header(width, height):
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\x00" * 64


def _tiff_header(width, height):
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 200), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 64)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def _webp_header(width, height):
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


BOMBS = [(header, width, height) for header in (_png_header, _jpeg_header, _bmp_header, _tiff_header, _webp_header)
         for width, height in [(100_000, 100_000), (65_535, 65_535), (60_000, 10), (10_000, 10_000)]
         if header is not _jpeg_header or width <= 65_535]  # a JPEG header holds 16-bit sizes


@pytest.mark.parametrize("header, width, height", BOMBS)
def test_decompression_bombs_are_refused_before_decoding(header, width, height):
    data = header(width, height)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as refused:
            load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.reason == "too_large"
    assert f"{width}x{height}" in str(refused.value)
    assert peak < 1_000_000  # nothing near a 10 Gpixel buffer (or even a 1 Mpixel one)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000


def _png_header_of(width, height, depth, colour):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}  # what OpenCV decodes each colour type to


@FUZZ
@given(st.integers(1, MAX_SIDE), st.integers(1, MAX_SIDE), st.sampled_from([8, 16]), st.sampled_from(list(PNG_CHANNELS)))
@example(6000, 5000, 16, 2)  # 16-bit RGB: 180 MB decoded (400 MB at peak) from a 200 KB file (issue 15.9)
@example(7000, 7000, 8, 0)   # 49 Mpixel grey: within every cap
def test_png_headers_are_refused_by_their_decoded_size(width, height, depth, colour):
    decoded = width * height * PNG_CHANNELS[colour] * depth // 8
    with pytest.raises(ImageError) as refused:
        load_image(_png_header_of(width, height, depth, colour))  # a header and no pixels
    too_large = width * height > MAX_PIXELS or decoded > MAX_DECODED_BYTES
    assert (refused.value.reason == "too_large") == too_large, (refused.value, decoded)


def test_bomb_headers_are_refused_for_their_size_alone():
    """The crafted headers are real enough: the same header at 1x1 is not refused as too large."""
    for header in (_png_header, _jpeg_header, _bmp_header, _tiff_header, _webp_header):
        try:
            load_image(header(1, 1))
        except ImageError as error:
            assert error.reason == "unreadable", header.__name__

# ---------------------------------------------------------------- (b) pen strokes


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**6, 10**6),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, 1, 0.5, 1e-320, 5e-324, -0.0, 1e308, 10**309]),
)
JSON_VALUES = st.one_of(NUMBERS, st.text(max_size=8), st.booleans(), st.none(),
                        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
KEYS = st.sampled_from(["x", "y", "pressure", "t", "up", "end", "X", "", "é", "\x00"])
RAW_LINES = st.sampled_from([
    '{"x": 1e999, "y": 0, "up": true}', '{"x": NaN, "y": 1}', '{"x": -Infinity, "y": 1}',
    '{"x": 1' + "0" * 5000 + ', "y": 2, "up": true}', "[" * 100_000, '{"a":' * 50_000,
    '{"end": true}', '{"end": 1}', "", "   ", "\ufeff{}", '"x"', "null", "{", "\x00", "\u2028",
    '{"x": 1, "y": 2, "up": true}', '{"x": 3, "y": 4, "up": true}', '{"x": 1, "y": 1e-320, "up": true}',
])


def _json_line(record):
    return json.dumps(record, allow_nan=True, ensure_ascii=False)


jsonl_line = st.one_of(
    st.dictionaries(KEYS, JSON_VALUES, max_size=6).map(_json_line),
    st.fixed_dictionaries({"x": NUMBERS, "y": NUMBERS}, optional={"pressure": NUMBERS, "t": NUMBERS,
                                                                   "up": st.booleans()}).map(_json_line),
    RAW_LINES,
    st.text(max_size=40),
)
CELLS = st.one_of(st.sampled_from(["", "0", "1", "0.5", "nan", "NaN", "inf", "-inf", "1e999", "1e-320", "1" + "0" * 400,
                                   "true", "false", "TRUE", "yes", "end", "END", '"', '""', "a,b", "\r", " ", "x", "é"]),
                  NUMBERS.map(str), st.text(max_size=6))
HEADERS = st.one_of(st.sampled_from(["x,y", "x,y,pressure,t,up", "X, Y ,Up", "y,x,up", "x,y,up,up", "pressure", "end"]),
                    st.lists(st.sampled_from(["x", "y", "pressure", "t", "up", "", "z"]), max_size=6).map(",".join))
csv_line = st.one_of(st.lists(CELLS, min_size=1, max_size=6).map(",".join), st.text(max_size=30),
                     st.sampled_from(["end", "\x00,\x00", "x" * 200_000 + ",1", '"unterminated,1']))


def _as_lines(lines, as_bytes):
    return [line.encode("utf-8", "surrogatepass") + b"\n" for line in lines] if as_bytes else [line + "\n" for line in lines]


def _check_strokes(lines, fmt):
    try:
        strokes = read_strokes(lines, fmt, "fuzz")
    except CaptureError:
        return
    for stroke in strokes:
        assert stroke.ndim == 2 and stroke.shape[1] == 3 and len(stroke) > 0 and np.isfinite(stroke).all()
    drawing = render_strokes(strokes)  # whatever the parser accepts can be drawn
    assert drawing.dtype == np.uint8 and drawing.ndim == 2 and drawing.shape[0] < 2000 and drawing.shape[1] < 2000


@FUZZ
@given(st.lists(jsonl_line, max_size=12), st.booleans())
@example(['{"x": 1' + "0" * 400 + ', "y": 0}'], False)  # found: OverflowError (int too large for a float)
@example(['{"x": 1' + "0" * 5000 + ', "y": 0}'], False)  # found: ValueError (over 4300 digits)
@example(["[" * 100_000], False)  # found: RecursionError
@example(['{"x": 0, "y": 0}', '{"x": 5e-324, "y": 0, "up": true}'], False)  # found: drawing 0 px apart
def test_read_strokes_takes_any_json_lines(lines, as_bytes):
    _check_strokes(_as_lines(lines, as_bytes), "jsonl")


@FUZZ
@given(HEADERS, st.lists(csv_line, max_size=12), st.booleans())
@example("x,y", ["x" * 200_000 + ",1"], False)  # found: csv.Error (field larger than field limit)
@example("x,y,up", ["1,2,a\rb"], True)  # a carriage return inside a line from a serial port
def test_read_strokes_takes_any_csv(header, rows, as_bytes):
    _check_strokes(_as_lines([header] + rows, as_bytes), "csv")


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=8), st.sampled_from(["jsonl", "csv"]))
def test_read_strokes_takes_any_bytes(lines, fmt):
    _check_strokes(lines, fmt)


class EndlessStream:
    """A stream that never ends (as /dev/zero, or a pad that never stops sending); counts what was read."""

    def __init__(self, line: str):
        self.line, self.read = line, 0

    def readline(self, limit=-1):
        text = self.line if limit < 0 else self.line[:limit]
        self.read += len(text)
        return text


@FUZZ
@given(st.sampled_from(["\x00" * 50, '{"x": 1, "y": 2}\n', "x,y\n", "\n", "a" * (MAX_LINE + 7)]),
       st.sampled_from(["jsonl", "csv"]), st.integers(100, 5000))
def test_read_strokes_stops_at_the_size_caps_on_an_endless_stream(line, fmt, cap):
    stream = EndlessStream(line)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pad, "MAX_STROKE_BYTES", cap)  # the real cap (10 MB) works the same, slower
        with pytest.raises(CaptureError):
            read_strokes(stream, fmt, "fuzz")
    assert stream.read <= cap + MAX_LINE + 1  # never read past the caps


@FUZZ
@given(st.integers(0, 3 * MAX_LINE), st.sampled_from(["jsonl", "csv"]), st.booleans())
def test_a_line_over_the_line_cap_is_refused_from_a_file_or_a_list(length, fmt, as_stream):
    text = "x,y\n" + "1" * length + "\n" if fmt == "csv" else "{" * length + "\n"
    lines = io.StringIO(text) if as_stream else text.splitlines(keepends=True)
    with pytest.raises(CaptureError) as refused:
        read_strokes(lines, fmt, "fuzz")
    assert ("longer than" in str(refused.value)) == (length + 1 > MAX_LINE)

# ---------------------------------------------------------------- (c) profiles




@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    """A folder for the files the fuzz tests write; pytest removes it (no temp folder left behind)."""
    return tmp_path_factory.mktemp("fuzz")


PROFILES = Path(__file__).resolve().parents[1] / "firmware_configs"
SECTIONS = ["runtime", "capture", "capture.camera", "capture.pad", "store", "verify", "security", "nope",
            "runtime.deeper", "capture.camera.x"]
PROFILE_KEYS = ["backend", "delegate", "threads", "model", "variant", "source", "device", "width", "height",
                "format", "fourcc", "trigger", "steady_frames", "steady_threshold", "max_frames", "find_page",
                "port", "baudrate", "timeout_s", "data_dir", "threshold", "max_failed_checks",
                "lockout_seconds", "unknown", "camera"]
TOML_VALUES = st.one_of(
    st.sampled_from(['"litert"', '"tensorflow"', '"edgetpu"', '"none"', '"int8"', '"calibrated"', '"default"',
                     '"pad"', '"csv"', '"~"', '"~nobody\\u0000"', '"\\u0000"', '"a\\u0000b"', '"../.."',
                     '"/dev/null"', '"relative/dir"', '"' + "a" * 300 + '"', '"' + "a/" * 3000 + '"', '"."', "inf", "-inf", "nan", "1e999", "0", "-1", "1",
                     "2.5", "true", "false", "9223372036854775807", "1979-05-27", "07:32:00", "[]", "[1, 2]",
                     "{}", "{ a = 1 }", '""', "0x10", "1_000"]),
    st.integers(-2**63, 2**63 - 1).map(str),
    st.floats().map(repr),  # nan, inf and -inf are TOML floats too
    st.text(max_size=12).map(json.dumps),
)


@st.composite
def toml_texts(draw):
    kind = draw(st.sampled_from(["structured", "structured", "mutated", "random"]))
    if kind == "random":
        return draw(st.text(max_size=200))
    if kind == "mutated":
        text = list(draw(st.sampled_from(sorted(PROFILES.glob("*.toml")))).read_text())
        for _ in range(draw(st.integers(1, 5))):
            at = draw(st.integers(0, len(text)))
            text[at:at + draw(st.integers(0, 4))] = draw(st.text(max_size=4))
        return "".join(text)
    lines = []
    for section in draw(st.lists(st.sampled_from(SECTIONS), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        own = sorted(SCHEMA.get(section, {})) or PROFILE_KEYS
        for key in draw(st.lists(st.sampled_from(own) | st.sampled_from(PROFILE_KEYS), max_size=5, unique=True)):
            lines.append(f"{key} = {draw(TOML_VALUES)}")
    return "\n".join(lines)


@FUZZ
@given(toml_texts())
@example('[store]\ndata_dir = "a\\u0000b"')  # found: ValueError (embedded null byte)
@example('[runtime]\nmodel = "~x\\u0000"')
@example('[runtime]\nmodel = "' + "a" * 5000 + '"')  # found: OSError (file name too long)
def test_load_profile_takes_any_toml(fuzz_dir, text):
    path = fuzz_dir / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        profile = load_profile(path)
    except ProfileError:
        return
    assert profile["profile"]["path"] == str(path)
    assert profile["runtime"]["threads"] >= 1 and isinstance(profile["store"]["data_dir"], str)

# ---------------------------------------------------------------- (d) bundle manifests


VALID_MANIFEST = {
    "format": "edge-verify-bundle/1",
    "input": {"height": INPUT_SIZE[0], "width": INPUT_SIZE[1], "channels": 1, "dtype": "int8"},
    "output": {"embedding_size": 32, "dtype": "int8"},
    "preprocess_version": PREPROCESS_VERSION,
    "calibration": {"threshold": 0.5, "genuine_mean": 0.3},
    "files": {"model_int8.tflite": hashlib.sha256(b"").hexdigest()},
}
MANIFEST_VALUES = st.one_of(JSON_VALUES, st.sampled_from(["96", "x", "1e999", PREPROCESS_VERSION, "edge-verify-bundle/1"]),
                            st.recursive(st.none() | st.integers() | st.text(max_size=3),
                                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                                         max_leaves=6))
PATHS = [(), ("format",), ("input",), ("input", "height"), ("input", "width"), ("output",),
         ("output", "embedding_size"), ("calibration",), ("calibration", "threshold"), ("files",),
         ("files", "model_int8.tflite"), ("preprocess_version",)]


@st.composite
def manifests(draw) -> bytes:
    kind = draw(st.sampled_from(["edited", "edited", "bytes", "random", "raw"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "raw":
        return draw(st.sampled_from([b"", b"{", b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe{\x00}\x00", b"\xef\xbb\xbf{}",
                                     b"null", b"NaN", json.dumps(VALID_MANIFEST).replace('"height": 96', '"height": 1e999').encode(),
                                     json.dumps(VALID_MANIFEST).replace('"height": 96', '"height": 1' + "0" * 5000).encode(),
                                     json.dumps(VALID_MANIFEST).replace("0.5", "NaN").encode(),
                                     json.dumps(VALID_MANIFEST).replace('"width": 192', '"width": -Infinity').encode()]))
    manifest = json.loads(json.dumps(VALID_MANIFEST))
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(PATHS))
        parent = manifest
        for key in where[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not where:
            manifest = draw(MANIFEST_VALUES)
        elif isinstance(parent, dict):
            if draw(st.booleans()):
                parent.pop(where[-1], None)
            else:
                parent[where[-1]] = draw(MANIFEST_VALUES)
    text = json.dumps(manifest, allow_nan=True, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(mutated([text]))
    return text


@FUZZ
@given(manifests())
@example(json.dumps(VALID_MANIFEST).replace('"height": 96', '"height": 1e999').encode())  # found: OverflowError (int(inf))
@example(b"[" * 100_000)  # found: RecursionError
def test_load_bundle_takes_any_manifest(fuzz_dir, raw):
    folder = fuzz_dir / "bundle"
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_bytes(raw)
    try:
        bundle = load_bundle(folder)
    except ModelError:
        return
    assert bundle.fingerprint == hashlib.sha256(raw).hexdigest()
    height, width = bundle.input_size  # what load_model and the store read next must work
    assert isinstance(height, int) and isinstance(width, int) and isinstance(bundle.embedding_size, int)
    assert "threshold" in bundle.calibration

# ---------------------------------------------------------------- (e) export files


class FakeBundle:
    fingerprint, preprocess_version, embedding_size = "f" * 64, PREPROCESS_VERSION, 4
    made = Bundle.made


def _unit(seed) -> str:
    vector = np.random.default_rng(seed).normal(size=4)
    return base64.b64encode((vector / np.linalg.norm(vector)).astype("<f4").tobytes()).decode()


VALID_EXPORT = {
    "format": "edge-verify-enrolments/1", "model_fingerprint": "f" * 64,
    "preprocess_version": PREPROCESS_VERSION, "embedding_size": 4, "exported_at": "2026-01-01T00:00:00+00:00",
    "users": [{"name": "alice", "created_at": "2026-01-01T00:00:00+00:00",
               "references": [{"embedding": _unit(seed), "image_sha256": f"{seed:064x}", "source": "file:a.png",
                               "captured_at": "2026-01-01T00:00:00+00:00"} for seed in (1, 2)]}],
}
EXPORT_PATHS = [("users",), ("users", 0), ("users", 0, "name"), ("users", 0, "created_at"),
                ("users", 0, "references"), ("users", 0, "references", 0),
                ("users", 0, "references", 0, "embedding"), ("users", 0, "references", 0, "image_sha256"),
                ("users", 0, "references", 0, "source"), ("users", 0, "references", 0, "captured_at"),
                ("users", 0, "references", 1), ("embedding_size",), ("exported_at",)]
EXPORT_VALUES = st.one_of(MANIFEST_VALUES, st.sampled_from(
    ["x" * 10_000, "not a date", 12345, "Zoe\x1b", "", [], {}, VALID_EXPORT["users"][0]["references"][0]]))


@st.composite
def exports(draw) -> bytes:
    """A valid export with 0 to 3 fields replaced, and perhaps its bytes mutated."""
    document = json.loads(json.dumps(VALID_EXPORT))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(EXPORT_PATHS))
        parent = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw(EXPORT_VALUES)
        except (KeyError, IndexError, TypeError):
            continue
    text = json.dumps(document).encode()
    return draw(mutated([text])) if draw(st.booleans()) else text


@FUZZ
@given(exports(), st.integers(200, 10_000))
@example(b"[" * 100_000, 1_000_000)  # found: RecursionError (issue 15.10)
@example(json.dumps(VALID_EXPORT).encode(), 100)  # over the cap
def test_import_takes_any_file_and_changes_nothing_when_it_refuses(fuzz_dir, raw, cap):
    path, db = fuzz_dir / "export.json", fuzz_dir / "fuzz.sqlite3"
    path.write_bytes(raw)
    db.unlink(missing_ok=True)
    with Store(db) as store, pytest.MonkeyPatch.context() as patch:
        patch.setattr(transfer, "MAX_EXPORT_BYTES", cap)  # the real cap (256 MB) works the same, slower
        try:
            summary = api.import_enrolments(store, FakeBundle(), path)
        except EdgeVerifyError as error:
            assert "\n" not in str(error) and len(str(error)) < 600
            assert store.users() == []
            return
        assert len(raw) <= cap and summary["users"] == len(store.users())
        for user in store.users():  # what was imported reads back: every field checked, no repeats
            references = store.user(user["name"]).references
            assert len({r.image_sha256 for r in references}) == len(references)
