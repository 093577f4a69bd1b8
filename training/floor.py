"""The floor: a non-learned descriptor scored through the same protocol as every model.

Histograms of oriented gradients (Dalal & Triggs, scikit-image's `hog`: 9 orientation bins,
8-px cells, blocks of 2x2 cells L2-normalised), computed on the same `preprocess` output the
network sees, square-rooted and scaled to unit length, then compared by Euclidean distance like
the network's embeddings. A learned model that does not clearly beat it has learned nothing
that transfers.
"""
from pathlib import Path

import numpy as np

from edge_verify.training.embedders import Embedder

FLOOR = "hog"
FLOOR_INPUT_SIZE = (96, 192)
FLOOR_DESCRIPTION = "HOG (9 bins, 8-px cells, 2x2-cell L2 blocks), square-rooted, on preprocess at 96x192"


def hog_descriptors(images: np.ndarray) -> np.ndarray:
    """float32 (N, H, W, 1) in [0, 1] -> (N, D) unit vectors."""
    from skimage.feature import hog  # scikit-image comes with edge-verify[train]; importing this module needs none

    features = np.sqrt(np.stack([hog(image[..., 0], orientations=9, pixels_per_cell=(8, 8),
                                     cells_per_block=(2, 2), block_norm="L2") for image in images]))
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def floor_embedder() -> Embedder:
    return Embedder(hog_descriptors, FLOOR_INPUT_SIZE, None, Path(FLOOR), FLOOR)
