"""The workstation benchmark (issue 7): our int8 model against the design of the seed material,
the Koch et al. Siamese network, measured in one run on one machine:

    edge-verify bench [--model BUNDLE] [--baseline KOCH_RUN_DIR] [--tower FILE] [--out DIR] [--quick]

Every latency runs on one core (the whole process pinned to it; TensorFlow, LiteRT, OpenCV and
OpenBLAS with one thread) and is the median of repeated runs, warm-up excluded; both models get
the same images. Keras inference is model.predict_on_batch (a compiled graph; an eager call is
several times slower). The baseline's fresh-process check is `python -m edge_verify.training.bench
KOCH_RUN_DIR REFERENCES.npy IMAGE`. Accuracy follows EVALUATION.md on the test writers: ours at
the bundle's operating point, Koch's at "match if probability >= 0.95". Without --baseline the
Koch network has random weights: its speed and size are real, its accuracy is "not trained".
Targets are printed, never asserted.
"""
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_verify.edge import scoring
from edge_verify.edge.errors import ModelError
from edge_verify.edge.image_io import load_image
from edge_verify.edge.inference import MODEL_FILES, load_bundle, load_model, runtime_version
from edge_verify.edge.preprocess import preprocess
from edge_verify.tools.benchmark import (DATASETS, QUERY, REFERENCES, SAMPLES, bench_check, bench_cli_check,
                                        bench_embed, bench_identify, bench_preprocess, machine_facts,
                                        one_core, resized_jpeg, run_measured, timings_ms)
from edge_verify.training.datasets import DatasetError
from edge_verify.training.evaluate import KOCH_MATCH, evaluate_embeddings, koch_evaluate_embeddings

ACCURACY_DATASETS = ("cedar", "bhsig260-bengali")   # folders of --datasets, test writers of each
REFS = (1, 5, 10)
SPEED_TARGET = 20.0    # our int8 check at least 20x faster than Koch's
SIZE_TARGET = 100.0    # our int8 model file at least 100x smaller than Koch's
EER_TARGET = 0.0       # our EER minus Koch's, in points: no worse
KOCH_FILES = ("tower.keras", "koch_head.keras")


# ------------------------------------------------------------------ the Koch et al. baseline


@dataclass
class Koch:
    """The baseline: Koch tower (image -> 4096-d sigmoid embedding) and head (|a - b| -> probability)."""
    tower: object
    head: object
    folder: Path        # holds tower.keras and koch_head.keras
    trained: bool

    @property
    def input_size(self) -> tuple:
        return tuple(self.tower.input_shape[1:3])

    @property
    def embedding_size(self) -> int:
        return int(self.tower.output_shape[-1])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, 1) -> (N, 4096)."""
        return np.asarray(self.tower.predict_on_batch(images))

    def match_probability(self, differences: np.ndarray) -> np.ndarray:
        """(N, 4096) absolute differences -> (N,) probabilities that the two signatures match."""
        return np.asarray(self.head.predict_on_batch(differences))[:, 0]


def load_koch(folder, trained=True) -> Koch:
    """The Koch tower and head of a run folder (tower.keras + koch_head.keras)."""
    import keras

    folder = Path(folder)
    missing = [name for name in KOCH_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"{folder} is not a Koch run folder: it has no {' or '.join(missing)} "
                         "(train one with `edge-verify train --arch koch --objective koch`)")
    tower, head = (keras.saving.load_model(folder / name, compile=False) for name in KOCH_FILES)
    return Koch(tower, head, folder, trained)


def random_koch(folder) -> Koch:
    """The Koch network with random (seeded) weights, saved in `folder` like a trained run."""
    import keras

    from edge_verify.training.model import build_koch_head, build_koch_tower

    keras.utils.set_random_seed(0)
    tower = build_koch_tower()
    head = build_koch_head(tower.output_shape[-1])
    folder = Path(folder)
    tower.save(folder / KOCH_FILES[0])
    head.save(folder / KOCH_FILES[1])
    return Koch(tower, head, folder, trained=False)


def koch_check(koch: Koch, image, references: np.ndarray) -> float:
    """The baseline's 1:1 check of an image (file or encoded bytes) against reference embeddings:
    the mean match probability; a match when it is >= KOCH_MATCH."""
    return koch_score(koch, preprocess(load_image(image), koch.input_size), references)


def koch_score(koch: Koch, signature: np.ndarray, references: np.ndarray) -> float:
    """The model's share of a Koch check: embed a preprocessed signature (H, W), mean head probability."""
    embedding = koch.embed(signature[None, :, :, None])[0]
    return float(np.mean(koch.match_probability(np.abs(references - embedding))))


