"""How a query signature is scored against a user's references.

Embeddings are unit vectors. A query's distance to a user is its mean Euclidean distance to
the user's references; it matches when that distance is at most the user's threshold.

The threshold is the bundle's calibrated one, adapted to the user: a writer whose references
vary a lot (a large spread) gets a looser threshold, a very consistent writer a tighter one:

    user_threshold = threshold + alpha * (spread - reference_spread)

`alpha` and `reference_spread` (the typical spread of validation writers) are calibrated with
the threshold and stored in the bundle manifest. The spread counts up to MAX_SPREAD_FACTOR times
`reference_spread` (max_spread): references spread wider are not one person's (enrolment refuses
them). And the threshold never loosens past the bundle's `threshold_max`: the distance within
which only a few of other writers' signatures fall (calibrated on validation writers), so a user
whose references vary a lot still does not accept strangers. With one
reference there is no spread: the bundle's `threshold_one_reference`, calibrated with one
reference, is used as it is (older bundles without one use the threshold). A Verdict says which
threshold it used (THRESHOLD_SOURCES).

This module is the one scoring rule: the device, the evaluation and the benchmarks all call it.
"""
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edge_verify.edge.bundle import Calibration
from edge_verify.edge.errors import EdgeVerifyError

MAX_SPREAD_FACTOR = 2.0     # one person's references spread at most this many times a typical writer's
# the bundle's threshold, its one-reference threshold, the threshold adapted to the user's spread,
# or one given by the caller
THRESHOLD_SOURCES = ("calibrated", "one-reference", "adapted", "override")


@dataclass(frozen=True)
class Verdict:
    match: bool
    distance: float     # mean distance of the query to the references, 0..2
    similarity: float   # 1 - distance**2 / 4: the cosine similarity mapped onto 0..1
    threshold: float    # the distance threshold used for this user
    threshold_source: str = "calibrated"  # one of THRESHOLD_SOURCES: which threshold that is


def distances(query: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Euclidean distances from one embedding (D,) to each reference (R, D)."""
    return np.linalg.norm(np.asarray(references, np.float32) - np.asarray(query, np.float32), axis=-1)


def user_distance(query: np.ndarray, references: np.ndarray) -> float:
    """The distance of a query to a user: the mean of its distances to the references."""
    return float(np.mean(distances(query, references)))


def reference_spread(references: np.ndarray) -> float | None:
    """Mean pairwise distance among a user's references; None with fewer than two."""
    refs = np.asarray(references, np.float32)
    if len(refs) < 2:
        return None
    pairwise = np.linalg.norm(refs[:, None, :] - refs[None, :, :], axis=-1)
    upper = np.triu_indices(len(refs), k=1)
    return float(pairwise[upper].mean())


def max_spread(calibration: Calibration | Mapping) -> float | None:
    """The largest spread one person's references may have; None when the bundle has no typical spread."""
    typical = Calibration.of(calibration).reference_spread
    return None if typical is None else MAX_SPREAD_FACTOR * typical


def user_threshold(references: np.ndarray, calibration: Calibration | Mapping) -> float:
    """The bundle threshold adapted to the spread of this user's references (bounded: max_spread,
    threshold_max)."""
    return _user_threshold(references, Calibration.of(calibration))[0]


def _user_threshold(references: np.ndarray, calibration: Calibration) -> tuple[float, str]:
    """(threshold, source): which of THRESHOLD_SOURCES it is."""
    spread = reference_spread(references)
    if spread is None:
        if calibration.threshold_one_reference is not None:
            return calibration.threshold_one_reference, "one-reference"
        return calibration.threshold, "calibrated"
    if calibration.alpha == 0.0:
        return calibration.threshold, "calibrated"
    spread = min(spread, max_spread(calibration))
    adapted = calibration.threshold + calibration.alpha * (spread - calibration.reference_spread)
    if calibration.threshold_max is not None:
        adapted = min(adapted, calibration.threshold_max)
    return adapted, "adapted"


def checked_threshold(value) -> float:
    """A distance threshold given by a person: a finite number in 0..2, else EdgeVerifyError."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = math.nan
    if not 0.0 <= threshold <= 2.0:  # also refuses NaN
        raise EdgeVerifyError(f"the threshold must be a distance from 0 to 2, not {value!r}")
    return threshold


def similarity(distance: float) -> float:
    """Map a distance between unit vectors (0..2) onto a similarity in 0..1."""
    return float(np.clip(1.0 - distance * distance / 4.0, 0.0, 1.0))


def verify(query: np.ndarray, references: np.ndarray, calibration: Calibration | Mapping,
           threshold: float | None = None) -> Verdict:
    """Score a query embedding against a user's reference embeddings.

    `calibration` is the bundle's (a mapping is read as one); `threshold` overrides it when given.
    """
    distance = user_distance(query, references)
    if threshold is not None:
        used, source = float(threshold), "override"
    else:
        used, source = _user_threshold(references, Calibration.of(calibration))
    return Verdict(match=distance <= used, distance=distance, similarity=similarity(distance),
                   threshold=used, threshold_source=source)
