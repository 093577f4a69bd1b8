"""The local store of enrolments: one SQLite file (WAL mode) on the device.

Tables: users (with the model fingerprint and preprocessing version their references were made
with), embeddings (one row per reference: float32 vector, image hash, capture source, time) and
checks (the audit log: user, time, kind, result, score; never images) and lockouts (failed checks
in a row, and until when a user is locked). Every write is one short transaction (BEGIN
IMMEDIATE: writers take turns, readers never wait), so a user is either fully enrolled or absent,
even when the process is killed mid-write; Store.transaction() groups several steps into one.
The schema is versioned with PRAGMA user_version and the ordered MIGRATIONS below; never edit a
migration, append one.

Embedding rows carry a `codec`: "f32le" is a plain little-endian float32 vector; "aesgcm-f32le"
is that vector encrypted with AES-256-GCM (blob = 12-byte random nonce + ciphertext + tag), with
user name, reference id and model fingerprint as associated data, so a changed or swapped row
fails authentication (edge/keys.py: the key's sources and AES-GCM). The key is given to Store
(see keys.key_from_environment); never kept in the store. Store.seal / Store.unseal encrypt other
data (an export file) the same way.

A store remembers its key: the first enrolment or import with one writes a key check value (a
sealed constant) to `settings` and encrypts any plain rows. From then on a command with
another key is refused, a plain row is refused as tampering, and references cannot be written
without the key.

Only a store is opened: a file that is not one (another program's database, a device node) is
refused untouched. `create=False` (every read) refuses a store that does not exist instead of
creating it. A store that cannot be written (file or folder read-only) is opened read-only: reads
work, writes are refused. A damaged file is reported as damage, never as "unknown user": a name the
users index misses but the table holds, damaged pages (PRAGMA quick_check whenever a user is not
found), and rows that are not finite unit vectors.
"""
import os
import sqlite3
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from edge_verify.edge.errors import AlreadyEnrolledError, OtherModelError, StoreError, UnknownUserError, shown
from edge_verify.edge.keys import ENCRYPTION, KEY_ENV, KEY_FILE_ENV, Sealer

APP_NAME = "edge-verify"
DB_NAME = "store.sqlite3"
BUSY_TIMEOUT_S = 5.0
PLAIN = "f32le"
ENCRYPTED = "aesgcm-f32le"
KEY_CHECK = b"edge-verify key check"    # sealed with the key into settings.key_check
STORE_TABLES = {"users", "embeddings", "checks"}

MIGRATIONS = [
    # 1: the first schema
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        model_fingerprint TEXT NOT NULL,
        preprocess_version TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        codec TEXT NOT NULL,
        vector BLOB NOT NULL,
        image_sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        captured_at TEXT NOT NULL
    );
    CREATE INDEX embeddings_by_user ON embeddings(user_id);
    CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        kind TEXT NOT NULL,
        result TEXT NOT NULL,
        similarity REAL,
        distance REAL,
        threshold REAL,
        model_fingerprint TEXT NOT NULL,
        checked_at TEXT NOT NULL
    );
    CREATE INDEX checks_by_user ON checks(user, checked_at);
    """,
    # 2: brute-force lockout (failed checks in a row per user)
    """
    CREATE TABLE lockouts (
        user TEXT PRIMARY KEY,
        failed_checks INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT
    );
    """,
    # 3: settings of the store itself (the key check value)
    """
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    """,
]


@dataclass
class Reference:
    """One reference signature of a user, as stored: its embedding and where it came from."""
    embedding: np.ndarray       # float32 (D,), unit length
    image_sha256: str           # hash of the decoded image pixels
    source: str                 # e.g. "file:alice_1.png", "camera", "pad", "import"
    captured_at: str = field(default_factory=lambda: now())


@dataclass
class User:
    name: str
    model_fingerprint: str
    preprocess_version: str
    created_at: str
    updated_at: str
    references: list[Reference]

    @property
    def embeddings(self) -> np.ndarray:
        """The references' embeddings as one float32 matrix (R, D)."""
        return np.stack([r.embedding for r in self.references]).astype(np.float32, copy=False)


