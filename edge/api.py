"""The public functions of edge-verify on the device; the CLI is a thin wrapper around them.

    from edge_verify.edge import load_model, open_store, enroll, check

    model = load_model()                 # the bundled default model
    with open_store() as store:          # the per-user data folder, or open_store("kiosk.sqlite3")
        enroll(model, store, "alice", ["alice_1.png", "alice_2.png", "alice_3.png"])
        result = check(model, store, "alice", "query.png")
        print(result.match, result.similarity)

Images are paths, encoded bytes, or decoded uint8 arrays (from a camera or pad). A user who
fails `max_failed` checks in a row is locked out for `lockout_seconds` (UserLockedError) until
the cool-down ends, or `unlock_user`. With EDGE_VERIFY_KEY_FILE (or EDGE_VERIFY_KEY) set,
open_store encrypts the reference embeddings at rest (AES-256-GCM), and export_enrolments
encrypts its file with the same key. Every bad input raises an EdgeVerifyError subclass with a
one-line message, and leaves the store unchanged.

This module holds enrolment (one user, or a folder of users: enroll_folder), checks and the
lockout, users and info. The ideas it uses each live in their own module: bundle.py (the model
bundle and its calibration), scoring.py (one verdict), ranking.py (1:N search), rules.py (user
names, repeated references), transfer.py (export and import), keys.py (the key and AES-GCM),
store.py (SQLite).
"""
import hashlib
import os
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_verify.edge import scoring
from edge_verify.edge.bundle import Bundle, Calibration, load_bundle
from edge_verify.edge.errors import (EdgeVerifyError, ImageError, StoreError, UnknownUserError,
                                     UserLockedError, shown)
from edge_verify.edge.inference import Model, load_model, runtime_version
from edge_verify.edge.keys import ENCRYPTION, key_from_environment
from edge_verify.edge.preprocess import PREPROCESS_VERSION, load_image, preprocess
from edge_verify.edge.profiles import load_profile
from edge_verify.edge.ranking import Candidate, search
from edge_verify.edge.rules import check_user_name, label, refuse_repeats
from edge_verify.edge.store import Gallery, Reference, Store, store_path
from edge_verify.edge.transfer import STDOUT, export_enrolments, import_enrolments  # noqa: F401 (public)

MAX_INK_SHARE = 0.5         # a signature is strokes: ink covers less of its bounding box than this
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}  # enroll_folder reads these


def _default_lockout() -> tuple[int, int]:
    """(max_failed_checks, lockout_seconds) of the default profile, where defaults live."""
    security = load_profile()["security"]
    return security["max_failed_checks"], security["lockout_seconds"]


MAX_FAILED_CHECKS, LOCKOUT_SECONDS = _default_lockout()

__all__ = ["load_model", "load_bundle", "open_store", "embed_image", "enroll", "enroll_folder",
           "user_folders", "check",
           "identify", "search", "list_users", "show_user", "remove_user", "unlock_user",
           "export_enrolments", "import_enrolments", "info", "Enrolment", "FolderEnrolment", "CheckResult",
           "Candidate", "UserLockedError"]


def open_store(path=None, *, key: bytes | None = None, **options) -> Store:
    """Open (creating if needed; create=False refuses a missing one) the store at `path`;
    default: the user's data folder.

    `key` (32 bytes) encrypts the references at rest; by default it is read from
    EDGE_VERIFY_KEY_FILE or EDGE_VERIFY_KEY when one of them is set.
    """
    path = store_path(path)
    if key is None:
        key = key_from_environment(path)
    return Store(path, key=key, **options)


