"""Moving enrolments between devices: export to a JSON file, import from one.

An export carries the model fingerprint and preprocessing version, and embeddings only (no
images); with a store key it is sealed with that key (format /2). README: "Export file".
"""
import base64
import json
import os
import re
import stat
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

from edge_verify.edge.bundle import Bundle
from edge_verify.edge.errors import AlreadyEnrolledError, EdgeVerifyError, ModelError, shown
from edge_verify.edge.limits import MAX_EXPORT_BYTES, MAX_TEXT_FIELD
from edge_verify.edge.rules import check_user_name, refuse_repeats
from edge_verify.edge.store import Reference, Store, now

EXPORT_FORMAT = "edge-verify-enrolments/1"            # the users and their embeddings in the clear
ENCRYPTED_EXPORT_FORMAT = "edge-verify-enrolments/2"  # the users sealed with the store's key
STDOUT = "-"                # export to standard output


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
        if not bundle.made(enrolled.model_fingerprint, enrolled.preprocess_version):
            if users:
                bundle.require_made(name, enrolled.model_fingerprint, enrolled.preprocess_version)
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
    if not bundle.made(document.get("model_fingerprint"), document.get("preprocess_version")):
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
        refuse_repeats([], references)
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
