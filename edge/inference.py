"""Load a model bundle and turn preprocessed signatures into embeddings.

The bundle and its manifest are read and checked by edge/bundle.py (README "Model bundle"). The interpreter
comes from ai_edge_litert, else tflite_runtime, else tensorflow.lite (last resort, with a
warning). TensorFlow is never imported unless it is the only runtime left.
"""
import ctypes
import importlib
import os
import platform
import sys
import tempfile
import warnings
from contextlib import contextmanager

import numpy as np

from edge_verify.edge.bundle import (BUNDLE_FORMAT, Bundle, default_bundle_dir,  # noqa: F401 (re-exported)
                                     load_bundle)
from edge_verify.edge.choices import BACKEND_MODULES, DELEGATES, EDGETPU, MODEL_FILES
from edge_verify.edge.errors import ModelError

EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                   "Windows": "edgetpu.dll"}.get(platform.system(), "libedgetpu.so.1")


class RuntimeFallbackWarning(UserWarning):
    """The runtime fell back to something slower than asked for (no Edge TPU, TensorFlow runtime)."""


class Model:
    """A bundle loaded into a TFLite interpreter. Not thread-safe: one Model per thread."""

    def __init__(self, bundle: Bundle, interpreter, *, runtime: str, model_file: str,
                 delegate: str, threads: int | None):
        self.bundle = bundle
        self.runtime = runtime          # "litert", "tflite_runtime" or "tensorflow"
        self.model_file = model_file    # the .tflite file actually running
        self.delegate = delegate        # "none" (CPU) or "edgetpu"
        self.threads = threads
        self._interpreter = interpreter
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        height, width = bundle.input_size
        if tuple(inp["shape"]) != (1, height, width, 1) or tuple(out["shape"]) != (1, bundle.embedding_size):
            raise ModelError(f"{bundle.path / model_file}: shapes {tuple(inp['shape'])} -> "
                             f"{tuple(out['shape'])} do not match the manifest "
                             f"(1, {height}, {width}, 1) -> (1, {bundle.embedding_size})")
        self._input, self._output = inp["index"], out["index"]
        self._input_dtype, self._output_dtype = inp["dtype"], out["dtype"]
        self._input_quant, self._output_quant = inp["quantization"], out["quantization"]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.bundle.input_size

    @property
    def fingerprint(self) -> str:
        return self.bundle.fingerprint

    def embed(self, signature: np.ndarray) -> np.ndarray:
        """Preprocessed signature, float32 (H, W) in [0, 1] -> unit-length float32 embedding (D,)."""
        x = np.asarray(signature, np.float32)[None, :, :, None]
        self._interpreter.set_tensor(self._input, _quantise(x, self._input_dtype, self._input_quant))
        self._interpreter.invoke()
        y = _dequantise(self._interpreter.get_tensor(self._output)[0], self._output_quant)
        return y / max(float(np.linalg.norm(y)), 1e-12)


def _quantise(x: np.ndarray, dtype, quantization) -> np.ndarray:
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero_point = quantization
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantise(y: np.ndarray, quantization) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        return y.astype(np.float32)
    scale, zero_point = quantization
    return (y.astype(np.float32) - zero_point) * np.float32(scale)