def koch_check_main(argv=None) -> None:
    """python -m edge_verify.training.bench KOCH_RUN_DIR REFERENCES.npy IMAGE: one Koch check in a
    fresh process, the baseline's `edge-verify check`; exit 0 match, 1 no match."""
    folder, references, image = sys.argv[1:] if argv is None else argv
    single_threaded_tensorflow()
    probability = koch_check(load_koch(folder), image, np.load(references))
    print(f"{'MATCH' if probability >= KOCH_MATCH else 'NO MATCH'}: probability {probability:.3f}")
    sys.exit(0 if probability >= KOCH_MATCH else 1)


def single_threaded_tensorflow() -> dict:
    """One intra-op and one inter-op thread; only possible before TensorFlow runs its first op
    (else the threads stay as they are). Returns the settings in force (0: TensorFlow's default)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process
        pass
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


# ------------------------------------------------------------------ our model


def find_keras_tower(bundle=None, runs="runs"):
    """The .keras tower the bundle was converted from (runs/*/tower.keras whose sha256 is the
    manifest's source_model_sha256), or None. Bundles do not ship the Keras model."""
    from edge_verify.training.embedders import sha256_of

    expected = load_bundle(bundle).manifest.get("source_model_sha256")
    for path in sorted(Path(runs).glob("*/tower.keras")) if expected else []:
        if sha256_of(path) == expected:
            return path
    return None


# ------------------------------------------------------------------ measurements


def bench_speed(model, float_model, tower, koch: Koch, datasets: Path, quick: bool) -> tuple[dict, dict]:
    """({figure: ours}, {figure: Koch's}) latencies and peak memory, one core, same images."""
    repeats, check_repeats = (5, 10) if quick else (30, 100)
    samples = [resized_jpeg(datasets / sample) for sample in SAMPLES]
    references = [datasets / sample for sample in REFERENCES]
    query = resized_jpeg(datasets / QUERY)
    ours, base = {}, {}

    for figures, size in ((ours, model.input_size), (base, koch.input_size)):
        timings = bench_preprocess(samples, repeats, size)
        figures["decode_ms"], figures["preprocess_ms"] = timings["decode_ms"], timings["decode_and_preprocess_ms"]
    ours_signatures = [preprocess(load_image(s), model.input_size) for s in samples]
    koch_signatures = [preprocess(load_image(s), koch.input_size) for s in samples]
    ours_refs = np.stack([model.embed(preprocess(load_image(p), model.input_size)) for p in references])
    koch_refs = koch.embed(np.stack([preprocess(load_image(p), koch.input_size) for p in references])[..., None])
    calibration = model.bundle.calibration
    ours["embed_int8_ms"] = bench_embed(model.embed, ours_signatures, repeats)
    ours["embed_float32_ms"] = bench_embed(float_model.embed, ours_signatures, repeats)
    if tower is not None:
        ours["embed_keras_ms"] = bench_embed(lambda s: tower.predict_on_batch(s[None, :, :, None]),
                                             ours_signatures, repeats)
    base["embed_ms"] = bench_embed(lambda s: koch.embed(s[None, :, :, None]), koch_signatures, repeats)
    ours["embed_score_ms"] = bench_embed(lambda s: scoring.verify(model.embed(s), ours_refs, calibration),
                                         ours_signatures, repeats)
    base["embed_score_ms"] = bench_embed(lambda s: koch_score(koch, s, koch_refs) >= KOCH_MATCH,
                                         koch_signatures, repeats)

    ours["check_ms"] = bench_check(model, references, query, check_repeats)["check_ms"]
    with one_core():
        base["check_ms"] = statistics.median(timings_ms(
            lambda: koch_check(koch, query, koch_refs) >= KOCH_MATCH, check_repeats))

    def ours_cold():
        fresh = load_model(model.bundle.path, threads=1)
        scoring.verify(fresh.embed(preprocess(load_image(query), fresh.input_size)), ours_refs, calibration)

    cold_repeats = 2 if quick else 5
    with one_core():
        ours["cold_start_ms"] = statistics.median(timings_ms(ours_cold, cold_repeats, warmup=1))
        base["cold_start_ms"] = statistics.median(timings_ms(
            lambda: koch_check(load_koch(koch.folder), query, koch_refs), cold_repeats, warmup=1))

    runs = 1 if quick else 5
    cli = bench_cli_check(model, references, query, runs=runs)
    ours["fresh_check_s"], ours["fresh_check_peak_mb"] = cli["cli_check_s"], cli["cli_check_peak_mb"]
    base["fresh_check_s"], base["fresh_check_peak_mb"] = koch_fresh_check(koch, koch_refs, query, runs,
                                                                          warmup=0 if quick else 1)

    users = (1_000,) if quick else (1_000, 10_000, 100_000)
    ours.update(bench_identify(model.bundle.embedding_size, calibration, users, repeats=3 if quick else 30))
    base.update(bench_koch_identify(koch, (1_000,) if quick else (1_000, 10_000), repeats=3 if quick else 10))
    return ours, base


def koch_fresh_check(koch: Koch, references: np.ndarray, query: bytes, runs: int, warmup: int = 1):
    """(median wall seconds, peak MB) of a Koch check as a fresh Python process (koch_check_main),
    one core: process start, TensorFlow import, model load, one check."""
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "references.npy", references)
        (Path(folder) / "query.jpg").write_bytes(query)
        command = [sys.executable, "-m", "edge_verify.training.bench", str(koch.folder),
                   str(Path(folder) / "references.npy"), str(Path(folder) / "query.jpg")]
        with one_core():
            measured = [run_measured(command) for _ in range(warmup + runs)][warmup:]
    return statistics.median(m[0] for m in measured), max(m[1] for m in measured)


