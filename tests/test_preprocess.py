"""The one preprocessing: real scans and made-up captures give a clean, centred network input;
bad files give a typed ImageError."""
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_verify.edge.errors import ImageError
from edge_verify.edge.image_io import load_image
from edge_verify.edge.preprocess import INPUT_SIZE, PREPROCESS_VERSION, preprocess, preprocess_file

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CEDAR = DATASETS / "cedar" / "original_1_1.jpg"  # grey JPEG, noisy grey paper
CEDAR_OTHER_WRITER = DATASETS / "cedar" / "original_2_1.jpg"
CEDAR_BORDER_LINE = DATASETS / "cedar" / "forgeries_13_17.jpg"  # a scanner border line at the left edge
BENGALI = DATASETS / "bhsig260-bengali" / "writer_001" / "genuine" / "genuine_01.jpg"  # RGB JPEG


def real(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (the shared datasets sit beside the repository)")
    return path


@pytest.fixture(scope="module")
def signature() -> np.ndarray:
    """A real grey signature scan."""
    return load_image(real(CEDAR))


@pytest.fixture(scope="module")
def reference(signature) -> np.ndarray:
    return preprocess(signature)


def assert_valid(out: np.ndarray, size=INPUT_SIZE):
    """What every caller relies on: shape, dtype, range, clean background, ink box centred, aspect kept."""
    assert out.shape == tuple(size) and out.dtype == np.float32
    assert out.min() == 0 and out.max() == pytest.approx(1)
    assert (out == 0).mean() > 0.6, "the background must be exactly 0"
    rows, cols = np.nonzero(out.any(axis=1))[0], np.nonzero(out.any(axis=0))[0]
    assert abs((rows[0] + rows[-1]) / 2 - (size[0] - 1) / 2) <= 1.5
    assert abs((cols[0] + cols[-1]) / 2 - (size[1] - 1) / 2) <= 1.5
    assert rows[-1] - rows[0] >= 0.85 * size[0] or cols[-1] - cols[0] >= 0.85 * size[1], "ink box fills one side"
    weights = out / out.sum()
    centre_y = (weights.sum(axis=1) * np.arange(size[0])).sum() / size[0]
    centre_x = (weights.sum(axis=0) * np.arange(size[1])).sum() / size[1]
    assert 0.3 < centre_y < 0.7 and 0.3 < centre_x < 0.7, "ink mass near the centre"


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def blue_pen(grey: np.ndarray) -> np.ndarray:
    """The grey signature redrawn in blue ballpoint on white paper (BGR)."""
    ink = 1 - grey.astype(np.float32)[..., None] / 255
    pen, paper = np.array([150, 40, 20], np.float32), np.array([250, 250, 250], np.float32)
    return (paper * (1 - ink) + pen * ink).astype(np.uint8)


def phone_photo(grey: np.ndarray) -> np.ndarray:
    """The signature under strong uneven light (dark left, bright right) with sensor noise."""
    height, width = grey.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 0.3 + 0.7 * (xs / width) * (0.6 + 0.4 * ys / height)
    noise = np.random.default_rng(0).normal(0, 8, grey.shape)
    return np.clip(grey * light + noise, 0, 255).astype(np.uint8)


def png_bytes(width: int, height: int, colour_type: int, rows: bytes = b"", palette: bytes = b"") -> bytes:
    """A hand-made 8-bit PNG (OpenCV cannot write palette images or lie about the size)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    extra = chunk(b"PLTE", palette) if palette else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# --- real scans --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [CEDAR, BENGALI], ids=["cedar-grey", "bengali-rgb"])
def test_real_scans_give_clean_centred_output(path):
    out = preprocess_file(real(path))
    assert_valid(out)
    assert (out > 0).mean() < 0.2


def test_noisy_paper_becomes_clean_background(signature, reference):
    paper = signature[signature >= np.median(signature)]
    assert len(np.unique(paper)) > 5, "the scanned paper is grainy"
    pieces = cv2.connectedComponents((reference > 0).astype(np.uint8))[0] - 1
    assert pieces < 15, "the output holds the strokes, not paper grain"


def test_scanner_border_line_is_not_ink():
    out = preprocess_file(real(CEDAR_BORDER_LINE))
    assert_valid(out)
    assert (out > 0).mean(axis=0).max() < 0.6, "no output column is a full-height line"


def test_other_sizes(signature):
    for size in [(64, 64), (150, 220)]:
        assert_valid(preprocess(signature, size), size)


def test_deterministic_and_same_from_path_or_bytes(signature):
    first = preprocess_file(CEDAR)
    assert np.array_equal(first, preprocess_file(CEDAR))
    assert np.array_equal(first, preprocess_file(CEDAR.read_bytes()))
    assert np.array_equal(first, preprocess(signature))
    assert PREPROCESS_VERSION


# --- made-up captures of a real signature ---------------------------------------------------------

def make_rgb(signature, tmp_path, ext=".png"):
    path = tmp_path / f"rgb{ext}"
    cv2.imwrite(str(path), cv2.cvtColor(signature, cv2.COLOR_GRAY2BGR))
    return path


def make_rgba_transparent(signature, tmp_path):
    """Black pen on a transparent background (like a signature pad export): colour 0, ink in alpha."""
    rgba = np.zeros((*signature.shape, 4), np.uint8)
    rgba[:, :, 3] = 255 - signature
    rgba[:, :, 3][signature > 200] = 0  # the paper is fully transparent
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), rgba)
    return path


def make_palette(signature, tmp_path):
    """16 colours from blue pen to white, as an indexed PNG."""
    levels = (signature // 16).astype(np.uint8)
    palette = b"".join(bytes(np.round([20 + 14.7 * i, 40 + 13.7 * i, 150 + 6.7 * i]).astype(np.uint8)) for i in range(16))
    rows = b"".join(b"\x00" + row.tobytes() for row in levels)
    path = tmp_path / "palette.png"
    path.write_bytes(png_bytes(signature.shape[1], signature.shape[0], 3, rows, palette))
    return path


def make_16bit(signature, tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), signature.astype(np.uint16) * 257)
    return path


def make_blue_pen(signature, tmp_path):
    path = tmp_path / "blue.png"
    cv2.imwrite(str(path), blue_pen(signature))
    return path


def make_photo(signature, tmp_path):
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(phone_photo(signature), cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path


def make_blue_pen_photo(signature, tmp_path):
    grey_of_blue = cv2.cvtColor(blue_pen(signature), cv2.COLOR_BGR2GRAY)
    path = tmp_path / "blue_photo.png"
    cv2.imwrite(str(path), phone_photo(grey_of_blue))
    return path


@pytest.mark.parametrize("make", [make_rgb, make_rgba_transparent, make_palette, make_16bit, make_blue_pen,
                                  make_photo, make_blue_pen_photo])
def test_made_up_captures_match_the_scan(make, signature, reference, tmp_path):
    out = preprocess_file(make(signature, tmp_path))
    assert_valid(out)
    assert correlation(out, reference) > 0.9


@pytest.mark.parametrize("ext", [".jpg", ".bmp", ".tiff", ".webp"])
def test_other_file_formats(ext, signature, reference, tmp_path):
    out = preprocess_file(make_rgb(signature, tmp_path, ext))
    assert correlation(out, reference) > 0.9


def test_close_outputs_are_meaningful(reference):
    """The 'same signature' threshold above separates: another writer's signature is far from it."""
    other = preprocess_file(real(CEDAR_OTHER_WRITER))
    assert correlation(other, reference) < 0.5


def test_loaded_channels(signature, tmp_path):
    assert load_image(make_rgb(signature, tmp_path)).shape == (*signature.shape, 3)
    assert load_image(make_rgba_transparent(signature, tmp_path)).shape == (*signature.shape, 4)
    assert load_image(make_palette(signature, tmp_path)).shape[:2] == signature.shape
    deep = load_image(make_16bit(signature, tmp_path))
    assert deep.dtype == np.uint8 and np.abs(deep.astype(int) - signature).max() <= 1


def test_phone_jpeg_is_turned_upright():
    """EXIF orientation 6 (camera held upright): the stored 40x80 image is shown as 80x40."""
    stored = np.full((40, 80), 255, np.uint8)
    stored[:, :10] = 0  # dark band on the stored left edge -> top edge once rotated clockwise
    exif = b"MM\x00*" + struct.pack(">IHHHIHHI", 8, 1, 0x0112, 3, 1, 6, 0, 0)
    ok, data = cv2.imencodeWithMetadata(".jpg", stored, [cv2.IMAGE_METADATA_EXIF], [np.frombuffer(exif, np.uint8)])
    upright = load_image(data.tobytes())
    assert upright.shape == (80, 40)
    assert upright[:8].mean() < 30 and upright[-8:].mean() > 225


# --- bad inputs ------------------------------------------------------------------------------------

def reason(source) -> str:
    with pytest.raises(ImageError) as caught:
        preprocess_file(source)
    message = str(caught.value)
    assert message and "\n" not in message
    return caught.value.reason


def test_missing_file(tmp_path):
    assert reason(tmp_path / "nowhere.png") == "unreadable"
    assert reason(tmp_path) == "unreadable"  # a folder


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reason(tmp_path / "empty.jpg") == "empty"
    assert reason(b"") == "empty"


def test_text_renamed_png(tmp_path):
    (tmp_path / "notes.png").write_text("not an image, just some text\n")
    assert reason(tmp_path / "notes.png") == "not_an_image"


def test_truncated_and_damaged_files(tmp_path):
    data = CEDAR.read_bytes() if CEDAR.exists() else cv2.imencode(".jpg", np.full((100, 200), 200, np.uint8))[1].tobytes()
    assert reason(data[: len(data) * 3 // 4]) == "unreadable"
    png = cv2.imencode(".png", np.full((100, 200), 200, np.uint8))[1].tobytes()
    assert reason(png[:40]) == "unreadable"
    assert reason(b"\xff\xd8\xff\xe0\x00") == "unreadable"  # a JPEG that stops inside its header


@pytest.mark.parametrize("name", ["white", "grey", "noisy paper", "uneven light", "two dust specks"])
def test_blank_pages(name):
    rng = np.random.default_rng(1)
    height, width = 400, 600
    xs = np.mgrid[0:height, 0:width][1] / width
    page = {
        "white": np.full((height, width), 255.0),
        "grey": np.full((height, width), 128.0),
        "noisy paper": 225 + rng.normal(0, 12, (height, width)),
        "uneven light": 240 * (0.25 + 0.75 * xs) + rng.normal(0, 8, (height, width)),
        "two dust specks": np.full((height, width), 240.0),
    }[name]
    page = np.clip(page, 0, 255).astype(np.uint8)
    if name == "two dust specks":
        cv2.circle(page, (300, 200), 2, 0, -1)
        cv2.circle(page, (100, 50), 1, 0, -1)
    with pytest.raises(ImageError) as caught:
        preprocess(page)
    assert caught.value.reason == "blank"


def test_tiny_image(tmp_path):
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((10, 40), np.uint8))
    assert reason(tmp_path / "tiny.png") == "too_small"


def test_header_claiming_huge_size_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_bytes(100_000, 100_000, 0))
    assert reason(tmp_path / "bomb.png") == "too_large"
    assert reason(png_bytes(9_000, 9_000, 0)) == "too_large"  # each side fine, 81 Mpixel is not


def test_array_of_wrong_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        preprocess(np.zeros((100, 100), np.float32))
