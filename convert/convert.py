r"""Turn a trained embedding tower into a device model bundle.

    tower.keras --(SavedModel)--> model_int8.tflite      full-integer, calibrated on real signatures
                              \-> model_float32.tflite   (and model_float16.tflite on request)
                              \-> model.onnx             for TensorRT on a Jetson
    + Edge TPU compatibility report (+ the compiled model when edgetpu_compiler is installed)
    + manifest.json: shapes, quantisation, calibration, checksums, versions, accuracy guard

The accuracy guard embeds the validation writers with the int8 and the float model and fails
when they disagree (median cosine < 0.99, or int8 EER more than 0.5 points worse).
The operating threshold is calibrated on validation writers with the int8 model, which is
what the device runs.
"""
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edge_verify.edge.bundle import UNCALIBRATED, Calibration, Manifest, write_manifest
from edge_verify.edge.choices import MODEL_FILES
from edge_verify.edge.preprocess import PREPROCESS_VERSION
from edge_verify.training.arrays import preprocessed_images, to_model_input
from edge_verify.training.datasets import read_signatures, select_split
from edge_verify.training.embedders import load_embedder, sha256_of
from edge_verify.training.evaluate import calibrate, evaluate_embeddings

MIN_COSINE = 0.99
MAX_EER_LOSS = 0.005
CALIBRATION_IMAGES = 300


class AccuracyGuardError(Exception):
    """The int8 model is measurably worse than the float one."""


def export_saved_model(tower, directory):
    """SavedModel of the tower up to its last Dense layer: the unit normalisation is left out.

    The device divides the dequantised output by its length in float (edge/inference.py).
    Done inside an int8 graph, the normalisation's output would have TFLite's fixed scale of
    1/128 on values that rarely exceed 0.4: half the int8 error of the embedding came from it.
    """
    import keras
    import tensorflow as tf

    body = keras.Model(tower.input, tower.get_layer("embedding").input)
    height, width = tower.input_shape[1:3]
    archive = keras.export.ExportArchive()
    archive.track(body)
    archive.add_endpoint("serve", lambda x: body(x, training=False),
                         input_signature=[tf.TensorSpec((1, height, width, 1), tf.float32)])
    archive.write_out(str(directory), verbose=False)


def tflite_model(saved_model_dir, kind, representative_images=None) -> bytes:
    """Convert a SavedModel to TFLite: kind is int8 (full integer), float32 or float16."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if kind == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in representative_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def random_sample(signatures, count, seed=0):
    """`count` signatures drawn at random (all when there are fewer), kept in their order."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(signatures))[:count]
    return [signatures[i] for i in sorted(chosen)]


def accuracy_guard(bundle_dir, val_signatures, val_images):
    """Compare int8 and float32 embeddings of the validation writers (5 references)."""
    int8 = load_embedder(Path(bundle_dir) / MODEL_FILES["int8"]).embed(val_images)
    float32 = load_embedder(Path(bundle_dir) / MODEL_FILES["float32"]).embed(val_images)
    cosine = np.sum(int8 * float32, axis=1)
    [int8_result] = evaluate_embeddings(val_signatures, int8, refs_list=(5,))
    [float_result] = evaluate_embeddings(val_signatures, float32, refs_list=(5,))
    guard = {"validation_images": len(val_images),
             "median_cosine": float(np.median(cosine)), "min_cosine": float(np.min(cosine)),
             "eer_float32": float_result["eer"], "eer_int8": int8_result["eer"],
             "min_median_cosine": MIN_COSINE, "max_eer_loss": MAX_EER_LOSS}
    guard["passed"] = bool(guard["median_cosine"] >= MIN_COSINE and
                           guard["eer_int8"] - guard["eer_float32"] <= MAX_EER_LOSS)
    return guard, int8


def convert(model_path, calib_dirs, out_dir, float16=False, force=False, onnx=True, seed=0):
    """Write a bundle for the tower at `model_path` into `out_dir`; returns its manifest.

    `calib_dirs` are dataset folders [(root, layout or None)]: their training writers feed the
    int8 calibration, their validation writers the accuracy guard and the threshold.
    The bundle is written into a temporary folder beside `out_dir` and takes its place only when
    the accuracy guard passes (or `force`): a failed conversion leaves the old bundle untouched.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.converting-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would follow the bundle into place
    try:
        manifest = write_bundle(model_path, calib_dirs, staging, float16, force, onnx, seed)
        swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def swap_in(staging: Path, out_dir: Path) -> None:
    """Put the bundle folder `staging` in the place of `out_dir` (two renames). What the old folder
    holds besides its bundle (entries its manifest does not list: a model card, evaluation
    reports) is copied into the new one first, unless the new bundle has an entry of that name."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    try:
        listed = set(json.loads((out_dir / "manifest.json").read_text())["files"]) | {"manifest.json"}
    except (OSError, ValueError, KeyError, TypeError):  # no readable manifest: keep every other entry
        listed = set()
    for entry in out_dir.iterdir():
        if entry.name not in listed and not (staging / entry.name).exists():
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, staging / entry.name)
    old = staging.with_name(staging.name + ".old")
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    shutil.rmtree(old)