def bench_koch_identify(koch: Koch, users=(1_000,), references: int = 5, repeats: int = 10) -> dict:
    """Median ms, one core, of a Koch 1:N search: the head over every reference of a gallery of
    random sigmoid embeddings, mean probability per user, top 5. (100k users would need an 8.2 GB
    gallery: not run.)"""
    rng = np.random.default_rng(0)
    query = rng.random(koch.embedding_size, dtype=np.float32)
    figures = {}
    with one_core():
        for count in users:
            gallery = rng.random((count * references, koch.embedding_size), dtype=np.float32)
            starts = np.arange(0, count * references, references)

            def search():
                per_user = np.add.reduceat(koch.match_probability(np.abs(gallery - query)), starts) / references
                top = np.argpartition(-per_user, 4)[:5]
                return top[np.argsort(-per_user[top])]

            figures[f"identify_{count // 1000}k_ms"] = statistics.median(timings_ms(search, repeats))
    return figures


def held_out_writers(root, first=None) -> list:
    """The test writers' signatures of a dataset (EVALUATION.md split), or only its `first` writers."""
    from edge_verify.training.datasets import read_signatures, select_split

    chosen = select_split(read_signatures(root), "test")
    if first:
        keep = sorted({s.writer for s in chosen}, key=lambda w: (len(w), w))[:first]
        chosen = [s for s in chosen if s.writer in keep]
    return chosen


def bench_accuracy(bundle, koch: Koch, datasets: Path, names=ACCURACY_DATASETS, first_writers=None,
                   refs_list=REFS) -> dict:
    """EVALUATION.md results per dataset: {"ours": {dataset: [per R]}, "baseline": {...} or None}."""
    from edge_verify.training.arrays import preprocessed_images, to_model_input
    from edge_verify.training.embedders import load_embedder

    embedder = load_embedder(bundle, threads=1)
    results = {"ours": {}, "baseline": {} if koch.trained else None}
    for name in names:
        chosen = held_out_writers(datasets / name, first_writers)
        embeddings = embedder.embed(to_model_input(preprocessed_images(chosen, embedder.input_size)))
        dataset = chosen[0].dataset
        results["ours"][dataset] = evaluate_embeddings(chosen, embeddings, refs_list, embedder.calibration)
        if koch.trained:
            images = to_model_input(preprocessed_images(chosen, koch.input_size))
            embeddings = np.concatenate([koch.embed(images[i:i + 64]) for i in range(0, len(images), 64)])
            results["baseline"][dataset] = koch_evaluate_embeddings(chosen, embeddings, koch.match_probability,
                                                                    refs_list)
    return results