def load_model(path=None, *, threads: int | None = None, delegate: str = "none",
               variant: str | None = None, backend: str | None = None) -> Model:
    """Load a bundle (default: the packaged one) into an interpreter.

    delegate "edgetpu" runs model_int8_edgetpu.tflite on a Coral Edge TPU and falls back to the
    CPU (model_int8.tflite, with a RuntimeFallbackWarning) when the accelerator or its library is
    absent. variant picks another model file (int8, float32, float16, edgetpu); backend forces
    one runtime ("litert", "tflite_runtime", "tensorflow") instead of the first one installed.
    """
    if delegate not in DELEGATES:
        raise ModelError(f"unknown delegate {delegate!r}: expected {' or '.join(map(repr, DELEGATES))}")
    variant = variant or (EDGETPU if delegate == EDGETPU else "int8")
    if variant not in MODEL_FILES:
        raise ModelError(f"unknown model variant {variant!r}: expected one of {', '.join(MODEL_FILES)}")
    bundle = load_bundle(path)
    runtime, module = _runtime(backend)
    delegates = []
    if delegate == EDGETPU:
        delegates = _edgetpu_delegate(module, bundle)
        if not delegates:
            delegate, variant = "none", "int8"
    elif variant == EDGETPU:
        raise ModelError("the edgetpu model variant needs delegate 'edgetpu'")
    model_file = MODEL_FILES[variant]
    content = bundle.read_file(model_file)
    try:
        with _without_runtime_info_lines():
            interpreter = module.Interpreter(model_content=content, num_threads=threads,
                                             experimental_delegates=delegates or None)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"{bundle.path / model_file} cannot be loaded: {_first_line(error)}") from None
    return Model(bundle, interpreter, runtime=runtime, model_file=model_file,
                 delegate=delegate, threads=threads)


@contextmanager
def _without_runtime_info_lines():
    """Drop the "INFO: ..." lines the C++ runtime writes to stderr (no Python switch turns them
    off); anything else it writes is passed on."""
    try:
        sys.stderr.flush()
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr is not a real file (e.g. under pytest)
        yield
        return
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not line.startswith("INFO: "))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _runtime(backend: str | None):
    """(name, module with Interpreter and load_delegate): the one asked for, else the first installed."""
    if backend is not None and backend not in BACKEND_MODULES:
        raise ModelError(f"unknown runtime {backend!r}: expected one of {', '.join(BACKEND_MODULES)}")
    for name in [backend] if backend else list(BACKEND_MODULES):
        try:
            module = importlib.import_module(BACKEND_MODULES[name])
        except ImportError:
            continue
        if name == "tensorflow":
            module = _TensorFlowLite(module)
            warnings.warn("running the model with tensorflow.lite: install ai-edge-litert "
                          "(pip install ai-edge-litert) for a lighter, faster-starting runtime",
                          RuntimeFallbackWarning, stacklevel=3)
        return name, module
    if backend:
        raise ModelError(f"the {backend} runtime is not installed (python module {BACKEND_MODULES[backend]})")
    raise ModelError("no TFLite runtime is installed: pip install ai-edge-litert "
                     "(or tflite-runtime on older boards)")


class _TensorFlowLite:
    """tensorflow.lite seen through the same two names as ai_edge_litert.interpreter."""

    def __init__(self, tf):
        self.Interpreter = tf.lite.Interpreter
        self.load_delegate = tf.lite.experimental.load_delegate


def _edgetpu_delegate(module, bundle: Bundle) -> list:
    """[the Edge TPU delegate], or [] with a RuntimeFallbackWarning saying why the CPU is used."""
    if MODEL_FILES[EDGETPU] not in bundle.manifest.files:
        reason = f"the bundle has no {MODEL_FILES[EDGETPU]}"
    else:
        try:
            ctypes.CDLL(EDGETPU_LIBRARY)  # first: a failed load_delegate leaves a broken object behind
            return [module.load_delegate(EDGETPU_LIBRARY)]
        except (OSError, ValueError, RuntimeError) as error:
            reason = f"cannot load {EDGETPU_LIBRARY} ({_first_line(error)}); is the Coral plugged in?"
    warnings.warn(f"Edge TPU not used: {reason}; running {MODEL_FILES['int8']} on the CPU",
                  RuntimeFallbackWarning, stacklevel=3)
    return []


def runtime_version(model: Model) -> str:
    """Version of the package providing the model's runtime, or '' if unknown."""
    from importlib.metadata import PackageNotFoundError, version
    package = {"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(model.runtime)
    names = [package] if package else ["tensorflow", "tensorflow-cpu"]
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
