"""Shared fixtures: real signatures and the tiny int8 model bundle of tests/data.

The tiny bundle (tests/data/tiny_bundle, made by tests/data/make_tiny_bundle.py) is an untrained
Conv2D/pool/Dense network with an L2-normalised output, converted to full-integer int8 by the
converter exactly as a real bundle is. It tests the runtime, the store and the CLI without
TensorFlow and without a trained model; it says nothing about accuracy.

Tests that need the workstation (TensorFlow) say so with pytest.importorskip("tensorflow"), so
the suite also runs in a device install (`pip install -e '.[edge,dev]'`).
"""
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_verify.edge.preprocess import PREPROCESS_VERSION

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CEDAR = DATASETS / "cedar"
TINY_BUNDLE = Path(__file__).resolve().parent / "data" / "tiny_bundle"
EMBEDDING_SIZE = 32


def dump(path) -> list[str]:
    """The whole content of a store (none when it does not exist), to prove an operation left it unchanged."""
    if not path.exists():
        return []
    with sqlite3.connect(path) as raw:
        return list(raw.iterdump())


def cedar(writer: int, sample: int, kind: str = "original") -> Path:
    """Path of a real CEDAR scan: kind 'original' (genuine) or 'forgeries' (skilled forgery)."""
    return CEDAR / f"{kind}_{writer}_{sample}.jpg"


FRESH_PROCESS = """
import json, sys
from edge_verify.edge.cli import main
modules_file, sys.argv = sys.argv[1], ["edge-verify"] + sys.argv[2:]
try:
    main()
finally:
    with open(modules_file, "w") as file:
        json.dump(sorted(sys.modules), file)
"""


def edge_verify_process(folder: Path, *args) -> tuple[int, set[str], list[str]]:
    """Run `edge-verify ARGS` in a new process, as on the device: (exit code, the modules it
    imported, its stderr lines). The list of modules is written into `folder`."""
    modules_file = Path(folder) / "modules.json"
    command = [sys.executable, "-c", FRESH_PROCESS, str(modules_file), *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return run.returncode, set(json.loads(modules_file.read_text())), run.stderr.splitlines()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid int8 bundle (threshold 1.0, no per-user adaptation): a session copy of
    tests/data/tiny_bundle. Do not modify it: copy it (bundle_copy)."""
    manifest = json.loads((TINY_BUNDLE / "manifest.json").read_text())
    if manifest["preprocess_version"] != PREPROCESS_VERSION:
        pytest.fail(f"tests/data/tiny_bundle was made for preprocessing {manifest['preprocess_version']}, "
                    f"this is {PREPROCESS_VERSION}: run .venv/bin/python tests/data/make_tiny_bundle.py")
    return Path(shutil.copytree(TINY_BUNDLE, tmp_path_factory.mktemp("bundle") / "tiny"))


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def rewrite_manifest(bundle: Path, **changes) -> Path:
    """Change top-level manifest entries of a bundle copy (its fingerprint changes with them)."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest, indent=2))
    return bundle


@pytest.fixture
def default_bundle():
    """The bundle shipped in the package, once the trained model is there."""
    from edge_verify.edge.inference import default_bundle_dir
    folder = default_bundle_dir()
    if not (folder / "manifest.json").is_file():
        pytest.skip("the default model bundle (edge/models/default) is not built yet")
    return folder


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """12 CEDAR writers in the generic layout: 7 genuine and 2 forged each."""
    root = tmp_path_factory.mktemp("small") / "cedar-small"
    for writer in range(1, 13):
        for kind, prefix, count in (("genuine", "original", 7), ("forged", "forgeries", 2)):
            folder = root / f"w{writer:02d}" / kind
            folder.mkdir(parents=True)
            for sample in range(1, count + 1):
                shutil.copy(CEDAR / f"{prefix}_{writer}_{sample}.jpg", folder / f"{sample}.jpg")
    return root


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch):
    """No test inherits a template key from the shell that runs the suite."""
    monkeypatch.delenv("EDGE_VERIFY_KEY", raising=False)
    monkeypatch.delenv("EDGE_VERIFY_KEY_FILE", raising=False)


@pytest.fixture
def db(tmp_path):
    """A store path whose folder does not exist yet (enrolment creates both)."""
    return tmp_path / "data" / "store.sqlite3"


@pytest.fixture
def strict_profile(tmp_path):
    """A profile that locks a user after 2 failures in a row."""
    path = tmp_path / "strict.toml"
    path.write_text("[security]\nmax_failed_checks = 2\nlockout_seconds = 300\n")
    return path
