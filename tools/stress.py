"""Stress the store: several processes check while another enrols, all on one store file.

    python -m edge_verify.tools.stress [--seconds 60] [--checkers 4] [--enrollers 1] [--db PATH]

Every checking process checks random enrolled users against the demo signatures (edge/demo),
opening the store for each check as one `edge-verify check` call does. Every enrolling process
enrols new users one after another and re-enrols (--replace) every third one. At the end it prints
checks/s, check latency (p50, p99), enrolments done and lost, and errors by kind. Nothing may go
wrong: an error reaching the caller (e.g. "database is locked"), a check without an answer or a
lost enrolment makes the exit code 1.
"""
import argparse
import itertools
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from edge_verify import edge

DEMO = Path(edge.__file__).resolve().parent / "demo"  # the demo signatures shipped with the device package
REFERENCE_SETS = [[DEMO / f"alice_ref_{i}.jpg" for i in combination]
                  for combination in itertools.combinations(range(1, 6), 3)]
QUERIES = [DEMO / "alice_genuine.jpg", DEMO / "alice_forgery.jpg", DEMO / "bob_genuine.jpg"]
BASE_USERS = 8              # enrolled before the clock starts, so checkers have someone to check
START_TIMEOUT_S = 300       # for the worker processes to load the model


def run(seconds: float = 60.0, *, checkers: int = 4, enrollers: int = 1, model=None, db=None,
        key: bytes | None = None, max_failed: int = 0) -> dict:
    """Run the stress test and return its figures (see print_figures).

    `model`: a bundle folder (default: the packaged model); `db`: the store file (default: a
    new one in a temporary folder, removed afterwards); `key`: encrypt the references;
    `max_failed`: the lockout setting of the checks (0: never lock, so every check is scored).
    """
    from edge_verify.edge import api

    folder = None
    if db is None:
        folder = Path(tempfile.mkdtemp(prefix="edge-verify-stress-"))
        db = folder / "store.sqlite3"
    try:
        loaded = api.load_model(model)
        base = [f"stress-base-{i:02d}" for i in range(BASE_USERS)]
        with api.open_store(db, key=key) as store:
            for i, name in enumerate(base):
                api.enroll(loaded, store, name, REFERENCE_SETS[i % len(REFERENCE_SETS)], mode="replace")
        context = multiprocessing.get_context("spawn")  # no fork of a process holding a runtime
        start = context.Barrier(checkers + enrollers + 1, timeout=START_TIMEOUT_S)
        reports = context.Queue()
        settings = (model, str(db), key, seconds, start, reports)
        workers = ([context.Process(target=_checker, args=(i, base, max_failed, *settings))
                    for i in range(checkers)]
                   + [context.Process(target=_enroller, args=(i, *settings)) for i in range(enrollers)])
        for worker in workers:
            worker.start()
        start.wait()
        results = []
        for _ in workers:
            try:
                results.append(reports.get(timeout=seconds + START_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - a worker that never reports is counted below
                break
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
        figures = _figures(results, seconds, checkers, enrollers)
        figures["lost"] = _lost(db, key, base, results)
        figures.update(model=str(loaded.bundle.path), fingerprint=loaded.fingerprint, store=str(db),
                       encryption="aes-256-gcm" if key else "none")
        if len(results) < len(workers):
            figures["errors"]["no report from a worker (hung or crashed)"] = len(workers) - len(results)
        return figures
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _checker(index, users, max_failed, model, db, key, seconds, start, reports):
    """Check random users for `seconds`, one store connection per check; report what happened."""
    from edge_verify.edge import api
    from edge_verify.edge.errors import UserLockedError

    report = {"role": "check", "answers": Counter(), "errors": Counter(), "examples": {},
              "latencies": [], "attempts": 0}
    rng = random.Random(index)
    loaded = api.load_model(model)
    start.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        report["attempts"] += 1
        began = time.perf_counter()
        try:
            with api.open_store(db, key=key) as store:
                if report["attempts"] % 25 == 0:  # also check the users enrolled meanwhile
                    users = [u["name"] for u in store.users()]
                result = api.check(loaded, store, rng.choice(users), rng.choice(QUERIES),
                                   max_failed=max_failed)
            report["answers"]["match" if result.match else "no match"] += 1
        except UserLockedError:
            report["answers"]["locked"] += 1
        except Exception as error:  # noqa: BLE001 - every error is a finding
            _count_error(report, error)
        report["latencies"].append(time.perf_counter() - began)
    reports.put(report)


def _enroller(index, model, db, key, seconds, start, reports):
    """Enrol new users for `seconds` (every third one re-enrolled); report whom."""
    from edge_verify.edge import api

    report = {"role": "enrol", "new": [], "replaced": 0, "errors": Counter(), "examples": {},
              "attempts": 0}
    rng = random.Random(1000 + index)
    loaded = api.load_model(model)
    start.wait()
    deadline = time.monotonic() + seconds
    for number in itertools.count():
        if time.monotonic() >= deadline:
            break
        report["attempts"] += 1
        replace = number % 3 == 2 and report["new"]
        name = rng.choice(report["new"]) if replace else f"stress-{index}-{time.time_ns():x}"
        try:
            with api.open_store(db, key=key) as store:
                api.enroll(loaded, store, name, rng.choice(REFERENCE_SETS),
                           mode="replace" if replace else "new")
            if replace:
                report["replaced"] += 1
            else:
                report["new"].append(name)
        except Exception as error:  # noqa: BLE001 - every error is a finding
            _count_error(report, error)
    reports.put(report)


def _count_error(report: dict, error: Exception) -> None:
    text = str(error)
    kind = type(error).__name__
    if "locked" in text and "locked out" not in text:
        kind += " (database is locked)"
    report["errors"][kind] += 1
    report["examples"].setdefault(kind, text)


def _figures(results: list[dict], seconds: float, checkers: int, enrollers: int) -> dict:
    import numpy as np

    checks = [r for r in results if r["role"] == "check"]
    enrolments = [r for r in results if r["role"] == "enrol"]
    answers = sum((r["answers"] for r in checks), Counter())
    errors = sum((r["errors"] for r in results), Counter())
    latencies = np.array([t for r in checks for t in r["latencies"]] or [np.nan]) * 1000
    examples = {}
    for r in results:
        for kind, text in r["examples"].items():
            examples.setdefault(kind, text)
    return {
        "seconds": seconds, "checkers": checkers, "enrollers": enrollers,
        "checks": sum(r["attempts"] for r in checks), "answered": sum(answers.values()),
        "answers": dict(answers), "checks_per_s": sum(answers.values()) / seconds,
        "latency_ms": {"p50": float(np.percentile(latencies, 50)),
                       "p99": float(np.percentile(latencies, 99)), "max": float(latencies.max())},
        "enrolments": sum(len(r["new"]) + r["replaced"] for r in enrolments),
        "new_users": sum(len(r["new"]) for r in enrolments),
        "re_enrolments": sum(r["replaced"] for r in enrolments),
        "errors": dict(errors), "error_examples": examples,
    }


def _lost(db, key, base: list[str], results: list[dict]) -> list[str]:
    """The users that should be enrolled (with their 3 references) and are not."""
    from edge_verify.edge import api

    expected = base + [name for r in results if r["role"] == "enrol" for name in r["new"]]
    with api.open_store(db, key=key) as store:
        present = {u["name"]: u["references"] for u in store.users()}
    return [name for name in expected if present.get(name) != 3]


def print_figures(figures: dict, file=sys.stdout) -> None:
    answers = figures["answers"]
    latency = figures["latency_ms"]
    lines = [
        f"stress: {figures['seconds']:g} s, {figures['checkers']} checking + {figures['enrollers']} "
        f"enrolling processes on one store, encryption {figures['encryption']}",
        f"model: {figures['model']} ({figures['fingerprint'][:12]})",
        f"checks: {figures['answered']} answered of {figures['checks']} (match {answers.get('match', 0)}, "
        f"no match {answers.get('no match', 0)}, locked {answers.get('locked', 0)}), "
        f"{figures['checks_per_s']:.1f} checks/s",
        f"check latency: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms, "
        f"max {latency['max']:.1f} ms",
        f"enrolments: {figures['enrolments']} done ({figures['new_users']} new users, "
        f"{figures['re_enrolments']} re-enrolled), {figures['enrolments'] / figures['seconds']:.1f}/s; "
        f"lost {len(figures['lost'])}" + (f": {', '.join(figures['lost'][:5])}" if figures["lost"] else ""),
        "errors: " + (", ".join(f"{kind} x{count}" for kind, count in figures["errors"].items()) or "none"),
    ]
    lines += [f"  e.g. {kind}: {text}" for kind, text in figures["error_examples"].items()]
    print("\n".join(lines), file=file)


def passed(figures: dict) -> bool:
    """Whether nothing went wrong: no error, every check answered, no enrolment lost."""
    return not figures["errors"] and figures["answered"] == figures["checks"] and not figures["lost"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_verify.tools.stress",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run [60]")
    parser.add_argument("--checkers", type=int, default=4, help="checking processes [4]")
    parser.add_argument("--enrollers", type=int, default=1, help="enrolling processes [1]")
    parser.add_argument("--model", help="model bundle folder [the packaged model]")
    parser.add_argument("--db", help="store file [a new one in a temporary folder]")
    parser.add_argument("--encrypt", action="store_true",
                        help="encrypt the references with a random key for this run")
    parser.add_argument("--max-failed", type=int, default=0,
                        help="failed checks in a row before a lockout [0: never]")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(args.seconds, checkers=args.checkers, enrollers=args.enrollers, model=args.model,
                  db=args.db, key=os.urandom(32) if args.encrypt else None, max_failed=args.max_failed)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_figures(figures)
    return 0 if passed(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
