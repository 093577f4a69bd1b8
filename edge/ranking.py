"""1:N ranking: every enrolled user ordered by distance to a query, the best ones verified.

The one scoring rule (edge/scoring.py) gives each candidate's verdict; this module only ranks.
"""
from dataclasses import asdict, dataclass

import numpy as np

from edge_verify.edge import scoring
from edge_verify.edge.bundle import Calibration
from edge_verify.edge.store import Gallery


@dataclass
class Candidate:
    user: str
    match: bool
    similarity: float
    distance: float
    threshold: float
    locked: bool = False        # locked out: never a match

    def to_dict(self) -> dict:
        return asdict(self)


def search(gallery: Gallery, embedding: np.ndarray, k: int, calibration: Calibration,
           locked: set[str] = frozenset()) -> list[Candidate]:
    """Rank every user of the gallery by mean distance to the query (vectorised), verify the top k.
    Users in `locked` never match.

    Distances between unit vectors come from one matrix-vector product: |a - b| = sqrt(2 - 2 a.b).
    """
    cosines = gallery.matrix @ np.asarray(embedding, np.float32)
    distances = np.sqrt(np.maximum(2.0 - 2.0 * cosines, 0.0))
    per_user = np.add.reduceat(distances, gallery.starts) / gallery.counts
    k = max(1, min(int(k), len(per_user)))
    top = np.argpartition(per_user, k - 1)[:k]
    top = top[np.argsort(per_user[top], kind="stable")]
    candidates = []
    for index in top:
        start, count = gallery.starts[index], gallery.counts[index]
        verdict = scoring.verify(embedding, gallery.matrix[start:start + count], calibration)
        name = gallery.names[index]
        candidates.append(Candidate(name, verdict.match and name not in locked, verdict.similarity,
                                    verdict.distance, verdict.threshold, name in locked))
    return candidates
