"""Security: lockout after failed checks in a row, and reference embeddings encrypted at rest."""
import base64
import json
import os
import re
import sqlite3
from datetime import timedelta

import pytest
from click.testing import CliRunner

from conftest import cedar
from edge_verify.edge import store as store_module
from edge_verify.edge.cli import main
from edge_verify.edge.errors import StoreError
from edge_verify.edge.keys import key_from_environment

FAIL = ("--threshold", "0.001")     # no signature is that close: a failed check
PASS = ("--threshold", "2")         # every signature is this close: a match


@pytest.fixture
def cli(tiny_bundle, db, strict_profile):
    """Run edge-verify with the tiny bundle, a fresh store and a profile allowing 2 failures."""
    def run(*args, env=None):
        return CliRunner().invoke(main, ["--model", str(tiny_bundle), "--db", str(db),
                                         "--profile", str(strict_profile), *map(str, args)], env=env)
    return run


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "keys" / "edge-verify.key"
    path.parent.mkdir()
    path.write_bytes(os.urandom(32))
    return path


def enroll_alice(cli, env=None):
    result = cli("enroll", "alice", cedar(5, 1), cedar(5, 2), cedar(5, 3), env=env)
    assert result.exit_code == 0, result.output


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def audit(db, user="alice") -> list[str]:
    with sqlite3.connect(db) as raw:
        return [r for (r,) in raw.execute("SELECT result FROM checks WHERE user = ? ORDER BY id", (user,))]


# ------------------------------------------------------------------ lockout


def test_after_max_failed_checks_the_user_is_locked_and_refused_until_unlocked(cli, db):
    enroll_alice(cli)
    assert cli("check", "alice", cedar(5, 4), *FAIL).exit_code == 1
    assert cli("check", "alice", cedar(5, 4), *FAIL).exit_code == 1

    refused = cli("check", "alice", cedar(5, 1), *PASS)
    line = one_line_error(refused)
    assert re.search(r"alice is locked out .* until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line), line
    assert "edge-verify users unlock alice" in line
    assert audit(db) == ["no_match", "no_match", "locked"]
    shown = json.loads(cli("users", "show", "alice", "--json").stdout)
    assert shown["locked_until"] is not None

    unlocked = cli("users", "unlock", "alice")
    assert unlocked.exit_code == 0 and unlocked.stdout == "unlocked alice\n"
    assert cli("check", "alice", cedar(5, 1), *PASS).exit_code == 0
    assert audit(db)[-1] == "match"
    assert json.loads(cli("users", "show", "alice", "--json").stdout)["locked_until"] is None


def test_a_match_resets_the_count_of_failures(cli):
    enroll_alice(cli)
    assert cli("check", "alice", cedar(5, 4), *FAIL).exit_code == 1
    assert cli("check", "alice", cedar(5, 1), *PASS).exit_code == 0
    assert cli("check", "alice", cedar(5, 4), *FAIL).exit_code == 1
    assert cli("check", "alice", cedar(5, 1), *PASS).exit_code == 0   # 1 failure in a row, not 2


def test_the_lockout_ends_after_the_cool_down(cli, monkeypatch):
    enroll_alice(cli)
    for _ in range(2):
        cli("check", "alice", cedar(5, 4), *FAIL)
    assert cli("check", "alice", cedar(5, 1), *PASS).exit_code == 2
    start = store_module.clock()
    monkeypatch.setattr(store_module, "clock", lambda: start + timedelta(seconds=299))
    assert cli("check", "alice", cedar(5, 1), *PASS).exit_code == 2
    monkeypatch.setattr(store_module, "clock", lambda: start + timedelta(seconds=301))
    assert cli("check", "alice", cedar(5, 1), *PASS).exit_code == 0


def test_zero_max_failed_checks_never_locks(cli, strict_profile):
    strict_profile.write_text("[security]\nmax_failed_checks = 0\n")
    enroll_alice(cli)
    for _ in range(4):
        assert cli("check", "alice", cedar(5, 4), *FAIL).exit_code == 1
    assert cli("check", "alice", cedar(5, 1), *PASS).exit_code == 0


def test_unlocking_an_unknown_user_is_an_error(cli):
    enroll_alice(cli)
    assert "unknown user 'bob'" in one_line_error(cli("users", "unlock", "bob"))


# ------------------------------------------------------------------ encryption at rest


def test_encrypted_store_gives_the_same_verdicts_and_stores_no_plain_vectors(cli, db, key_file, tmp_path,
                                                                            tiny_bundle, strict_profile):
    env = {"EDGE_VERIFY_KEY_FILE": str(key_file)}
    enroll_alice(cli, env)
    encrypted = [cli("check", "alice", cedar(5, 4), env=env), cli("check", "alice", cedar(9, 1), env=env),
                 cli("identify", cedar(5, 4), env=env)]

    plain_db = tmp_path / "plain" / "store.sqlite3"
    def plain(*args):
        return CliRunner().invoke(main, ["--model", str(tiny_bundle), "--db", str(plain_db),
                                         "--profile", str(strict_profile), *map(str, args)])
    assert plain("enroll", "alice", cedar(5, 1), cedar(5, 2), cedar(5, 3)).exit_code == 0
    unencrypted = [plain("check", "alice", cedar(5, 4)), plain("check", "alice", cedar(9, 1)),
                   plain("identify", cedar(5, 4))]
    assert [(r.exit_code, r.stdout) for r in encrypted] == [(r.exit_code, r.stdout) for r in unencrypted]

    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT codec, vector FROM embeddings").fetchall()
    with sqlite3.connect(plain_db) as raw:
        plain_vectors = [v for (v,) in raw.execute("SELECT vector FROM embeddings")]
    assert [codec for codec, _ in rows] == ["aesgcm-f32le"] * 3
    assert all(len(blob) == 12 + 32 * 4 + 16 for _, blob in rows)
    assert not {blob[12:12 + 128] for _, blob in rows} & set(plain_vectors)


def test_encrypted_references_cannot_be_read_without_the_key_or_with_another(cli, key_file, tmp_path):
    enroll_alice(cli, {"EDGE_VERIFY_KEY_FILE": str(key_file)})
    for command in (("check", "alice", cedar(5, 1)), ("identify", cedar(5, 1)),
                    ("export", tmp_path / "out.json")):
        line = one_line_error(cli(*command))
        assert "encrypted and no key is set" in line and "EDGE_VERIFY_KEY_FILE" in line
    assert not (tmp_path / "out.json").exists()

    wrong = {"EDGE_VERIFY_KEY": os.urandom(32).hex()}
    line = one_line_error(cli("check", "alice", cedar(5, 1), env=wrong))
    assert "the key is not the key of the store" in line  # the store's key check value (issue 15.6)


def test_a_flipped_byte_and_swapped_rows_are_detected(cli, db, key_file):
    env = {"EDGE_VERIFY_KEY_FILE": str(key_file)}
    enroll_alice(cli, env)
    assert cli("enroll", "bob", cedar(6, 1), cedar(6, 2), env=env).exit_code == 0
    with sqlite3.connect(db) as raw:
        (first, blob), (second, other) = raw.execute(
            "SELECT id, vector FROM embeddings ORDER BY id LIMIT 2").fetchall()
        flipped = bytearray(blob)
        flipped[20] ^= 0x01
        raw.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (bytes(flipped), first))
    line = one_line_error(cli("check", "alice", cedar(5, 1), env=env))
    assert f"reference {first} of user alice failed authentication" in line

    with sqlite3.connect(db) as raw:  # restore, then swap alice's two rows
        raw.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (other, first))
        raw.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (blob, second))
    assert "failed authentication" in one_line_error(cli("identify", cedar(5, 1), env=env))

    with sqlite3.connect(db) as raw:  # restore
        raw.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (blob, first))
        raw.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (other, second))
    assert cli("check", "alice", cedar(5, 1), *PASS, env=env).exit_code == 0

    with sqlite3.connect(db) as raw:  # move a row of bob's to alice
        bob_row = raw.execute("SELECT e.id FROM embeddings e JOIN users u ON u.id = e.user_id "
                              "WHERE u.name = 'bob' LIMIT 1").fetchone()[0]
        raw.execute("UPDATE embeddings SET user_id = (SELECT id FROM users WHERE name = 'alice') "
                    "WHERE id = ?", (bob_row,))
    line = one_line_error(cli("check", "alice", cedar(5, 1), env=env))
    assert f"reference {bob_row} of user alice failed authentication" in line