@dataclass
class Gallery:
    """All references of the users enrolled with one model, as one matrix, grouped by user."""
    names: list[str]            # user names, in matrix order
    matrix: np.ndarray          # float32 (R, D): every reference of every user
    starts: np.ndarray          # index of each user's first row in matrix
    counts: np.ndarray          # number of rows of each user


def clock() -> datetime:
    """The current time (UTC); tests may replace it."""
    return datetime.now(timezone.utc)


def now() -> str:
    return clock().isoformat(timespec="seconds")


def default_path(data_dir=None) -> Path:
    """The store file: DATA_DIR/store.sqlite3, by default in the user's data folder (platformdirs)."""
    if not data_dir:
        import platformdirs
        data_dir = platformdirs.user_data_dir(APP_NAME, appauthor=False)
    return Path(data_dir).expanduser() / DB_NAME


def store_path(path=None, data_dir=None) -> Path:
    """The store file to open: `path` as given (~ expanded), else default_path(data_dir)."""
    return Path(path).expanduser() if path is not None else default_path(data_dir)


class Store:
    """An open store. Use as a context manager, or call close()."""

    def __init__(self, path=None, *, timeout: float | None = None, key: bytes | None = None,
                 create: bool = True):
        """Open the store; waits up to `timeout` s (BUSY_TIMEOUT_S) for a lock.

        With a 32-byte `key`, new references are stored encrypted (AES-256-GCM) and encrypted
        ones can be read; without it, references are stored in the clear. `create=False` refuses
        a store that does not exist yet (StoreError) instead of creating it and its folder.
        """
        timeout = BUSY_TIMEOUT_S if timeout is None else timeout
        self.path = store_path(path)
        self._cipher = None if key is None else Sealer(key)
        self._keyed = False  # whether the store has a key check value (set by _adopt_key)
        exists = self._require_store_file(create)
        self.read_only = exists and not self._writable()
        with self._errors():
            if self.read_only:
                self._db = self._open_read_only(timeout)
            else:
                self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            with self._errors():
                self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                self._db.execute("PRAGMA foreign_keys = ON")
                journal = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                self._require_own_schema()
                if not self.read_only and journal != "wal":
                    self._db.execute("PRAGMA journal_mode = WAL")
                self._migrate()
                self._keyed = self._adopt_key()
        except BaseException:
            self._db.close()
            raise

    def _open_read_only(self, timeout: float) -> sqlite3.Connection:
        """A read-only connection. Where the WAL index (-shm) is absent and cannot be made (read-only
        media, a folder the user cannot write), SQLite reads a WAL store only when told that the
        file does not change (immutable): nobody can write it there either."""
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            db.execute("PRAGMA schema_version").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
            return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=timeout, isolation_level=None)

    def _require_store_file(self, create: bool) -> bool:
        """Whether the store file exists (with content); StoreError for anything but a store file."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            info = None
        except OSError as error:
            raise StoreError(f"cannot open the store {self.path}: {error.strerror or error}") from None
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise StoreError(f"the store {self.path} is a folder, not a database file")
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{self.path} is not a regular file, so it is not an edge-verify store")
        if info is not None and info.st_size > 0:
            return True  # SQLite itself refuses a file that is not a database (never open it here:
            # closing another descriptor of the file would drop this process's SQLite locks on it)
        if not create:
            raise StoreError(f"there is no store at {self.path}: enroll a user or import an export "
                             "first (only they create a store)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the folder of the store {self.path}: "
                             f"{error.strerror or error}") from None
        return False

    def _require_own_schema(self) -> None:
        """StoreError, before anything is written, unless the database is empty or an edge-verify store."""
        tables = {name for (name,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if (tables or self.schema_version()) and not STORE_TABLES <= tables:
            raise StoreError(f"{self.path} is an SQLite database of another program, not an "
                             "edge-verify store: nothing was changed")

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ schema

    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > len(MIGRATIONS):
            raise StoreError(f"the store {self.path} was written by a newer edge-verify "
                             f"(schema {version}, this one knows {len(MIGRATIONS)}); upgrade edge-verify")
        if self.read_only and version < len(MIGRATIONS):
            raise StoreError(f"the store {self.path} is read-only and needs an upgrade (schema "
                             f"{version} to {len(MIGRATIONS)}): make it writable once")
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                if self.schema_version() >= number:  # another process migrated meanwhile
                    continue
                for statement in filter(str.strip, sql.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def require_intact(self) -> None:
        """StoreError when SQLite's quick_check finds the file's pages damaged."""
        with self._errors():
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise self._damaged_store("; ".join(problems)[:200])

    def _damaged_store(self, what: str) -> StoreError:
        return StoreError(f"the store {self.path} is damaged ({what}): nothing was changed; restore "
                          "it from a backup or an export")

    def _user_row(self, name: str):
        """(id, name, model_fingerprint, preprocess_version, created_at, updated_at) of a user, or
        None. A name the index misses but the table holds is damage, never "unknown user"."""
        with self._errors():
            row = self._db.execute("SELECT id, name, model_fingerprint, preprocess_version, "
                                   "created_at, updated_at FROM users WHERE name = ?", (name,)).fetchone()
            if row is None and self._db.execute("SELECT 1 FROM users NOT INDEXED WHERE name = ?",
                                                (name,)).fetchone():
                raise self._damaged_store("its index of user names misses users")
        return row

    # ------------------------------------------------------------ transactions and errors

    @contextmanager
    def _errors(self):
        """Turn sqlite3 errors into one-line StoreErrors that name the file."""
        try:
            yield
        except sqlite3.Error as error:
            text = str(error)
            if "locked" in text or "busy" in text:
                message = (f"the store {self.path} is locked by another edge-verify process; "
                           "try again when it has finished")
            elif "readonly" in text or "read-only" in text or not self._writable():
                message = f"the store {self.path} (or its folder) is read-only: nothing was changed"
            elif "not a database" in text or "malformed" in text or "corrupt" in text:
                message = (f"{self.path} is damaged or is not an edge-verify store ({text}): "
                           "nothing was changed")
            elif "unable to open" in text:
                message = f"cannot open the store {self.path} ({text})"
            else:
                message = f"the store {self.path} failed: {text}"
            raise StoreError(message) from None

    def _writable(self) -> bool:
        """Whether the store file and its folder (for the WAL files) can be written."""
        folder_ok = os.access(self.path.parent, os.W_OK)
        return folder_ok and (not self.path.exists() or os.access(self.path, os.W_OK))

    @contextmanager
    def transaction(self):
        """One short write transaction: everything in it is stored, or nothing.

        BEGIN IMMEDIATE takes the store's write lock first (waiting up to the timeout for other
        writers), so what is read inside stays true until the commit: a read-then-write in it is
        never lost to another process. Store methods called inside join it.
        """
        if self._db.in_transaction:
            yield
            return
        if self.read_only:
            raise StoreError(f"the store {self.path} (or its folder) is read-only: nothing was changed")
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------ users

    def save_user(self, name: str, references: list[Reference], *, model_fingerprint: str,
                  preprocess_version: str, mode: str = "new") -> int:
        """Enrol one user in one transaction; returns the number of references the user now has.

        mode "new": the user must not exist; "replace": any previous references are dropped;
        "append": the user must exist, enrolled with the same model, and keeps old references.
        """
        return self.save_users({name: references}, model_fingerprint=model_fingerprint,
                               preprocess_version=preprocess_version, mode=mode)[name]

    def save_users(self, enrolments: dict[str, list[Reference]], *, model_fingerprint: str,
                   preprocess_version: str, mode: str = "new") -> dict[str, int]:
        """save_user for several users in one transaction: all are stored, or none."""
        if mode not in ("new", "replace", "append"):
            raise ValueError(f"unknown mode {mode!r}")
        counts = {}
        with self.transaction():
            self._record_key()
            for name, references in enrolments.items():
                counts[name] = self._save(name, references, model_fingerprint, preprocess_version, mode)
        return counts

    def _save(self, name, references, model_fingerprint, preprocess_version, mode) -> int:
        if not references:
            raise StoreError(f"no references to store for {name}")
        stamp = now()
        row = self._user_row(name)  # a damaged name index would let a user be enrolled twice
        row = row and (row[0], row[2], row[3])
        if row and mode == "new":
            count = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE user_id = ?",
                                     (row[0],)).fetchone()[0]
            raise AlreadyEnrolledError(f"{name} is already enrolled ({count} references); use --replace "
                                       "to start over or --append to add references", name)
        if not row and mode == "append":
            raise UnknownUserError(f"{name} is not enrolled, so there is nothing to append to; "
                                   "enroll without --append")
        if row and mode == "append" and (row[1], row[2]) != (model_fingerprint, preprocess_version):
            raise OtherModelError(name, row[1], model_fingerprint)
        if row and mode == "replace":
            self._db.execute("DELETE FROM users WHERE id = ?", (row[0],))
            row = None
        if row:
            user_id = row[0]
            self._db.execute("UPDATE users SET updated_at = ? WHERE id = ?", (stamp, user_id))
        else:
            user_id = self._db.execute(
                "INSERT INTO users (name, model_fingerprint, preprocess_version, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?)",
                (name, model_fingerprint, preprocess_version, stamp, stamp)).lastrowid
        next_id = self._db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM embeddings").fetchone()[0]
        rows = []
        for reference_id, r in enumerate(references, start=next_id):
            codec, blob = self._encode(r.embedding, name, reference_id, model_fingerprint)
            rows.append((reference_id, user_id, codec, blob, r.image_sha256, r.source, r.captured_at))
        self._db.executemany(
            "INSERT INTO embeddings (id, user_id, codec, vector, image_sha256, source, captured_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return self._db.execute("SELECT COUNT(*) FROM embeddings WHERE user_id = ?",
                                (user_id,)).fetchone()[0]

    def user(self, name: str) -> User:
        """A user with all references; UnknownUserError if not enrolled."""
        row = self._user_row(name)
        if row is None:
            raise self._unknown(name)
        with self._errors():
            rows = self._db.execute("SELECT id, codec, vector, image_sha256, source, captured_at "
                                    "FROM embeddings WHERE user_id = ? ORDER BY id",
                                    (row[0],)).fetchall()
        references = [Reference(self._decode(codec, blob, row[1], reference_id, row[2]), sha, source, at)
                      for reference_id, codec, blob, sha, source, at in rows]
        if not references or len({r.embedding.size for r in references}) != 1:
            raise StoreError(f"the references of {row[1]} in {self.path} are damaged (none, "
                             "or vectors of different sizes); re-enroll them with --replace")
        return User(*row[1:], references)

    def _unknown(self, name: str) -> UnknownUserError:
        """The error for a name not found, once the store is known not to be damaged."""
        self.require_intact()
        return UnknownUserError(f"unknown user {shown(name)}: not enrolled in {self.path}")

    def has_user(self, name: str) -> bool:
        """Whether `name` is enrolled (without reading the references)."""
        return self._user_row(name) is not None

    def users(self) -> list[dict]:
        """Every user: name, model_fingerprint, preprocess_version, references, created_at, updated_at."""
        with self._errors():
            rows = self._db.execute(
                "SELECT u.name, u.model_fingerprint, u.preprocess_version, COUNT(e.id), "
                "u.created_at, u.updated_at FROM users u LEFT JOIN embeddings e ON e.user_id = u.id "
                "GROUP BY u.id ORDER BY u.name").fetchall()
        keys = ("name", "model_fingerprint", "preprocess_version", "references", "created_at", "updated_at")
        return [dict(zip(keys, row)) for row in rows]

    def remove_user(self, name: str) -> None:
        """Delete a user and their references (the audit log keeps its lines)."""
        with self.transaction():
            if self._user_row(name) is None:
                raise self._unknown(name)
            self._db.execute("DELETE FROM users WHERE name = ?", (name,))
            self._db.execute("DELETE FROM lockouts WHERE user = ?", (name,))

    def gallery(self, model_fingerprint: str) -> Gallery:
        """Every reference of the users enrolled with this model, as one matrix for 1:N search."""
        with self._errors():
            rows = self._db.execute(
                "SELECT u.id, u.name, e.codec, e.vector, e.id FROM users u "
                "JOIN embeddings e ON e.user_id = u.id "
                "WHERE u.model_fingerprint = ? ORDER BY u.id, e.id", (model_fingerprint,)).fetchall()
        if not rows:
            return Gallery([], np.zeros((0, 0), np.float32), np.zeros(0, int), np.zeros(0, int))
        if not self._keyed and all(row[2] == PLAIN for row in rows):
            if len({len(row[3]) for row in rows}) != 1:
                raise StoreError(f"the store {self.path} is damaged: its references have different sizes")
            matrix = np.frombuffer(b"".join(row[3] for row in rows), "<f4").reshape(len(rows), -1)
            if not _unit_vectors(matrix).all():
                bad = rows[int(np.argmin(_unit_vectors(matrix)))]
                raise _damaged(bad[1], bad[4], self.path)
        else:  # decrypted (and checked) once here, so a 1:N search runs on the plain matrix
            vectors = [self._decode(codec, blob, name, reference_id, model_fingerprint)
                       for _, name, codec, blob, reference_id in rows]
            if len({v.size for v in vectors}) != 1:
                raise StoreError(f"the store {self.path} is damaged: its references have different sizes")
            matrix = np.stack(vectors)
        ids = np.fromiter((row[0] for row in rows), np.int64, len(rows))
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        counts = np.diff(np.r_[starts, len(rows)])
        return Gallery([rows[i][1] for i in starts], matrix.astype(np.float32), starts, counts)

    def counts(self) -> dict:
        """Numbers of users, references and logged checks, and users per model fingerprint."""
        with self._errors():
            users = self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0]
            references = self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            checks = self._db.execute("SELECT COUNT(*) FROM checks").fetchone()[0]
            models = dict(self._db.execute("SELECT model_fingerprint, COUNT(*) FROM users "
                                           "GROUP BY model_fingerprint").fetchall())
            encrypted = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE codec = ?",
                                         (ENCRYPTED,)).fetchone()[0]
        return {"users": users, "references": references, "encrypted_references": encrypted,
                "checks": checks, "users_by_model": models}

    # ------------------------------------------------------------ encryption at rest

    @property
    def encryption(self) -> str:
        """How new references are stored: "aes-256-gcm" (a key is set) or "none"."""
        return "none" if self._cipher is None else ENCRYPTION

    def seal(self, data: bytes, associated: bytes) -> bytes:
        """`data` sealed with the store's key (keys.Sealer.seal); StoreError without a key."""
        return self._key_cipher().seal(data, associated)

    def unseal(self, blob: bytes, associated: bytes) -> bytes | None:
        """The data of a sealed `blob`, or None when it fails authentication (keys.Sealer.unseal).
        StoreError without a key."""
        return self._key_cipher().unseal(blob, associated)

    def _key_cipher(self):
        """The AES-GCM cipher of the store's key; StoreError when no key is set."""
        if self._cipher is None:
            raise StoreError("no encryption key is set: set "
                             f"{KEY_FILE_ENV} (a key file) or {KEY_ENV} (hex)")
        return self._cipher

    def _adopt_key(self) -> bool:
        """Whether the store has a key (a key check value); StoreError when the key given is not it.

        A store without a check value that holds encrypted rows (made before check values) is
        checked against its first encrypted row.
        """
        stored = self._setting("key_check")
        if self._cipher is not None and stored is not None and self.unseal(stored, KEY_CHECK) is None:
            raise self._wrong_key()
        if self._cipher is not None and stored is None:
            self._first_encrypted_row()
        return stored is not None

    def _record_key(self) -> None:
        """In a write transaction: the first write with a key stores its check value and encrypts
        the rows written without one. From then on the store has this key."""
        if self._cipher is None or self._setting("key_check") is not None:
            return
        self._db.execute("INSERT INTO settings (name, value) VALUES ('key_check', ?)",
                         (self.seal(KEY_CHECK, KEY_CHECK),))
        self._encrypt_plain_rows()

    def _setting(self, name: str):
        with self._errors():
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _wrong_key(self) -> StoreError:
        return StoreError(f"the key is not the key of the store {self.path}: nothing was done; set "
                          f"{KEY_FILE_ENV} or {KEY_ENV} to this store's key")

    def _first_encrypted_row(self) -> None:
        """StoreError when the key cannot open the store's first encrypted row."""
        row = self._db.execute("SELECT e.id, e.vector, u.name, u.model_fingerprint FROM embeddings e "
                               "JOIN users u ON u.id = e.user_id WHERE e.codec = ? ORDER BY e.id LIMIT 1",
                               (ENCRYPTED,)).fetchone()
        if row and self.unseal(row[1], _associated_data(row[2], row[0], row[3])) is None:
            raise self._wrong_key()

    def _encrypt_plain_rows(self) -> None:
        rows = self._db.execute("SELECT e.id, e.vector, u.name, u.model_fingerprint FROM embeddings e "
                                "JOIN users u ON u.id = e.user_id WHERE e.codec = ?", (PLAIN,)).fetchall()
        for reference_id, blob, user, fingerprint in rows:
            vector = _vector(blob, user, reference_id, self.path)
            codec, sealed = self._encode(vector, user, reference_id, fingerprint)
            self._db.execute("UPDATE embeddings SET codec = ?, vector = ? WHERE id = ?",
                             (codec, sealed, reference_id))

    def _encode(self, embedding, user: str, reference_id: int, model_fingerprint: str):
        """(codec, blob) of one reference: encrypted when the store has a key."""
        plain = np.asarray(embedding, "<f4").tobytes()
        if self._cipher is None:
            if self._keyed:
                raise StoreError(f"the store {self.path} is encrypted and no key is set: set "
                                 f"{KEY_FILE_ENV} (a key file) or {KEY_ENV} (hex); nothing was changed")
            return PLAIN, plain
        return ENCRYPTED, self.seal(plain, _associated_data(user, reference_id, model_fingerprint))

    def _decode(self, codec: str, blob: bytes, user: str, reference_id: int,
                model_fingerprint: str) -> np.ndarray:
        """The reference's unit vector; StoreError when it is damaged, tampered with or unreadable."""
        if codec == PLAIN and self._keyed:
            raise StoreError(f"reference {reference_id} of user {user} is not encrypted in an "
                             f"encrypted store: the store {self.path} was tampered with")
        if codec == PLAIN:
            return _vector(blob, user, reference_id, self.path)
        if codec != ENCRYPTED:
            raise StoreError(f"reference {reference_id} of user {user} uses codec {shown(str(codec))}, "
                             "which this edge-verify cannot read")
        if self._cipher is None:
            raise StoreError(f"the references in {self.path} are encrypted and no key is set: "
                             f"set {KEY_FILE_ENV} (a key file) or {KEY_ENV} (hex)")
        plain = self.unseal(blob, _associated_data(user, reference_id, model_fingerprint))
        if plain is None:
            raise StoreError(f"reference {reference_id} of user {user} failed authentication: "
                             "the store was tampered with or the key is wrong")
        return _vector(plain, user, reference_id, self.path)

    # ------------------------------------------------------------ brute-force lockout

    def locked_until(self, user: str) -> datetime | None:
        """Until when `user` is locked out, or None when checks are allowed now."""
        with self._errors():
            row = self._db.execute("SELECT locked_until FROM lockouts WHERE user = ?",
                                   (user,)).fetchone()
        if row is None or row[0] is None:
            return None
        until = datetime.fromisoformat(row[0])
        return until if until > clock() else None

    def count_failed_check(self, user: str, *, max_failed: int, lockout_seconds: float) -> datetime | None:
        """Count one failed check of `user`; lock them when it is the max_failed-th in a row.

        Returns until when the user is now locked (None if not). max_failed 0 never locks.
        Locking starts the count again, so after the cool-down the user has max_failed tries.
        """
        with self.transaction():
            row = self._db.execute("SELECT failed_checks FROM lockouts WHERE user = ?",
                                   (user,)).fetchone()
            failed = (row[0] if row else 0) + 1
            until = None
            if max_failed > 0 and failed >= max_failed:
                until, failed = clock() + timedelta(seconds=lockout_seconds), 0
            self._db.execute(
                "INSERT INTO lockouts (user, failed_checks, locked_until) VALUES (?, ?, ?) "
                "ON CONFLICT(user) DO UPDATE SET failed_checks = excluded.failed_checks, "
                "locked_until = excluded.locked_until",
                (user, failed, until.isoformat(timespec="milliseconds") if until else None))
        return until

    def locked_users(self) -> set[str]:
        """The users locked out now."""
        with self._errors():
            rows = self._db.execute("SELECT user, locked_until FROM lockouts "
                                    "WHERE locked_until IS NOT NULL").fetchall()
        moment = clock()
        return {user for user, until in rows if datetime.fromisoformat(until) > moment}

    def clear_failed_checks(self, user: str) -> bool:
        """Forget `user`'s failed checks and lift any lockout; True if there was something to forget."""
        with self.transaction():
            return self._db.execute("DELETE FROM lockouts WHERE user = ?", (user,)).rowcount > 0

    def failed_checks(self, user: str) -> int:
        """Failed checks of `user` in a row since the last match, unlock or lockout."""
        with self._errors():
            row = self._db.execute("SELECT failed_checks FROM lockouts WHERE user = ?",
                                   (user,)).fetchone()
        return row[0] if row else 0

    # ------------------------------------------------------------ audit log

    def log_check(self, user: str, kind: str, result: str, *, similarity=None, distance=None,
                  threshold=None, model_fingerprint: str) -> None:
        """Append one line to the audit log (kind "check" or "identify"; result "match", "no_match"
        or "locked": a check refused because the user is locked out)."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO checks (user, kind, result, similarity, distance, threshold, "
                "model_fingerprint, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (user, kind, result, similarity, distance, threshold, model_fingerprint, now()))

    def checks(self, user: str | None = None, limit: int = 100) -> list[dict]:
        """The latest audit-log lines, newest first (optionally of one user)."""
        query = ("SELECT user, kind, result, similarity, distance, threshold, model_fingerprint, "
                 "checked_at FROM checks")
        params: tuple = ()
        if user is not None:
            query, params = query + " WHERE user = ?", (user,)
        with self._errors():
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", params + (limit,)).fetchall()
        keys = ("user", "kind", "result", "similarity", "distance", "threshold", "model_fingerprint",
                "checked_at")
        return [dict(zip(keys, row)) for row in rows]



def _unit_vectors(matrix: np.ndarray) -> np.ndarray:
    """Per row: whether it is a finite unit vector (as every stored embedding is). A NaN or
    infinite value makes the row's sum of squares NaN or infinite; no copy of the matrix is made."""
    with np.errstate(all="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    return np.abs(norms - 1.0) <= 1e-3


def _vector(blob: bytes, user: str, reference_id: int, path) -> np.ndarray:
    """A stored float32 vector; StoreError when it is not a finite unit vector (a damaged row)."""
    if not isinstance(blob, bytes) or not blob or len(blob) % 4:
        raise _damaged(user, reference_id, path)
    vector = np.frombuffer(blob, "<f4").astype(np.float32)
    if not _unit_vectors(vector[None])[0]:
        raise _damaged(user, reference_id, path)
    return vector


def _damaged(user: str, reference_id: int, path) -> StoreError:
    return StoreError(f"reference {reference_id} of user {user} in {path} is damaged (not a "
                      "finite unit vector); re-enroll the user with --replace")


def _associated_data(user: str, reference_id: int, model_fingerprint: str) -> bytes:
    """What an encrypted reference is bound to: moving it to another row or user breaks it."""
    return f"edge-verify\0{user}\0{reference_id}\0{model_fingerprint}".encode()