def write_bundle(model_path, calib_dirs, out_dir, float16, force, onnx, seed):
    """convert()'s work, into the new folder `out_dir`: raises AccuracyGuardError when the guard
    fails, unless `force`."""
    import keras

    from edge_verify.convert import edgetpu, onnx_export

    tower = keras.saving.load_model(model_path, compile=False)
    size = tuple(tower.input_shape[1:3])
    signatures = [s for root, layout in calib_dirs for s in read_signatures(root, layout)]
    calibration_set = random_sample(select_split(signatures, "train"), CALIBRATION_IMAGES, seed)
    val_set = select_split(signatures, "val")
    representative = to_model_input(preprocessed_images(calibration_set, size))
    val_images = to_model_input(preprocessed_images(val_set, size))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(tower, Path(tmp) / "saved_model")
        kinds = ["int8", "float32"] + (["float16"] if float16 else [])
        for kind in kinds:
            model = tflite_model(Path(tmp) / "saved_model", kind, representative)
            (out_dir / f"model_{kind}.tflite").write_bytes(model)

    report = edgetpu.compatibility_report(out_dir / "model_int8.tflite")
    compiled = edgetpu.compile_for_edgetpu(out_dir / "model_int8.tflite", out_dir)
    onnx_check = onnx_export.export_onnx(tower, out_dir / "model.onnx", (1, *size, 1)) if onnx else None

    details = {
        "source_model_sha256": sha256_of(model_path),
        "versions": versions(),
        "representative_images": len(representative),
        "edgetpu": {k: report[k] for k in ("compatible", "unsupported", "first_cpu_fallback")},
        **quantisation(out_dir / "model_int8.tflite"),
    }
    run_file = Path(model_path).with_name("run.json")
    if run_file.exists():  # the training run that made the tower: data, command, seed, time
        run = json.loads(run_file.read_text())
        details["training"] = {k: run.get(k) for k in ("config", "best", "wall_seconds", "parameters",
                                                       "training_writers", "training_images", "versions")}
    manifest = write_manifest(out_dir, Manifest.new(input_size=size, embedding_size=int(tower.output_shape[-1]),
                                                    preprocess_version=PREPROCESS_VERSION,
                                                    calibration=UNCALIBRATED, **details))

    guard, int8_val = accuracy_guard(out_dir, val_set, val_images)
    writers = f"validation writers: {len({(s.dataset, s.writer) for s in val_set})}"
    manifest = manifest.replace(accuracy_guard=guard,
                                calibration=Calibration.from_dict({**calibrate(val_set, int8_val),
                                                                   "writers": writers}),
                                **({"onnx_check": onnx_check} if onnx_check else {}))
    write_bundle_readme(out_dir, manifest, report, compiled, size)
    manifest = write_manifest(out_dir, manifest)
    if not guard["passed"] and not force:
        raise AccuracyGuardError(
            f"int8 model is worse than float: median cosine {guard['median_cosine']:.4f} "
            f"(need >= {MIN_COSINE}), EER int8 {100 * guard['eer_int8']:.2f} % vs float "
            f"{100 * guard['eer_float32']:.2f} % (allowed +{100 * MAX_EER_LOSS:.1f} points); "
            "use --force to keep it anyway")
    return manifest


def quantisation(int8_path):
    """Input and output dtype, scale and zero point, read from the converted model."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(int8_path))
    details = {"input": interpreter.get_input_details()[0], "output": interpreter.get_output_details()[0]}
    out = {}
    for key, d in details.items():
        scale, zero_point = d["quantization"]
        out[key] = {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}
    return {"quantisation": out}


def versions():
    import keras
    import tensorflow as tf
    from importlib.metadata import version

    return {"edge_verify": version("edge-verify"), "tensorflow": tf.__version__,
            "keras": keras.__version__, "converter": "edge_verify.convert/1"}


def write_bundle_readme(out_dir, manifest, report, compiled, size):
    from edge_verify.convert import edgetpu, onnx_export

    guard = manifest["accuracy_guard"]
    lines = [
        "# edge-verify model bundle", "",
        f"Input: {size[0]}x{size[1]} greyscale, preprocessing {manifest['preprocess_version']}; "
        f"output: {manifest['output']['embedding_size']}-d embedding (the runtime scales it to unit length).", "",
        "| file | use |", "|---|---|",
        "| model_int8.tflite | CPU (LiteRT / tflite-runtime), full integer |",
        "| model_float32.tflite | CPUs where int8 is not wanted |",
        "| model.onnx | Jetson: build a TensorRT engine on the device (below) |", "",
        "## Accuracy guard (validation writers, 5 references)",
        f"median cosine int8 vs float {guard['median_cosine']:.4f}; EER float {100 * guard['eer_float32']:.2f} %, "
        f"int8 {100 * guard['eer_int8']:.2f} %", "",
        *training_lines(manifest.get("training")),
        "## Coral Edge TPU", "```", edgetpu.format_report(report), "```",
        compiled.get("note", "") if isinstance(compiled, dict) else "", "",
        "## Jetson (TensorRT)", onnx_export.trtexec_commands("model.onnx", (1, *size, 1)), "",
    ]
    (Path(out_dir) / "README.md").write_text("\n".join(lines) + "\n")


def training_lines(training):
    if not training:
        return []
    config = training["config"]
    return ["## Training",
            f"{training['training_writers']} training writers, {training['training_images']} images; "
            f"objective {config['objective']}, {config['epochs']} epochs x {config['steps_per_epoch']} steps, "
            f"seed {config['seed']}; {training['parameters']} parameters; "
            f"best validation EER {100 * training['best']['val_eer']:.2f} % at epoch {training['best']['epoch']}; "
            f"{training['wall_seconds'] / 60:.0f} min.", ""]
