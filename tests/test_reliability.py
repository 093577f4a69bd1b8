"""Reliability: enrolment survives SIGKILL at any moment, concurrent checks and enrolments never
fail or lose data, the lockout stays exact under concurrent failures, exports of an encrypted store
stay encrypted."""
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CEDAR, EMBEDDING_SIZE, cedar, dump
from edge_verify.edge.store import Store

USERS = 20                  # users per crash-test run: enrolling them is most of the process's life
RUNS_PER_LANE = 100         # two lanes (plain and encrypted store) side by side: 200 runs, each SIGKILLed
FRESH_EVERY = 4             # every 4th run starts from no store, so creating it is interrupted too
MEASURE_EVERY = 10          # a whole run now and then: how long one lasts under the current load


def environment(key: bytes | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_VERIFY_")}
    if key is not None:
        env["EDGE_VERIFY_KEY"] = key.hex()
    return env


# ------------------------------------------------------------------ crash safety


@pytest.fixture
def enrolment_folder(tmp_path):
    """USERS user folders of 3 real CEDAR signatures each (links, not copies): {user: [file names]}."""
    if not CEDAR.is_dir():
        pytest.skip(f"needs the CEDAR data set in {CEDAR}")
    folder, expected = tmp_path / "batch", {}
    for writer in range(1, USERS + 1):
        user = folder / f"writer{writer:02d}"
        user.mkdir(parents=True)
        for sample in (1, 2, 3):
            (user / cedar(writer, sample).name).symlink_to(cedar(writer, sample))
        expected[user.name] = sorted(p.name for p in user.iterdir())
    return folder, expected


def whole_or_absent(db, key, expected) -> int:
    """Open the store as edge-verify does and check that every user is complete; returns how many."""
    with Store(db, key=key) as store:
        users = store.users()
        for row in users:
            assert row["name"] in expected, row
            user = store.user(row["name"])  # decodes (and with a key, authenticates) every reference
            assert [r.source for r in user.references] == [f"file:{n}" for n in expected[user.name]]
            embeddings = user.embeddings
            assert embeddings.shape == (3, EMBEDDING_SIZE) and np.isfinite(embeddings).all()
            assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-3)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        assert raw.execute("SELECT COUNT(*) FROM embeddings WHERE user_id NOT IN "
                           "(SELECT id FROM users)").fetchone()[0] == 0
    return len(users)


def crash_lane(tiny_bundle, folder, expected, db, key, seed, tally):
    """RUNS_PER_LANE runs of `enroll --from-dir --replace`, each SIGKILLed at a random moment of
    its life (from the start of Python to its exit)."""
    command = [sys.executable, "-m", "edge_verify.edge.cli", "--model", str(tiny_bundle),
               "--db", str(db), "enroll", "--from-dir", str(folder), "--replace"]
    env = environment(key)
    rng = random.Random(seed)
    for run in range(RUNS_PER_LANE):
        if run % MEASURE_EVERY == 0:
            start = time.monotonic()
            subprocess.run(command, env=env, check=True, capture_output=True)
            life = time.monotonic() - start
            assert whole_or_absent(db, key, expected) == len(expected)
        fresh = run % FRESH_EVERY == 0
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                db.with_name(db.name + suffix).unlink(missing_ok=True)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(0, life))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        killed = process.wait() == -signal.SIGKILL
        users = whole_or_absent(db, key, expected)
        tally["runs"] += 1
        tally["killed"] += killed
        tally["part_way"] += fresh and 0 < users < len(expected)


def test_enrolment_killed_at_any_moment_leaves_every_user_whole_or_absent(tiny_bundle, enrolment_folder,
                                                                          tmp_path):
    folder, expected = enrolment_folder
    tally = {"runs": 0, "killed": 0, "part_way": 0}
    failures = []

    def lane(name, key, seed):
        try:
            crash_lane(tiny_bundle, folder, expected, tmp_path / name / "store.sqlite3", key, seed, tally)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)

    lanes = [threading.Thread(target=lane, args=("plain", None, 1)),
             threading.Thread(target=lane, args=("encrypted", os.urandom(32), 2))]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()
    if failures:
        raise failures[0]
    print(f"crash safety: {tally}")
    assert tally["runs"] == 2 * RUNS_PER_LANE
    assert tally["killed"] > RUNS_PER_LANE // 2     # most runs were killed before their end
    assert tally["part_way"] > 0                    # some in the middle of the enrolments


# ------------------------------------------------------------------ concurrency


