"""Camera capture: a real CEDAR signature photographed on a desk (perspective, shadow, noise), played
through OpenCV from an MJPG video file, and through a stand-in for picamera2.

The key check: the captured image, after the shared preprocessing, matches preprocessing the
original scan, and not another writer's signature.
"""
import io
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_verify.edge.capture import capture_image
from edge_verify.edge.capture.camera import capture_frame
from edge_verify.edge.capture.page import extract_signature
from edge_verify.edge.errors import CaptureError
from edge_verify.edge.preprocess import load_image, preprocess
from edge_verify.edge.profiles import load_profile

CEDAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cedar"
pytestmark = pytest.mark.skipif(not CEDAR.is_dir(), reason="needs ../shared/datasets/cedar")
FRAME_SIZE = (1280, 720)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two preprocessed images, blurred by a pixel so a sub-pixel shift of a thin
    stroke does not count as a difference."""
    a, b = cv2.GaussianBlur(a, (0, 0), 1.0), cv2.GaussianBlur(b, (0, 0), 1.0)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def page_with(scan: np.ndarray, box: bool = False) -> np.ndarray:
    """A sheet of paper (float grey) with the scanned signature's ink on it, optionally in a printed box."""
    height, width = scan.shape
    page = np.full((int(height * 2.2), int(width * 1.6)), 236.0)
    top, left = (page.shape[0] - height) // 2, (page.shape[1] - width) // 2
    page[top:top + height, left:left + width] *= np.clip(scan / np.median(scan), 0, 1)
    if box:
        cv2.rectangle(page, (left - 30, top - 30), (left + width + 30, top + height + 30), 40, 3)
    return page


def photograph(page: np.ndarray, rng, shift=(0.0, 0.0), angle=0.0) -> np.ndarray:
    """A BGR camera frame: the page tilted in perspective on a textured desk, light falling off to
    one side, a hand's shadow, sensor noise."""
    width, height = FRAME_SIZE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    desk = np.stack([70 + 20 * np.sin(xx / 9 + yy / 40), 95 + 15 * np.sin(xx / 13), 125 + 10 * np.cos(yy / 7)], -1)
    page_h, page_w = page.shape
    s = 0.8 * min(width / page_w, height / page_h)
    corners = np.array([[-0.46 * page_w, -0.5 * page_h], [0.46 * page_w, -0.475 * page_h],
                        [0.5 * page_w, 0.5 * page_h], [-0.5 * page_w, 0.51 * page_h]]) * s
    turn = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    corners = corners @ turn + [width / 2 + shift[0], height / 2 + shift[1]]
    source = np.float32([[0, 0], [page_w, 0], [page_w, page_h], [0, page_h]])
    warp = cv2.getPerspectiveTransform(source, corners.astype(np.float32))
    paper = cv2.warpPerspective(page.astype(np.float32), warp, FRAME_SIZE)[..., None]
    cover = cv2.warpPerspective(np.ones(page.shape, np.float32), warp, FRAME_SIZE)[..., None]
    frame = desk * (1 - cover) + paper * cover * np.float32([0.97, 1.0, 1.02])
    light = 1 - 0.45 * np.clip((xx - 0.55 * width) / (0.45 * width), 0, 1)
    light *= 1 - 0.35 * np.exp(-(((xx - 0.3 * width) / (0.12 * width)) ** 2 + ((yy - 0.8 * height) / (0.2 * height)) ** 2))
    frame = frame * light[..., None] + rng.normal(0, 2.0, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def moving_then_steady(page, rng, moving=10, steady=12) -> list[np.ndarray]:
    """The page slid and turned into view, then held still (only sensor noise changes)."""
    frames = [photograph(page, rng, shift=(300 - 30 * i, 120 - 12 * i), angle=0.3 - 0.03 * i) for i in range(moving)]
    still = photograph(page, rng)
    noise = [np.clip(still + rng.normal(0, 1.5, still.shape), 0, 255).astype(np.uint8) for _ in range(steady)]
    return frames + noise


def write_video(path: Path, frames) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, FRAME_SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def camera_settings(**changes) -> dict:
    settings = load_profile()["capture"]
    settings["camera"].update(changes)
    return settings


@pytest.fixture(scope="module")
def scans():
    return {name: load_image(CEDAR / f"{name}.jpg") for name in ("original_12_3", "original_45_17", "original_20_1")}


@pytest.mark.parametrize("name, box", [("original_12_3", False), ("original_45_17", True)])
def test_video_of_a_signed_page_gives_what_the_scan_gives(tmp_path, scans, name, box):
    rng = np.random.default_rng(1)
    video = write_video(tmp_path / "desk.avi", moving_then_steady(page_with(scans[name], box), rng))

    captured = preprocess(capture_image("camera", camera_settings(), path=str(video)))

    same = similarity(captured, preprocess(scans[name]))
    other = similarity(captured, preprocess(scans["original_20_1"]))
    assert same > 0.85, same
    assert same > other + 0.5, (same, other)


def test_capture_waits_for_the_picture_to_hold_still(tmp_path, scans):
    rng = np.random.default_rng(2)
    frames = moving_then_steady(page_with(scans["original_12_3"]), rng, moving=10, steady=12)
    video = write_video(tmp_path / "desk.avi", frames)

    frame = capture_frame(camera_settings(steady_frames=8)["camera"], device=str(video))

    distances = [np.abs(frame.astype(int) - f.astype(int)).mean() for f in frames]
    assert distances[-1] < 4 < min(distances[:10])   # a steady frame, none of the moving ones


def test_a_picture_that_never_holds_still_is_refused(tmp_path, scans):
    rng = np.random.default_rng(3)
    frames = moving_then_steady(page_with(scans["original_12_3"]), rng, moving=10, steady=0)
    video = write_video(tmp_path / "shaky.avi", frames)
    with pytest.raises(CaptureError, match="held still"):
        capture_image("camera", camera_settings(), path=str(video))
    with pytest.raises(CaptureError, match="did not hold still for 8 frames within 6"):
        capture_image("camera", camera_settings(max_frames=6), path=str(video))


def test_key_trigger_takes_the_frame_after_enter(tmp_path, scans):
    rng = np.random.default_rng(4)
    frames = moving_then_steady(page_with(scans["original_12_3"]), rng, moving=3, steady=6)
    video = write_video(tmp_path / "desk.avi", frames)
    keys = io.StringIO("\n")

    frame = capture_frame(camera_settings(trigger="key")["camera"], device=str(video), keys=keys)

    assert keys.read() == ""                      # Enter was consumed
    distances = [np.abs(frame.astype(int) - f.astype(int)).mean() for f in frames]
    assert int(np.argmin(distances)) >= 3         # taken after the moving frames


def test_page_without_a_signature_is_refused(scans):
    blank = photograph(np.full((600, 800), 236.0), np.random.default_rng(5))
    with pytest.raises(CaptureError, match="no signature found"):
        extract_signature(blank)


def test_missing_camera_or_video_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="not found"):
        capture_image("camera", camera_settings(), path=str(tmp_path / "nowhere.avi"))
    with pytest.raises(CaptureError, match="unknown source"):
        capture_image("scanner", camera_settings())