def test_a_key_file_beside_the_database_is_refused(cli, db):
    db.parent.mkdir(parents=True)
    beside = db.parent / "store.key"
    beside.write_bytes(os.urandom(32))
    line = one_line_error(cli("info", env={"EDGE_VERIFY_KEY_FILE": str(beside)}))
    assert "is in the store's folder" in line
    assert not db.exists()


def test_info_says_whether_the_store_is_encrypted(cli, key_file):
    text = cli("info")
    assert text.exit_code == 0 and "encryption: none: references are stored unencrypted" in text.stdout
    assert json.loads(cli("info", "--json").stdout)["store"]["encryption"] == "none"

    env = {"EDGE_VERIFY_KEY_FILE": str(key_file)}
    enroll_alice(cli, env)
    assert "encryption: aes-256-gcm (3 of 3 references encrypted)" in cli("info", env=env).stdout
    details = json.loads(cli("info", "--json", env=env).stdout)["store"]
    assert details["encryption"] == "aes-256-gcm" and details["encrypted_references"] == 3


def test_key_formats_and_bad_keys(tmp_path, key_file):
    key = key_file.read_bytes()
    db = tmp_path / "data" / "store.sqlite3"
    for content in (key, key.hex().encode() + b"\n", base64.b64encode(key) + b"\n"):
        key_file.write_bytes(content)
        assert key_from_environment(db, {"EDGE_VERIFY_KEY_FILE": str(key_file)}) == key
    assert key_from_environment(db, {"EDGE_VERIFY_KEY": key.hex()}) == key
    assert key_from_environment(db, {}) is None

    key_file.write_bytes(b"too short")
    with pytest.raises(StoreError, match="must hold 32 random bytes"):
        key_from_environment(db, {"EDGE_VERIFY_KEY_FILE": str(key_file)})
    with pytest.raises(StoreError, match="64 hex digits"):
        key_from_environment(db, {"EDGE_VERIFY_KEY": "abcd"})
    with pytest.raises(StoreError, match="not both"):
        key_from_environment(db, {"EDGE_VERIFY_KEY": key.hex(), "EDGE_VERIFY_KEY_FILE": str(key_file)})
    with pytest.raises(StoreError, match="cannot read the key file"):
        key_from_environment(db, {"EDGE_VERIFY_KEY_FILE": str(tmp_path / "missing.key")})
