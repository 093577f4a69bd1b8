"""Check latency through `edge-verify serve` beside the in-process API and a fresh `edge-verify
check` process (issue 17's figures), all on one core:

    python -m edge_verify.tools.serve_bench [--model BUNDLE_DIR] [--datasets DIR] [--quick]

The service runs as a real subprocess (`--threads 1`, lockout off) pinned with its clients to
one core. Each client is a thread keeping one HTTP/1.1 connection open, as a kiosk app would,
and posts the same multipart check (a 600x400 CEDAR JPEG against 5 references); latency is
per request, wall time, warm-up excluded; 4 clients send 4 checks at a time. api.check is timed
in the same process as the clients, in rounds alternating with theirs; the fresh-process CLI as
tools/benchmark.py times it. Targets are printed, never asserted.
"""
import argparse
import http.client
import math
import os
import re
import secrets
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from edge_verify.edge import api
from edge_verify.edge.inference import load_model
from edge_verify.tools.benchmark import (DATASETS, QUERY, REFERENCES, bench_cli_check, cli_command,
                                         one_core, resized_jpeg, timings_ms)

TARGET_MEDIAN_MS = 5.0      # a check over loopback HTTP
TARGET_SPEEDUP = 20.0       # against `edge-verify check` as a fresh process
CLIENTS = (1, 4)


@contextmanager
def running_service(bundle, db: Path, profile: Path, token: str, workers: int = 1):
    """The port of `edge-verify serve` running on `db` until the block ends (then SIGTERM)."""
    command = cli_command(bundle) + ["--db", str(db), "--threads", "1", "--profile", str(profile),
                                     "serve", "--port", "0", "--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "EDGE_VERIFY_TOKEN": token})
    try:
        line = process.stdout.readline()
        port = re.search(r"http://\S+:(\d+) ", line)
        if port is None:
            process.kill()
            raise RuntimeError(f"edge-verify serve did not start: {line}{process.stderr.read()}")
        yield int(port.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def check_request(query: bytes) -> tuple[bytes, str]:
    """(multipart body, Content-Type) of a check of `query`."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="query.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + query + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def client_ms(port: int, headers: dict, body: bytes, repeats: int, warmup: int, start, out: list) -> None:
    """One client on one kept-alive connection: the ms of `repeats` checks after `warmup` untimed ones."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start.wait()
    for index in range(warmup + repeats):
        began = time.perf_counter()
        connection.request("POST", "/v1/users/writer/check", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"check through the service failed ({response.status}): {answer[:200]!r}")
        if index >= warmup:
            out.append((time.perf_counter() - began) * 1000)
    connection.close()


def service_ms(port: int, token: str, query: bytes, clients: int, repeats: int, warmup: int = 5) -> list[float]:
    """Latencies (ms) of `clients` clients checking at once, `repeats` checks each."""
    body, content_type = check_request(query)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    start, times = threading.Barrier(clients), []
    threads = [threading.Thread(target=client_ms, args=(port, headers, body, repeats, warmup, start, times))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(times) != clients * repeats:
        raise RuntimeError("a client failed: see the error above")
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def run(bundle=None, datasets=DATASETS, quick: bool = False, rounds: int = 4) -> dict:
    """The figures: in-process api.check, fresh-process CLI, and the service with 1 and 4 clients.

    The in-process and service figures are taken in alternating rounds, so that a machine busy
    with something else slows them alike.
    """
    model = load_model(bundle, threads=1)
    references = [Path(datasets) / name for name in REFERENCES]
    query = resized_jpeg(Path(datasets) / QUERY)
    repeats = 8 if quick else 100  # per round and client count
    report = {"cli_check_ms": bench_cli_check(model, references, query, 2 if quick else 10)["cli_check_s"] * 1000}
    token = secrets.token_urlsafe(24)
    api_times, service_times = [], {clients: [] for clients in CLIENTS}
    with tempfile.TemporaryDirectory() as folder:
        db, profile = Path(folder) / "store.sqlite3", Path(folder) / "bench.toml"
        profile.write_text("[security]\nmax_failed_checks = 0\n")
        with api.open_store(db) as store:
            api.enroll(model, store, "writer", references)
            with one_core(), running_service(model.bundle.path, db, profile, token) as port:
                for _ in range(1 if quick else rounds):
                    api_times += timings_ms(lambda: api.check(model, store, "writer", query, max_failed=0), repeats)
                    for clients in CLIENTS:
                        service_times[clients] += service_ms(port, token, query, clients, repeats)
    report["api_check_ms"] = statistics.median(api_times)
    report["http_parser"] = http_parser()
    for clients, times in service_times.items():
        report[f"service_{clients}_median_ms"] = statistics.median(times)
        report[f"service_{clients}_p99_ms"] = percentile(times, 0.99)
    return report


def http_parser() -> str:
    """The HTTP parser the service runs here (edge/serve.py, http_protocol): "httptools" or "h11"."""
    from edge_verify.edge.serve import http_protocol
    parser = http_protocol()
    return parser if isinstance(parser, str) else "httptools"


def print_table(report: dict) -> None:
    api_ms, cli_ms = report["api_check_ms"], report["cli_check_ms"]
    rows = [("in process: api.check", api_ms, None)]
    for clients in CLIENTS:
        rows.append((f"service, {clients} client{'s' if clients > 1 else ''}: median",
                     report[f"service_{clients}_median_ms"], None))
        rows.append((f"service, {clients} client{'s' if clients > 1 else ''}: p99",
                     report[f"service_{clients}_p99_ms"], None))
    rows.append(("fresh process: edge-verify check", cli_ms, None))
    print(f"{'check latency, one core':<38} {'ms':>8} {'x in-process':>13} {'CLI / this':>11}"
          f"   (service's HTTP parser: {report.get('http_parser', '?')})")
    for label, value, _ in rows:
        print(f"{label:<38} {value:>8.2f} {value / api_ms:>13.2f} {cli_ms / value:>11.1f}")
    median = report["service_1_median_ms"]
    print(f"target: service median <= {TARGET_MEDIAN_MS:g} ms ({'met' if median <= TARGET_MEDIAN_MS else 'NOT met'}: "
          f"{median:.2f} ms); >= {TARGET_SPEEDUP:g}x faster than the fresh-process CLI "
          f"({'met' if cli_ms / median >= TARGET_SPEEDUP else 'NOT met'}: {cli_ms / median:.1f}x)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model bundle folder [default: the bundled model]")
    parser.add_argument("--datasets", default=str(DATASETS), help="folder holding cedar/ [%(default)s]")
    parser.add_argument("--quick", action="store_true", help="a few repeats only (a smoke run)")
    options = parser.parse_args(argv)
    print_table(run(options.model, options.datasets, options.quick))


if __name__ == "__main__":
    main()