def test_checks_and_enrolments_at_once_all_answer_and_lose_nothing(tiny_bundle, tmp_path):
    from edge_verify.tools import stress

    figures = stress.run(3, checkers=4, enrollers=1, model=tiny_bundle, db=tmp_path / "store.sqlite3",
                         key=os.urandom(32))
    stress.print_figures(figures)
    assert figures["errors"] == {}, figures["error_examples"]   # no "database is locked", nothing
    assert figures["checks"] > 0 and figures["answered"] == figures["checks"]
    assert figures["new_users"] > 0 and figures["lost"] == []
    assert stress.passed(figures)


# ------------------------------------------------------------------ lockout under concurrent checks

FAIL, PASS = 0.001, 2.0     # distance thresholds no signature / every signature passes


def checks_at_once(model, db, image, thresholds, max_failed, start, outcomes):
    """One process: wait for the others, then check alice once per threshold; report the outcomes."""
    from edge_verify.edge import api
    from edge_verify.edge.errors import UserLockedError

    loaded = api.load_model(model)
    results = []
    start.wait()
    for threshold in thresholds:
        try:
            with api.open_store(db) as store:
                result = api.check(loaded, store, "alice", image, threshold=threshold,
                                   max_failed=max_failed, lockout_seconds=300)
            results.append("match" if result.match else "no_match")
        except UserLockedError:
            results.append("locked")
        except Exception as error:  # noqa: BLE001 - reported by the test
            results.append(f"{type(error).__name__}: {error}")
    outcomes.put(results)


def concurrent_checks(tiny_bundle, db, plans: list[list[float]], max_failed: int) -> list[str]:
    """Enrol alice, run one process per plan at the same moment; every outcome, and the audit log."""
    from edge_verify.edge import api

    with api.open_store(db) as store:
        api.enroll(api.load_model(tiny_bundle), store, "alice", [cedar(5, 1), cedar(5, 2), cedar(5, 3)])
    context = multiprocessing.get_context("spawn")
    start, outcomes = context.Barrier(len(plans), timeout=120), context.Queue()
    processes = [context.Process(target=checks_at_once,
                                 args=(tiny_bundle, db, cedar(5, 4), plan, max_failed, start, outcomes))
                 for plan in plans]
    for process in processes:
        process.start()
    results = [result for _ in processes for result in outcomes.get(timeout=180)]
    for process in processes:
        process.join(timeout=30)
    errors = [r for r in results if r not in ("match", "no_match", "locked")]
    assert errors == [] and len(results) == sum(map(len, plans))
    with sqlite3.connect(db) as raw:
        audit = [r for (r,) in raw.execute("SELECT result FROM checks WHERE user = 'alice' ORDER BY id")]
    assert sorted(audit) == sorted(results)  # every check answered, and logged once
    return audit


def test_concurrent_failures_lock_the_user_after_exactly_max_failed(tiny_bundle, tmp_path):
    db = tmp_path / "store.sqlite3"
    audit = concurrent_checks(tiny_bundle, db, [[FAIL] * 4] * 4, max_failed=5)
    assert audit == ["no_match"] * 5 + ["locked"] * 11  # none scored once locked, none lost
    with Store(db) as store:
        assert store.locked_until("alice") is not None and store.failed_checks("alice") == 0


def test_concurrent_matches_and_failures_count_as_one_after_the_other(tiny_bundle, tmp_path):
    db = tmp_path / "store.sqlite3"
    rng = random.Random(7)
    plans = [[rng.choice([FAIL, FAIL, PASS]) for _ in range(8)] for _ in range(4)]
    audit = concurrent_checks(tiny_bundle, db, plans, max_failed=4)
    failed, locked = 0, False  # replay the audit log as if the checks had come one by one
    for line, result in enumerate(audit):
        assert (result == "locked") == locked, f"line {line} of {audit}"
        if result == "match":
            failed = 0
        elif result == "no_match":
            failed += 1
            locked, failed = (True, 0) if failed == 4 else (False, failed)
    with Store(db) as store:
        assert (store.locked_until("alice") is not None, store.failed_checks("alice")) == (locked, failed)


# ------------------------------------------------------------------ export of an encrypted store


@pytest.fixture
def device(tiny_bundle):
    """Run edge-verify in-process with the tiny bundle on the store `db`, with the key `key`."""
    from edge_verify.edge.cli import main

    def run(db, *args, key=None):
        env = {"EDGE_VERIFY_KEY": key.hex()} if key else None
        return CliRunner().invoke(main, ["--model", str(tiny_bundle), "--db", str(db), *map(str, args)],
                                  env=env)
    return run


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def plain_embeddings(db, key) -> list[bytes]:
    with Store(db, key=key) as store:
        return [r.embedding.astype("<f4").tobytes() for u in store.users()
                for r in store.user(u["name"]).references]


