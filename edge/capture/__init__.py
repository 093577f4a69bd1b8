"""Where a signature comes from: an image file, a camera photo of the signed page, or a signature pad.

`capture_image` returns a decoded uint8 image, as `edge_verify.edge.preprocess.load_image` does for a
file, so every source goes on through the same shared preprocessing.
"""
import numpy as np

from edge_verify.edge.capture.camera import capture_frame
from edge_verify.edge.capture.pad import read_pad, read_stroke_file, render_strokes
from edge_verify.edge.capture.page import extract_signature
from edge_verify.edge.choices import SOURCES
from edge_verify.edge.errors import CaptureError
from edge_verify.edge.preprocess import load_image
from edge_verify.edge.profiles import load_profile


def capture_image(source: str, settings: dict | None = None, path=None) -> np.ndarray:
    """The signature image from `source` ("file", "camera" or "pad").

    settings: the [capture] section of a profile (`load_profile(...)["capture"]`); None = defaults.
    path: file → the image file (required); camera → a camera index, video file or stream URL in
    place of the profile's device; pad → a stroke file (.jsonl or .csv, "-" = stdin) in place of
    reading the pad's serial port.
    """
    if source not in SOURCES:
        raise CaptureError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    settings = load_profile()["capture"] if settings is None else settings
    if source == "file":
        if path is None:
            raise CaptureError("--from file needs the path of an image file")
        return load_image(path)
    if source == "camera":
        frame = capture_frame(settings["camera"], device=path)
        return extract_signature(frame, find_page=settings["camera"]["find_page"])
    strokes = read_pad(settings["pad"]) if path is None else read_stroke_file(path, settings["pad"]["format"])
    return render_strokes(strokes)
