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
"""
import base64
import hashlib
import json
import os
import re
import shlex
import stat
import sys
import tempfile
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from edge_verify.edge import scoring
from edge_verify.edge.errors import (AlreadyEnrolledError, EdgeVerifyError, ImageError, ModelError,
                                     StoreError, UserLockedError, UnknownUserError, shown)
from edge_verify.edge.inference import Bundle, Model, load_bundle, load_model, runtime_version
from edge_verify.edge.limits import MAX_EXPORT_BYTES, MAX_NAME_LENGTH, MAX_TEXT_FIELD
from edge_verify.edge.preprocess import PREPROCESS_VERSION, load_image, preprocess
from edge_verify.edge.store import (ENCRYPTION, Gallery, Reference, Store, default_path,
                                     key_from_environment, now)

NEAR_IDENTICAL = 0.02       # references closer than this (embedding distance) are the same scan
MAX_INK_SHARE = 0.5         # a signature is strokes: ink covers less of its bounding box than this
EXPORT_FORMAT = "edge-verify-enrolments/1"            # the users and their embeddings in the clear
ENCRYPTED_EXPORT_FORMAT = "edge-verify-enrolments/2"  # the users sealed with the store's key
STDOUT = "-"                # export to standard output

MAX_FAILED_CHECKS = 5       # failed checks in a row before a lockout (as the default profile)
LOCKOUT_SECONDS = 300

__all__ = ["load_model", "load_bundle", "open_store", "embed_image", "enroll", "check", "identify",
           "search", "list_users", "show_user", "remove_user", "unlock_user", "export_enrolments",
           "import_enrolments", "info", "Enrolment", "CheckResult", "Candidate", "UserLockedError"]




def open_store(path=None, *, key: bytes | None = None, **options) -> Store:
    """Open (creating if needed; create=False refuses a missing one) the store at `path`;
    default: the user's data folder.

    `key` (32 bytes) encrypts the references at rest; by default it is read from
    EDGE_VERIFY_KEY_FILE or EDGE_VERIFY_KEY when one of them is set.
    """
    path = Path(path).expanduser() if path is not None else default_path()
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


# ------------------------------------------------------------------ images and embeddings


def embed_image(model: Model, image) -> tuple[np.ndarray, str]:
    """(unit embedding, sha256 of the decoded pixels) of a path, encoded bytes or uint8 array."""
    name = _describe(image)
    pixels = np.ascontiguousarray(image) if isinstance(image, np.ndarray) else load_image(image)
    try:
        signature = preprocess(pixels, model.input_size)
        refuse_non_signature(signature)
    except ImageError as error:
        raise ImageError(error.reason, f"{name}: {error}") from None
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode() + pixels.tobytes()).hexdigest()
    return model.embed(signature), digest


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
        require_same_model(enrolled.name, enrolled.model_fingerprint, enrolled.preprocess_version,
                           model.bundle)
        existing = enrolled.references
    references = []
    for image in images:
        embedding, digest = embed_image(model, image)
        references.append(Reference(embedding, digest, _source_label(image, source)))
    _refuse_repeats(existing, references)
    embeddings = np.stack([r.embedding for r in existing + references])
    calibration = model.bundle.calibration
    _refuse_mixed(user, embeddings, calibration)
    count = store.save_user(user, references, model_fingerprint=model.fingerprint,
                            preprocess_version=model.bundle.preprocess_version, mode=mode)
    typical = calibration.get("reference_spread")
    return Enrolment(user=user, mode=mode, added=len(references), references=count,
                     spread=scoring.reference_spread(embeddings),
                     typical_spread=float(typical) if typical is not None else None,
                     threshold=scoring.user_threshold(embeddings, calibration),
                     outliers=_outliers(existing + references, calibration))


def check_user_name(user: str) -> str:
    """The user name, stripped and in Unicode NFC (so "Zoë" typed either way is one user);
    EdgeVerifyError if empty, too long or with control characters."""
    name = unicodedata.normalize("NFC", str(user).strip())
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise EdgeVerifyError(f"invalid user name {shown(user)}: use 1 to {MAX_NAME_LENGTH} "
                              "printable characters")
    return name


def _refuse_mixed(user: str, embeddings: np.ndarray, calibration: dict) -> None:
    """EdgeVerifyError when the references spread too far to be one person's signatures."""
    spread, bound = scoring.reference_spread(embeddings), scoring.max_spread(calibration)
    if spread is not None and bound is not None and spread > bound:
        raise EdgeVerifyError(f"the references of {user} do not look like one person's: their spread "
                              f"{spread:.3f} is over {bound:.3f} ({scoring.MAX_SPREAD_FACTOR:g} times a "
                              "typical writer's); enrol signatures of one person only (nothing was enrolled)")


