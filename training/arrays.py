"""Signatures as arrays: every image preprocessed once, the same way the device does it.

The one array format passed between training stages: uint8 (N, H, W), ink high (255 = full
ink), i.e. `edge_verify.edge.preprocess.preprocess` scaled by 255. Results are cached on disk,
keyed by the preprocessing version, the input size and the files themselves.
"""
import hashlib
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

from edge_verify.edge.preprocess import PREPROCESS_VERSION, preprocess_file


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_VERIFY_CACHE", user_cache_dir("edge-verify")))


def _cache_key(signatures, size) -> str:
    digest = hashlib.sha256(f"{PREPROCESS_VERSION}|{size}".encode())
    for s in signatures:
        stat = s.path.stat()
        digest.update(f"{s.path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _preprocess_one(job):
    path, size = job
    return np.round(preprocess_file(path, size) * 255).astype(np.uint8)


def preprocessed_images(signatures, size, workers=None) -> np.ndarray:
    """uint8 (N, H, W) for the signatures, in their order; computed once, then read from cache."""
    path = cache_dir() / f"signatures-{_cache_key(signatures, size)}.npy"
    if path.exists():
        return np.load(path)
    jobs = [(s.path, tuple(size)) for s in signatures]
    with Pool(workers or os.cpu_count()) as pool:
        images = np.stack(pool.map(_preprocess_one, jobs, chunksize=32))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), images)
    os.replace(path.with_suffix(".tmp.npy"), path)
    return images


def to_model_input(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in [0, 1], the network input."""
    return (images_u8.astype(np.float32) / 255.0)[..., None]
