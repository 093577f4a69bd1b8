"""ONNX export of a tiny embedding tower, checked against Keras with ONNX Runtime."""
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from edge_verify.convert import onnx_export  # noqa: E402
from edge_verify.edge.errors import ModelError  # noqa: E402

SHAPE = (1, 32, 64, 1)


def tiny_tower():
    """The layers of the real tower: Conv2D, DepthwiseConv2D, BatchNormalization, ReLU,
    GlobalAveragePooling2D, Dropout, Dense, UnitNormalization."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    image = keras.Input(SHAPE[1:])
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(image)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(16, name="embedding_dense")(x)
    return keras.Model(image, layers.UnitNormalization(name="embedding")(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    tower = tiny_tower()
    tower.save(folder / "tower.keras")
    result = onnx_export.export_onnx(folder / "tower.keras", folder / "model.onnx", SHAPE)
    return tower, folder / "model.onnx", result


def test_exported_tower_matches_keras(exported):
    _, path, result = exported
    assert path.is_file()
    assert result["passed"] is True
    assert result["check"]["max_abs_diff"] < 1e-4
    assert result["check"]["min_cosine"] > 0.9999
    assert result["input"] == {"name": "image", "shape": list(SHAPE), "dtype": "float32", "layout": "NHWC"}
    assert result["output"] == {"name": "embedding", "shape": [1, 16]}


def test_onnx_model_gives_unit_embeddings_of_new_images(exported):
    tower, path, _ = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.zeros(SHAPE, np.float32)
    image[0, 10:20, 5:60, 0] = 1.0  # a stroke
    [embedding] = session.run(["embedding"], {"image": image})
    assert embedding.shape == (1, 16)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(embedding, tower(image, training=False), atol=1e-5)


def test_missing_converter_package_is_explained(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ModelError, match="pip install onnx onnxruntime tf2onnx"):
        onnx_export.export_onnx(tiny_tower(), tmp_path / "model.onnx", SHAPE)
    assert not (tmp_path / "model.onnx").exists()


def test_trtexec_commands_build_fp16_and_int8_engines():
    text = onnx_export.trtexec_commands("model.onnx", (1, 96, 192, 1))
    assert "trtexec --onnx=model.onnx --fp16 --saveEngine=model_fp16.engine" in text
    assert "trtexec --onnx=model.onnx --int8 --fp16 --saveEngine=model_int8.engine" in text
    assert "1x96x192x1" in text
    assert "calibration" in text and "never shipped" in text
