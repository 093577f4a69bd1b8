"""The runtime: loading a bundle, refusing damaged ones, embedding, Edge TPU fallback."""
import ctypes.util
import hashlib
import json
import shutil

import numpy as np
import pytest

from conftest import EMBEDDING_SIZE, cedar, rewrite_manifest
from edge_verify.edge.errors import ModelError
from edge_verify.edge.inference import RuntimeFallbackWarning, load_bundle, load_model
from edge_verify.edge.preprocess import preprocess_file


@pytest.fixture(scope="module")
def signatures():
    return {key: preprocess_file(cedar(*key)) for key in [(5, 1), (5, 2), (9, 1)]}


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return load_model(tiny_bundle, threads=1)


def test_embedding_is_a_unit_vector_that_is_stable_and_tells_signatures_apart(model, signatures):
    first = model.embed(signatures[(5, 1)])
    assert first.shape == (EMBEDDING_SIZE,) and first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(first, model.embed(signatures[(5, 1)]))
    assert np.linalg.norm(first - model.embed(signatures[(9, 1)])) > 0.1


def test_runs_on_ai_edge_litert_with_the_int8_model(model):
    assert (model.runtime, model.model_file, model.delegate) == ("litert", "model_int8.tflite", "none")


def test_int8_embeddings_agree_with_the_float32_model(tiny_bundle, model, signatures):
    float_model = load_model(tiny_bundle, variant="float32")
    for signature in signatures.values():
        assert float(model.embed(signature) @ float_model.embed(signature)) > 0.95


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tensorflow_lite_is_a_last_resort_with_a_warning(tiny_bundle, model, signatures):
    pytest.importorskip("tensorflow")
    with pytest.warns(RuntimeFallbackWarning, match="tensorflow.lite"):
        fallback = load_model(tiny_bundle, backend="tensorflow")
    assert fallback.runtime == "tensorflow"
    signature = signatures[(5, 2)]
    assert np.allclose(fallback.embed(signature), model.embed(signature), atol=1e-6)


def test_fingerprint_is_the_sha256_of_the_manifest(tiny_bundle, bundle_copy):
    bundle = load_bundle(tiny_bundle)
    assert bundle.fingerprint == hashlib.sha256((tiny_bundle / "manifest.json").read_bytes()).hexdigest()
    assert bundle.input_size == (96, 192) and bundle.embedding_size == EMBEDDING_SIZE
    changed = rewrite_manifest(bundle_copy, calibration={"threshold": 0.7})
    assert load_bundle(changed).fingerprint != bundle.fingerprint


@pytest.mark.parametrize("damage, message", [
    (lambda b: shutil.rmtree(b), "not found"),
    (lambda b: (b / "manifest.json").unlink(), "no manifest.json"),
    (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda b: rewrite_manifest(b, format="something-else/1"), "not an edge-verify model bundle"),
    (lambda b: rewrite_manifest(b, preprocess_version="sig-0"), "expects preprocessing 'sig-0'"),
    (lambda b: rewrite_manifest(b, calibration={}), "incomplete manifest"),
    (lambda b: rewrite_manifest(b, output={"embedding_size": 64}), "do not match the manifest"),
    (lambda b: (b / "model_int8.tflite").unlink(), "missing"),
    (lambda b: _flip_a_byte(b / "model_int8.tflite"), "does not match the checksum"),
])
def test_damaged_or_foreign_bundles_are_refused(bundle_copy, damage, message):
    damage(bundle_copy)
    with pytest.raises(ModelError, match=message):
        load_model(bundle_copy)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_model_with_a_matching_checksum_is_refused(bundle_copy):
    (bundle_copy / "model_int8.tflite").write_bytes(b"not a flatbuffer at all")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["model_int8.tflite"] = hashlib.sha256(b"not a flatbuffer at all").hexdigest()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_model(bundle_copy)


edgetpu_absent = pytest.mark.skipif(ctypes.util.find_library("edgetpu") is not None,
                                    reason="an Edge TPU library is installed here")


@edgetpu_absent
def test_edgetpu_without_an_edgetpu_model_falls_back_to_the_cpu(tiny_bundle, model, signatures):
    with pytest.warns(RuntimeFallbackWarning, match="no model_int8_edgetpu.tflite.*on the CPU"):
        fallback = load_model(tiny_bundle, delegate="edgetpu")
    assert (fallback.delegate, fallback.model_file) == ("none", "model_int8.tflite")
    assert np.array_equal(fallback.embed(signatures[(5, 1)]), model.embed(signatures[(5, 1)]))


@edgetpu_absent
def test_edgetpu_without_the_accelerator_falls_back_to_the_cpu(bundle_copy):
    shutil.copy(bundle_copy / "model_int8.tflite", bundle_copy / "model_int8_edgetpu.tflite")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["model_int8_edgetpu.tflite"] = manifest["files"]["model_int8.tflite"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(RuntimeFallbackWarning, match="cannot load libedgetpu.*on the CPU"):
        fallback = load_model(bundle_copy, delegate="edgetpu")
    assert (fallback.delegate, fallback.model_file) == ("none", "model_int8.tflite")


def test_unknown_runtime_delegate_or_variant_is_an_error(tiny_bundle):
    with pytest.raises(ModelError, match="unknown runtime"):
        load_model(tiny_bundle, backend="onnx")
    with pytest.raises(ModelError, match="unknown delegate"):
        load_model(tiny_bundle, delegate="gpu")
    with pytest.raises(ModelError, match="unknown model variant"):
        load_model(tiny_bundle, variant="int4")
    with pytest.raises(ModelError, match="does not list model_float16.tflite"):
        load_model(tiny_bundle, variant="float16")