# ------------------------------------------------------------------ the whole run


def run_bench(bundle=None, baseline_run=None, tower_path=None, datasets=DATASETS, quick=False,
              runs="runs") -> dict:
    """Every figure of the benchmark, ours beside the Koch baseline's: {"machine", "conditions",
    "ours", "baseline", "rows", "accuracy"}. quick: few repeats, 1k users, 3 CEDAR test writers."""
    started = time.perf_counter()
    datasets = Path(datasets)
    missing = [str(datasets / p) for p in SAMPLES + REFERENCES + [QUERY] if not (datasets / p).exists()]
    if missing:
        raise DatasetError(f"benchmark images not found: {', '.join(missing)} (pass --datasets)")
    # The whole run on one core: TensorFlow's thread pools start with its first operation and
    # keep the affinity of the thread that started them.
    with one_core():
        report = measure(bundle, baseline_run, tower_path, datasets, quick, runs)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def measure(bundle, baseline_run, tower_path, datasets: Path, quick: bool, runs) -> dict:
    """run_bench's figures, measured in a process pinned to one core."""
    threads = single_threaded_tensorflow()   # first, before TensorFlow runs anything
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # each cold-start load retraces predict_on_batch: expected
    model = load_model(bundle, threads=1)
    float_model = load_model(bundle, variant="float32", threads=1)
    tower_path = Path(tower_path) if tower_path else find_keras_tower(model.bundle.path, runs)
    tower = keras.saving.load_model(tower_path, compile=False) if tower_path else None
    load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as scratch:
        koch = load_koch(baseline_run) if baseline_run else random_koch(scratch)
        ours, base = bench_speed(model, float_model, tower, koch, datasets, quick)
        koch_bytes = sum((koch.folder / name).stat().st_size for name in KOCH_FILES)
        koch_parameters = koch.tower.count_params() + koch.head.count_params()
        accuracy = bench_accuracy(model.bundle.path, koch, datasets,
                                  names=ACCURACY_DATASETS[:1] if quick else ACCURACY_DATASETS,
                                  first_writers=3 if quick else None)

    files = {variant: model.bundle.path / MODEL_FILES[variant] for variant in ("int8", "float32")}
    sizes = {variant: path.stat().st_size for variant, path in files.items()}
    sizes["keras"] = tower_path.stat().st_size if tower_path else None
    parameters = (tower.count_params() if tower is not None
                  else model.bundle.manifest.get("training", {}).get("parameters"))
    report = {
        "machine": {**machine_facts(), "tensorflow": tf.__version__, "keras": keras.__version__,
                    "litert": runtime_version(model), "load_average_at_start": load_average},
        "conditions": {"one_core": "the whole process on one core (sched_setaffinity); OpenCV, OpenBLAS, "
                                   "LiteRT 1 thread; "
                                   f"TensorFlow intra/inter-op threads {threads['intra_op']}/{threads['inter_op']}",
                       "statistic": "median of repeated runs, warm-up excluded", "quick": quick,
                       "images": {"query": QUERY, "references": REFERENCES, "samples": SAMPLES,
                                  "datasets": str(datasets)},
                       "keras_inference": "model.predict_on_batch",
                       "fresh_process": "spawned by a small launcher; bytecode caches allowed, as in an installed "
                                        "package; the first run untimed"},
        "ours": {"bundle": str(model.bundle.path), "runtime": model.runtime, "input_size": list(model.input_size),
                 "embedding_size": model.bundle.embedding_size, "threshold": model.bundle.calibration["threshold"],
                 "parameters": parameters, "file_bytes": sizes,
                 "keras_tower": str(tower_path) if tower_path else None, "figures": ours},
        "baseline": {"design": "Koch et al. 2015 Siamese network: conv 64@10x10, 128@7x7, 128@4x4, 256@4x4, "
                               "4096-d sigmoid, L1 + sigmoid head; Keras float; match if p >= 0.95",
                     "run": str(baseline_run) if baseline_run else None, "trained": koch.trained,
                     "input_size": list(koch.input_size), "embedding_size": koch.embedding_size,
                     "parameters": koch_parameters, "file_bytes": koch_bytes, "match": KOCH_MATCH,
                     "figures": base},
        "accuracy": accuracy,
    }
    report["rows"] = comparison_rows(report)
    return report


