"""The one preprocessing of edge-verify: any signature image -> a float32 (H, W) network input.

Used identically by training, evaluation, enrolment and verification. Output: ink high, background
exactly 0, values in [0, 1], the signature's bounding box resized (aspect kept) and centred.
Bump PREPROCESS_VERSION whenever the output of `preprocess` changes: it is stored with every model
and embedding so that old ones are never compared with new ones.
"""
import math

import cv2
import numpy as np

from edge_verify.edge.errors import ImageError
from edge_verify.edge.image_io import load_image

PREPROCESS_VERSION = "sig-2"
INPUT_SIZE = (96, 192)  # (height, width)

MIN_SIDE = 16          # smaller images cannot hold a signature
WORK_SIDE = 1024       # larger images are first shrunk to this longer side (bounds the time)
BACKGROUND_SIDE = 48   # background/illumination is estimated on a grid this size
MIN_CONTRAST = 0.20    # ink must be at least this much darker than the paper, relative
MIN_SPECK = 0.00003    # connected ink parts smaller than this fraction of the image are dust
MIN_INK = 0.0005       # less ink than this fraction of the image: blank
EDGE_BAND = 0.06       # straight lines this close to an image edge are page or scanner borders
EDGE_LINE = 0.7        # ... when they run along at least this fraction of the edge
MARGIN = 0.02          # kept around the ink bounding box, fraction of its longer side


def preprocess_file(source, size=INPUT_SIZE) -> np.ndarray:
    """Load an image (path or bytes) and preprocess it."""
    return preprocess(load_image(source), size)


def preprocess(image: np.ndarray, size=INPUT_SIZE) -> np.ndarray:
    """Signature image (uint8 grey, BGR or BGRA, as `load_image` gives) -> float32 `size`, ink high in [0, 1].

    Raises ImageError("too_small") for images under MIN_SIDE pixels a side, ImageError("blank") when
    no ink is found.
    """
    if image.dtype != np.uint8 or not (image.ndim == 2 or image.ndim == 3 and image.shape[2] in (3, 4)):
        raise ValueError(f"preprocess takes a uint8 grey, BGR or BGRA image, not {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ImageError("too_small", f"the image is {image.shape[1]}x{image.shape[0]} pixels, "
                                      "too small to hold a signature")
    grey = _shrink(to_grey(image))
    paper = normalise_background(cv2.medianBlur(grey, 3))
    ink = segment_ink(paper)
    left, top, ink_width, ink_height = cv2.boundingRect(ink)
    box = slice(top, top + ink_height), slice(left, left + ink_width)
    darkness = np.zeros((ink_height, ink_width), np.uint8)
    cv2.bitwise_not(paper[box], dst=darkness, mask=ink[box])  # 255 - paper on the ink, 0 elsewhere
    return _fit(darkness, size)


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey where any pen colour is dark: the darkest channel; transparency becomes white paper."""
    if image.ndim == 2:
        return image
    channels = cv2.split(image)
    grey = cv2.min(cv2.min(channels[0], channels[1]), channels[2])
    if len(channels) == 4:  # composite on white: 255 - (255 - grey) * alpha
        grey = 255 - cv2.multiply(255 - grey, channels[3], scale=1 / 255)
    return grey


def normalise_background(grey: np.ndarray) -> np.ndarray:
    """Divide by a smooth estimate of the paper brightness: paper -> 255 everywhere, ink stays dark."""
    height, width = grey.shape
    scale = BACKGROUND_SIDE / max(height, width)
    small = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    # Extend the grid by point reflection (2 * edge - inside): brightness ramps continue past the edges,
    # so the closing below is not biased towards the brighter side at dark edges and corners.
    small = small.astype(np.int16)
    pad = 3
    ramp = 2 * cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE) \
        - cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    small = np.clip(ramp, 0, 255).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)  # erase the strokes, keep the paper
    small = cv2.blur(small, (3, 3))[pad:-pad, pad:-pad]
    background = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(grey, cv2.max(background, 1, dst=background), scale=255)


def segment_ink(paper: np.ndarray) -> np.ndarray:
    """uint8 ink mask (1 = ink) of a background-normalised image (paper ~255); ImageError('blank') if none.

    Otsu's threshold (capped so that ink is clearly darker than paper) finds the ink; fainter pixels
    joined to it are kept too (hysteresis), then border lines and small specks are removed.
    """
    # the thresholded image itself is not used: its buffer takes the mask
    otsu, mask = cv2.threshold(paper, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    strong = min(max(otsu, int(paper.min()) + 1), 255 * (1 - MIN_CONTRAST))  # +1: pure 0/255 images (Otsu 0)
    mask = cv2.compare(paper, (strong + 255) / 2, cv2.CMP_LT, dst=mask)
    erase_edge_lines(mask)
    mask_area = cv2.countNonZero(mask)
    if mask_area < MIN_INK * paper.size:  # too little ink even before the specks go
        raise _blank()
    # Components are labelled inside the mask's bounding box only: the same components, less work.
    left, top, width, height = cv2.boundingRect(mask)
    box = slice(top, top + height), slice(left, left + width)
    label_type = cv2.CV_16U if mask_area < 65535 else cv2.CV_32S  # 16-bit labels are faster
    count, labels = cv2.connectedComponents(mask[box], connectivity=8, ltype=label_type)
    # Areas are counted over the ink pixels only (far fewer than the box's): areas[0], the
    # background, is then 0, and it is never kept anyway.
    areas = np.bincount(labels[mask[box] != 0], minlength=count)
    # paper < strong, compared as uint8 (strong as a float would make numpy convert every pixel):
    # for a whole number p, p < x exactly when p < ceil(x)
    has_strong = np.bincount(labels[paper[box] < math.ceil(strong)], minlength=count) > 0
    keep = (areas >= max(2, MIN_SPECK * paper.size)) & has_strong
    keep[0] = False
    if areas[keep].sum() < MIN_INK * paper.size:
        raise _blank()
    mask[box] = _lookup(keep.astype(np.uint8), labels)  # 1 = ink; outside the box the mask is 0 already
    return mask


def _lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """table[labels] (uint8): with at most 256 labels as an 8-bit table lookup (cv2.LUT), several
    times faster than numpy's indexing with 16- or 32-bit indices; the same values either way."""
    if table.size > 256:
        return np.take(table, labels)
    padded = np.zeros(256, np.uint8)
    padded[:table.size] = table
    small = labels.astype(np.uint8)
    return cv2.LUT(small, padded, dst=small)


