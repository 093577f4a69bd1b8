"""Signature pad capture: stroke recordings (JSON lines, CSV, a serial stream) of pen strokes the
test writes, drawn like a scan; the shared preprocessing then sees what it sees for a scan of the
same signature. Bad recordings are refused with a CaptureError that says what is wrong.
"""
import io
import json
import sys
import types

import cv2
import numpy as np
import pytest

from edge_verify.edge.capture import capture_image
from edge_verify.edge.capture.pad import read_pad, read_stroke_file, read_strokes, render_strokes
from edge_verify.edge.errors import CaptureError
from edge_verify.edge.preprocess import load_image, preprocess
from edge_verify.edge.profiles import load_profile


def pen_strokes(seed: int) -> list[np.ndarray]:
    """A made-up cursive signature in pad units (0..10000): strokes of (x, y, pressure, t ms)."""
    rng = np.random.default_rng(seed)
    strokes, t0, x0 = [], 0.0, 500.0
    for _ in range(3):
        s = np.linspace(0, 1, 160)
        loops = rng.uniform(3, 6)
        x = x0 + 2600 * s + 350 * np.sin(2 * np.pi * loops * s + rng.uniform(0, 6))
        y = 3000 + 900 * np.cos(2 * np.pi * loops * s * rng.uniform(0.8, 1.2)) * np.sin(np.pi * s + 0.3) + 400 * s
        pressure = 0.45 + 0.35 * np.sin(np.pi * s) * rng.uniform(0.6, 1.0)
        t = t0 + 5.0 * np.arange(len(s))
        strokes.append(np.column_stack([x, y, pressure, t]))
        x0, t0 = x0 + 2900, t[-1] + 120
    return strokes


def jsonl_lines(strokes) -> list[str]:
    lines = []
    for stroke in strokes:
        for i, (x, y, p, t) in enumerate(stroke):
            lines.append(json.dumps({"x": round(x, 2), "y": round(y, 2), "pressure": round(p, 3), "t": t,
                                     "up": i == len(stroke) - 1}))
    return lines


def csv_lines(strokes) -> list[str]:
    lines = ["x,y,pressure,t,up"]
    for stroke in strokes:
        for i, (x, y, p, t) in enumerate(stroke):
            lines.append(f"{x:.2f},{y:.2f},{p:.3f},{t},{int(i == len(stroke) - 1)}")
    return lines