@pytest.fixture
def encrypted_device(device, tmp_path):
    """A store encrypted with `key`, alice (3 references) and bob (2) enrolled: (db, key)."""
    db, key = tmp_path / "device" / "store.sqlite3", os.urandom(32)
    assert device(db, "enroll", "alice", cedar(5, 1), cedar(5, 2), cedar(5, 3), key=key).exit_code == 0
    assert device(db, "enroll", "bob", cedar(6, 1), cedar(6, 2), key=key).exit_code == 0
    return db, key


def test_export_of_an_encrypted_store_is_encrypted_and_imports_with_the_same_key(device, encrypted_device,
                                                                                 tmp_path):
    import base64

    db, key = encrypted_device
    export = tmp_path / "enrolments.json"
    result = device(db, "export", export, key=key)
    assert result.exit_code == 0 and "encrypted with the store's key (aes-256-gcm)" in result.stdout
    content = export.read_bytes()
    vectors = plain_embeddings(db, key)
    assert len(vectors) == 5
    for vector in vectors:  # neither the float bytes nor their base64 are in the file
        assert vector not in content and base64.b64encode(vector) not in content
        assert base64.b64encode(vector[:24]) not in content
    assert b"alice" not in content  # the names are sealed too
    assert json.loads(content)["format"] == "edge-verify-enrolments/2"

    kiosk = tmp_path / "kiosk" / "store.sqlite3"
    imported = device(kiosk, "import", export, key=key)
    assert imported.exit_code == 0 and "imported 2 users (5 references)" in imported.stdout
    assert plain_embeddings(kiosk, key) == vectors
    assert device(kiosk, "check", "alice", cedar(5, 4), "--threshold", "2", key=key).exit_code == 0
    with sqlite3.connect(kiosk) as raw:  # and stored encrypted there as well
        assert {c for (c,) in raw.execute("SELECT codec FROM embeddings")} == {"aesgcm-f32le"}


def test_an_encrypted_export_is_refused_without_the_right_key_and_changes_nothing(device, encrypted_device,
                                                                                 tmp_path):
    db, key = encrypted_device
    export = tmp_path / "enrolments.json"
    assert device(db, "export", export, key=key).exit_code == 0
    kiosk = tmp_path / "kiosk" / "store.sqlite3"
    assert device(kiosk, "enroll", "carol", cedar(7, 1), key=key).exit_code == 0
    before = dump(kiosk)

    line = one_line_error(device(kiosk, "import", export, key=os.urandom(32)))
    assert "the key is not the key of the store" in line  # the kiosk's key check (issue 15.6)
    line = one_line_error(device(kiosk, "import", export))
    assert "is encrypted and no key is set" in line and "EDGE_VERIFY_KEY_FILE" in line

    document = json.loads(export.read_text())  # the header is authenticated too
    document["exported_at"] = "2020-01-01T00:00:00+00:00"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(document))
    assert "cannot be decrypted" in one_line_error(device(kiosk, "import", changed, key=key))
    assert dump(kiosk) == before


def test_plain_export_of_an_encrypted_store_needs_plain_and_says_so(device, encrypted_device, tmp_path):
    import base64

    db, key = encrypted_device
    export = tmp_path / "plain.json"
    result = device(db, "export", export, "--plain", "--json", key=key)
    assert result.exit_code == 0 and json.loads(result.stdout)["encryption"] == "none"
    assert "warning: --plain" in result.stderr and "NOT encrypted" in result.stderr
    document = json.loads(export.read_text())
    assert document["format"] == "edge-verify-enrolments/1"
    embedded = {base64.b64decode(r["embedding"]) for u in document["users"] for r in u["references"]}
    assert embedded == set(plain_embeddings(db, key))


def test_plain_exports_still_import_into_plain_and_encrypted_stores(device, tmp_path):
    plain_db = tmp_path / "plain" / "store.sqlite3"
    assert device(plain_db, "enroll", "alice", cedar(5, 1), cedar(5, 2)).exit_code == 0
    export = tmp_path / "old.json"
    result = device(plain_db, "export", export)
    assert result.exit_code == 0 and "encrypted" not in result.stdout + result.stderr
    assert json.loads(export.read_text())["format"] == "edge-verify-enrolments/1"

    key = os.urandom(32)
    for kiosk, kiosk_key in ((tmp_path / "a" / "store.sqlite3", None),
                             (tmp_path / "b" / "store.sqlite3", key)):
        assert device(kiosk, "import", export, key=kiosk_key).exit_code == 0
        assert plain_embeddings(kiosk, kiosk_key) == plain_embeddings(plain_db, None)
