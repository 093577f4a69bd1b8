"""Speed on this machine, on one core: `python -m edge_verify.edge.benchmark [DATASETS_DIR]`.

Each function times one stage and returns plain numbers (milliseconds, medians, warm-up excluded),
so the figures can be printed, compared between devices or stored.
"""
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from edge_verify.edge.image_io import load_image
from edge_verify.edge.preprocess import INPUT_SIZE, PREPROCESS_VERSION, preprocess

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # beside the source checkout
SAMPLES = [
    "cedar/original_1_1.jpg",
    "cedar/forgeries_10_3.jpg",
    "cedar/original_33_7.jpg",
    "bhsig260-bengali/writer_001/genuine/genuine_01.jpg",
    "bhsig260-bengali/writer_050/forged/forged_05.jpg",
    "bhsig260-bengali/writer_099/genuine/genuine_12.jpg",
]


@contextmanager
def one_core():
    """Run the block on a single CPU core with OpenCV single-threaded, as on a small device."""
    threads = cv2.getNumThreads()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cv2.setNumThreads(1)
    if cores:
        os.sched_setaffinity(0, {min(cores)})
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
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


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    datasets = Path(argv[0]) if argv else DATASETS
    paths = [datasets / sample for sample in SAMPLES]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        sys.exit(f"benchmark images not found: {', '.join(missing)} (pass the datasets folder)")
    for key, value in machine_facts().items():
        print(f"{key:>24}: {value}")
    print(f"{'one core':>24}: os.sched_setaffinity + cv2.setNumThreads(1); medians, warm-up excluded")
    for label, sources in [("600x400 JPEG", [resized_jpeg(path) for path in paths]), ("native size", paths)]:
        figures = bench_preprocess(sources)
        print(f"\n{label} ({figures['images']} real scans x {figures['repeats']} repeats, output {INPUT_SIZE}):")
        for key in ("decode_ms", "preprocess_ms", "decode_and_preprocess_ms"):
            print(f"{key:>24}: {figures[key]:.2f}")


if __name__ == "__main__":
    main()