def scanned(strokes, path) -> np.ndarray:
    """The same signature as a scanner would give it: ink on grey, noisy paper, a different size."""
    rng = np.random.default_rng(0)
    points = np.concatenate(strokes)[:, :2]
    scale = 700 / np.ptp(points, axis=0).max()
    size = (np.ptp(points, axis=0) * scale).astype(int) + 120
    paper = np.full((size[1] * 3, size[0] * 3), 255, np.uint8)
    for stroke in strokes:
        xy = ((stroke[:, :2] - points.min(axis=0)) * scale + 60) * 3
        cv2.polylines(paper, [xy.round().astype(np.int32)], False, 0, 15, cv2.LINE_AA)
    ink = cv2.resize(paper, (size[0], size[1]), interpolation=cv2.INTER_AREA) / 255.0
    scan = 60 + (235 - 60) * ink + rng.normal(0, 4, ink.shape)
    cv2.imwrite(str(path), np.clip(scan, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return load_image(path)


def similarity(a, b) -> float:
    a, b = cv2.GaussianBlur(a, (0, 0), 1.0), cv2.GaussianBlur(b, (0, 0), 1.0)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def settings():
    return load_profile()["capture"]


@pytest.mark.parametrize("suffix, lines", [(".jsonl", jsonl_lines), (".csv", csv_lines)])
def test_pad_recording_gives_what_a_scan_gives(tmp_path, settings, suffix, lines):
    recording = write(tmp_path / f"alice{suffix}", lines(pen_strokes(1)))

    captured = preprocess(capture_image("pad", settings, path=recording))

    same = similarity(captured, preprocess(scanned(pen_strokes(1), tmp_path / "alice.jpg")))
    other = similarity(captured, preprocess(scanned(pen_strokes(2), tmp_path / "bob.jpg")))
    assert same > 0.85, same
    assert same > other + 0.4, (same, other)


def test_jsonl_csv_and_serial_stream_draw_the_same_image(tmp_path):
    strokes = pen_strokes(3)
    from_jsonl = render_strokes(read_stroke_file(write(tmp_path / "s.jsonl", jsonl_lines(strokes))))
    from_csv = render_strokes(read_stroke_file(write(tmp_path / "s.csv", csv_lines(strokes))))
    stream = io.BytesIO(("\n".join(jsonl_lines(strokes)) + '\n{"end": true}\n').encode())
    from_stream = render_strokes(read_strokes(stream, "jsonl", "pad"))
    assert np.array_equal(from_jsonl, from_csv)
    assert np.array_equal(from_jsonl, from_stream)


def test_drawing_looks_like_a_scan():
    strokes = pen_strokes(4)
    image = render_strokes([s[:, :3] for s in strokes])
    bigger = render_strokes([s[:, :3] * [10, 10, 1] for s in strokes])   # other pad units
    assert image.dtype == np.uint8 and image.ndim == 2
    assert np.array_equal(image, bigger)                                 # scale set by the ink, not the pad
    assert image[0, 0] == 255 and image.min() < 30                       # dark ink on white
    assert ((image > 30) & (image < 225)).sum() > 0.2 * (image < 225).sum()   # anti-aliased edges
    ink_rows, ink_cols = np.nonzero(image < 128)
    assert 480 <= max(np.ptp(ink_rows), np.ptp(ink_cols)) <= 540         # ~512 px long side, like a scan


def test_harder_pressure_draws_wider_strokes():
    strokes = pen_strokes(5)
    light = render_strokes([np.column_stack([s[:, :2], np.full(len(s), 0.1)]) for s in strokes])
    hard = render_strokes([np.column_stack([s[:, :2], np.full(len(s), 1.0)]) for s in strokes])
    assert (255 - hard.astype(int)).sum() > 1.8 * (255 - light.astype(int)).sum()


def test_serial_pad_is_read_up_to_the_end_record(monkeypatch):
    lines = jsonl_lines(pen_strokes(6)) + ['{"end": true}', "garbage after the end is never read"]
    opened = {}

    class StandInSerial(io.BytesIO):
        def __init__(self, port, baudrate, timeout):
            opened.update(port=port, baudrate=baudrate, timeout=timeout)
            super().__init__(("\n".join(lines) + "\n").encode())

    monkeypatch.setitem(sys.modules, "serial", types.SimpleNamespace(Serial=StandInSerial, SerialException=OSError))
    settings = {"port": "/dev/ttyACM0", "baudrate": 9600, "format": "jsonl", "timeout_s": 5.0}

    strokes = read_pad(settings)

    assert opened == {"port": "/dev/ttyACM0", "baudrate": 9600, "timeout": 5.0}
    assert [len(s) for s in strokes] == [160, 160, 160]


def test_serial_pad_problems_are_capture_errors(monkeypatch):
    settings = {"port": "/dev/ttyACM9", "baudrate": 9600, "format": "jsonl", "timeout_s": 1.0}
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(CaptureError, match="pip install pyserial"):
        read_pad(settings)

    class SerialException(OSError):
        pass

    def no_port(port, baudrate, timeout):
        raise SerialException(f"could not open port {port}")

    monkeypatch.setitem(sys.modules, "serial", types.SimpleNamespace(Serial=no_port, SerialException=SerialException))
    with pytest.raises(CaptureError, match="signature pad on /dev/ttyACM9: could not open port"):
        read_pad(settings)

    class Silent(io.BytesIO):       # the port times out: readline gives b"" and iteration stops
        def __init__(self, *args, **kwargs):
            super().__init__(b"")

    monkeypatch.setitem(sys.modules, "serial", types.SimpleNamespace(Serial=Silent, SerialException=SerialException))
    with pytest.raises(CaptureError, match="signature pad on /dev/ttyACM9 has no pen strokes"):
        read_pad(settings)


GOOD = ['{"x": 10, "y": 10, "t": 0}', '{"x": 90, "y": 40, "t": 8, "up": true}']


@pytest.mark.parametrize("lines, message", [
    ([], "has no pen strokes"),
    (["", "  "], "has no pen strokes"),
    (['{"end": true}'] + GOOD, "has no pen strokes"),
    (GOOD[:1], "ended in the middle of a stroke"),
    (GOOD[:1] + ['{"end": true}'], "ended in the middle of a stroke"),
    (['{"x": NaN, "y": 3, "up": true}'], "line 1: x is not a finite number"),
    (GOOD + ['{"x": 1, "y": Infinity, "up": true}'], "line 3: y is not a finite number"),
    (['{"x": "left", "y": 3, "up": true}'], "line 1: x is not a number"),
    (['{"y": 3, "up": true}'], "line 1: x is missing"),
    (GOOD + ['{"x": 1e9, "y": 3, "up": true}'], "line 3: coordinates .* out of range"),
    (['{"x": 1, "y": 3, "pressure": 7, "up": true}'], "pressure 7.0 is outside 0..1"),
    (['{"x": 1, "y": 3, "up": "yes"}'], "up must be true or false"),
    (GOOD + ['{"x": 1, "y": 3, "t": 2, "up": true}'], "line 3: time goes backwards"),
    (['{"x": 5, "y": 5, "up": true}', '{"x": 5, "y": 5, "up": true}'], "every sample is at the same spot"),
    (["x=1 y=2"], "line 1: not a JSON object"),
    (["[1, 2, 0.5]"], "line 1: not a JSON object"),
])
def test_bad_jsonl_recordings_are_refused(tmp_path, lines, message):
    with pytest.raises(CaptureError, match=message):
        read_stroke_file(write(tmp_path / "bad.jsonl", lines))


@pytest.mark.parametrize("lines, message", [
    (["a,b,c", "1,2,3"], "header must name the columns x and y"),
    (["x,y,up", "1,2"], "line 2: 2 values for 3 columns"),
    (["x,y,up", "1,2,0", "end"], "ended in the middle of a stroke"),
    (["x,y,up", "1,nan,1"], "line 2: y is not a finite number"),
    (["x,y,up", "1,2,maybe"], "line 2: up must be true or false"),
])
def test_bad_csv_recordings_are_refused(tmp_path, lines, message):
    with pytest.raises(CaptureError, match=message):
        read_stroke_file(write(tmp_path / "bad.csv", lines))


def test_unreadable_stroke_files_are_capture_errors(tmp_path):
    with pytest.raises(CaptureError, match="stroke file not found"):
        read_stroke_file(tmp_path / "missing.jsonl")
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CaptureError, match="binary.jsonl"):
        read_stroke_file(tmp_path / "binary.jsonl")


def test_csv_with_only_x_and_y_uses_default_pressure(tmp_path):
    path = write(tmp_path / "plain.csv", ["x,y,up", "0,0,0", "100,30,0", "200,0,1", "end", "this,is,ignored"])
    strokes = read_stroke_file(path)
    assert len(strokes) == 1 and strokes[0].shape == (3, 3)
    assert np.all(strokes[0][:, 2] == 0.5)


def test_pad_recording_from_standard_input(tmp_path, monkeypatch, settings):
    lines = csv_lines(pen_strokes(7))
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    settings["pad"]["format"] = "csv"
    image = capture_image("pad", settings, path="-")
    assert np.array_equal(image, capture_image("pad", settings, path=write(tmp_path / "same.csv", lines)))


def test_file_source_reads_the_image_file(tmp_path, settings):
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), render_strokes(pen_strokes(8)))
    assert np.array_equal(capture_image("file", settings, path=path), load_image(path))
    with pytest.raises(CaptureError, match="needs the path of an image file"):
        capture_image("file", settings)
