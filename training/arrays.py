"""Signatures as arrays: every image preprocessed once, the same way the device does it.

The one array format passed between training stages: uint8 (N, H, W), ink high (255 = full
ink), i.e. `edge_verify.edge.preprocess.preprocess` scaled by 255. Results are cached on disk,
keyed by the preprocessing version, the input size and the files (or the pixels) themselves.
"""
import hashlib
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

from edge_verify.edge.errors import CaptureError, ImageError
from edge_verify.edge.preprocess import PREPROCESS_VERSION, preprocess, preprocess_file
from edge_verify.training.datasets import DatasetError, is_stroke_file
from edge_verify.training.strokes import render_variant


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_VERIFY_CACHE", user_cache_dir("edge-verify")))


def _cache_key(signatures, size) -> str:
    digest = hashlib.sha256(f"{PREPROCESS_VERSION}|{size}".encode())
    for s in signatures:
        stat = s.path.stat()
        bend = f"|{s.bend}" if s.bend else ""  # unbent records keep the keys of caches made before bending
        digest.update(f"{s.path}|{stat.st_size}|{stat.st_mtime_ns}|{s.variant}{bend}".encode())
    return digest.hexdigest()[:20]


# Workers raise DatasetError (one message, pickles back to the pool) for an unusable image:
# an ImageError would not unpickle in the parent, and the pool would wait for ever.
def _preprocess_one(job):
    path, size, variant, bend = job
    try:
        if is_stroke_file(path):  # pen strokes: drawn first, as the pad path does
            return np.round(preprocess(render_variant(path, variant, bend), size) * 255).astype(np.uint8)
        return np.round(preprocess_file(path, size) * 255).astype(np.uint8)
    except (ImageError, CaptureError) as error:
        raise DatasetError(f"{path}: {error}") from None


def _preprocess_pixels(job):
    index, image, size = job
    try:
        return np.round(preprocess(image, size) * 255).astype(np.uint8)
    except ImageError as error:
        raise DatasetError(f"image {index} of the array: {error}") from None


def _cached(path: Path, function, jobs, workers) -> np.ndarray:
    """`function` over `jobs` in a process pool, stacked; saved at `path`, read from there next time."""
    if path.exists():
        return np.load(path)
    with Pool(workers or os.cpu_count()) as pool:
        images = np.stack(pool.map(function, jobs, chunksize=32))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), images)
    os.replace(path.with_suffix(".tmp.npy"), path)
    return images


def preprocessed_images(signatures, size, workers=None) -> np.ndarray:
    """uint8 (N, H, W) for the signatures, in their order; computed once, then read from cache."""
    path = cache_dir() / f"signatures-{_cache_key(signatures, size)}.npy"
    return _cached(path, _preprocess_one, [(s.path, tuple(size), s.variant, s.bend) for s in signatures], workers)


def preprocessed_pixels(images: np.ndarray, size, workers=None) -> np.ndarray:
    """The same for images already in memory: uint8 (N, h, w) grey, dark ink on light paper."""
    digest = hashlib.sha256(f"{PREPROCESS_VERSION}|{size}|{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).data)
    path = cache_dir() / f"pixels-{digest.hexdigest()[:20]}.npy"
    return _cached(path, _preprocess_pixels, [(i, image, tuple(size)) for i, image in enumerate(images)], workers)


def to_model_input(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in [0, 1], the network input."""
    return (images_u8.astype(np.float32) / 255.0)[..., None]
