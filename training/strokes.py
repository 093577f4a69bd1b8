"""Pen-stroke files as training images.

Variant 0 is exactly what the device sees from a pad: `render_strokes` of the stroke file.
Other variants draw the same trajectory with another pen: relative stroke width, pressure
response and ink tone vary, and some get a grey, textured paper, so one trajectory gives many
images. Every variant then goes through the one preprocessing, as a scan would.
"""
import zlib

import cv2
import numpy as np

from edge_verify.edge.capture.pad import LONG_SIDE, read_stroke_file, render_strokes


def render_variant(path, variant: int = 0) -> np.ndarray:
    """uint8 grey image of the stroke file at `path` (dark ink on light paper)."""
    strokes = read_stroke_file(path)
    if variant == 0:
        return render_strokes(strokes)
    rng = np.random.default_rng([variant, zlib.crc32(str(path).encode())])
    gamma = rng.uniform(0.4, 2.5)  # pressure response: soft or stiff pen
    floor = rng.uniform(0.0, 0.4)  # pressure never quite zero: felt pens, ballpoints
    strokes = [np.column_stack([s[:, :2], floor + (1 - floor) * s[:, 2:3] ** gamma]) for s in strokes]
    long_side = int(LONG_SIDE * rng.uniform(0.45, 1.6))  # thinner or thicker pen, relative to the ink
    image = render_strokes(strokes, long_side=long_side).astype(np.float32)
    ink_tone = rng.uniform(0.55, 1.0)  # 1 = black ink
    image = 255 - (255 - image) * ink_tone
    if rng.random() < 0.5:  # grey, uneven paper and sensor noise
        paper = rng.uniform(170, 250)
        blotches = cv2.resize(rng.normal(0, rng.uniform(2, 12), (8, 8)).astype(np.float32),
                              image.shape[::-1], interpolation=cv2.INTER_CUBIC)
        image = image * (paper + blotches) / 255 + rng.normal(0, rng.uniform(0, 4), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
