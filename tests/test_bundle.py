"""The bundle contract (edge/bundle.py): one Manifest and Calibration type, written by convert and
read by the device; scoring says which threshold it used."""
import json

import numpy as np
import pytest

from conftest import rewrite_manifest
from edge_verify.edge import scoring
from edge_verify.edge.bundle import UNCALIBRATED, Calibration, Manifest, load_bundle, write_manifest
from edge_verify.edge.errors import ModelError

# a calibration as the new calibrate writes it: keys scoring reads, and keys for people
NEW_CALIBRATION = {"threshold": 0.7, "alpha": 0.5, "reference_spread": 0.6, "threshold_far1_skilled": 0.55,
                   "threshold_one_reference": 0.8, "threshold_max": 0.9, "threshold_eer": 0.72, "random_far_cap": 0.9,
                   "refs": 5, "validation_eer": 0.21, "writers": "validation writers: 30"}


def test_old_and_new_manifests_both_load(bundle_copy):
    old = load_bundle(bundle_copy).calibration
    assert (old.threshold, old.alpha, old.reference_spread, old.threshold_one_reference) == (1.0, 0.0, 0.8, None)

    new = load_bundle(rewrite_manifest(bundle_copy, calibration=NEW_CALIBRATION)).calibration
    assert (new.threshold, new.alpha, new.reference_spread, new.threshold_one_reference) == (0.7, 0.5, 0.6, 0.8)
    assert new.threshold_max == 0.9 and old.threshold_max is None
    assert new.details["writers"] == "validation writers: 30" and new.details["refs"] == 5
    assert new.to_dict() == NEW_CALIBRATION and dict(new) == NEW_CALIBRATION


@pytest.mark.parametrize("calibration", [{}, {"threshold": "wide"}, {"threshold": 0.5, "alpha": [1]}, [0.5]])
def test_a_calibration_that_is_not_one_is_refused_as_an_incomplete_manifest(bundle_copy, calibration):
    with pytest.raises(ModelError, match="incomplete manifest"):
        load_bundle(rewrite_manifest(bundle_copy, calibration=calibration))


def test_what_write_manifest_writes_load_bundle_reads(bundle_copy, tmp_path):
    folder = tmp_path / "written"
    folder.mkdir()
    (folder / "model_int8.tflite").write_bytes((bundle_copy / "model_int8.tflite").read_bytes())
    manifest = Manifest.new(input_size=(96, 192), embedding_size=32, calibration=UNCALIBRATED,
                            versions={"converter": "test"})
    written = write_manifest(folder, manifest.replace(calibration=Calibration.from_dict(NEW_CALIBRATION)))
    bundle = load_bundle(folder)
    assert bundle.manifest == written and json.loads((folder / "manifest.json").read_text()) == written
    assert bundle.input_size == (96, 192) and bundle.embedding_size == 32
    assert bundle.calibration == Calibration.from_dict(NEW_CALIBRATION)
    assert bundle.read_file("model_int8.tflite") == (folder / "model_int8.tflite").read_bytes()
    assert set(bundle.manifest.files) == {"model_int8.tflite"}


def unit(rng, n, d=8):
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_verify_says_which_threshold_it_used():
    rng = np.random.default_rng(0)
    query, one, several = unit(rng, 1)[0], unit(rng, 1), unit(rng, 3)
    new, old = Calibration.from_dict(NEW_CALIBRATION), Calibration(threshold=0.7, reference_spread=0.6)
    cases = [(new, one, None, "one-reference", 0.8), (old, one, None, "calibrated", 0.7),
             (old, several, None, "calibrated", 0.7), (new, several, 1.5, "override", 1.5)]
    for calibration, references, threshold, source, used in cases:
        verdict = scoring.verify(query, references, calibration, threshold=threshold)
        assert (verdict.threshold_source, verdict.threshold) == (source, pytest.approx(used))
    adapted = scoring.verify(query, several, new)
    assert adapted.threshold_source == "adapted"
    assert adapted.threshold == pytest.approx(scoring.user_threshold(several, NEW_CALIBRATION))
