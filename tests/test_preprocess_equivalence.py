"""The faster steps of edge/preprocess.py give exactly what the plain versions below gave (the
code before the service's latency work, issue 17): same masks, so the same network input, bit
for bit, and PREPROCESS_VERSION stays. Checked on made-up masks (edge lines, specks, more than
256 components, 32-bit labels) and on real scans."""
import cv2
import numpy as np
import pytest

from edge_verify.edge import preprocess as fast
from edge_verify.edge.errors import ImageError
from edge_verify.edge.image_io import load_image

from conftest import CEDAR, DATASETS


def plain_erase_edge_lines(mask: np.ndarray) -> None:
    for grid in (mask, mask[:, ::-1], mask.T, mask.T[:, ::-1]):  # left, right, top and bottom edge
        rows, columns = grid.shape
        band = max(3, round(fast.EDGE_BAND * columns))
        strip = np.ascontiguousarray(grid[:, :2 * band])
        widened = cv2.dilate(strip, np.ones((1, 5), np.uint8))
        coverage = cv2.reduce(widened, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0] / (255 * rows)
        lines = np.flatnonzero(coverage[:band] >= fast.EDGE_LINE)
        if lines.size:
            end = lines.max()
            while end + 1 < coverage.size and coverage[end + 1] >= fast.EDGE_LINE / 3:
                end += 1
            grid[:, :end + 1] = 0


def plain_segment_ink(paper: np.ndarray) -> np.ndarray:
    otsu, _ = cv2.threshold(paper, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    strong = min(max(otsu, int(paper.min()) + 1), 255 * (1 - fast.MIN_CONTRAST))
    mask = cv2.compare(paper, (strong + 255) / 2, cv2.CMP_LT)
    plain_erase_edge_lines(mask)
    mask_area = cv2.countNonZero(mask)
    if mask_area < fast.MIN_INK * paper.size:
        raise ImageError("blank", "blank")
    left, top, width, height = cv2.boundingRect(mask)
    box = slice(top, top + height), slice(left, left + width)
    label_type = cv2.CV_16U if mask_area < 65535 else cv2.CV_32S
    count, labels = cv2.connectedComponents(mask[box], connectivity=8, ltype=label_type)
    areas = np.bincount(labels.ravel(), minlength=count)
    has_strong = np.bincount(labels[paper[box] < strong], minlength=count) > 0
    keep = (areas >= max(2, fast.MIN_SPECK * paper.size)) & has_strong
    keep[0] = False
    if areas[keep].sum() < fast.MIN_INK * paper.size:
        raise ImageError("blank", "blank")
    mask[box] = np.take(keep.astype(np.uint8), labels)
    return mask


def made_up_mask(rng, height: int, width: int, speckle: float) -> np.ndarray:
    """0/255: lines along and near the edges (full or partial, a few pixels thick) and random specks."""
    mask = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(0, 6)):
        side, thick, share = rng.integers(4), rng.integers(1, 5), rng.uniform(0.3, 1.0)
        offset = rng.integers(0, max(1, int(0.15 * (width if side < 2 else height))))
        if side == 0:
            mask[:int(share * height), offset:offset + thick] = 255
        elif side == 1:
            mask[:int(share * height), max(0, width - offset - thick):width - offset] = 255
        elif side == 2:
            mask[offset:offset + thick, :int(share * width)] = 255
        else:
            mask[max(0, height - offset - thick):height - offset, :int(share * width)] = 255
    mask[rng.random((height, width)) < speckle] = 255
    return mask


def outcome(function, paper: np.ndarray):
    try:
        return function(paper.copy())
    except ImageError as error:
        return error.reason


def assert_same(expected, got):
    if isinstance(expected, str):
        assert got == expected
    else:
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_edge_lines_are_erased_as_before():
    rng = np.random.default_rng(0)
    for _ in range(1500):
        mask = made_up_mask(rng, *rng.integers(16, 260, 2), rng.uniform(0, 0.15))
        expected, got = mask.copy(), mask.copy()
        plain_erase_edge_lines(expected)
        fast.erase_edge_lines(got)
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("sizes, speckle", [((16, 260), (0, 0.2)),       # mostly under 256 components
                                            ((300, 700), (0.1, 0.35))])  # many components, 32-bit labels
def test_ink_is_segmented_as_before(sizes, speckle):
    rng = np.random.default_rng(1)
    kinds = set()
    for _ in range(300 if sizes[0] < 100 else 12):
        mask = made_up_mask(rng, *rng.integers(*sizes, 2), rng.uniform(*speckle))
        paper = np.where(mask > 0, rng.integers(0, 200, mask.shape), rng.integers(215, 256, mask.shape))
        paper = paper.astype(np.uint8)
        expected = outcome(plain_segment_ink, paper)
        assert_same(expected, outcome(fast.segment_ink, paper))
        ink = int((mask > 0).sum())
        kinds.add("32-bit labels" if ink >= 65535 else "16-bit labels")
        if not isinstance(expected, str):
            count = cv2.connectedComponents(mask, connectivity=8)[0]
            kinds.add("over 256 components" if count > 256 else "256 components or fewer")
    assert kinds >= ({"16-bit labels", "256 components or fewer", "over 256 components"} if sizes[0] < 100
                     else {"32-bit labels", "over 256 components"})


def test_the_lookup_equals_numpy_indexing():
    rng = np.random.default_rng(2)
    for count, dtype in ((2, np.uint16), (256, np.uint16), (257, np.uint16), (300, np.int32), (5, np.int32)):
        labels = rng.integers(0, count, (37, 91)).astype(dtype)
        table = rng.integers(0, 2, count).astype(np.uint8)
        got = fast._lookup(table, labels)
        assert got.dtype == np.uint8 and np.array_equal(got, np.take(table, labels))


def test_real_scans_are_segmented_as_before():
    scans = sorted(CEDAR.glob("*.jpg"))[:15] + sorted((DATASETS / "bhsig260-bengali").rglob("*.jpg"))[:15]
    if not scans:
        pytest.skip("the shared datasets are not beside the repository")
    for path in scans:
        grey = fast._shrink(fast.to_grey(load_image(path)))
        paper = fast.normalise_background(cv2.medianBlur(grey, 3))
        assert_same(outcome(plain_segment_ink, paper), outcome(fast.segment_ink, paper))
