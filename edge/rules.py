"""The rules every way into the store applies (enroll, import): user names, and references
that repeat another one.
"""
import unicodedata

import numpy as np

from edge_verify.edge.errors import EdgeVerifyError, shown
from edge_verify.edge.limits import MAX_NAME_LENGTH
from edge_verify.edge.store import Reference

NEAR_IDENTICAL = 0.02       # references closer than this (embedding distance) are the same scan


def check_user_name(user: str) -> str:
    """The user name, stripped and in Unicode NFC (so "Zoë" typed either way is one user);
    EdgeVerifyError if empty, too long or with control characters."""
    name = unicodedata.normalize("NFC", str(user).strip())
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise EdgeVerifyError(f"invalid user name {shown(user)}: use 1 to {MAX_NAME_LENGTH} "
                              "printable characters")
    return name


def refuse_repeats(existing: list[Reference], new: list[Reference]) -> None:
    """EdgeVerifyError if a new reference repeats another one (same pixels or near-identical)."""
    everything = existing + new
    embeddings = np.stack([r.embedding for r in everything])
    for i in range(len(existing), len(everything)):
        for j in range(i):
            a, b = everything[j], everything[i]
            other = f"the enrolled reference {label(a)}" if j < len(existing) else label(a)
            distance = float(np.linalg.norm(embeddings[i] - embeddings[j]))
            if a.image_sha256 == b.image_sha256:
                what = "is given twice" if other == label(b) else f"is the same image as {other}"
            elif distance < NEAR_IDENTICAL:
                what = f"is nearly identical to {other} (distance {distance:.3f} < {NEAR_IDENTICAL})"
            else:
                continue
            raise EdgeVerifyError(f"reference {label(b)} {what}: the same scan twice adds no "
                                  "information; use another signature (nothing was enrolled)")


def label(reference: Reference) -> str:
    return reference.source.split(":", 1)[1] if ":" in reference.source else reference.source


def label(reference: Reference) -> str:
    """A reference as messages name it: its file name, or its source."""
    return reference.source.split(":", 1)[1] if ":" in reference.source else reference.source
