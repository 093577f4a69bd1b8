"""Omniglot arrays and Lake's 20-way one-shot runs."""
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_verify.edge.preprocess import preprocess
from edge_verify.training.datasets import DatasetError
from edge_verify.training.omniglot import (
    load_omniglot, load_one_shot_runs, omniglot_training_set, pixel_similarity, sample_runs,
    score_one_shot,
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


def small_background(folder, characters):
    """The first `characters` characters of images_background, as an .npz of their own."""
    images, labels = load_omniglot(OMNIGLOT / "images_background.npz")
    path = folder / "images_background.npz"
    np.savez(path, images=images[:characters], labels=labels[:characters])
    return path, images[:characters]


def test_training_set_holds_out_the_last_characters_preprocessed_as_the_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_VERIFY_CACHE", str(tmp_path / "cache"))
    npz, raw = small_background(tmp_path, 26)
    images, signatures, validation = omniglot_training_set(npz, (32, 32))
    assert images.shape == (6 * 20, 32, 32) and images.dtype == np.uint8
    assert validation.shape == (20, 20, 32, 32)  # never fewer than 20: one 20-way run
    assert [s.writer for s in signatures] == [str(c) for c in range(6) for _ in range(20)]
    assert all(s.genuine for s in signatures)
    # The pixels are what evaluate-omniglot feeds the model for a run's PNG (ink 0 on white 255).
    as_png = np.where(raw[4, 3], 255, 0).astype(np.uint8)
    assert np.array_equal(images[4 * 20 + 3], np.round(preprocess(as_png, (32, 32)) * 255).astype(np.uint8))
    as_png = np.where(raw[25, 19], 255, 0).astype(np.uint8)
    assert np.array_equal(validation[19, 19], np.round(preprocess(as_png, (32, 32)) * 255).astype(np.uint8))
    again, _, _ = omniglot_training_set(npz, (32, 32))  # from the cache
    assert np.array_equal(again, images)


def test_too_few_characters_to_validate(tmp_path):
    npz, _ = small_background(tmp_path, 21)
    with pytest.raises(DatasetError, match="at least 22"):
        omniglot_training_set(npz, (32, 32))


def test_sampled_runs_pair_two_drawers_of_20_consecutive_characters():
    characters, drawers = 30, 20
    items = 100 * np.arange(characters)[:, None] + np.arange(drawers)[None, :]  # 100 * character + drawer
    runs = sample_runs(items, runs=50, seed=1)
    assert len(runs) == 50
    for run in runs:
        train_characters, test_characters = run.train // 100, run.test // 100
        assert np.array_equal(train_characters, test_characters[run.answers])
        assert np.array_equal(np.diff(train_characters), np.ones(19))
        assert np.all(run.train % 100 != run.test[run.answers] % 100)  # two different people
    same_character = lambda test, train: (test[:, None] // 100 == train[None, :] // 100).astype(float)  # noqa: E731
    assert score_one_shot(runs, same_character) == 100.0
    assert [r.train.tolist() for r in sample_runs(items, runs=5, seed=1)] == [r.train.tolist() for r in runs[:5]]
    with pytest.raises(ValueError, match="20 characters"):
        sample_runs(items[:19])
