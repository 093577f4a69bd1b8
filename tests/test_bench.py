"""`edge-verify bench` against the Koch et al. baseline: one table, written as JSON and Markdown,
every ratio computed from the figures measured in the same run (speed is never asserted)."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_verify.tools.benchmark import cli_command
from edge_verify.training.datasets import Signature
from edge_verify.training.evaluate import koch_evaluate_embeddings, koch_protocol_scores

MEASURED = ["preprocess_ms", "decode_ms", "embed_int8_ms", "embed_float32_ms", "embed_keras_ms", "embed_score_ms",
            "check_ms", "check_bound_ms", "cold_start_ms",
            "fresh_check_s", "fresh_check_peak_mb", "identify_1k_ms", "file_int8_mb", "file_float32_mb",
            "file_keras_mb", "parameters_m", "reference_bytes"]


@pytest.fixture(scope="module")
def quick_bench(tiny_bundle, tmp_path_factory):
    """(report, Markdown, printed table, tower file) of `edge-verify bench --quick` on the tiny
    bundle, with a small Keras tower and no Koch run (the Koch network gets random weights)."""
    keras = pytest.importorskip("keras")  # the bench runs Keras models: a workstation command

    folder = tmp_path_factory.mktemp("bench")
    image = keras.Input((96, 192, 1))
    x = keras.layers.Conv2D(4, 5, strides=4)(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    tower = keras.Model(image, keras.layers.UnitNormalization()(keras.layers.Dense(32)(x)))
    tower.save(folder / "tower.keras")
    out = folder / "out"
    command = cli_command() + ["bench", "--model", str(tiny_bundle), "--tower", str(folder / "tower.keras"),
                               "--out", str(out), "--quick"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text(), result.stdout, folder


def test_every_figure_is_measured_for_both_models_and_compared_as_a_ratio(quick_bench, tiny_bundle):
    report, *_ = quick_bench
    rows = {r["figure"]: r for r in report["rows"]}
    assert set(MEASURED) <= set(rows)
    for name in MEASURED:
        r = rows[name]
        assert r["ours"] > 0 and r["baseline"] > 0, r
        assert r["value"] == pytest.approx(r["baseline"] / r["ours"]), r
    for side in ("ours", "baseline"):  # what a check would cost if preprocessing were free
        assert rows["check_bound_ms"][side] == pytest.approx(rows["decode_ms"][side] + rows["embed_score_ms"][side])
    for name, target in (("check_ms", 20), ("file_int8_mb", 100)):
        assert rows[name]["target"] == target
        assert rows[name]["met"] == (rows[name]["value"] >= target)
    assert rows["file_int8_mb"]["ours"] == (tiny_bundle / "model_int8.tflite").stat().st_size / 1e6
    # the Koch network as published for signatures: ~35 M float32 parameters, 4096-d embeddings
    assert 30 < rows["parameters_m"]["baseline"] < 40
    assert rows["file_int8_mb"]["baseline"] > 4 * 30
    assert (rows["reference_bytes"]["ours"], rows["reference_bytes"]["baseline"]) == (4 * 32, 4 * 4096)


def test_without_a_koch_run_its_accuracy_says_not_trained(quick_bench):
    report, *_ = quick_bench
    assert report["baseline"]["trained"] is False and report["accuracy"]["baseline"] is None
    eers = [r for r in report["rows"] if r["figure"].startswith("eer_cedar_r")]
    assert [r["figure"] for r in eers] == ["eer_cedar_r1", "eer_cedar_r5", "eer_cedar_r10"]
    for r in eers:
        assert 0 <= r["ours"] <= 100
        assert r["baseline"] is None and r["met"] is None and "not trained" in r["note"]


def test_the_table_is_printed_and_written_as_markdown_with_the_command_and_machine(quick_bench):
    report, markdown, printed, folder = quick_bench
    assert "--quick" in report["command"] and str(folder / "tower.keras") in report["command"]
    for text in (markdown, printed):
        assert report["command"] in text and report["machine"]["cpu"] in text
        for r in report["rows"]:
            assert r["label"].strip() in text
    assert markdown.count("\n|") == len(report["rows"]) + 2  # header, rule, one line per figure


def signatures_of(writers, genuine=3, forged=2):
    return [Signature("d", w, kind == "g", n, Path(f"{w}{kind}{n}")) for w in writers
            for kind, count in (("g", genuine), ("f", forged)) for n in range(1, count + 1)]


def test_koch_score_is_one_minus_the_mean_match_probability_over_the_references():
    signatures = signatures_of(["1", "2"])
    embeddings = np.arange(len(signatures), dtype=np.float32)[:, None] / 100  # 1-d "embeddings"
    head = lambda differences: 1.0 - differences[:, 0]
    scores = koch_protocol_scores(signatures, embeddings, 2, head)
    references = embeddings[[0, 1]]  # writer 1's genuine 1 and 2
    query = embeddings[2]            # writer 1's genuine 3
    assert scores[("d", "1")]["genuine"] == pytest.approx([np.mean(np.abs(query - references))])
    assert len(scores[("d", "1")]["skilled"]) == 2 and len(scores[("d", "1")]["random"]) == 1


@pytest.mark.parametrize("probability, accepted", [(0.95, True), (0.9499, False), (0.99, True)])
def test_koch_matches_when_the_probability_is_at_least_095(probability, accepted):
    signatures = signatures_of(["1", "2", "3"])
    embeddings = np.random.default_rng(0).random((len(signatures), 8), dtype=np.float32)
    head = lambda differences: np.full(len(differences), probability)
    [result] = koch_evaluate_embeddings(signatures, embeddings, head, refs_list=(1,))
    assert result["frr"] == (0.0 if accepted else 1.0)
    assert result["far_skilled"] == result["far_random"] == (1.0 if accepted else 0.0)