def _blank() -> ImageError:
    return ImageError("blank", "no signature found: the image is blank or the ink is too faint")


def erase_edge_lines(mask: np.ndarray) -> None:
    """In place, on a 0/255 mask: erase straight lines along the image edges (page edges, scanner borders)
    and all beyond them.

    Each edge is seen as the left edge of the mask turned towards it (right: mirrored, top:
    transposed, bottom: both); the strips are read where they lie, without turning a copy.
    """
    rows, columns = mask.shape
    # left, right, top and bottom edge
    for vertical, mirrored in ((True, False), (True, True), (False, False), (False, True)):
        length, depth = (rows, columns) if vertical else (columns, rows)  # along the edge, away from it
        band = max(3, round(EDGE_BAND * depth))
        width = min(2 * band, depth)
        inward = slice(depth - width, depth) if mirrored else slice(0, width)
        strip = mask[:, inward] if vertical else mask[inward, :]
        # tolerates a slight skew: widened along the edge's normal, as (1, 5) on the left edge
        widened = cv2.dilate(strip, np.ones((1, 5) if vertical else (5, 1), np.uint8))
        sums = cv2.reduce(widened, 0 if vertical else 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        coverage = (sums[::-1] if mirrored else sums) / (255 * length)
        lines = np.flatnonzero(coverage[:band] >= EDGE_LINE)
        if lines.size:
            end = lines.max()
            while end + 1 < coverage.size and coverage[end + 1] >= EDGE_LINE / 3:  # the line's ragged side
                end += 1
            erased = slice(depth - end - 1, depth) if mirrored else slice(0, end + 1)
            if vertical:
                mask[:, erased] = 0
            else:
                mask[erased, :] = 0


def _shrink(grey: np.ndarray) -> np.ndarray:
    """Large photos are shrunk to WORK_SIDE first: the output is small and the time stays bounded."""
    height, width = grey.shape
    scale = WORK_SIDE / max(height, width)
    if scale >= 1:
        return grey
    return cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def _fit(crop: np.ndarray, size) -> np.ndarray:
    """Resize (aspect kept) into the centre of a zero canvas of `size`, then scale the ink to [0, 1]."""
    out_h, out_w = size
    height, width = crop.shape
    margin = round(MARGIN * max(height, width))
    scale = min(out_h / (height + 2 * margin), out_w / (width + 2 * margin))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros(size, np.float32)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    ink = canvas[canvas > 0]
    if ink.size:
        canvas /= np.percentile(ink, 99)  # the darkest ink ~1, whatever the pen and scanner
    return np.minimum(canvas, 1, out=canvas)
