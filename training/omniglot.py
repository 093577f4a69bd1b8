"""Omniglot: the character arrays, Lake's 20-way one-shot benchmark (all_runs.zip), and the
training set made of images_background for `edge-verify train`.

Images are returned as stored: `load_omniglot` gives bool arrays (True = white background),
`load_one_shot_runs` uint8 arrays with dark ink (0) on white (255). `omniglot_training_set`
gives them preprocessed as every model input is (edge_verify.edge.preprocess).

Run on its own:  python -m edge_verify.training.omniglot OMNIGLOT_FOLDER
(prints the shapes and the raw-pixel nearest-neighbour score of the one-shot runs).
"""
from __future__ import annotations

import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_verify.training.arrays import preprocessed_pixels
from edge_verify.training.datasets import DatasetError, Signature

IMAGE_SIZE = 105
WAYS = 20  # training images (classes) per run; also test images per run
# The last characters of images_background (at least WAYS) validate, for model selection, and
# never train. The arrays keep each alphabet's characters together, in order, so these are the
# characters of the last alphabets.
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Run:
    """One 20-way run: test image i belongs to the class of train[answers[i]]."""

    name: str
    train: np.ndarray  # (20, 105, 105) uint8, ink 0 on white 255, in class01..class20 order
    test: np.ndarray  # (20, 105, 105) uint8, in item01..item20 order
    answers: np.ndarray  # (20,) int, index into train for each test image


def load_omniglot(npz_path) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): images bool (characters, drawers, 105, 105), True = background."""
    path = Path(npz_path)
    try:
        with np.load(path) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise DatasetError(f"cannot read Omniglot arrays from {path}: expected an .npz with "
                           f"'images' and 'labels' ({error})") from None
    if images.ndim != 4 or images.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE) or labels.shape != images.shape[:2]:
        raise DatasetError(f"{path}: expected images (characters, drawers, 105, 105) and labels "
                           f"(characters, drawers), got {images.shape} and {labels.shape}")
    return images, labels


def _decode(archive: zipfile.ZipFile, name: str, zip_path: Path) -> np.ndarray:
    try:
        data = archive.read(name)
    except KeyError:
        raise DatasetError(f"{zip_path} lacks {name}, named in its class_labels.txt") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None or image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f"{zip_path}: {name} is not a {IMAGE_SIZE}x{IMAGE_SIZE} image")
    return image


def load_one_shot_runs(zip_path) -> list[Run]:
    """Lake's one-shot runs from all_runs.zip (run01 .. run20, 20 trials each)."""
    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"cannot open the one-shot runs {zip_path}: {error}") from None
    with archive:
        label_files = sorted(n for n in archive.namelist() if re.fullmatch(r"run\d+/class_labels\.txt", n))
        if not label_files:
            raise DatasetError(f"{zip_path} has no runNN/class_labels.txt: expected Lake's all_runs.zip")
        runs = []
        for label_file in label_files:
            name = label_file.split("/")[0]
            train_names = [f"{name}/training/class{i:02d}.png" for i in range(1, WAYS + 1)]
            pairs = [line.split() for line in archive.read(label_file).decode().splitlines() if line.strip()]
            if len(pairs) != WAYS or any(len(p) != 2 or p[1] not in train_names for p in pairs):
                raise DatasetError(f"{zip_path}: {label_file} should pair {WAYS} test items with "
                                   f"training items {name}/training/classNN.png, one pair a line")
            runs.append(Run(
                name=name,
                train=np.stack([_decode(archive, n, zip_path) for n in train_names]),
                test=np.stack([_decode(archive, test, zip_path) for test, _ in pairs]),
                answers=np.array([train_names.index(train) for _, train in pairs]),
            ))
    return runs