@dataclass
class Enrolment:
    user: str
    mode: str                   # "new", "replace" or "append"
    added: int                  # references added now
    references: int             # references the user has now
    spread: float | None        # mean pairwise distance of the references (None with one)
    typical_spread: float | None  # the spread of a typical writer, from the bundle calibration
    threshold: float            # the distance threshold checks of this user will use
    outliers: list[dict]        # references that do not match the others: {"reference", "distance"}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CheckResult:
    user: str
    match: bool
    similarity: float           # 0..1, higher is more alike
    distance: float             # mean distance to the user's references, 0..2
    threshold: float            # the distance threshold used
    threshold_source: str       # "calibrated", "adapted" (to the user's spread) or "override"
    references: int

    def to_dict(self) -> dict:
        return {"user": self.user, "result": "MATCH" if self.match else "NO MATCH", **asdict(self)}


# ------------------------------------------------------------------ images and embeddings


def embed_image(model: Model, image) -> tuple[np.ndarray, str]:
    """(unit embedding, sha256 of the decoded pixels) of a path, encoded bytes or uint8 array."""
    embedding, pixels = _embed(model, image)
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode() + pixels.tobytes()).hexdigest()
    return embedding, digest


def _embed(model: Model, image) -> tuple[np.ndarray, np.ndarray]:
    """(unit embedding, decoded pixels): embed_image without the hash, which checks do not keep."""
    name = _describe(image)
    pixels = np.ascontiguousarray(image) if isinstance(image, np.ndarray) else load_image(image)
    try:
        signature = preprocess(pixels, model.input_size)
        refuse_non_signature(signature)
    except ImageError as error:
        raise ImageError(error.reason, f"{name}: {error}") from None
    return model.embed(signature), pixels


def refuse_non_signature(signature: np.ndarray) -> None:
    """ImageError("not_a_signature") when the network input is not strokes on paper.

    A signature is thin strokes: its ink covers at most about a third of its bounding box (0.32 at
    most on every CEDAR scan and 400 Bengali ones). A black picture, a dark video frame or noise
    is found as one block of "ink" covering most of its box.
    """
    ink = signature > 0
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    share = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1].mean() if rows.size else 0.0
    if share > MAX_INK_SHARE:
        raise ImageError("not_a_signature", f"not a signature: ink covers {share:.0%} of its area "
                                            f"(a signature's strokes cover less than {MAX_INK_SHARE:.0%}); "
                                            "the image is dark, noise or a photo")


def _describe(image) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return "the image" if isinstance(image, (bytes, bytearray, memoryview)) else "the captured image"


def _source_label(image, source: str) -> str:
    return f"{source}:{Path(image).name}" if isinstance(image, (str, os.PathLike)) else source


# ------------------------------------------------------------------ enrol


def enroll(model: Model, store: Store, user: str, images, *, mode: str = "new",
           source: str = "file") -> Enrolment:
    """Enrol `user` with reference images (1..N), in one transaction.

    mode "new" refuses an existing user, "replace" starts the user over, "append" adds to the
    existing references. Refuses unreadable or blank images and references that repeat another
    one (same pixels, or embeddings closer than NEAR_IDENTICAL). The result reports the spread
    of the set and the references that would not match the others (outliers).
    """
    if mode not in ("new", "replace", "append"):
        raise ValueError(f"unknown enrolment mode {mode!r}")
    user = check_user_name(user)
    images = list(images)
    if not images:
        raise EdgeVerifyError(f"no reference images given for {user}")
    existing = []
    if mode == "append":
        enrolled = store.user(user)
        _require_model(enrolled, model.bundle)
        existing = enrolled.references
    references = []
    for image in images:
        embedding, digest = embed_image(model, image)
        references.append(Reference(embedding, digest, _source_label(image, source)))
    refuse_repeats(existing, references)
    embeddings = np.stack([r.embedding for r in existing + references])
    calibration = model.bundle.calibration
    _refuse_mixed(user, embeddings, calibration)
    count = store.save_user(user, references, model_fingerprint=model.fingerprint,
                            preprocess_version=model.bundle.preprocess_version, mode=mode)
    return Enrolment(user=user, mode=mode, added=len(references), references=count,
                     spread=scoring.reference_spread(embeddings), typical_spread=calibration.reference_spread,
                     threshold=scoring.user_threshold(embeddings, calibration),
                     outliers=_outliers(existing + references, calibration))