# ------------------------------------------------------------------ the table


def row(figure, label, unit, ours, baseline, compare="ratio", target=None, note="") -> dict:
    """One line of the table. compare "ratio": baseline / ours (how many times faster or smaller
    ours is; target: at least); "points": ours - baseline (error rates; target: at most)."""
    value = None
    if isinstance(ours, (int, float)) and isinstance(baseline, (int, float)):
        value = baseline / ours if compare == "ratio" else ours - baseline if compare == "points" else None
    met = None
    if target is not None and value is not None:
        met = bool(value >= target if compare == "ratio" else value <= target)
    return {"figure": figure, "label": label, "unit": unit, "ours": ours, "baseline": baseline,
            "compare": compare, "value": value, "target": target, "met": met, "note": note}


def comparison_rows(report: dict) -> list[dict]:
    ours, base = report["ours"], report["baseline"]
    f, g = ours["figures"], base["figures"]
    size = lambda bytes_: None if bytes_ is None else bytes_ / 1e6
    rows = [
        row("preprocess_ms", f"decode + preprocess a 600x400 scan ({ours['input_size'][0]}x{ours['input_size'][1]} "
            f"/ {base['input_size'][0]}x{base['input_size'][1]})", "ms", f["preprocess_ms"], g["preprocess_ms"]),
        row("decode_ms", "  of which decode the JPEG (the same code for both)", "ms", f["decode_ms"], g["decode_ms"]),
        row("embed_int8_ms", "embed: ours int8 TFLite / Koch Keras float", "ms", f["embed_int8_ms"], g["embed_ms"]),
        row("embed_float32_ms", "embed: ours float32 TFLite / Koch Keras float", "ms",
            f["embed_float32_ms"], g["embed_ms"]),
        row("embed_keras_ms", "embed: ours Keras float / Koch Keras float", "ms", f.get("embed_keras_ms"),
            g["embed_ms"], note="" if "embed_keras_ms" in f else "no Keras tower (--tower)"),
        row("embed_score_ms", "embed + score, R=5 (the model's share of a check)", "ms", f["embed_score_ms"],
            g["embed_score_ms"]),
        row("check_ms", "check in process, R=5 (decode+preprocess+embed+score)", "ms", f["check_ms"],
            g["check_ms"], target=SPEED_TARGET),
        row("check_bound_ms", "  bound if preprocessing took no time: decode + embed + score", "ms",
            f["decode_ms"] + f["embed_score_ms"], g["decode_ms"] + g["embed_score_ms"]),
        row("cold_start_ms", "cold start in process: load model + first check", "ms",
            f["cold_start_ms"], g["cold_start_ms"]),
        row("fresh_check_s", "check as a fresh process (`edge-verify check` / Koch script)", "s",
            f["fresh_check_s"], g["fresh_check_s"], target=SPEED_TARGET),
        row("fresh_check_peak_mb", "peak memory of that process (max RSS)", "MB",
            f["fresh_check_peak_mb"], g["fresh_check_peak_mb"]),
    ]
    for key in sorted((k for k in f if k.startswith("identify_")), key=lambda k: int(k.split("_")[1][:-1])):
        users = key.split("_")[1]
        rows.append(row(key, f"identify among {users} users x 5 refs", "ms", f[key], g.get(key),
                        note="" if key in g else "Koch not run: gallery too large"))
    koch_mb = size(base["file_bytes"])
    rows += [
        row("file_int8_mb", "model file: ours int8 .tflite / Koch .keras (tower + head)", "MB",
            size(ours["file_bytes"]["int8"]), koch_mb, target=SIZE_TARGET),
        row("file_float32_mb", "model file: ours float32 .tflite / Koch .keras", "MB",
            size(ours["file_bytes"]["float32"]), koch_mb),
        row("file_keras_mb", "model file: ours Keras .keras / Koch .keras", "MB",
            size(ours["file_bytes"]["keras"]), koch_mb,
            note="" if ours["file_bytes"]["keras"] else "no Keras tower (--tower)"),
        row("parameters_m", "parameters", "M", None if ours["parameters"] is None else ours["parameters"] / 1e6,
            base["parameters"] / 1e6),
        row("reference_bytes", "stored bytes per reference (float32 embedding)", "B",
            4 * ours["embedding_size"], 4 * base["embedding_size"]),
    ]
    accuracy = report["accuracy"]
    for dataset, results in accuracy["ours"].items():
        koch_results = (accuracy["baseline"] or {}).get(dataset) or [None] * len(results)
        for mine, theirs in zip(results, koch_results):
            refs = mine["refs"]
            note = "" if theirs else "Koch not trained (--baseline)"
            rows.append(row(f"eer_{dataset}_r{refs}", f"EER skilled, {dataset} test, R={refs}", "%",
                            percent(mine, "eer"), percent(theirs, "eer"), "points", EER_TARGET, note))
            rows.append(row(f"operating_{dataset}_r{refs}", "  FRR / FAR skilled / FAR random at operating point",
                            "%", operating_point(mine), operating_point(theirs), None, note=note))
    return rows


