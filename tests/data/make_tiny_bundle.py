"""Rebuild tests/data/tiny_bundle/, the model bundle the device tests run on:

    .venv/bin/python tests/data/make_tiny_bundle.py      (needs TensorFlow and ../shared/datasets/cedar)

An untrained, seeded Conv2D/pool/Dense network with an L2-normalised output, exported and
converted to full-integer int8 and to float32 by the converter's own steps, int8 calibrated on
12 real CEDAR signatures. It tests the runtime, the store and the CLI without TensorFlow and
without waiting for a trained model; it says nothing about accuracy. Its calibration is fixed
(threshold 1.0, no per-user adaptation): tests rely on it.

Rebuild it when the preprocessing version or the bundle format changes; the tests say when.
"""
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edge_verify.edge.bundle import BUNDLE_FORMAT
from edge_verify.edge.choices import MODEL_FILES
from edge_verify.edge.preprocess import INPUT_SIZE, PREPROCESS_VERSION, preprocess_file

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "tiny_bundle"
CEDAR = HERE.parents[2] / "shared" / "datasets" / "cedar"
EMBEDDING_SIZE = 32
CALIBRATION = {"threshold": 1.0, "alpha": 0.0, "reference_spread": 0.8}


def tiny_tower():
    """The untrained network, seeded: the same weights on every run."""
    import keras

    keras.utils.set_random_seed(0)
    height, width = INPUT_SIZE
    image = keras.Input((height, width, 1))
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(image)
    x = keras.layers.AveragePooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(EMBEDDING_SIZE)(x)
    return keras.Model(image, keras.layers.UnitNormalization(name="embedding")(x))


def build(out: Path = BUNDLE) -> Path:
    """Write the bundle into `out` (replaced whole): the two models and manifest.json."""
    from edge_verify.convert.convert import export_saved_model, tflite_model, versions, write_manifest

    samples = [CEDAR / f"original_{writer}_{sample}.jpg" for writer in (1, 2, 3, 4) for sample in (1, 2, 3)]
    representative = np.stack([preprocess_file(path) for path in samples])[..., None].astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        export_saved_model(tiny_tower(), Path(folder) / "saved_model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected": they are
            models = {MODEL_FILES["int8"]: tflite_model(Path(folder) / "saved_model", "int8", representative),
                      MODEL_FILES["float32"]: tflite_model(Path(folder) / "saved_model", "float32")}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, content in models.items():
        (out / name).write_bytes(content)
    height, width = INPUT_SIZE
    write_manifest(out, {
        "format": BUNDLE_FORMAT,
        "input": {"height": height, "width": width, "channels": 1, "dtype": "int8"},
        "output": {"embedding_size": EMBEDDING_SIZE, "dtype": "int8"},
        "preprocess_version": PREPROCESS_VERSION,
        "calibration": CALIBRATION,
        "versions": {**versions(), "note": "tiny untrained test bundle: tests/data/make_tiny_bundle.py"},
    })
    return out


if __name__ == "__main__":
    folder = build(Path(sys.argv[1]) if len(sys.argv) > 1 else BUNDLE)
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"{folder}: {', '.join(f'{name} {(folder / name).stat().st_size} B' for name in manifest['files'])}")
