"""Find the signature in a photo of a page and make it look like a scan.

Steps: find the paper (the largest bright quadrilateral) and flatten it with a perspective
warp; if the page has a printed signature box, keep only its inside; divide out shadows and
uneven light; crop to the ink. The result is a greyscale uint8 image, dark ink on white,
ready for the shared preprocessing.
"""
import cv2
import numpy as np

from edge_verify.edge.errors import CaptureError, ImageError
from edge_verify.edge.preprocess import segment_ink, to_grey

DETECT_SIDE = 800          # long side (px) of the copy the paper is searched in
MIN_PAPER_AREA = 0.15      # the paper covers at least this share of the photo...
MAX_PAPER_AREA = 0.97      # ...and less than this (else the page fills the frame)
EDGE_TRIM = 0.02           # share of each side cut from the flattened page (paper edge, desk)


def extract_signature(photo: np.ndarray, find_page: bool = True) -> np.ndarray:
    """The signature in `photo` (grey or BGR uint8) as a scan-like greyscale image."""
    grey = to_grey(photo)   # the darkest channel, as the shared preprocessing reads ink of any colour
    if find_page:
        corners = find_paper(grey)
        if corners is not None:
            grey = trim_edges(flatten(grey, corners))
        grey = crop_to_box(grey)
    return crop_to_ink(remove_shading(grey))


def find_paper(grey: np.ndarray) -> np.ndarray | None:
    """Corners (4, 2) of the sheet of paper in the photo, or None when none stands out."""
    scale = min(1.0, DETECT_SIDE / max(grey.shape))
    small = cv2.GaussianBlur(cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), (5, 5), 0)
    _, bright = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    median = float(np.median(small))
    edges = cv2.dilate(cv2.Canny(small, 0.66 * median, 1.33 * median), np.ones((3, 3), np.uint8), iterations=2)
    candidates = [q for q in (_largest_quadrilateral(bright), _largest_quadrilateral(edges)) if q is not None]
    if not candidates:
        return None
    best = max(candidates, key=lambda quad: cv2.contourArea(quad))
    return best.astype(np.float32) / scale


def _largest_quadrilateral(mask: np.ndarray) -> np.ndarray | None:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    quad = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
    share = cv2.contourArea(quad) / mask.size
    if len(quad) != 4 or not MIN_PAPER_AREA <= share <= MAX_PAPER_AREA:
        return None
    return quad.reshape(4, 2)


def flatten(grey: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The quadrilateral `corners` warped to an upright rectangle."""
    by_sum, by_diff = corners.sum(axis=1), np.diff(corners, axis=1).ravel()
    top_left, bottom_right = corners[np.argmin(by_sum)], corners[np.argmax(by_sum)]
    top_right, bottom_left = corners[np.argmin(by_diff)], corners[np.argmax(by_diff)]
    source = np.array([top_left, top_right, bottom_right, bottom_left], np.float32)
    width = int(max(np.linalg.norm(top_right - top_left), np.linalg.norm(bottom_right - bottom_left)))
    height = int(max(np.linalg.norm(bottom_left - top_left), np.linalg.norm(bottom_right - top_right)))
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    warp = cv2.getPerspectiveTransform(source, target)
    return cv2.warpPerspective(grey, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def trim_edges(page: np.ndarray, share: float = EDGE_TRIM) -> np.ndarray:
    dy, dx = int(page.shape[0] * share), int(page.shape[1] * share)
    return page[dy:page.shape[0] - dy, dx:page.shape[1] - dx]


def crop_to_box(page: np.ndarray) -> np.ndarray:
    """The inside of a printed rectangular box on the page (a signature field), else the page."""
    height, width = page.shape
    ink = cv2.adaptiveThreshold(page, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 31, 15)
    rows = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (width // 8, 1)))
    columns = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, height // 8)))
    lines = cv2.dilate(rows | columns, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(lines, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in sorted(contours, key=cv2.contourArea, reverse=True):
        x, y, w, h = cv2.boundingRect(contour)
        if not 0.05 * page.size <= w * h <= 0.9 * page.size:
            continue
        quad = cv2.approxPolyDP(contour, 0.02 * cv2.arcLength(contour, True), True)
        if len(quad) == 4 and cv2.contourArea(contour) > 0.85 * w * h:
            inset = max(6, min(w, h) // 30)
            return page[y + inset:y + h - inset, x + inset:x + w - inset]
    return page


def remove_shading(grey: np.ndarray) -> np.ndarray:
    """Divide the image by its paper brightness (ink closed away): shadows and light falloff vanish."""
    size = max(15, min(grey.shape) // 25) | 1
    paper = cv2.morphologyEx(grey, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    paper = cv2.GaussianBlur(paper, (size, size), 0)
    flat = grey.astype(np.float32) / np.maximum(paper.astype(np.float32), 1.0)
    return np.clip(flat * 255.0, 0, 255).astype(np.uint8)


def crop_to_ink(clean: np.ndarray) -> np.ndarray:
    """`clean` cropped to its ink (as the shared preprocessing sees ink) with a margin."""
    try:
        ink = segment_ink(clean)
    except ImageError:
        raise CaptureError("no signature found in the photo: hold the signed page flat, well lit and "
                           "filling most of the picture") from None
    left, top, width, height = cv2.boundingRect(ink)
    margin = max(8, (width + height) // 20)
    return clean[max(0, top - margin):top + height + margin, max(0, left - margin):left + width + margin]
