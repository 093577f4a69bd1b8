"""Pen-stroke files as training images.

Variant 0 is exactly what the device sees from a pad: `render_strokes` of the stroke file.
Other variants draw the same trajectory with another pen: relative stroke width, pressure
response and ink tone vary, and some get a grey, textured paper, so one trajectory gives many
images. With a `bend` above 0 the other variants also redraw the trajectory a little
differently, as the writer's hand would: a smooth, low-frequency displacement along the pen's
path, so strokes stay sharp and connected. Every variant then goes through the one
preprocessing, as a scan would.
"""
import zlib

import cv2
import numpy as np

from edge_verify.edge.capture.pad import LONG_SIDE, read_stroke_file, render_strokes


BEND_HARMONICS = 3  # the displacement is a sum of this many sine waves along the pen's path
FORGERY_BEND = 0.2  # how far a synthetic forgery strays (v22 bent genuine variants by 0.05, and lost)


def bent(strokes, amount: float, rng) -> list[np.ndarray]:
    """The strokes with each point displaced along a smooth random curve of the pen's progress.

    Harmonic k of BEND_HARMONICS has a random phase and an amplitude of about amount / k times
    the ink's height, in x and y, so the signature keeps its shape while its parts shift,
    stretch and lean a little against each other.
    """
    points = np.concatenate(strokes)
    height = np.ptp(points[:, 1]) or 1.0
    progress = np.linspace(0.0, 1.0, len(points))[:, None]
    k = np.arange(1, BEND_HARMONICS + 1)
    amplitude = rng.normal(0.0, amount * height / k, (2, BEND_HARMONICS))
    phase = rng.uniform(0, 2 * np.pi, (2, BEND_HARMONICS))
    shift = np.column_stack([(a * np.sin(2 * np.pi * k * progress + f)).sum(axis=1)
                             for a, f in zip(amplitude, phase)])
    ends = np.cumsum([len(s) for s in strokes])[:-1]
    return [np.column_stack([s[:, :2] + d, s[:, 2:]]) for s, d in zip(strokes, np.split(shift, ends))]


def render_variant(path, variant: int = 0, bend: float = 0.0) -> np.ndarray:
    """uint8 grey image of the stroke file at `path` (dark ink on light paper); variants other
    than 0 also bent by `bend` (see `bent`)."""
    strokes = read_stroke_file(path)
    if variant == 0:
        return render_strokes(strokes)
    seed = [variant, zlib.crc32(str(path).encode())]
    rng = np.random.default_rng(seed)
    if bend:  # its own stream, so a variant's pen, ink and paper do not change with the bend
        strokes = bent(strokes, bend, np.random.default_rng(seed + [1]))
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
