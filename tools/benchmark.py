"""Speed and memory of the device path on this machine, on one core (issue 5's figures):

    python -m edge_verify.tools.benchmark [--model BUNDLE_DIR] [--datasets DIR] [--quick] [--json OUT]

Each function times one stage and returns plain numbers (medians, warm-up excluded), so the
figures can be printed, compared between devices or stored. Targets are printed, never asserted.
"""
import argparse
import ctypes
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from edge_verify.edge import api, scoring
from edge_verify.edge.errors import EdgeVerifyError
from edge_verify.edge.image_io import load_image
from edge_verify.edge.inference import load_model
from edge_verify.edge.preprocess import INPUT_SIZE, PREPROCESS_VERSION, preprocess
from edge_verify.edge.store import Gallery, Reference, Store

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # beside the source checkout
SAMPLES = [
    "cedar/original_1_1.jpg",
    "cedar/forgeries_10_3.jpg",
    "cedar/original_33_7.jpg",
    "bhsig260-bengali/writer_001/genuine/genuine_01.jpg",
    "bhsig260-bengali/writer_050/forged/forged_05.jpg",
    "bhsig260-bengali/writer_099/genuine/genuine_12.jpg",
]
REFERENCES = [f"cedar/original_46_{sample}.jpg" for sample in (1, 2, 3, 4, 5)]  # one writer's enrolment
QUERY = "cedar/original_46_10.jpg"                                                # ... and a check

# figure: (label, unit, target, "max" (lower is better) or "min" (higher is better))
TARGETS = {
    "decode_ms": ("decode a 600x400 JPEG", "ms", None, "max"),
    "preprocess_ms": ("preprocess a 600x400 scan", "ms", None, "max"),
    "decode_and_preprocess_ms": ("decode + preprocess", "ms", None, "max"),
    "embed_ms": ("embed one preprocessed signature", "ms", None, "max"),
    "check_ms": ("check in process: decode+preprocess+embed+score", "ms", 6.0, "max"),
    "api_check_ms": ("api.check (+ store read, audit log write)", "ms", None, "max"),
    "cli_check_s": ("`edge-verify check`, fresh process, wall", "s", 0.5, "max"),
    "cli_check_peak_mb": ("`edge-verify check`, peak memory (max RSS)", "MB", 150.0, "max"),
    "identify_1k_ms": ("identify among 1k users x 5 refs", "ms", None, "max"),
    "identify_10k_ms": ("identify among 10k users x 5 refs", "ms", None, "max"),
    "identify_100k_ms": ("identify among 100k users x 5 refs", "ms", 20.0, "max"),
    "enroll_batch_users_per_s": ("enrol users into a store, one transaction", "users/s", None, "min"),
    "enroll_single_users_per_s": ("enrol users into a store, one transaction each", "users/s", None, "min"),
}


def set_blas_threads(count) -> dict:
    """Set the threads of every OpenBLAS loaded (numpy's, OpenCV's): their pools stay spread over
    every core even after sched_setaffinity. `count`: a number, or {library: number} as returned
    (the previous numbers) to restore them; no OpenBLAS found: {}."""
    try:
        libraries = sorted({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                            if "openblas" in line.lower()})
    except OSError:
        return {}
    previous = {}
    for library in libraries:
        blas = ctypes.CDLL(library)
        names = [(f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}")
                 for prefix in ("openblas", "scipy_openblas") for suffix in ("", "64_", "_64")]
        for get, set_ in names:
            if hasattr(blas, get) and hasattr(blas, set_):
                previous[library] = getattr(blas, get)()
                getattr(blas, set_)(count.get(library, previous[library]) if isinstance(count, dict) else count)
                break
    return previous


@contextmanager
def one_core():
    """Run the block on a single CPU core with OpenCV and BLAS single-threaded, as on a small device.

    Processes started inside the block inherit the single core."""
    threads = cv2.getNumThreads()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cv2.setNumThreads(1)
    blas = set_blas_threads(1)
    if cores:
        os.sched_setaffinity(0, {min(cores)})
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        set_blas_threads(blas)
        if cores:
            os.sched_setaffinity(0, cores)


