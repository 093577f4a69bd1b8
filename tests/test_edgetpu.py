"""Edge TPU compatibility read from .tflite files of tiny Keras models converted in the test."""
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edge_verify.convert import edgetpu  # noqa: E402
from edge_verify.edge.errors import ModelError  # noqa: E402

HEIGHT, WIDTH = 32, 64


def tiny_tower(activation="relu"):
    """Conv/BN/ReLU6, depthwise conv, global pooling, Dense, UnitNormalization, like the real tower."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    image = keras.Input((HEIGHT, WIDTH, 1))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(image)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation(activation)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(16, name="embedding_dense")(x)
    embedding = layers.UnitNormalization(name="embedding")(x)
    return keras.Model(image, embedding)


def to_tflite(model, folder, kind="int8", l2_normalize=True, batch=1):
    """Convert through a SavedModel as the converter does; kind is int8 (full integer) or float32.

    l2_normalize=True replaces the UnitNormalization layer by tf.math.l2_normalize (one
    L2_NORMALIZATION operator); False keeps the Keras layer as it is.
    """
    import keras
    import tensorflow as tf

    body = keras.Model(model.input, model.get_layer("embedding").input)

    def serve(x):
        if l2_normalize:
            return tf.math.l2_normalize(body(x, training=False), axis=-1)
        return model(x, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec((batch, HEIGHT, WIDTH, 1), tf.float32)])
    archive.write_out(str(folder / "saved_model"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "saved_model"))
    if kind == "int8":
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.random((1, HEIGHT, WIDTH, 1), dtype=np.float32)] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        content = converter.convert()
    path = folder / f"model_{kind}.tflite"
    path.write_bytes(content)
    return path


def rank5_model():
    """Reshapes the image to a rank-5 tensor and back, with a MUL on the rank-5 tensor."""
    import keras

    layers = keras.layers
    image = keras.Input((HEIGHT, WIDTH, 1))
    x = layers.Reshape((2, HEIGHT // 2, WIDTH, 1))(image)
    x = layers.Rescaling(2.0)(x)
    x = layers.Reshape((HEIGHT, WIDTH, 1))(x)
    x = layers.Conv2D(4, 3)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(8, name="embedding_dense")(x)
    return keras.Model(image, layers.UnitNormalization(name="embedding")(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models converted to .tflite, once for this file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = tmp_path_factory.mktemp("edgetpu")
    tower = tiny_tower()
    made = {}
    for name, kwargs in {
        "int8": dict(kind="int8"),
        "int8_unit_normalization": dict(kind="int8", l2_normalize=False),
        "float32": dict(kind="float32"),
        "float32_any_batch": dict(kind="float32", batch=None),
    }.items():
        (root / name).mkdir()
        made[name] = to_tflite(tower, root / name, **kwargs)
    (root / "gelu").mkdir()
    made["int8_gelu"] = to_tflite(tiny_tower(activation="gelu"), root / "gelu")
    (root / "rank5").mkdir()
    made["int8_rank5"] = to_tflite(rank5_model(), root / "rank5")
    return made


def test_int8_tower_maps_entirely_to_the_edge_tpu(models):
    report = edgetpu.compatibility_report(models["int8"])
    assert [o["name"] for o in report["operators"]] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "L2_NORMALIZATION"]
    assert report["compatible"] is True
    assert report["unsupported"] == []
    assert report["first_cpu_fallback"] is None
    assert report["float_tensors"] == [] and report["dynamic_shapes"] == [] and report["rank_problems"] == []
    assert report["edgetpu_operators"] == report["total_operators"] == 5
    assert "compatible: every operator maps to the Edge TPU" in edgetpu.format_report(report)


def test_float32_model_falls_back_at_its_first_operator(models):
    report = edgetpu.compatibility_report(models["float32"])
    assert report["compatible"] is False
    assert report["first_cpu_fallback"]["index"] == 0
    assert report["first_cpu_fallback"]["name"] == "CONV_2D"
    assert "FLOAT32" in report["first_cpu_fallback"]["reason"]
    assert report["float_tensors"]
    assert report["edgetpu_operators"] == 0
    assert "first CPU fallback: CONV_2D (operator 0)" in edgetpu.format_report(report)


def test_keras_unit_normalization_leaves_a_float_island(models):
    """In int8, Keras' UnitNormalization squares in float: DEQUANTIZE -> SQUARE -> QUANTIZE."""
    report = edgetpu.compatibility_report(models["int8_unit_normalization"])
    names = [o["name"] for o in report["operators"]]
    assert report["compatible"] is False
    assert "SQUARE" in report["unsupported"] and "DEQUANTIZE" in report["unsupported"]
    fallback = report["first_cpu_fallback"]
    assert fallback["name"] == "DEQUANTIZE"
    assert fallback["index"] == names.index("DEQUANTIZE") == 4  # right after FULLY_CONNECTED
    assert report["edgetpu_operators"] == 4
    assert any(t["problem"] == "FLOAT32 tensor" for t in report["float_tensors"])


def test_unsupported_int8_operator_is_named_as_the_fallback(models):
    report = edgetpu.compatibility_report(models["int8_gelu"])
    assert report["unsupported"] == ["GELU"]
    assert report["float_tensors"] == []
    fallback = report["first_cpu_fallback"]
    assert fallback == {"index": 2, "name": "GELU", "reason": "not supported by the Edge TPU"}
    assert report["edgetpu_operators"] == 2
    assert "unsupported operators: GELU" in edgetpu.format_report(report)


def test_dynamic_batch_is_flagged(models):
    report = edgetpu.compatibility_report(models["float32_any_batch"])
    assert report["compatible"] is False
    assert report["dynamic_shapes"]
    assert any("dynamic shape" in t["problem"] for t in report["dynamic_shapes"])


def test_rank_5_tensor_is_flagged(models):
    report = edgetpu.compatibility_report(models["int8_rank5"])
    assert report["compatible"] is False
    assert report["float_tensors"] == [] and report["unsupported"] == []
    assert report["rank_problems"] and all(t["problem"] == "rank 5 > 4" for t in report["rank_problems"])
    assert report["first_cpu_fallback"]["name"] == "RESHAPE"
    assert report["first_cpu_fallback"]["index"] == 0


def test_not_a_tflite_file_is_a_model_error(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ModelError, match="not a TFLite model"):
        edgetpu.compatibility_report(bad)
    with pytest.raises(ModelError, match="cannot read"):
        edgetpu.compatibility_report(tmp_path / "missing.tflite")


def test_without_compiler_compile_explains_how_to_get_it(models, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "bundle"
    result = edgetpu.compile_for_edgetpu(models["int8"], out)
    assert result["compiled"] is False and result["model"] is None
    assert "sudo apt-get install edgetpu-compiler" in result["note"]
    assert "coral-edgetpu-stable" in result["note"]
    assert "edgetpu_compiler -s -o . model_int8.tflite" in result["note"]
    assert not out.exists()
    assert edgetpu.compatibility_report(models["int8"])["compiler"] is False


@pytest.mark.skipif(edgetpu.shutil.which("edgetpu_compiler") is None, reason="edgetpu_compiler not installed")
def test_compiler_makes_an_edgetpu_model(models, tmp_path):
    result = edgetpu.compile_for_edgetpu(models["int8"], tmp_path)
    assert result["compiled"], (tmp_path / "edgetpu_compiler.log").read_text()
    assert (tmp_path / "model_int8_edgetpu.tflite").is_file()
    assert "Edge TPU" in (tmp_path / "edgetpu_compiler.log").read_text()