def score_one_shot(runs, similarity_fn) -> float:
    """Percent of test images whose most similar training image is the right one.

    `similarity_fn(test_images, train_images)` returns a (20, 20) matrix, higher = more alike,
    row i for test image i.
    """
    correct = total = 0
    for run in runs:
        similarity = np.asarray(similarity_fn(run.test, run.train))
        if similarity.shape != (len(run.test), len(run.train)):
            raise ValueError(f"similarity_fn returned shape {similarity.shape} for {run.name}, "
                             f"expected {(len(run.test), len(run.train))}")
        correct += int(np.sum(similarity.argmax(axis=1) == run.answers))
        total += len(run.answers)
    if total == 0:
        raise ValueError("no one-shot trials to score")
    return 100.0 * correct / total


def sample_runs(items, runs=200, seed=0) -> list[Run]:
    """20-way runs drawn from `items` (characters, drawers, ...), images or embeddings.

    Each run takes 20 consecutive characters, so mostly of one alphabet as in Lake's runs, and
    of each a training and a test item drawn by two different people.
    """
    rng = np.random.default_rng(seed)
    characters, drawers = items.shape[:2]
    if characters < WAYS:
        raise ValueError(f"{WAYS}-way runs need {WAYS} characters or more, not {characters}")
    sampled = []
    for i in range(runs):
        chosen = rng.integers(characters - WAYS + 1) + np.arange(WAYS)
        pairs = np.array([rng.choice(drawers, 2, replace=False) for _ in chosen])
        sampled.append(Run(name=f"sampled{i + 1:03d}", train=items[chosen, pairs[:, 0]],
                           test=items[chosen, pairs[:, 1]], answers=np.arange(WAYS)))
    return sampled


def is_omniglot_folder(folder) -> bool:
    return (Path(folder) / "images_background.npz").is_file()


def omniglot_training_set(npz_path, input_size):
    """images_background as training data: each character a "writer", its drawings genuine.

    Returns (uint8 (N, H, W) training images, their N Signature records, uint8 (C, 20, H, W)
    validation characters), preprocessed as evaluate-omniglot preprocesses the runs. The last
    VALIDATION_FRACTION of the characters (at least WAYS) are the validation characters.
    """
    images, _ = load_omniglot(npz_path)
    characters, drawers = images.shape[:2]
    training = characters - max(WAYS, round(VALIDATION_FRACTION * characters))
    if training < 2:
        raise DatasetError(f"{npz_path} has {characters} characters: at least {WAYS + 2} are needed, "
                           f"{WAYS} of them to validate")
    ink_on_white = np.where(images, np.uint8(255), np.uint8(0)).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    try:
        preprocessed = preprocessed_pixels(ink_on_white, input_size).reshape(characters, drawers, *input_size)
    except DatasetError as error:  # image i is character i // drawers, drawing i % drawers
        raise DatasetError(f"{npz_path}: {error}") from None
    signatures = [Signature("omniglot", str(c), True, d + 1, Path(npz_path))
                  for c in range(training) for d in range(drawers)]
    return preprocessed[:training].reshape(-1, *input_size), signatures, preprocessed[training:]


def euclidean_similarity(test, train) -> np.ndarray:
    """Negative Euclidean distance between embeddings (N, D) and (M, D)."""
    return -np.linalg.norm(test[:, None, :] - train[None, :, :], axis=-1)


def pixel_similarity(test_images, train_images) -> np.ndarray:
    """Negative Euclidean distance between raw pixels: the nearest-neighbour baseline."""
    a = np.asarray(test_images, np.float32).reshape(len(test_images), -1) / 255.0
    b = np.asarray(train_images, np.float32).reshape(len(train_images), -1) / 255.0
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return -np.sqrt(np.maximum(squared, 0.0))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edge_verify.training.omniglot OMNIGLOT_FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    try:
        for part in ("images_background", "images_evaluation"):
            images, _ = load_omniglot(folder / f"{part}.npz")
            print(f"{part}: {images.shape[0]} characters x {images.shape[1]} drawers")
        runs = load_one_shot_runs(folder / "all_runs.zip")
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    trials = sum(len(r.answers) for r in runs)
    print(f"one-shot: {len(runs)} runs, {trials} trials; raw-pixel nearest neighbour "
          f"{score_one_shot(runs, pixel_similarity):.1f} % correct (chance {100 / WAYS:.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
