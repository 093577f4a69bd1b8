"""Shared fixtures: real signatures and a tiny int8 model bundle built once per test session.

The tiny bundle is an untrained Conv2D/pool/Dense network with an L2-normalised output, converted
with TFLiteConverter to full-integer int8 exactly as a real bundle is. It tests the runtime, the
store and the CLI without waiting for a trained model; it says nothing about accuracy.
"""
import hashlib
import json
import shutil
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest

from edge_verify.edge.preprocess import INPUT_SIZE, PREPROCESS_VERSION, preprocess_file

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CEDAR = DATASETS / "cedar"
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


def write_bundle(folder: Path, int8_model: bytes, float_model: bytes, calibration: dict) -> Path:
    """A bundle folder with manifest.json and sha256s as the README ("Model bundle") describes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model_int8.tflite": int8_model, "model_float32.tflite": float_model}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    height, width = INPUT_SIZE
    manifest = {
        "format": "edge-verify-bundle/1",
        "input": {"height": height, "width": width, "channels": 1, "dtype": "int8"},
        "output": {"embedding_size": EMBEDDING_SIZE, "dtype": "int8"},
        "preprocess_version": PREPROCESS_VERSION,
        "calibration": calibration,
        "files": {name: hashlib.sha256(content).hexdigest() for name, content in files.items()},
        "versions": {"edge_verify": "test"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def build_tiny_models(signatures: np.ndarray, folder: Path) -> tuple[bytes, bytes]:
    """(int8 .tflite, float32 .tflite) of an untrained, seeded embedding network, made by the
    converter's own export and conversion steps."""
    import keras

    from edge_verify.convert.convert import export_saved_model, tflite_model

    keras.utils.set_random_seed(0)
    height, width = INPUT_SIZE
    image = keras.Input((height, width, 1))
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(image)
    x = keras.layers.AveragePooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(EMBEDDING_SIZE)(x)
    tower = keras.Model(image, keras.layers.UnitNormalization(name="embedding")(x))
    export_saved_model(tower, folder / "saved_model")
    representative = signatures[..., None].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected": they are
        return (tflite_model(folder / "saved_model", "int8", representative),
                tflite_model(folder / "saved_model", "float32"))


TINY_CALIBRATION = {"threshold": 1.0, "alpha": 0.0, "reference_spread": 0.8}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid int8 bundle (threshold 1.0, no per-user adaptation). Do not modify it: copy it."""
    if not CEDAR.is_dir():
        pytest.skip(f"needs the CEDAR data set in {CEDAR}")
    samples = [cedar(writer, sample) for writer in (1, 2, 3, 4) for sample in (1, 2, 3)]
    signatures = np.stack([preprocess_file(path) for path in samples])
    int8_model, float_model = build_tiny_models(signatures, tmp_path_factory.mktemp("tiny_tower"))
    return write_bundle(tmp_path_factory.mktemp("bundle") / "tiny", int8_model, float_model,
                        TINY_CALIBRATION)


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