@dataclass
class FolderEnrolment:
    enrolled: list[Enrolment]   # the users enrolled, in folder order
    failed: list[dict]          # {"user", "error"} of each user who was not

    def to_dict(self) -> dict:
        return {"enrolled": [e.to_dict() for e in self.enrolled], "failed": self.failed}


def user_folders(folder) -> list[Path]:
    """The user subfolders of an enrolment folder, sorted; EdgeVerifyError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeVerifyError(f"{folder} is not a folder")
    users = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not users:
        raise EdgeVerifyError(f"{folder} has no user subfolders (expected DIR/USER/IMAGE files)")
    return users


def enroll_folder(model: Model, store: Store, folder, *, mode: str = "new",
                  progress: Callable[[str], None] | None = None) -> FolderEnrolment:
    """Enrol many users: `folder` holds one subfolder per user, named after the user, with that
    user's reference images (IMAGE_SUFFIXES).

    Each user is enrolled as `enroll` does, in their own transaction: a user who fails is listed
    in `failed` with the error's message and the others are enrolled. `progress(name)` is called
    before each user. EdgeVerifyError when `folder` holds no user subfolders.
    """
    enrolled, failed = [], []
    for user_dir in user_folders(folder):
        if progress is not None:
            progress(user_dir.name)
        images = sorted(p for p in user_dir.iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        try:
            if not images:
                raise EdgeVerifyError(f"{shown(user_dir.name)} holds no images")
            enrolled.append(enroll(model, store, user_dir.name, images, mode=mode))
        except EdgeVerifyError as error:
            failed.append({"user": user_dir.name, "error": str(error)})
    return FolderEnrolment(enrolled, failed)


def _refuse_mixed(user: str, embeddings: np.ndarray, calibration: Calibration) -> None:
    """EdgeVerifyError when the references spread too far to be one person's signatures."""
    spread, bound = scoring.reference_spread(embeddings), scoring.max_spread(calibration)
    if spread is not None and bound is not None and spread > bound:
        raise EdgeVerifyError(f"the references of {user} do not look like one person's: their spread "
                              f"{spread:.3f} is over {bound:.3f} ({scoring.MAX_SPREAD_FACTOR:g} times a "
                              "typical writer's); enrol signatures of one person only (nothing was enrolled)")


def _outliers(references: list[Reference], calibration: Calibration) -> list[dict]:
    """References that would not pass a check against the other references."""
    if len(references) < 2:
        return []
    embeddings = np.stack([r.embedding for r in references])
    outliers = []
    for i, reference in enumerate(references):
        others = np.delete(embeddings, i, axis=0)
        verdict = scoring.verify(embeddings[i], others, calibration)
        if not verdict.match:
            outliers.append({"reference": label(reference), "distance": verdict.distance,
                             "threshold": verdict.threshold})
    return outliers


def _require_model(enrolled, bundle: Bundle) -> None:
    """OtherModelError unless the user's embeddings were made by this bundle and preprocessing."""
    bundle.require_made(enrolled.name, enrolled.model_fingerprint, enrolled.preprocess_version)


# ------------------------------------------------------------------ verify and identify


