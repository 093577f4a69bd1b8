"""Take one photo of a signed page: OpenCV VideoCapture (USB camera, video file, stream URL) or
picamera2 (Raspberry Pi camera module), on a trigger: the picture holding still, or Enter.

Every frame is a BGR uint8 array (H, W, 3), OpenCV's order.
"""
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge_verify.edge.errors import CaptureError
from edge_verify.edge.limits import MAX_LINE, MAX_PIXELS, MAX_SIDE

STILL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
THUMBNAIL_WIDTH = 160       # frames are compared at this width, blurred: sensor noise does not count
FRAMES_AFTER_KEY = 5        # frames dropped after Enter (a live camera buffers a few stale ones)


def capture_frame(settings: dict, device=None, keys=None) -> np.ndarray:
    """One BGR frame taken as `settings` ([capture.camera] of a profile) say.

    `device` overrides settings["device"] (camera index, video file, stream URL);
    `keys` is the line stream Enter is read from for trigger = "key" (default: standard input).
    A video file or stream URL given as `device` is read with OpenCV, whatever the backend.
    """
    device = settings["device"] if device is None else device
    if settings["backend"] == "picamera2" and str(device).isdigit():
        frames = picamera2_frames(int(device), settings["width"], settings["height"], settings["format"])
    else:
        frames = opencv_frames(device, settings["width"], settings["height"], settings["fourcc"])
    try:
        if settings["trigger"] == "key":
            return wait_for_key(frames, keys if keys is not None else sys.stdin)
        return wait_until_steady(frames, settings["steady_frames"], settings["steady_threshold"],
                                 settings["max_frames"])
    finally:
        frames.close()


def opencv_frames(device, width: int = 0, height: int = 0, fourcc: str = "") -> Iterator[np.ndarray]:
    """Frames from cv2.VideoCapture; the camera is released when the generator is closed."""
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    if isinstance(device, str) and "://" not in device and "!" not in device and not Path(device).exists():
        raise CaptureError(f"camera or video file not found: {device}")
    if isinstance(device, str) and Path(device).suffix.lower() in STILL_SUFFIXES:
        raise CaptureError(f"{device} is an image file, not a camera or video: check it with --from file")
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        raise CaptureError(f"cannot open camera {device!r}: is it connected and not in use by another program?")
    _require_frame_size(capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture)
    if isinstance(device, int):
        if fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        if width and height:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    return _read_opencv(capture)


def _read_opencv(capture) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            _require_frame_size(frame.shape[1], frame.shape[0], capture)
            yield frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    finally:
        capture.release()


def _require_frame_size(width: float, height: float, capture) -> None:
    """CaptureError (and the camera released) for frames larger than an image may be."""
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        capture.release()
        raise CaptureError(f"the camera delivers {int(width)}x{int(height)} frames, larger than this tool "
                           f"accepts ({MAX_PIXELS // 1_000_000} Mpixel, {MAX_SIDE} px a side)")


def picamera2_frames(camera_num: int, width: int, height: int, fmt: str = "RGB888") -> Iterator[np.ndarray]:
    """Frames from the Raspberry Pi camera `camera_num`; stopped and closed when the generator is closed.

    picamera2 names formats after the libcamera pixel order, so "RGB888" arrays are B,G,R (OpenCV's
    order) and "BGR888" arrays are R,G,B. Its default XRGB8888 has a 4th channel; both are handled.
    """
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise CaptureError("the Raspberry Pi camera needs picamera2: sudo apt install python3-picamera2 "
                           "(and create the venv with --system-site-packages)") from None
    try:
        camera = Picamera2(camera_num)
        camera.configure(camera.create_still_configuration(main={"format": fmt, "size": (width, height)}))
        camera.start()
    except Exception as error:  # libcamera reports a missing or busy camera in several ways
        raise CaptureError(f"cannot start Raspberry Pi camera {camera_num}: {error}") from None
    return _read_picamera2(camera, fmt)


def _read_picamera2(camera, fmt: str) -> Iterator[np.ndarray]:
    try:
        while True:
            yield to_bgr(camera.capture_array("main"), fmt)
    finally:
        camera.stop()
        camera.close()


def to_bgr(array: np.ndarray, fmt: str) -> np.ndarray:
    """A picamera2 array of pixel format `fmt` as a 3-channel B,G,R image."""
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise CaptureError(f"the camera delivered an array of shape {array.shape}, not a colour image")
    array = array[:, :, :3]
    if fmt == "BGR888":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def wait_until_steady(frames, steady_frames: int = 8, threshold: float = 2.0, max_frames: int = 300) -> np.ndarray:
    """The first frame that ends `steady_frames` frames in a row, each differing from the one
    before by at most `threshold` grey levels on average."""
    still, previous = 0, None
    for count, frame in enumerate(frames, start=1):
        small = _thumbnail(frame)
        still = still + 1 if previous is not None and frame_change(previous, small) <= threshold else 0
        previous = small
        if still >= steady_frames:
            return frame
        if count >= max_frames:
            raise CaptureError(f"the picture did not hold still for {steady_frames} frames within {max_frames} "
                               "frames: hold the page steady in front of the camera")
    raise CaptureError("the camera stream ended before the picture held still")


def wait_for_key(frames, keys) -> np.ndarray:
    """The frame taken just after a line (Enter) is read from `keys`."""
    print("Hold the signed page in front of the camera and press Enter.", file=sys.stderr)
    keys.readline(MAX_LINE)
    frame = None
    for count, frame in enumerate(frames, start=1):
        if count > FRAMES_AFTER_KEY:
            break
    if frame is None:
        raise CaptureError("the camera delivered no picture")
    return frame


def frame_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two thumbnails."""
    return float(cv2.absdiff(a, b).mean())


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    height = max(1, round(grey.shape[0] * THUMBNAIL_WIDTH / grey.shape[1]))
    return cv2.GaussianBlur(cv2.resize(grey, (THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_AREA), (5, 5), 0)
