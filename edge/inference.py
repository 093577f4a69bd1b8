"""Load a model bundle and turn preprocessed signatures into embeddings.

The bundle format is described in the README ("Model bundle"): a folder with manifest.json (checksums of
every file, input/output quantisation, calibration) and the .tflite models. The interpreter
comes from ai_edge_litert, else tflite_runtime, else tensorflow.lite (last resort, with a
warning). TensorFlow is never imported unless it is the only runtime left.
"""
import ctypes
import hashlib
import importlib
import json
import os
import platform
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edge_verify.edge.errors import ModelError
from edge_verify.edge.preprocess import PREPROCESS_VERSION

BUNDLE_FORMAT = "edge-verify-bundle/1"
MODEL_FILES = {  # variant -> file in the bundle
    "int8": "model_int8.tflite",
    "float32": "model_float32.tflite",
    "float16": "model_float16.tflite",
    "edgetpu": "model_int8_edgetpu.tflite",
}
# backend name (as in device profiles) -> module holding Interpreter and load_delegate
BACKENDS = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow",  # tensorflow.lite.Interpreter, a last resort
}
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                   "Windows": "edgetpu.dll"}.get(platform.system(), "libedgetpu.so.1")


class RuntimeFallbackWarning(UserWarning):
    """The runtime fell back to something slower than asked for (no Edge TPU, TensorFlow runtime)."""


@dataclass(frozen=True)
class Bundle:
    """A model bundle whose manifest has been read and checked (models not loaded yet)."""
    path: Path
    manifest: dict
    fingerprint: str        # sha256 of manifest.json: pins every file of the bundle

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.manifest["input"]["height"]), int(self.manifest["input"]["width"])

    @property
    def embedding_size(self) -> int:
        return int(self.manifest["output"]["embedding_size"])

    @property
    def calibration(self) -> dict:
        return self.manifest["calibration"]

    @property
    def preprocess_version(self) -> str:
        return self.manifest["preprocess_version"]


def default_bundle_dir() -> Path:
    """The bundle shipped inside the package (edge/models/default)."""
    return Path(str(resources.files("edge_verify.edge") / "models" / "default"))


def load_bundle(path=None) -> Bundle:
    """Read and check a bundle's manifest; ModelError if it is missing, invalid or of the wrong kind."""
    folder = Path(path) if path is not None else default_bundle_dir()
    manifest_path = folder / "manifest.json"
    if not folder.is_dir():
        raise ModelError(f"model bundle {folder} not found" + (
            " (the default model is not installed)" if path is None else ""))
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{folder} is not a model bundle: it has no manifest.json") from None
    except OSError as error:
        raise ModelError(f"cannot read {manifest_path}: {error.strerror or error}") from None
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError):  # also bad UTF-8, numbers over 4300 digits, nesting too deep
        raise ModelError(f"{manifest_path} is damaged: not valid JSON") from None
    _check_manifest(manifest, manifest_path)
    return Bundle(folder, manifest, hashlib.sha256(raw).hexdigest())


def _check_manifest(manifest, where) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ModelError(f"{where}: not an edge-verify model bundle "
                         f"(format {found!r}, expected {BUNDLE_FORMAT!r})")
    try:
        int(manifest["input"]["height"]), int(manifest["input"]["width"])
        int(manifest["output"]["embedding_size"])
        float(manifest["calibration"]["threshold"])
        files = manifest["files"]
        version = manifest["preprocess_version"]
    except (KeyError, TypeError, ValueError, OverflowError) as error:  # OverflowError: int(Infinity)
        raise ModelError(f"{where}: incomplete manifest ({error!s} missing or invalid)") from None
    if not isinstance(files, dict) or MODEL_FILES["int8"] not in files:
        raise ModelError(f"{where}: the manifest lists no {MODEL_FILES['int8']}")
    if version != PREPROCESS_VERSION:
        raise ModelError(f"{where}: the model expects preprocessing {version!r} but this edge-verify "
                         f"does {PREPROCESS_VERSION!r}; use a bundle converted for this version")


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
    if delegate not in ("none", "edgetpu"):
        raise ModelError(f"unknown delegate {delegate!r}: expected 'none' or 'edgetpu'")
    variant = variant or ("edgetpu" if delegate == "edgetpu" else "int8")
    if variant not in MODEL_FILES:
        raise ModelError(f"unknown model variant {variant!r}: expected one of {', '.join(MODEL_FILES)}")
    bundle = load_bundle(path)
    runtime, module = _runtime(backend)
    delegates = []
    if delegate == "edgetpu":
        delegates = _edgetpu_delegate(module, bundle)
        if not delegates:
            delegate, variant = "none", "int8"
    elif variant == "edgetpu":
        raise ModelError("the edgetpu model variant needs delegate 'edgetpu'")
    model_file = MODEL_FILES[variant]
    content = _read_checked(bundle, model_file)
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
    if backend is not None and backend not in BACKENDS:
        raise ModelError(f"unknown runtime {backend!r}: expected one of {', '.join(BACKENDS)}")
    for name in [backend] if backend else list(BACKENDS):
        try:
            module = importlib.import_module(BACKENDS[name])
        except ImportError:
            continue
        if name == "tensorflow":
            module = _TensorFlowLite(module)
            warnings.warn("running the model with tensorflow.lite: install ai-edge-litert "
                          "(pip install ai-edge-litert) for a lighter, faster-starting runtime",
                          RuntimeFallbackWarning, stacklevel=3)
        return name, module
    if backend:
        raise ModelError(f"the {backend} runtime is not installed (python module {BACKENDS[backend]})")
    raise ModelError("no TFLite runtime is installed: pip install ai-edge-litert "
                     "(or tflite-runtime on older boards)")


class _TensorFlowLite:
    """tensorflow.lite seen through the same two names as ai_edge_litert.interpreter."""

    def __init__(self, tf):
        self.Interpreter = tf.lite.Interpreter
        self.load_delegate = tf.lite.experimental.load_delegate


def _edgetpu_delegate(module, bundle: Bundle) -> list:
    """[the Edge TPU delegate], or [] with a RuntimeFallbackWarning saying why the CPU is used."""
    if MODEL_FILES["edgetpu"] not in bundle.manifest["files"]:
        reason = f"the bundle has no {MODEL_FILES['edgetpu']}"
    else:
        try:
            ctypes.CDLL(EDGETPU_LIBRARY)  # first: a failed load_delegate leaves a broken object behind
            return [module.load_delegate(EDGETPU_LIBRARY)]
        except (OSError, ValueError, RuntimeError) as error:
            reason = f"cannot load {EDGETPU_LIBRARY} ({_first_line(error)}); is the Coral plugged in?"
    warnings.warn(f"Edge TPU not used: {reason}; running {MODEL_FILES['int8']} on the CPU",
                  RuntimeFallbackWarning, stacklevel=3)
    return []


def _read_checked(bundle: Bundle, name: str) -> bytes:
    """The bytes of a bundle file, refused unless they match the manifest's sha256."""
    expected = bundle.manifest["files"].get(name)
    if expected is None:
        raise ModelError(f"{bundle.path}: the manifest does not list {name}")
    try:
        content = (bundle.path / name).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{bundle.path / name} is missing from the bundle") from None
    except OSError as error:
        raise ModelError(f"cannot read {bundle.path / name}: {error.strerror or error}") from None
    if hashlib.sha256(content).hexdigest() != expected:
        raise ModelError(f"{bundle.path / name} does not match the checksum in its manifest: "
                         "the bundle is damaged or was tampered with")
    return content


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