def _refuse_repeats(existing: list[Reference], new: list[Reference]) -> None:
    """EdgeVerifyError if a new reference repeats another one (same pixels or near-identical)."""
    everything = existing + new
    embeddings = np.stack([r.embedding for r in everything])
    for i in range(len(existing), len(everything)):
        for j in range(i):
            a, b = everything[j], everything[i]
            other = f"the enrolled reference {_label(a)}" if j < len(existing) else _label(a)
            distance = float(np.linalg.norm(embeddings[i] - embeddings[j]))
            if a.image_sha256 == b.image_sha256:
                what = "is given twice" if other == _label(b) else f"is the same image as {other}"
            elif distance < NEAR_IDENTICAL:
                what = f"is nearly identical to {other} (distance {distance:.3f} < {NEAR_IDENTICAL})"
            else:
                continue
            raise EdgeVerifyError(f"reference {_label(b)} {what}: the same scan twice adds no "
                                  "information; use another signature (nothing was enrolled)")


def _label(reference: Reference) -> str:
    return reference.source.split(":", 1)[1] if ":" in reference.source else reference.source


def _outliers(references: list[Reference], calibration: dict) -> list[dict]:
    """References that would not pass a check against the other references."""
    if len(references) < 2:
        return []
    embeddings = np.stack([r.embedding for r in references])
    outliers = []
    for i, reference in enumerate(references):
        others = np.delete(embeddings, i, axis=0)
        verdict = scoring.verify(embeddings[i], others, calibration)
        if not verdict.match:
            outliers.append({"reference": _label(reference), "distance": verdict.distance,
                             "threshold": verdict.threshold})
    return outliers


def require_same_model(user: str, fingerprint: str, preprocess_version: str, bundle: Bundle) -> None:
    """ModelError unless a user's embeddings were made by this bundle and preprocessing."""
    if fingerprint == bundle.fingerprint and preprocess_version == bundle.preprocess_version:
        return
    raise ModelError(f"{user} was enrolled with a different model (fingerprint {fingerprint[:12]}, "
                     f"this model {bundle.fingerprint[:12]}), and embeddings of different models "
                     f"cannot be compared; re-enroll: edge-verify enroll {shlex.quote(user)} IMAGE... --replace")


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
        require_same_model(enrolled.name, enrolled.model_fingerprint, enrolled.preprocess_version,
                           model.bundle)
        embedding, _ = embed_image(model, image)
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
    require_same_model(name, enrolled.model_fingerprint, enrolled.preprocess_version, model.bundle)
    _require_embedding_size(enrolled.embeddings, model.bundle, store)
    calibration = model.bundle.calibration
    verdict = scoring.verify(embedding, enrolled.embeddings, calibration, threshold=threshold)
    if threshold is not None:
        origin = "override"
    elif len(enrolled.embeddings) == 1 or verdict.threshold == float(calibration["threshold"]):
        origin = "calibrated"  # one reference: the bundle's one-reference threshold, unadapted
    else:
        origin = "adapted"
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
    embedding, _ = embed_image(model, image)
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