def timings_ms(function, repeats: int, warmup: int = 3) -> list[float]:
    """Milliseconds of `repeats` calls of function(), after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench_preprocess(paths, repeats: int = 30, size=INPUT_SIZE) -> dict:
    """Median ms, on one core, to decode, to preprocess, and both, over image files (or their bytes).

    The files are read into memory first: decode time excludes the disk.
    """
    encoded = [Path(path).read_bytes() if isinstance(path, (str, os.PathLike)) else bytes(path) for path in paths]
    decode, prepare, both = [], [], []
    with one_core():
        for data in encoded:
            image = load_image(data)
            decode += timings_ms(lambda: load_image(data), repeats)
            prepare += timings_ms(lambda: preprocess(image, size), repeats)
            both += timings_ms(lambda: preprocess(load_image(data), size), repeats)
    return {
        "images": len(encoded),
        "repeats": repeats,
        "decode_ms": statistics.median(decode),
        "preprocess_ms": statistics.median(prepare),
        "decode_and_preprocess_ms": statistics.median(both),
    }


def bench_embed(embed, signatures, repeats: int = 30) -> float:
    """Median ms, on one core, of embed(signature) over preprocessed signatures (H, W)."""
    with one_core():
        return statistics.median(t for signature in signatures
                                 for t in timings_ms(lambda: embed(signature), repeats))


def machine_facts() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:  # Linux: x86 names the CPU in "model name", Raspberry Pi OS in "Model"
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        info = {key.strip().lower(): value.strip() for key, value in info.items()}
        cpu = info.get("model name") or info.get("model") or info.get("hardware") or cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "preprocess": PREPROCESS_VERSION,
    }


def resized_jpeg(path: Path, width: int = 600, height: int = 400) -> bytes:
    """The image at `path` resized to width x height, as JPEG bytes (quality 90, like the CEDAR files)."""
    image = cv2.resize(load_image(path), (width, height), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def bench_check(model, references, query: bytes, repeats: int = 50) -> dict:
    """Median ms, on one core, of a 1:1 check of encoded `query` against enrolled `references`.

    check_ms: decode + preprocess + int8 embed + scoring; api_check_ms: api.check, which also
    reads the user from a store and writes the audit log line.
    """
    calibration = model.bundle.calibration
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "store.sqlite3") as store:
        api.enroll(model, store, "writer", references)
        embeddings = store.user("writer").embeddings
        with one_core():
            pipeline = lambda: scoring.verify(model.embed(preprocess(load_image(query), model.input_size)),
                                              embeddings, calibration)
            return {"check_ms": statistics.median(timings_ms(pipeline, repeats)),
                    "api_check_ms": statistics.median(timings_ms(
                        lambda: api.check(model, store, "writer", query, max_failed=0), repeats))}


def cli_command(bundle=None) -> list[str]:
    """The `edge-verify` command of this Python (the installed script, else the module)."""
    script = Path(sys.executable).parent / "edge-verify"
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "from edge_verify.edge.cli import main; main()"]
    return command + (["--model", str(bundle)] if bundle else [])


# A child's peak RSS on Linux includes its parent's memory when it was forked (or vforked) from
# it: the high-water mark survives exec. So a small, fresh Python starts the command and reports
# the command's own figures: (wall seconds from spawn to exit, peak RSS, exit code).
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ,
                      file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_measured(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak memory MB, exit code) of one fresh process (os.wait4's rusage).

    Python may write bytecode caches: an installed package has them (pip compiles on install),
    so a shell with PYTHONDONTWRITEBYTECODE set would time the compiler, not the command. The
    callers' untimed first run writes them.
    """
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True,
                            env=environment)
    try:
        wall, maxrss, code = result.stdout.split()
    except ValueError:
        raise RuntimeError(f"cannot measure {shlex.join(command)}: {result.stderr.strip()}") from None
    if int(code) not in (0, 1):  # 0 match, 1 no match, anything else failed
        raise RuntimeError(f"{shlex.join(command)} failed ({code}): {result.stderr.strip()}")
    kilobytes = int(maxrss) / (1024 if sys.platform == "darwin" else 1)  # macOS counts bytes
    return float(wall), kilobytes / 1024, int(code)


def bench_cli_check(model, references, query: bytes, runs: int = 10) -> dict:
    """Median wall seconds and peak memory (MB) of `edge-verify check` as a fresh process, one core.

    The user is enrolled in process first; one untimed run warms the disk cache. The profile
    turns the lockout off: repeated NO MATCH results would otherwise lock the user.
    """
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "store.sqlite3"
        profile = Path(folder) / "bench.toml"
        profile.write_text("[security]\nmax_failed_checks = 0\n")
        with Store(db) as store:
            api.enroll(model, store, "writer", references)
        image = Path(folder) / "query.jpg"
        image.write_bytes(query)
        command = cli_command(model.bundle.path) + ["--db", str(db), "--threads", "1", "--profile",
                                                    str(profile), "check", "writer", str(image)]
        with one_core():
            measured = [run_measured(command) for _ in range(runs + 1)][1:]
    return {"cli_check_s": statistics.median(m[0] for m in measured),
            "cli_check_peak_mb": max(m[1] for m in measured)}