def percent(result, key):
    return None if result is None or result[key] is None else 100 * result[key]


def operating_point(result) -> str | None:
    """"FRR / FAR skilled / FAR random" of one EVALUATION.md result, in percent."""
    if result is None:
        return None
    return " / ".join("-" if percent(result, key) is None else f"{percent(result, key):.1f}"
                      for key in ("frr", "far_skilled", "far_random"))


def cell(value, unit) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "B":
        return f"{value:,.0f}"
    digits = {"s": 3, "%": 2, "M": 3}.get(unit, 2 if abs(value) < 1000 else 0)
    return f"{value:,.{digits}f}"


def comparison(r) -> str:
    if r["value"] is None:
        return ""
    return f"{r['value']:,.1f}x" if r["compare"] == "ratio" else f"{r['value']:+.2f} pts"


def goal(r) -> str:
    if r["target"] is None:
        return ""
    return f">= {r['target']:g}x" if r["compare"] == "ratio" else f"<= {r['target']:+g} pts"


def table_lines(report: dict) -> list[list[str]]:
    """The table as rows of cells, header first."""
    header = ["figure", "unit", "ours (int8)", "Koch baseline", "ratio Koch/ours | EER ours-Koch", "target", "met?"]
    lines = [header]
    for r in report["rows"]:
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        lines.append([r["label"], r["unit"], cell(r["ours"], r["unit"]),
                      cell(r["baseline"], r["unit"]) if r["baseline"] is not None else (r["note"] or "-"),
                      comparison(r), goal(r), met])
    return lines


def header_lines(report: dict) -> list[str]:
    facts = {**report["machine"], "command": report.get("command", ""),
             "ours": f"{report['ours']['bundle']} ({report['ours']['runtime']})",
             "baseline": (report["baseline"]["run"] or "Koch network, random weights (no --baseline)")
             + ("" if report["baseline"]["trained"] else ": speed and size only"),
             "one core": report["conditions"]["one_core"], "figures": report["conditions"]["statistic"],
             "fresh process": report["conditions"]["fresh_process"]}
    return [f"{key}: {value}" for key, value in facts.items()]


def text_table(report: dict) -> str:
    lines = table_lines(report)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    body = ["  ".join(text.ljust(w) if i in (0, 1) else text.rjust(w)
                      for i, (text, w) in enumerate(zip(line, widths))) for line in lines]
    return "\n".join(header_lines(report) + [""] + body[:1] + ["-" * len(body[0])] + body[1:])


def markdown(report: dict) -> str:
    lines = table_lines(report)
    escape = lambda text: text.replace("|", "\\|")
    table = ["| " + " | ".join(escape(c) for c in line) + " |" for line in lines]
    table.insert(1, "|" + "|".join([" --- "] * 2 + [" ---: "] * 5) + "|")
    return "\n".join(["# edge-verify benchmark: ours against the Koch et al. baseline", ""]
                     + [f"- {line}" for line in header_lines(report)] + [""] + table) + "\n"


def write_report(report: dict, out_dir) -> tuple[Path, Path]:
    """bench.json and bench.md in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "bench.json", out_dir / "bench.md"
    paths[0].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(report))
    return paths


def command_line(**options) -> str:
    """The `edge-verify bench` command that reproduces a run."""
    words = ["edge-verify", "bench"]
    for name, value in options.items():
        if value is True:
            words.append(f"--{name}")
        elif value not in (None, False):
            words += [f"--{name}", str(value)]
    return shlex.join(words)


if __name__ == "__main__":
    koch_check_main()
