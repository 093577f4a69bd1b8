"""Pen strokes from a signature pad or web canvas: read them (JSON lines or CSV, from a file or a
serial port) and draw them like a scanned signature.

One record per pen sample: x, y (pad units, y pointing down), pressure (0..1, optional),
t (time, optional, never decreasing), up (true on the last sample of a stroke: the pen lifts).
An `end` record closes the recording; the end of the file or stream does too.
A stroke is an array (N, 3) of x, y, pressure. A line over MAX_LINE characters, or a
recording over MAX_STROKE_BYTES, is refused as it is read (a stream such as /dev/zero never ends).
"""
import csv
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_verify.edge.errors import CaptureError
from edge_verify.edge.limits import MAX_STROKE_BYTES, MAX_LINE

DEFAULT_PRESSURE = 0.5
MAX_COORDINATE = 1_000_000      # larger |x| or |y| is not a pad coordinate
MIN_EXTENT = 1e-6               # samples spread over less than this (pad units) are one spot
LONG_SIDE = 512                 # px: the ink's long side, as in a 300 dpi scan of a signature
STROKE_WIDTH = 3.5              # px at pressure 0.5 (CEDAR scans: about 3.5 px on a ~500 px signature)
MARGIN = 24                     # px of white around the ink
SUPERSAMPLE = 4                 # drawn this much larger, then shrunk: anti-aliased, fractional widths
SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def read_stroke_file(path, default_format: str = "jsonl") -> list[np.ndarray]:
    """Strokes from a file ("-" = stdin): .csv is CSV, .jsonl/.ndjson/.json JSON lines, else `default_format`."""
    if str(path) == "-":
        return read_strokes(sys.stdin, default_format, "standard input")
    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower(), default_format)
    try:
        with open(path, encoding="utf-8") as lines:
            return read_strokes(lines, fmt, str(path))
    except FileNotFoundError:
        raise CaptureError(f"stroke file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CaptureError(f"cannot read stroke file {path}: {error}") from None


def read_pad(settings: dict) -> list[np.ndarray]:
    """Strokes from the serial pad in `settings` ([capture.pad] of a profile); port "-" reads stdin."""
    if settings["port"] == "-":
        return read_strokes(sys.stdin, settings["format"], "standard input")
    try:
        import serial
    except ImportError:
        raise CaptureError("reading a signature pad needs pyserial: pip install pyserial") from None
    try:
        with serial.Serial(settings["port"], settings["baudrate"], timeout=settings["timeout_s"]) as port:
            return read_strokes(port, settings["format"], f"signature pad on {settings['port']}")
    except serial.SerialException as error:
        raise CaptureError(f"cannot read the signature pad on {settings['port']}: {error}") from None


def read_strokes(lines, fmt: str = "jsonl", name: str = "stroke stream") -> list[np.ndarray]:
    """Strokes from an iterable of lines (str or bytes: a file, a serial port), up to an end record."""
    if fmt not in ("jsonl", "csv"):
        raise CaptureError(f"unknown stroke format {fmt!r}: use jsonl or csv")
    lines = _bounded(lines, name)
    records = _jsonl_records(lines, name) if fmt == "jsonl" else _csv_records(lines, name)
    strokes, current, last_t, number = [], [], -math.inf, 0
    for number, sample in records:
        where = f"{name} line {number}"
        x, y = _number(sample, "x", where), _number(sample, "y", where)
        pressure = _number(sample, "pressure", where, DEFAULT_PRESSURE)
        if abs(x) > MAX_COORDINATE or abs(y) > MAX_COORDINATE:
            raise CaptureError(f"{where}: coordinates ({x}, {y}) are out of range (|x|, |y| <= {MAX_COORDINATE})")
        if not 0.0 <= pressure <= 1.0:
            raise CaptureError(f"{where}: pressure {pressure} is outside 0..1")
        if "t" in sample:
            t = _number(sample, "t", where)
            if t < last_t:
                raise CaptureError(f"{where}: time goes backwards ({t} after {last_t})")
            last_t = t
        up = sample.get("up", False)
        if not isinstance(up, bool):
            raise CaptureError(f"{where}: up must be true or false, got {up!r}")
        current.append((x, y, pressure))
        if up:
            strokes.append(np.array(current, dtype=np.float64))
            current = []
    if current:
        raise CaptureError(f"{name} ended in the middle of a stroke (line {number} is the last sample and "
                           "the pen never lifted): the recording is incomplete")
    if not strokes:
        raise CaptureError(f"{name} has no pen strokes")
    points = np.concatenate(strokes)
    if np.ptp(points[:, :2], axis=0).max() < MIN_EXTENT:
        raise CaptureError(f"{name}: every sample is at the same spot, not a signature")
    return strokes


def _bounded(lines, name):
    """The lines of a file, stream or list; CaptureError for a line over MAX_LINE or a
    recording over MAX_STROKE_BYTES. A stream is read with readline(limit): never a line unbounded."""
    total = 0
    for number, line in enumerate(_lines(lines), start=1):
        total += len(line)
        if len(line) > MAX_LINE:
            raise CaptureError(f"{name} line {number} is longer than {MAX_LINE} characters: "
                               "not a pen sample")
        if total > MAX_STROKE_BYTES:
            raise CaptureError(f"{name} is larger than {MAX_STROKE_BYTES // 1_000_000} MB: not one signature")
        yield line


def _lines(lines):
    read = getattr(lines, "readline", None)
    if read is None:
        yield from lines
        return
    while line := read(MAX_LINE + 1):
        yield line


def _jsonl_records(lines, name):
    for number, line in enumerate(lines, start=1):
        line = _text(line, name, number).strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # also numbers over 4300 digits, nesting too deep
            raise CaptureError(f"{name} line {number}: not a JSON object: {line[:60]!r}") from None
        if not isinstance(record, dict):
            raise CaptureError(f"{name} line {number}: not a JSON object: {line[:60]!r}")
        if record.get("end") is True:
            return
        yield number, record


def _csv_records(lines, name):
    header = None
    for number, line in enumerate(lines, start=1):
        line = _text(line, name, number).strip()
        if not line:
            continue
        try:
            cells = [cell.strip() for cell in next(csv.reader([line]))]
        except csv.Error as error:  # a field over csv.field_size_limit(), a stray carriage return
            raise CaptureError(f"{name} line {number}: not CSV: {error}") from None
        if header is None:
            header = [cell.lower() for cell in cells]
            if "x" not in header or "y" not in header:
                raise CaptureError(f"{name} line {number}: the CSV header must name the columns x and y "
                                   f"(and optionally pressure, t, up), got {line[:60]!r}")
            continue
        if cells[0].lower() == "end":
            return
        if len(cells) != len(header):
            raise CaptureError(f"{name} line {number}: {len(cells)} values for {len(header)} columns")
        record = {key: value for key, value in zip(header, cells) if value != ""}
        if "up" in record:
            up = record["up"].lower()
            record["up"] = {"1": True, "true": True, "0": False, "false": False}.get(up, up)
        yield number, record


def _text(line, name, number) -> str:
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise CaptureError(f"{name} line {number}: not UTF-8 text (wrong baud rate?)") from None
    return line


def _number(record: dict, key: str, where: str, default=None) -> float:
    value = record.get(key, default)
    if value is None:
        raise CaptureError(f"{where}: {key} is missing")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise CaptureError(f"{where}: {key} is not a number: {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CaptureError(f"{where}: {key} is not a number: {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        raise CaptureError(f"{where}: {key} is not a finite number: too large") from None
    if not math.isfinite(value):
        raise CaptureError(f"{where}: {key} is not a finite number: {value!r}")
    return value


def render_strokes(strokes: list[np.ndarray], long_side: int = LONG_SIDE) -> np.ndarray:
    """Strokes drawn as dark ink on white (greyscale uint8), the ink's long side `long_side` px,
    stroke width growing with pressure."""
    points = np.concatenate(strokes)
    low = points[:, :2].min(axis=0)
    scale = long_side / np.ptp(points[:, :2], axis=0).max()
    width, height = np.ceil(np.ptp(points[:, :2], axis=0) * scale).astype(int) + 2 * MARGIN + 1
    canvas = np.full((height * SUPERSAMPLE, width * SUPERSAMPLE), 255, np.uint8)
    for stroke in strokes:
        xy = np.round(((stroke[:, :2] - low) * scale + MARGIN) * SUPERSAMPLE).astype(np.int32)
        widths = STROKE_WIDTH * (0.5 + stroke[:, 2]) * SUPERSAMPLE
        for i in range(len(xy)):
            cv2.circle(canvas, tuple(map(int, xy[i])), max(1, round(widths[i] / 2)), 0, -1)
            if i:
                thickness = max(1, round((widths[i - 1] + widths[i]) / 2))
                cv2.line(canvas, tuple(map(int, xy[i - 1])), tuple(map(int, xy[i])), 0, thickness)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