def random_gallery(users: int, size: int, references: int = 5, seed: int = 0) -> Gallery:
    """A gallery of `users` users with `references` random unit embeddings of `size` each."""
    matrix = np.random.default_rng(seed).standard_normal((users * references, size), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return Gallery([f"user{i}" for i in range(users)], matrix,
                   np.arange(0, users * references, references), np.full(users, references))


def bench_identify(size: int, calibration: dict, users=(1_000, 10_000, 100_000),
                   repeats: int = 20) -> dict:
    """Median ms, on one core, of api.search (what `edge-verify identify` runs) for each gallery size."""
    query = random_gallery(1, size, 1, seed=1).matrix[0]
    figures = {}
    with one_core():
        for count in users:
            gallery = random_gallery(count, size)
            times = timings_ms(lambda: api.search(gallery, query, 5, calibration), repeats)
            figures[f"identify_{count // 1000}k_ms"] = statistics.median(times)
    return figures


def bench_enroll(size: int, users: int = 10_000, references: int = 5) -> dict:
    """Users per second enrolled into a fresh store with synthetic embeddings, on one core:
    all in one transaction (as an import does), and one transaction per user (as `enroll` does)."""
    gallery = random_gallery(users, size, references)
    enrolments = {name: [Reference(gallery.matrix[start + i], f"{start + i:064x}", "benchmark")
                         for i in range(references)]
                  for name, start in zip(gallery.names, gallery.starts)}
    model = {"model_fingerprint": "benchmark", "preprocess_version": PREPROCESS_VERSION}
    figures = {}
    with tempfile.TemporaryDirectory() as folder, one_core():
        with Store(Path(folder) / "batch.sqlite3") as store:
            start = time.perf_counter()
            store.save_users(enrolments, **model)
            figures["enroll_batch_users_per_s"] = users / (time.perf_counter() - start)
        with Store(Path(folder) / "single.sqlite3") as store:
            start = time.perf_counter()
            for name, refs in enrolments.items():
                store.save_user(name, refs, **model)
            figures["enroll_single_users_per_s"] = users / (time.perf_counter() - start)
    return figures


def run_benchmark(bundle=None, datasets=DATASETS, quick: bool = False) -> dict:
    """Every figure of the device benchmark: {"machine", "model", "figures"}."""
    datasets = Path(datasets)
    paths = [datasets / sample for sample in SAMPLES + REFERENCES + [QUERY]]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise EdgeVerifyError(f"benchmark images not found: {', '.join(missing)} (pass --datasets)")
    model = load_model(bundle, threads=1)
    size = model.bundle.embedding_size
    references = [datasets / sample for sample in REFERENCES]
    query = resized_jpeg(datasets / QUERY)
    samples = [resized_jpeg(datasets / sample) for sample in SAMPLES]
    figures = bench_preprocess(samples, repeats=5 if quick else 30)
    del figures["images"], figures["repeats"]
    figures["embed_ms"] = bench_embed(model.embed, [preprocess(load_image(s), model.input_size) for s in samples],
                                      repeats=5 if quick else 30)
    figures.update(bench_check(model, references, query, repeats=20 if quick else 100))
    figures.update(bench_cli_check(model, references, query, runs=3 if quick else 10))
    figures.update(bench_identify(size, model.bundle.calibration, repeats=5 if quick else 30))
    figures.update(bench_enroll(size, users=1_000 if quick else 10_000))
    return {"machine": machine_facts(),
            "model": {"bundle": str(model.bundle.path), "runtime": model.runtime,
                      "input_size": list(model.input_size), "embedding_size": size},
            "figures": figures}


def verdict(name: str, value: float) -> str:
    """"ok" or "over" against the figure's target, "" without one."""
    _, _, target, kind = TARGETS[name]
    if target is None:
        return ""
    return "ok" if (value <= target if kind == "max" else value >= target) else "over"


def print_table(report: dict) -> None:
    for key, value in {**report["machine"], **report["model"], "command": report["command"]}.items():
        print(f"{key:>16}: {value}")
    print(f"{'one core':>16}: sched_setaffinity, 1 thread for OpenCV, OpenBLAS and the interpreter; "
          "medians, warm-up excluded\n")
    print(f"{'figure':<50} {'value':>10} {'unit':<8} {'target':>8}")
    for name, value in report["figures"].items():
        label, unit, target, kind = TARGETS[name]
        goal = "" if target is None else f"{'<=' if kind == 'max' else '>='} {target:g}"
        print(f"{label:<50} {value:>10.{3 if unit == 's' else 2}f} {unit:<8} {goal:>8} {verdict(name, value)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge_verify.tools.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--model", metavar="BUNDLE_DIR", help="model bundle (default: the packaged one)")
    parser.add_argument("--datasets", metavar="DIR", default=DATASETS, help=f"default: {DATASETS}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 1k users enrolled (< 30 s)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        report = run_benchmark(args.model, args.datasets, args.quick)
    except EdgeVerifyError as error:  # one line and exit 2, as edge-verify does
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    report["command"] = shlex.join(["python", "-m", "edge_verify.tools.benchmark",
                                    *(sys.argv[1:] if argv is None else argv)])
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
