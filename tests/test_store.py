"""The SQLite store: schema and migrations, atomic enrolment, locks, audit log, 1:N gallery."""
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import dump

from edge_verify.edge import store as store_module
from edge_verify.edge.errors import StoreError, UnknownUserError
from edge_verify.edge.store import MIGRATIONS, Reference, Store, default_path

MODEL_A, MODEL_B = "a" * 64, "b" * 64


def references(count, seed=0, size=8):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, size)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [Reference(v, f"sha{seed}-{i}", f"file:{seed}_{i}.png") for i, v in enumerate(vectors)]


def save(store, name, refs, model=MODEL_A, mode="new"):
    return store.save_user(name, refs, model_fingerprint=model, preprocess_version="sig-1", mode=mode)


def test_a_new_store_is_wal_versioned_and_enforces_foreign_keys(db):
    with Store(db) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_embeddings_and_their_origin_round_trip_exactly(db):
    refs = references(3)
    with Store(db) as store:
        assert save(store, "alice", refs) == 3
    with Store(db) as store:
        user = store.user("alice")
    assert (user.name, user.model_fingerprint, user.preprocess_version) == ("alice", MODEL_A, "sig-1")
    assert np.array_equal(user.embeddings, np.stack([r.embedding for r in refs]))
    assert user.embeddings.dtype == np.float32
    assert [(r.image_sha256, r.source) for r in user.references] == [(r.image_sha256, r.source) for r in refs]
    with sqlite3.connect(db) as raw:
        codec, blob = raw.execute("SELECT codec, vector FROM embeddings LIMIT 1").fetchone()
    assert codec == "f32le" and len(blob) == 8 * 4


def test_enrolling_an_existing_user_needs_replace_or_append(db):
    with Store(db) as store:
        save(store, "alice", references(2, seed=1))
        before = dump(db)
        with pytest.raises(StoreError, match="already enrolled.*--replace.*--append"):
            save(store, "alice", references(3, seed=2))
        assert dump(db) == before
        assert save(store, "alice", references(1, seed=3), mode="append") == 3
        assert save(store, "alice", references(2, seed=4), mode="replace") == 2
        assert [r.source for r in store.user("alice").references] == ["file:4_0.png", "file:4_1.png"]


def test_append_needs_an_enrolled_user_of_the_same_model(db):
    with Store(db) as store:
        with pytest.raises(UnknownUserError, match="not enrolled"):
            save(store, "bob", references(1), mode="append")
        save(store, "alice", references(2))
        with pytest.raises(StoreError, match="different model.*--replace"):
            save(store, "alice", references(1, seed=5), model=MODEL_B, mode="append")
        assert len(store.user("alice").references) == 2
    assert [u["name"] for u in Store(db).users()] == ["alice"]


def test_several_users_are_saved_all_or_none(db):
    with Store(db) as store:
        save(store, "carol", references(1, seed=9))
        before = dump(db)
        with pytest.raises(StoreError, match="carol is already enrolled"):
            store.save_users({"alice": references(2), "carol": references(2, seed=1)},
                             model_fingerprint=MODEL_A, preprocess_version="sig-1")
        assert dump(db) == before


def test_removing_a_user_removes_their_embeddings_but_keeps_the_audit_log(db):
    with Store(db) as store:
        save(store, "alice", references(3))
        store.log_check("alice", "check", "match", similarity=0.9, distance=0.6, threshold=0.8,
                        model_fingerprint=MODEL_A)
        store.remove_user("alice")
        with pytest.raises(UnknownUserError):
            store.user("alice")
        with pytest.raises(UnknownUserError):
            store.remove_user("alice")
        assert store.counts()["references"] == 0
        assert [c["result"] for c in store.checks("alice")] == ["match"]


def test_the_audit_log_holds_results_and_never_images(db):
    with Store(db) as store:
        store.log_check("alice", "check", "no_match", similarity=0.4, distance=1.2, threshold=0.8,
                        model_fingerprint=MODEL_A)
        store.log_check("bob", "identify", "match", similarity=0.9, distance=0.5, threshold=0.8,
                        model_fingerprint=MODEL_A)
        latest = store.checks()
        assert [(c["user"], c["kind"], c["result"]) for c in latest] == [
            ("bob", "identify", "match"), ("alice", "check", "no_match")]
        assert latest[1]["similarity"] == pytest.approx(0.4) and latest[1]["checked_at"]
        columns = store._db.execute("SELECT name, type FROM pragma_table_info('checks')").fetchall()
    assert "BLOB" not in {kind for _, kind in columns}


def test_gallery_holds_every_reference_of_one_model_grouped_by_user(db):
    with Store(db) as store:
        save(store, "alice", references(3, seed=1))
        save(store, "bob", references(1, seed=2))
        save(store, "old", references(2, seed=3), model=MODEL_B)
        save(store, "carol", references(2, seed=4))
        gallery = store.gallery(MODEL_A)
        assert gallery.names == ["alice", "bob", "carol"]
        assert gallery.counts.tolist() == [3, 1, 2] and gallery.starts.tolist() == [0, 3, 4]
        assert np.array_equal(gallery.matrix[4:6], store.user("carol").embeddings)
        assert store.gallery("c" * 64).names == []


def test_reopening_keeps_the_data_and_runs_no_migration_twice(db):
    with Store(db) as store:
        save(store, "alice", references(2))
    with Store(db) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert store.counts()["users"] == 1


def test_an_old_schema_is_migrated_in_order(db, monkeypatch):
    with Store(db):
        pass
    extra = "ALTER TABLE users ADD COLUMN note TEXT NOT NULL DEFAULT ''"
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS + [extra])
    with Store(db) as store:
        assert store.schema_version() == len(MIGRATIONS) + 1
        assert "note" in {row[1] for row in store._db.execute("PRAGMA table_info(users)")}


def test_a_store_from_a_newer_version_is_refused(db):
    with Store(db):
        pass
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer edge-verify"):
        Store(db)


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "photo.sqlite3"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(StoreError, match="not an edge-verify store"):
        Store(path)
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


def test_a_locked_store_fails_fast_with_a_clear_error_and_stays_unchanged(db):
    with Store(db) as store:
        save(store, "alice", references(2))
    before = dump(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Store(db, timeout=0.1) as store:
            assert store.user("alice").name == "alice"  # readers are not blocked (WAL)
            with pytest.raises(StoreError, match="locked by another edge-verify process"):
                save(store, "bob", references(1, seed=1))
            with pytest.raises(StoreError, match="locked"):
                store.log_check("alice", "check", "match", model_fingerprint=MODEL_A)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert dump(db) == before


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_store_is_reported_and_unchanged(db):
    with Store(db) as store:
        save(store, "alice", references(2))
    before = dump(db)
    db.chmod(0o444)
    try:
        with pytest.raises(StoreError, match="read-only"):
            with Store(db) as store:
                save(store, "bob", references(1, seed=1))
    finally:
        db.chmod(0o644)
    assert dump(db) == before


def test_default_location_is_the_users_data_folder():
    import platformdirs
    assert default_path() == default_path(platformdirs.user_data_dir("edge-verify", appauthor=False))
    assert default_path("~/kiosk") == Path.home() / "kiosk" / "store.sqlite3"
