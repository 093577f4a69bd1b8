"""Jetson: the embedding tower as ONNX (for TensorRT on the device), checked with ONNX Runtime.

Keras 3 exports ONNX itself (`model.export(path, format="onnx")`); with the TensorFlow backend
it converts through tf2onnx, so this needs the packages onnx, onnxruntime and tf2onnx.
"""
import warnings
from pathlib import Path

import numpy as np

from edge_verify.edge.errors import ModelError

# Opset 13 is the newest that TensorRT 8.2 (JetPack 4.6, the last for Jetson Nano) parses;
# later TensorRT releases read it too.
OPSET = 13
INPUT_NAME, OUTPUT_NAME = "image", "embedding"
CHECK_INPUTS = 4
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.9999


def export_onnx(model, onnx_path, input_shape, opset=OPSET, check_inputs=CHECK_INPUTS, seed=0) -> dict:
    """Write the Keras tower (a model or a .keras path) to `onnx_path` and compare it with Keras.

    `input_shape` is the full static shape, e.g. (1, 96, 192, 1): NHWC float32 in [0, 1], as for
    the TFLite models. Runs ONNX Runtime and Keras on `check_inputs` random images and returns
    the largest absolute difference and smallest cosine of the outputs, with `passed`.
    """
    try:
        import keras
        import onnx
        import onnxruntime
        import tf2onnx
    except ImportError as error:
        raise ModelError(f"ONNX export needs the onnx, onnxruntime and tf2onnx packages "
                         f"({error.name} is missing): pip install onnx onnxruntime tf2onnx") from None
    if isinstance(model, (str, Path)):
        model = keras.saving.load_model(model, compile=False)
    input_shape = tuple(int(size) for size in input_shape)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)

    spec = keras.InputSpec(shape=input_shape, dtype="float32", name=INPUT_NAME)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' numpy-2 patch of tf2onnx
            model.export(str(onnx_path), format="onnx", verbose=False, input_signature=[spec],
                         opset_version=opset)
    except Exception as error:  # tf2onnx raises many kinds; the message is what matters
        raise ModelError(f"ONNX export of the model failed: {type(error).__name__}: {error}") from error
    rename_output(onnx_path, OUTPUT_NAME)
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(seed).random((check_inputs, *input_shape), dtype=np.float32)
    keras_out = np.concatenate([np.asarray(model(x, training=False)) for x in images])
    onnx_out = np.concatenate([session.run(None, {INPUT_NAME: x})[0] for x in images])
    cosine = np.sum(keras_out * onnx_out, axis=1) / (
        np.linalg.norm(keras_out, axis=1) * np.linalg.norm(onnx_out, axis=1) + 1e-12)
    max_abs_diff, min_cosine = float(np.max(np.abs(keras_out - onnx_out))), float(np.min(cosine))
    return {
        "file": onnx_path.name,
        "exporter": f"keras {keras.__version__} model.export / tf2onnx {tf2onnx.__version__}",
        "opset": opset,
        "input": {"name": INPUT_NAME, "shape": list(input_shape), "dtype": "float32", "layout": "NHWC"},
        "output": {"name": OUTPUT_NAME, "shape": [1, int(onnx_out.shape[1])]},
        "check": {"onnxruntime": onnxruntime.__version__, "inputs": check_inputs,
                  "max_abs_diff": max_abs_diff, "min_cosine": min_cosine},
        "passed": bool(max_abs_diff <= MAX_ABS_DIFF and min_cosine >= MIN_COSINE),
    }


def rename_output(onnx_path, name):
    """Give the graph's single output a readable name (tf2onnx calls it 'Identity:0')."""
    import onnx

    proto = onnx.load(str(onnx_path))
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.input[:] = [name if i == old else i for i in node.input]
        node.output[:] = [name if o == old else o for o in node.output]
    proto.graph.output[0].name = name
    onnx.save(proto, str(onnx_path))


def trtexec_commands(onnx_name, input_shape) -> str:
    """Markdown: how to build TensorRT engines from the ONNX file on the Jetson itself."""
    stem = Path(onnx_name).stem
    shape = "x".join(str(int(size)) for size in input_shape)
    return f"""\
Build the engine on the Jetson that will run it: a TensorRT engine is tied to the GPU, the
TensorRT version and the JetPack release, so engines are never shipped in the bundle.
`trtexec` comes with JetPack, in `/usr/src/tensorrt/bin/`. The input `{INPUT_NAME}` is
float32 NHWC {shape} (preprocessed, values in [0, 1]); the output `{OUTPUT_NAME}` is the
embedding, L2-normalised again after reading it.

```
# FP16 (recommended)
/usr/src/tensorrt/bin/trtexec --onnx={onnx_name} --fp16 --saveEngine={stem}_fp16.engine
# INT8
/usr/src/tensorrt/bin/trtexec --onnx={onnx_name} --int8 --fp16 --saveEngine={stem}_int8.engine
```

INT8 needs calibration. Without it (as above) trtexec uses placeholder scales: the engine runs
and gives timings, but its embeddings are not usable. trtexec cannot calibrate from images:
make a calibration cache with the TensorRT Python API (an IInt8EntropyCalibrator2 fed a few
hundred preprocessed signatures) and build with `--int8 --calib=calibration.cache`, or export
a quantised ONNX model (Q/DQ nodes, from quantisation-aware training), which TensorRT builds
with `--int8` alone. Check any engine against model_float32.tflite on real signatures before use.
"""
