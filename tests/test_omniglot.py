"""Omniglot arrays and Lake's 20-way one-shot runs."""
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_verify.edge.errors import DatasetError
from edge_verify.training.omniglot import (
    load_omniglot, load_one_shot_runs, pixel_similarity, score_one_shot,
)

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "omniglot"


@pytest.fixture(scope="module")
def runs():
    return load_one_shot_runs(OMNIGLOT / "all_runs.zip")


@pytest.mark.parametrize("part, characters", [("images_background", 964), ("images_evaluation", 659)])
def test_character_arrays(part, characters):
    images, labels = load_omniglot(OMNIGLOT / f"{part}.npz")
    assert images.shape == (characters, 20, 105, 105) and images.dtype == bool
    assert labels.shape == (characters, 20)
    assert 0.8 < images.mean() < 0.99  # True is the white background, ink is sparse


def test_400_trials_in_20_runs(runs):
    assert [r.name for r in runs] == [f"run{i:02d}" for i in range(1, 21)]
    assert sum(len(r.answers) for r in runs) == 400
    for run in runs:
        assert run.train.shape == run.test.shape == (20, 105, 105)
        assert run.train.dtype == np.uint8
        assert sorted(run.answers) == list(range(20))  # each class tested once
        assert (run.test == 255).mean() > 0.8  # dark ink on white


def test_scores(runs):
    answers = {id(r.test): r.answers for r in runs}
    oracle = lambda test, train: np.eye(20)[answers[id(test)]]  # noqa: E731 (knows the key)
    assert score_one_shot(runs, oracle) == 100.0
    # Every test image picks training image 0: right once per run.
    assert score_one_shot(runs, lambda test, train: np.zeros((20, 20))) == 5.0
    pixels = score_one_shot(runs, pixel_similarity)
    assert 10.0 < pixels < 40.0  # raw-pixel nearest neighbour: far above chance, far below models


def test_similarity_of_the_wrong_shape_is_refused(runs):
    with pytest.raises(ValueError, match="shape"):
        score_one_shot(runs, lambda test, train: np.zeros(20))


def test_bad_files_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="nothing.npz"):
        load_omniglot(tmp_path / "nothing.npz")
    np.savez(tmp_path / "wrong.npz", pictures=np.zeros(3))
    with pytest.raises(DatasetError, match="'images'"):
        load_omniglot(tmp_path / "wrong.npz")
    with zipfile.ZipFile(tmp_path / "runs.zip", "w") as archive:
        archive.writestr("run01/test/item01.png", b"")
    with pytest.raises(DatasetError, match="class_labels.txt"):
        load_one_shot_runs(tmp_path / "runs.zip")