def search(gallery: Gallery, embedding: np.ndarray, k: int, calibration: dict,
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


# ------------------------------------------------------------------ users


def list_users(store: Store, bundle: Bundle | None = None) -> list[dict]:
    """Every user with their number of references; `current_model` tells whether checks can run."""
    users = store.users()
    for user in users:
        if bundle is not None:
            user["current_model"] = (user["model_fingerprint"] == bundle.fingerprint
                                     and user["preprocess_version"] == bundle.preprocess_version)
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
        details["current_model"] = (enrolled.model_fingerprint == bundle.fingerprint
                                    and enrolled.preprocess_version == bundle.preprocess_version)
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


# ------------------------------------------------------------------ export / import


def export_enrolments(store: Store, bundle: Bundle, path, users=None, *, plain: bool = False,
                      overwrite: bool = False) -> dict:
    """Write the enrolments made with `bundle` to a JSON file (to provision other devices).

    `users` names whom to export (default: everyone enrolled with this model; users of another
    model are skipped and listed in the result). The file carries the model fingerprint and
    preprocessing version, and embeddings only (no images). When the store has a key, the users
    and their embeddings are sealed with it (AES-256-GCM, format /2: only a device with the same
    key can import them) unless `plain`; the result's "encryption" says which.
    `path` "-" writes to standard output. An existing file is replaced only with `overwrite`;
    never one that is not a regular file, nor the store or its -wal/-shm/-journal files.
    """
    if str(path) != STDOUT:
        _require_export_target(Path(path), store, overwrite)
    names = [check_user_name(u) for u in users] if users else [u["name"] for u in store.users()]
    exported, skipped = [], []
    for name in names:
        enrolled = store.user(name)
        if (enrolled.model_fingerprint, enrolled.preprocess_version) != (bundle.fingerprint,
                                                                           bundle.preprocess_version):
            if users:
                require_same_model(name, enrolled.model_fingerprint, enrolled.preprocess_version, bundle)
            skipped.append(name)
            continue
        exported.append({
            "name": enrolled.name,
            "created_at": enrolled.created_at,
            "references": [{"embedding": base64.b64encode(np.asarray(r.embedding, "<f4").tobytes()).decode(),
                            "image_sha256": r.image_sha256, "source": r.source,
                            "captured_at": r.captured_at} for r in enrolled.references],
        })
    encrypted = store.encryption != "none" and not plain
    header = {"format": ENCRYPTED_EXPORT_FORMAT if encrypted else EXPORT_FORMAT,
              "model_fingerprint": bundle.fingerprint, "preprocess_version": bundle.preprocess_version,
              "embedding_size": bundle.embedding_size, "exported_at": now()}
    if encrypted:
        header["encryption"] = store.encryption
        sealed = store.seal(json.dumps(exported).encode(), _export_associated_data(header))
        document = {**header, "users": base64.b64encode(sealed).decode()}
    else:
        document = {**header, "users": exported}
    content = json.dumps(document, indent=1).encode()
    if str(path) == STDOUT:
        sys.stdout.buffer.write(content + b"\n")
        sys.stdout.flush()
    else:
        _write_atomically(Path(path), content, overwrite)
    return {"path": str(path), "users": len(exported),
            "references": sum(len(u["references"]) for u in exported), "skipped": skipped,
            "encryption": store.encryption if encrypted else "none"}


def import_enrolments(store: Store, bundle: Bundle, path, *, replace: bool = False) -> dict:
    """Add the users of an export file, all in one transaction (all imported, or none).

    Refuses a file made with another model bundle or preprocessing version, an encrypted file
    when the store's key is missing or is not the one it was exported with, and (unless
    `replace`) users that are already enrolled.
    """
    path = Path(path)
    document = _read_export(path)
    formats = (EXPORT_FORMAT, ENCRYPTED_EXPORT_FORMAT)
    if not isinstance(document, dict) or document.get("format") not in formats:
        raise EdgeVerifyError(f"{path} is not an edge-verify export (expected format "
                              f"{' or '.join(map(repr, formats))})")
    if (document.get("model_fingerprint"), document.get("preprocess_version")) != (
            bundle.fingerprint, bundle.preprocess_version):
        raise ModelError(f"{path} was exported with a different model (fingerprint "
                         f"{str(document.get('model_fingerprint'))[:12]}, this model "
                         f"{bundle.fingerprint[:12]}); install the same model bundle on this device "
                         "or enrol the users again here")
    enrolments = {}
    try:
        if document.get("embedding_size") != bundle.embedding_size:
            raise ValueError(f"embedding_size {shown(document.get('embedding_size'))}, this model's "
                             f"is {bundle.embedding_size}")
        _require_date(document.get("exported_at"), "exported_at")
        users = (_unseal_users(store, path, document) if document["format"] == ENCRYPTED_EXPORT_FORMAT
                 else document["users"])
        if not isinstance(users, list):
            raise ValueError("users is not a list")
        for user in users:
            name, references = _imported_user(user, bundle.embedding_size)
            if name in enrolments:
                raise EdgeVerifyError(f"{path} lists {name} twice")
            enrolments[name] = references
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise EdgeVerifyError(f"{path} is a damaged export ({shown(error, 200)[1:-1]})") from None
    if enrolments:
        try:
            store.save_users(enrolments, model_fingerprint=bundle.fingerprint,
                             preprocess_version=bundle.preprocess_version,
                             mode="replace" if replace else "new")
        except AlreadyEnrolledError as error:
            raise AlreadyEnrolledError(f"{error.user} is already enrolled here: import --replace replaces "
                                       "enrolled users (nothing was imported)", error.user) from None
    return {"path": str(path), "users": len(enrolments),
            "references": sum(len(refs) for refs in enrolments.values())}


def _unseal_users(store: Store, path: Path, document: dict) -> list:
    """The users of an encrypted export, decrypted and authenticated with the store's key."""
    if store.encryption == "none":
        raise EdgeVerifyError(f"{path} is encrypted and no key is set: set EDGE_VERIFY_KEY_FILE "
                              "(or EDGE_VERIFY_KEY) to the key of the device that exported it")
    header = {key: value for key, value in document.items() if key != "users"}
    plain = store.unseal(base64.b64decode(document["users"], validate=True),
                         _export_associated_data(header))
    if plain is None:
        raise EdgeVerifyError(f"{path} cannot be decrypted: the key is not the one it was exported "
                              "with, or the file was changed")
    return json.loads(plain)


def _export_associated_data(header: dict) -> bytes:
    """What the sealed users of an export are bound to: every other field of the file."""
    return json.dumps(header, sort_keys=True).encode()


def _read_export(path: Path):
    """The JSON document of an export file, read up to MAX_EXPORT_BYTES."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_EXPORT_BYTES + 1)
    except FileNotFoundError:
        raise EdgeVerifyError(f"{path} does not exist") from None
    except OSError as error:
        raise EdgeVerifyError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_EXPORT_BYTES:
        raise EdgeVerifyError(f"{path} is larger than an export may be ({MAX_EXPORT_BYTES // 1_000_000} MB)")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EdgeVerifyError(f"{path} is not an edge-verify export (not valid JSON)") from None
    except RecursionError:
        raise EdgeVerifyError(f"{path} is not an edge-verify export (JSON nested too deep)") from None


def _imported_user(user: dict, size: int) -> tuple[str, list[Reference]]:
    """(name, references) of one user of an export, every field checked; ValueError if one is bad."""
    if not isinstance(user, dict) or not isinstance(user.get("name"), str):
        raise ValueError("a user has no name")
    name = check_user_name(user["name"])
    _require_date(user.get("created_at"), f"{name}: created_at")
    items = user.get("references")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{name} has no references")
    references = [_imported_reference(item, size, name) for item in items]
    try:
        _refuse_repeats([], references)
    except EdgeVerifyError as error:
        raise ValueError(f"{name}: {error}") from None
    return name, references


def _imported_reference(item: dict, size: int, name: str) -> Reference:
    if not isinstance(item, dict) or not isinstance(item.get("embedding"), str):
        raise ValueError(f"{name}: a reference has no embedding")
    vector = np.frombuffer(base64.b64decode(item["embedding"], validate=True), "<f4").astype(np.float32)
    if vector.shape != (size,) or not np.isfinite(vector).all() or abs(np.linalg.norm(vector) - 1) > 1e-3:
        raise ValueError(f"{name}: an embedding has the wrong size or is not a unit vector")
    digest, source = item.get("image_sha256"), item.get("source")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{name}: image_sha256 is not 64 hex digits")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_TEXT_FIELD or not source.isprintable():
        raise ValueError(f"{name}: source is not 1 to {MAX_TEXT_FIELD} printable characters")
    return Reference(vector, digest, source, _require_date(item.get("captured_at"), f"{name}: captured_at"))


def _require_date(value, field: str) -> str:
    """An ISO 8601 time stamp as the store writes them; ValueError otherwise."""
    try:
        if not isinstance(value, str) or len(value) > MAX_TEXT_FIELD:
            raise ValueError
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field} is not an ISO 8601 date and time") from None
    return value


def _require_export_target(path: Path, store: Store, overwrite: bool) -> None:
    """EdgeVerifyError unless an export may be written to `path`."""
    store_files = [store.path.with_name(store.path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    if any(_same_file(path, other) for other in store_files):
        raise EdgeVerifyError(f"{path} is the store or one of its files: an export never replaces it")
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as error:
        raise EdgeVerifyError(f"cannot write {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise EdgeVerifyError(f"{path} exists and is not a regular file: an export never replaces it "
                              "(give a file name, or - for standard output)")
    if not overwrite:
        raise EdgeVerifyError(f"{path} exists: give --overwrite to replace it (nothing was written)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: the same name then
        return a.resolve() == b.resolve()


def _write_atomically(path: Path, content: bytes, overwrite: bool = False) -> None:
    """Write a file so that it is either complete or not there (never half-written).

    Without `overwrite` the file takes its name with a hard link, which fails if the name exists:
    a file that appeared meanwhile is not replaced either.
    """
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())  # on disk before it takes the name, even if the power fails
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            os.unlink(temporary)
    except FileExistsError:
        Path(temporary).unlink(missing_ok=True)
        raise EdgeVerifyError(f"{path} exists: give --overwrite to replace it (nothing was written)") from None
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise EdgeVerifyError(f"cannot write {path}: {error.strerror or error}") from None


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
                  "threshold": float(bundle.calibration["threshold"]),
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