def check(model: Model, store: Store, user: str, image, *, threshold: float | None = None,
          max_failed: int = MAX_FAILED_CHECKS, lockout_seconds: float = LOCKOUT_SECONDS) -> CheckResult:
    """Verify one signature against a user's references (1:1) and log the result.

    After `max_failed` failed checks in a row (0: never) the user is locked out for
    `lockout_seconds`: their checks are refused (UserLockedError, logged as "locked") until the
    cool-down ends or an operator calls unlock_user. A match resets the count. The verdict, its
    audit line and the count are one write transaction, so checks running at once in several
    processes count exactly as one after the other: none is scored once the user is locked.
    """
    if threshold is not None:
        threshold = scoring.checked_threshold(threshold)
    enrolled = store.user(check_user_name(user))
    until = store.locked_until(enrolled.name)  # a locked user's image is not even read
    if until is None:
        _require_model(enrolled, model.bundle)
        embedding, _ = _embed(model, image)
        with store.transaction():
            until = store.locked_until(enrolled.name)  # another check may have locked them meanwhile
            if until is None:
                return _verify_and_count(model, store, enrolled.name, embedding, threshold,
                                         max_failed, lockout_seconds)
    store.log_check(enrolled.name, "check", "locked", model_fingerprint=model.fingerprint)
    raise UserLockedError(f"{enrolled.name} is locked out after too many failed checks, until "
                          f"{until.isoformat(timespec='seconds')}; an operator can lift it: "
                          f"edge-verify users unlock {shlex.quote(enrolled.name)}",
                          enrolled.name, until)


def _verify_and_count(model: Model, store: Store, name: str, embedding: np.ndarray, threshold,
                      max_failed: int, lockout_seconds: float) -> CheckResult:
    """The verdict against the references as stored now, logged, and counted for the lockout."""
    enrolled = store.user(name)
    _require_model(enrolled, model.bundle)
    _require_embedding_size(enrolled.embeddings, model.bundle, store)
    verdict = scoring.verify(embedding, enrolled.embeddings, model.bundle.calibration, threshold=threshold)
    # the CLI and the service say "calibrated" for the bundle's one-reference threshold too
    origin = "calibrated" if verdict.threshold_source == "one-reference" else verdict.threshold_source
    store.log_check(name, "check", "match" if verdict.match else "no_match",
                    similarity=verdict.similarity, distance=verdict.distance,
                    threshold=verdict.threshold, model_fingerprint=model.fingerprint)
    _count_attempt(store, name, verdict.match, max_failed, lockout_seconds)
    return CheckResult(name, verdict.match, verdict.similarity, verdict.distance,
                       verdict.threshold, origin, len(enrolled.references))


def _count_attempt(store: Store, name: str, match: bool, max_failed: int, lockout_seconds: float) -> None:
    """A match resets the user's failures; a failure counts towards their lockout."""
    if match:
        store.clear_failed_checks(name)
    else:
        store.count_failed_check(name, max_failed=max_failed, lockout_seconds=lockout_seconds)


def _require_embedding_size(embeddings: np.ndarray, bundle: Bundle, store: Store) -> None:
    if embeddings.shape[-1] != bundle.embedding_size:
        raise StoreError(f"the store {store.path} is damaged: its references have "
                         f"{embeddings.shape[-1]} values, this model's {bundle.embedding_size}")


def identify(model: Model, store: Store, image, k: int = 5, *, gallery: Gallery | None = None,
             max_failed: int = MAX_FAILED_CHECKS, lockout_seconds: float = LOCKOUT_SECONDS) -> list[Candidate]:
    """The k enrolled users most like the signature (1:N), best first, and log the search.

    Lockout: a locked user is listed but never matches. The search counts as a check of the best
    candidate: a match resets their failures, no match counts one (a locked one is logged as
    "locked"), in one transaction with its audit line, as check does.
    Pass a `gallery` (store.gallery(model.fingerprint)) to search many images without reloading it.
    """
    if gallery is None:
        gallery = store.gallery(model.fingerprint)
    if not gallery.names:
        raise StoreError(f"no users are enrolled with this model in {store.path}")
    _require_embedding_size(gallery.matrix, model.bundle, store)
    embedding, _ = _embed(model, image)
    with store.transaction():
        candidates = search(gallery, embedding, k, model.bundle.calibration, store.locked_users())
        best = candidates[0]
        store.log_check(best.user, "identify",
                        "locked" if best.locked else "match" if best.match else "no_match",
                        similarity=best.similarity, distance=best.distance, threshold=best.threshold,
                        model_fingerprint=model.fingerprint)
        if not best.locked:
            _count_attempt(store, best.user, best.match, max_failed, lockout_seconds)
    return candidates