class StandInPicamera2:
    """Behaves like picamera2.Picamera2 for what edge-verify uses: "RGB888" arrays come in B,G,R
    order, "BGR888" in R,G,B order."""

    frames: list = []
    made: list = []

    def __init__(self, camera_num=0):
        self.camera_num, self.calls, self.config, self.next = camera_num, [], None, 0
        StandInPicamera2.made.append(self)

    def create_still_configuration(self, main=None, **_):
        return {"main": dict(main or {"format": "XRGB8888"}), "use_case": "still"}

    def configure(self, config):
        self.config = config
        self.calls.append("configure")

    def start(self):
        self.calls.append("start")

    def capture_array(self, name="main"):
        bgr = self.frames[min(self.next, len(self.frames) - 1)]
        self.next += 1
        fmt = self.config["main"]["format"]
        if fmt == "BGR888":
            return np.ascontiguousarray(bgr[:, :, ::-1])
        return bgr.copy()

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


@pytest.fixture
def picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = StandInPicamera2
    StandInPicamera2.made = []
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return StandInPicamera2


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888"])
def test_picamera2_frames_arrive_in_opencv_order(picamera2, scans, fmt):
    rng = np.random.default_rng(6)
    picamera2.frames = moving_then_steady(page_with(scans["original_12_3"]), rng, moving=2, steady=5)
    settings = camera_settings(backend="picamera2", device=1, width=1280, height=720, format=fmt, steady_frames=3)

    frame = capture_frame(settings["camera"])

    camera = picamera2.made[0]
    assert camera.camera_num == 1
    assert camera.config["main"] == {"format": fmt, "size": (1280, 720)}
    assert camera.calls == ["configure", "start", "stop", "close"]
    assert frame.shape == (720, 1280, 3)
    assert any(np.array_equal(frame, f) for f in picamera2.frames[2:])   # B,G,R exactly as photographed


def test_picamera2_photo_gives_what_the_scan_gives(picamera2, scans):
    rng = np.random.default_rng(7)
    picamera2.frames = moving_then_steady(page_with(scans["original_45_17"]), rng, moving=4, steady=10)
    settings = camera_settings(backend="picamera2", device=0, width=1280, height=720)

    captured = preprocess(capture_image("camera", settings))

    assert similarity(captured, preprocess(scans["original_45_17"])) > 0.85
    assert picamera2.made[0].calls[-2:] == ["stop", "close"]


def test_picamera2_missing_or_failing_is_a_capture_error(monkeypatch):
    settings = camera_settings(backend="picamera2")
    monkeypatch.setitem(sys.modules, "picamera2", None)      # not installed
    with pytest.raises(CaptureError, match="apt install python3-picamera2"):
        capture_image("camera", settings)

    class NoCamera:
        def __init__(self, camera_num=0):
            raise IndexError("list index out of range")

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=NoCamera))
    with pytest.raises(CaptureError, match="cannot start Raspberry Pi camera 0"):
        capture_image("camera", settings)
