"""The converter: a real (small) tower becomes a bundle the device runtime loads and trusts."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import cedar

pytest.importorskip("tensorflow")  # training and converting are workstation work


@pytest.fixture(scope="module")
def bundle(small_dataset, tmp_path_factory):
    """Train a tiny tower for a few steps, then convert it with the real command."""
    work = tmp_path_factory.mktemp("convert")
    env = dict(os.environ, EDGE_VERIFY_CACHE=str(work / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
    run = lambda *args: subprocess.run([sys.executable, "-m", "edge_verify.edge.cli", *args], env=env,
                                       capture_output=True, text=True, timeout=600)
    trained = run("train", "--data", str(small_dataset), "--out", str(work / "run"), "--epochs", "1",
                  "--steps-per-epoch", "3", "--writers-per-batch", "4")
    assert trained.returncode == 0, trained.stderr[-2000:]
    converted = run("convert", "--model", str(work / "run" / "tower.keras"), "--calib", str(small_dataset),
                    "--out", str(work / "bundle"), "--force")
    assert converted.returncode == 0, converted.stderr[-2000:]
    return work / "bundle"


def test_bundle_holds_int8_float_onnx_and_a_complete_manifest(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"model_int8.tflite", "model_float32.tflite", "model.onnx", "README.md"} <= set(manifest["files"])
    assert manifest["quantisation"]["input"]["dtype"] == "int8"
    assert manifest["edgetpu"]["compatible"] is True and manifest["edgetpu"]["first_cpu_fallback"] is None
    guard = manifest["accuracy_guard"]
    assert 0.9 < guard["median_cosine"] <= 1.0 and set(guard) >= {"eer_float32", "eer_int8", "passed"}
    assert manifest["training"]["config"]["epochs"] == 1
    assert manifest["onnx_check"]["passed"] is True
    assert "trtexec" in (bundle / "README.md").read_text()


def test_int8_model_loads_in_litert_and_agrees_with_float(bundle):
    from edge_verify.edge.inference import load_model
    from edge_verify.edge.preprocess import preprocess_file

    int8, float32 = load_model(bundle, variant="int8"), load_model(bundle, variant="float32")
    assert int8.runtime == "litert"
    image = preprocess_file(cedar(50, 1), int8.input_size)
    a, b = int8.embed(image), float32.embed(image)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-4)
    assert float(a @ b) > 0.95


def test_guard_refuses_an_int8_model_worse_than_float(bundle, small_dataset, tmp_path, monkeypatch):
    from edge_verify.convert import convert as conversion

    monkeypatch.setattr(conversion, "MIN_COSINE", 1.01)  # no int8 model can reach it
    with pytest.raises(conversion.AccuracyGuardError, match="--force"):
        conversion.convert(bundle.parent / "run" / "tower.keras", [(small_dataset, None)], tmp_path / "b",
                           onnx=False)
    assert list(tmp_path.iterdir()) == []  # no half-written bundle, no temporary folder left


def contents(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_failed_guard_leaves_the_old_bundle_untouched(bundle, small_dataset, tmp_path, monkeypatch):
    from edge_verify.convert import convert as conversion

    old = shutil.copytree(bundle, tmp_path / "bundle")
    before = contents(old)
    monkeypatch.setattr(conversion, "MIN_COSINE", 1.01)
    with pytest.raises(conversion.AccuracyGuardError):
        conversion.convert(bundle.parent / "run" / "tower.keras", [(small_dataset, None)], old, onnx=False)
    assert contents(old) == before and [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_conversion_replaces_the_old_bundle_whole_and_keeps_what_lies_beside_it(bundle, small_dataset,
                                                                                 tmp_path, monkeypatch):
    """The new bundle takes the folder's place: an old model file it does not write is gone; a
    model card and evaluation reports that the old manifest does not list stay."""
    from edge_verify.convert import convert as conversion

    old = shutil.copytree(bundle, tmp_path / "bundle")
    (old / "model_float16.tflite").write_bytes(b"old float16 model")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"]["model_float16.tflite"] = "0" * 64
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / "MODEL_CARD.md").write_text("# the card\n")
    (old / "evaluation").mkdir()
    (old / "evaluation" / "cedar.json").write_text("{}")
    monkeypatch.setattr(conversion, "MIN_COSINE", 1.01)  # the guard fails: --force keeps the bundle
    new = conversion.convert(bundle.parent / "run" / "tower.keras", [(small_dataset, None)], old,
                             force=True, onnx=False)
    assert json.loads((old / "manifest.json").read_text()) == new and not new["accuracy_guard"]["passed"]
    assert set(new["files"]) == {"model_int8.tflite", "model_float32.tflite", "README.md"}
    assert not (old / "model_float16.tflite").exists() and not (old / "model.onnx").exists()
    assert (old / "MODEL_CARD.md").read_text() == "# the card\n" and (old / "evaluation" / "cedar.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"] and old.stat().st_mode & 0o777 == 0o755
    from edge_verify.edge.inference import load_model
    assert load_model(old).bundle.manifest["files"] == new["files"]