# ------------------------------------------------------------------ users


def list_users(store: Store, bundle: Bundle | None = None) -> list[dict]:
    """Every user with their number of references; `current_model` tells whether checks can run."""
    users = store.users()
    for user in users:
        if bundle is not None:
            user["current_model"] = bundle.made(user["model_fingerprint"], user["preprocess_version"])
    return users


def show_user(store: Store, user: str, bundle: Bundle | None = None, checks: int = 5) -> dict:
    """A user's references (source, image hash, time; never the vectors), spread and latest checks."""
    enrolled = store.user(check_user_name(user))
    embeddings = enrolled.embeddings
    details = {
        "name": enrolled.name,
        "model_fingerprint": enrolled.model_fingerprint,
        "preprocess_version": enrolled.preprocess_version,
        "created_at": enrolled.created_at,
        "updated_at": enrolled.updated_at,
        "references": [{"source": r.source, "image_sha256": r.image_sha256, "captured_at": r.captured_at}
                       for r in enrolled.references],
        "spread": scoring.reference_spread(embeddings),
        "latest_checks": store.checks(enrolled.name, limit=checks),
        "failed_checks": store.failed_checks(enrolled.name),
        "locked_until": _stamp(store.locked_until(enrolled.name)),
    }
    if bundle is not None:
        details["current_model"] = bundle.made(enrolled.model_fingerprint, enrolled.preprocess_version)
        if details["current_model"]:
            details["threshold"] = scoring.user_threshold(embeddings, bundle.calibration)
            details["outliers"] = _outliers(enrolled.references, bundle.calibration)
    return details


def remove_user(store: Store, user: str) -> None:
    """Delete a user and their references; UnknownUserError if not enrolled."""
    store.remove_user(check_user_name(user))


def unlock_user(store: Store, user: str) -> dict:
    """Lift a user's lockout and forget their failed checks (an operator's action).

    Returns {"user", "was_locked"}; UnknownUserError if the user is not enrolled.
    """
    name = check_user_name(user)
    if not store.has_user(name):
        raise UnknownUserError(f"unknown user {name!r}: not enrolled in {store.path}")
    was_locked = store.locked_until(name) is not None
    store.clear_failed_checks(name)
    return {"user": name, "was_locked": was_locked}


def _stamp(moment) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


# ------------------------------------------------------------------ info


def info(model: Model, store: Store | Path) -> dict:
    """What runs where: runtime, delegate, model bundle and store (a path: none there yet)."""
    bundle = model.bundle
    return {
        "runtime": {"name": model.runtime, "version": runtime_version(model),
                    "delegate": model.delegate, "threads": model.threads, "model_file": model.model_file},
        "model": {"path": str(bundle.path), "fingerprint": bundle.fingerprint,
                  "input": list(bundle.input_size), "embedding_size": bundle.embedding_size,
                  "preprocess_version": bundle.preprocess_version,
                  "threshold": bundle.calibration.threshold,
                  "versions": bundle.manifest.get("versions", {})},
        "store": _store_info(store, bundle),
        "preprocess_version": PREPROCESS_VERSION,
    }


def _store_info(store: Store | Path, bundle: Bundle) -> dict:
    if not isinstance(store, Store):
        key = key_from_environment(store)  # a bad key setting is reported before a store exists
        return {"path": str(store), "exists": False, "schema": None, "read_only": False,
                "encryption": "none" if key is None else ENCRYPTION, "users": 0, "references": 0,
                "encrypted_references": 0, "checks": 0, "users_other_model": 0}
    counts = store.counts()
    by_model = counts.pop("users_by_model")
    return {"path": str(store.path), "exists": True, "schema": store.schema_version(),
            "read_only": store.read_only, "encryption": store.encryption, **counts,
            "users_other_model": counts["users"] - by_model.get(bundle.fingerprint, 0)}
