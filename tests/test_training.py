"""Training, evaluation protocol and the workstation commands, on small real data."""
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from edge_verify.training.datasets import Signature
from edge_verify.training.evaluate import (calibrate, equal_error_rate, evaluate_embeddings,
                                           roc_auc, threshold_at_far)



@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return dict(os.environ, EDGE_VERIFY_CACHE=str(tmp_path_factory.mktemp("cache")),
                TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "edge_verify.edge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def fake_signatures(writers=4, genuine=8, forged=3):
    out = []
    for w in range(writers):
        out += [Signature("fake", str(w), True, s, Path(f"{w}_{s}")) for s in range(1, genuine + 1)]
        out += [Signature("fake", str(w), False, s, Path(f"f{w}_{s}")) for s in range(1, forged + 1)]
    return out


def test_equal_error_rate_of_separated_and_overlapping_scores():
    assert equal_error_rate(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6, 0.7]))[0] == 0.0
    eer, _ = equal_error_rate(np.array([0.1, 0.6]), np.array([0.5, 0.9]))
    assert eer == pytest.approx(0.5)
    assert roc_auc(np.array([0.1, 0.2]), np.array([0.5, 0.6])) == 1.0
    assert roc_auc(np.array([0.5, 0.6]), np.array([0.1, 0.2])) == 0.0


def test_threshold_at_far_accepts_at_most_that_share_of_impostors():
    impostor = np.linspace(0.0, 1.0, 1000)
    threshold = threshold_at_far(impostor, 0.01)
    assert np.mean(impostor <= threshold) <= 0.01


def test_protocol_gives_zero_error_when_writers_are_separated_and_forgeries_far():
    signatures = fake_signatures()
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4]
    embeddings = np.array([centres[int(s.writer)] + (0 if s.genuine else 1.5 * centres[(int(s.writer) + 1) % 4])
                           + 0.01 * rng.normal(size=8) for s in signatures])
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    [r1, r5] = evaluate_embeddings(signatures, embeddings, refs_list=(1, 5))
    assert r1["eer"] == 0.0 and r5["eer"] == 0.0 and r5["auc"] == 1.0
    assert r5["genuine_queries"] == 4 * 3 and r5["skilled_queries"] == 4 * 3 and r5["random_queries"] == 4 * 3


def separable_embeddings(signatures, noise, seed):
    """Unit embeddings: writer w's genuine signatures near axis w, its forgeries near the opposite."""
    rng = np.random.default_rng(seed)
    embeddings = np.array([np.eye(8)[int(s.writer)] * (1 if s.genuine else -1) + noise * rng.normal(size=8)
                           for s in signatures])
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def test_calibration_puts_the_threshold_between_genuine_and_forged():
    signatures = fake_signatures()
    embeddings = separable_embeddings(signatures, noise=0.05, seed=1)
    calibration = calibrate(signatures, embeddings, refs=5)
    assert calibration["validation_eer"] == 0.0
    assert 0.0 < calibration["threshold"] < 2.0
    assert calibration["threshold_far1_skilled"] <= 2.0


def test_calibration_caps_the_adapted_threshold_where_other_writers_begin():
    from edge_verify.edge.scoring import user_threshold
    from edge_verify.training.evaluate import pooled, protocol_scores

    signatures = fake_signatures()
    embeddings = separable_embeddings(signatures, noise=0.3, seed=2)
    calibration = calibrate(signatures, embeddings, refs=5, random_far=0.02)
    strangers = pooled(protocol_scores(signatures, embeddings, 5), "random")  # plain distances
    assert calibration["threshold"] <= calibration["threshold_max"]
    assert np.mean(strangers <= calibration["threshold_max"]) <= 0.02
    loose = np.eye(8)[:5]  # five different writers' axes: the widest spread there is
    assert user_threshold(loose, {**calibration, "alpha": 10.0}) == calibration["threshold_max"]


def test_a_user_with_one_reference_is_held_to_the_one_reference_threshold():
    from edge_verify.edge.scoring import user_threshold

    signatures = fake_signatures()
    # one reference is a noisier anchor than five: genuine queries sit farther from it
    embeddings = separable_embeddings(signatures, noise=0.3, seed=2)
    calibration = calibrate(signatures, embeddings, refs=5, random_far=1.0)  # other writers: no cap here
    one = evaluate_embeddings(signatures, embeddings, refs_list=(1,), calibration=calibration)[0]
    assert one["frr"] == 0.0 and one["far_skilled"] == 0.0  # separable: the R = 1 threshold separates
    reference = embeddings[:1]
    assert user_threshold(reference, calibration) == calibration["threshold_one_reference"]
    older = {k: v for k, v in calibration.items() if k != "threshold_one_reference"}
    assert user_threshold(reference, older) == calibration["threshold"]


def test_the_train_command_offers_every_training_option_with_its_one_default(tmp_path):
    """A TrainingOptions field without an option (or an option train() does not know) would fail
    only when someone trains; each option's default must be the record's."""
    from dataclasses import asdict

    from edge_verify.training.choices import TRAINING_DEFAULTS
    from edge_verify.training.commands import train

    given = train.make_context("train", ["--data", str(tmp_path), "--out", str(tmp_path / "run")]).params
    options = {k: v for k, v in given.items() if k not in ("data_dirs", "layouts", "out_dir")}
    assert options == asdict(TRAINING_DEFAULTS)


def test_train_smoke_run_keeps_the_best_tower_and_can_resume(small_dataset, env, tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    out = tmp_path / "run"
    args = ["train", "--data", str(small_dataset), "--layout", "generic", "--out", str(out),
            "--steps-per-epoch", "2", "--writers-per-batch", "4", "--seed", "3", "--writer-loss", "0.2",
            "--dropout", "0.5", "--ema", "0.9", "--weight-decay", "0.01", "--pooled-loss", "0.5",
            "--forgery-loss", "0.5"]
    result = cli(*args, "--epochs", "1", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "tower.keras").exists() and (out / "history.csv").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["best"]["epoch"] == 1 and run["parameters"] < 1_000_000
    assert (run["config"]["dropout"], run["config"]["ema"], run["config"]["weight_decay"],
            run["config"]["pooled_loss"], run["config"]["forgery_loss"]) == (0.5, 0.9, 0.01, 0.5, 0.5)
    assert (run["config"]["epochs"], run["config"]["head"], run["config"]["mirrors"]) == (1, "pool", 1)  # defaults
    assert keras.models.load_model(out / "tower.keras").get_layer("dropout").rate == 0.5
    again = cli(*args, "--epochs", "1", env=env)
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = cli(*args, "--epochs", "2", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_with_ema_the_averaged_weights_are_scored_and_training_goes_on_from_its_own():
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    from edge_verify.training.train import averaged_weights

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(1.0, use_ema=True, ema_momentum=0.5))
    weight = model.trainable_variables[0]
    for _ in range(2):  # the weight goes 0 -> -1 -> -2; its average -1, then (-1 - 2) / 2
        model.optimizer.apply_gradients([(np.ones((1, 1), "float32"), weight)])
    with averaged_weights(model):
        assert float(weight.numpy()[0, 0]) == pytest.approx(-1.5)
    assert float(weight.numpy()[0, 0]) == pytest.approx(-2.0)


def test_weight_decay_shrinks_the_kernels_only():
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    from edge_verify.training.train import make_optimizer

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="ones",
                                                                    bias_initializer="ones"),
                              keras.layers.BatchNormalization()])
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer = make_optimizer(0.1, weight_decay=0.5)
    optimizer.apply_gradients([(np.zeros_like(v), v) for v in model.trainable_variables])  # no gradient
    shrunk = {v.path.split("/")[-1]: (v.numpy(), b) for v, b in zip(model.trainable_variables, before)}
    kernel, kernel_before = shrunk.pop("kernel")
    assert np.allclose(kernel, kernel_before * (1 - 0.5 * 0.1))
    assert sorted(shrunk) == ["beta", "bias", "gamma"]
    assert all(np.array_equal(value, value_before) for value, value_before in shrunk.values())


def test_mirrored_writers_are_new_writers_flipped_as_a_whole():
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.train import mirror, writer_batches

    batches = writer_batches(fake_signatures(writers=4), 8, 2, 2, seed=0, mirrors=4)
    _, writers, _, mirrors = next(batches)
    assert len(set(writers.tolist())) == 8  # 8 distinct writers from 4 real ones
    for w in set(writers.tolist()):  # a writer's genuine signatures and forgeries share one mirror
        assert len(set(mirrors[writers == w].tolist())) == 1
    image = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)
    flipped = mirror(tf.constant(np.repeat(image, 4, axis=0)), tf.constant([0, 1, 2, 3])).numpy()
    assert (flipped[0] == image[0]).all() and (flipped[1] == image[0, :, ::-1]).all()
    assert (flipped[2] == image[0, ::-1]).all() and (flipped[3] == image[0, ::-1, ::-1]).all()


def test_writer_loss_is_low_when_each_genuine_signature_sits_on_its_writers_centre():
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.losses import writer_softmax_loss

    centres = tf.constant(np.eye(4, dtype=np.float32))  # writer w's centre: axis w
    writers = tf.constant([0, 1, 2, 3, 0])
    genuine = tf.constant([1, 1, 1, 1, 0])
    on_centre = tf.constant(np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]])  # the forgery sits elsewhere
    swapped = tf.constant(np.eye(4, dtype=np.float32)[[1, 0, 3, 2, 0]])
    assert float(writer_softmax_loss(on_centre, writers, genuine, centres)) < 0.01
    assert float(writer_softmax_loss(swapped, writers, genuine, centres)) > 10


def test_cotuplet_loss_pushes_the_writers_forgeries_not_other_writers():
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.losses import cotuplet_loss

    writers = tf.constant([0, 0, 0, 1, 1, 1])
    genuine = tf.constant([1, 1, 0, 1, 1, 0])  # two genuine signatures and a forgery each
    axis = np.eye(4, dtype=np.float32)
    apart = tf.constant(axis[[0, 0, 1, 2, 2, 3]])  # forgeries far from their writers
    forgery_on_writer = tf.constant(axis[[0, 0, 0, 2, 2, 2]])
    writers_together = tf.constant(axis[[0, 0, 1, 0, 0, 3]])  # other writers close: not a negative
    assert float(cotuplet_loss(apart, writers, genuine)) < 0.05
    assert float(cotuplet_loss(forgery_on_writer, writers, genuine)) > 0.6
    assert float(cotuplet_loss(writers_together, writers, genuine)) < 0.05


def test_pooled_ranking_loss_holds_every_writer_to_one_distance_scale():
    """Each writer's forgery is farther than that writer's genuine pair, so the co-tuplet loss is
    content; but writer 0's genuine pair is farther apart than writer 1's forgery is from writer 1:
    no one threshold serves both, and the pooled term says so."""
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.losses import cotuplet_loss, pooled_ranking_loss

    writers = tf.constant([0, 0, 0, 1, 1, 1])
    genuine = tf.constant([1, 1, 0, 1, 1, 0])
    unit = lambda degrees: [np.cos(np.radians(degrees)), np.sin(np.radians(degrees)), 0.0]
    # writer 0: genuine 60 degrees apart, its forgery 120 degrees away; writer 1: genuine identical,
    # its forgery 30 degrees away
    scales_apart = np.array([unit(0), unit(60), unit(180), [0, 0, 1], [0, 0, 1],
                             [0, np.sin(np.radians(30)), np.cos(np.radians(30))]], np.float32)
    same_scale = scales_apart.copy()
    same_scale[1] = unit(0)  # writer 0's genuine pair as tight as writer 1's
    one_scale_each, one_scale = tf.constant(scales_apart), tf.constant(same_scale)
    assert float(cotuplet_loss(one_scale_each, writers, genuine)) < 0.2
    assert float(pooled_ranking_loss(one_scale_each, writers, genuine)) > 0.1
    assert float(pooled_ranking_loss(one_scale, writers, genuine)) < 0.01
    no_forgeries = tf.constant([1, 1, 1, 1, 1, 1])  # Omniglot's batches, say: nothing to order, not NaN
    assert float(pooled_ranking_loss(one_scale_each, writers, no_forgeries)) == 0.0


def test_distillation_loss_is_zero_only_when_the_tower_arranges_the_batch_as_its_teachers_do():
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.losses import distillation_loss

    unit = lambda rows: tf.math.l2_normalize(tf.constant(rows, tf.float32), axis=1)
    teacher = unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.2, 1]])
    rotated = tf.matmul(teacher, tf.constant([[0, 1, 0], [0, 0, 1], [1, 0, 0]], tf.float32))  # same angles
    assert float(distillation_loss(rotated, [teacher])) == pytest.approx(0, abs=1e-6)
    assert float(distillation_loss(rotated, [teacher, teacher])) == pytest.approx(0, abs=1e-6)
    shuffled = tf.gather(teacher, [2, 1, 0, 3])  # the same embeddings given to other images
    assert float(distillation_loss(shuffled, [teacher])) > 0.1
    # two teachers: the student is held to their mean similarity, not to either one
    other = unit([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0, 0.2, 1]])
    both = float(distillation_loss(teacher, [teacher, other]))
    assert 0 < both < float(distillation_loss(teacher, [other]))
    with tf.GradientTape() as tape:
        tape.watch(teacher)
        loss = distillation_loss(shuffled, [teacher])
    assert tape.gradient(loss, teacher) is None  # the teachers do not learn


def test_forgery_loss_is_low_when_the_embedding_tells_forgeries_of_any_writer_apart():
    """SigNet-F's term: one logistic head for every writer. Stand-in forgeries (another person's
    own writing, as Cross-media's) do not count: they carry no imitation to learn from."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from edge_verify.training.losses import forgery_loss
    from edge_verify.training.train import imitated_writers

    head = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant([[20.0], [0.0]]))
    genuine = tf.constant([1, 1, 0, 1, 1, 0])
    every = tf.constant([True] * 6)
    forgeries_on_one_side = tf.constant([[-1, 0], [-1, 0], [1, 0], [-1, 0], [-1, 0], [1, 0]], tf.float32)
    forgeries_among_genuine = tf.constant([[-1, 0], [1, 0], [-1, 0], [-1, 0], [1, 0], [1, 0]], tf.float32)
    assert float(forgery_loss(forgeries_on_one_side, genuine, every, head)) < 0.01
    assert float(forgery_loss(forgeries_among_genuine, genuine, every, head)) > 3
    imitations_only = tf.constant([True, True, False, True, True, True])  # writer 0's forgery a stand-in
    half_right = tf.constant([[-1, 0], [-1, 0], [-1, 0], [-1, 0], [-1, 0], [1, 0]], tf.float32)
    assert float(forgery_loss(half_right, genuine, imitations_only, head)) < 0.01
    assert float(forgery_loss(half_right, tf.constant([1] * 6), every, head)) == 0.0  # no forgery: 0, not NaN

    records = fake_signatures(writers=3)
    records += [Signature("other", "9", True, 1, Path("9_1")),
                Signature("other", "9", False, 1, Path("0_1"), imitation=False)]
    assert imitated_writers(records, mirrors=2) == [True] * 6 + [False] * 2  # ids: writer x 2 + mirror


def test_bent_forgeries_are_forgeries_of_the_stroke_writer_drawn_from_their_own_genuine_strokes():
    pytest.importorskip("tensorflow")
    from edge_verify.training.strokes import FORGERY_BEND
    from edge_verify.training.train import with_bent_forgeries, with_stroke_variants

    strokes = [Signature("pad", "1", True, 1, Path("g1.csv")), Signature("pad", "1", False, 1, Path("f1.csv"))]
    scans = [Signature("scan", "2", True, 1, Path("g2.png"))]
    drawn = with_stroke_variants(strokes + scans, 3)
    added = with_bent_forgeries(drawn, 2)[len(drawn):]
    assert [(s.writer, s.genuine, s.path.name, s.bend) for s in added] == [("1", False, "g1.csv", FORGERY_BEND)] * 2
    assert [s.variant for s in added] == [3, 4]  # two per genuine file, drawn unlike any genuine variant (0-2)
    assert all(s.imitation for s in added)


def test_the_koch_objective_refuses_the_terms_that_need_unit_embeddings_and_names_the_others():
    pytest.importorskip("tensorflow")
    from edge_verify.training.model import build_tower
    from edge_verify.training.train import SiameseTrainer

    tower = build_tower(input_size=(32, 64))
    terms = {"--writer-loss": {"writer_loss": 0.2, "writers": 3}, "--pooled-loss": {"pooled_loss": 1.0}}
    for option, weights in terms.items():
        with pytest.raises(ValueError, match=f"{option} needs unit embeddings: use it with triplet, "
                                             "contrastive, cotuplet, writer, not koch"):
            SiameseTrainer(tower, "koch", **weights)


def test_the_writer_objective_is_the_writer_classification_term_alone():
    """SigNet's pre-training: no pair term, the cosine softmax at weight 1 unless --writer-loss says."""
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.losses import writer_softmax_loss
    from edge_verify.training.model import build_tower
    from edge_verify.training.train import SiameseTrainer

    tower = build_tower(input_size=(32, 64))
    embeddings = tf.math.l2_normalize(tf.random.stateless_normal((6, 128), seed=(1, 2)), axis=1)
    writers, genuine = tf.constant([0, 0, 1, 1, 2, 2]), tf.constant([1, 0, 1, 0, 1, 1])
    for weight, expected in ((0.0, 1.0), (0.5, 0.5)):
        trainer = SiameseTrainer(tower, "writer", writer_loss=weight, writers=3)
        term = writer_softmax_loss(embeddings, writers, genuine, trainer.writer_centres)
        assert float(trainer.total_loss(embeddings, writers, genuine)) == pytest.approx(expected * float(term))


def test_mirrored_strategy_trains_on_two_logical_cpus(small_dataset, env, tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "mirrored"
    result = cli("train", "--data", str(small_dataset), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--writers-per-batch", "4", "--objective", "koch",
                 "--mirrors", "2", "--strategy", "mirrored", "--cpu-replicas", "2", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["replicas"] == 2
    assert (out / "koch_head.keras").exists()


def test_evaluate_writes_report_and_det_curve_for_a_keras_tower(small_dataset, env, tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "run"
    assert cli("train", "--data", str(small_dataset), "--out", str(out), "--epochs", "1",
               "--steps-per-epoch", "1", "--writers-per-batch", "4", env=env).returncode == 0
    report = tmp_path / "report.json"
    result = cli("evaluate", "--model", str(out / "tower.keras"), "--data", str(small_dataset),
                 "--split", "all", "--refs", "1,5", "--report", str(report), "--json", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    assert printed == json.loads(report.read_text())
    assert [r["refs"] for r in printed["results"]] == [1, 5]
    for r in printed["results"]:
        assert 0.0 <= r["eer"] <= 1.0 and 0.0 <= r["far_random"] <= 1.0
        assert r["writers"] == 12 and r["skilled_queries"] == 24
        assert r["eer_ci95"][0] <= r["eer"] <= r["eer_ci95"][1]
    assert [r["refs"] for r in printed["floor"]["results"]] == [1, 5]  # the floor, scored the same way
    assert report.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    table = cli("evaluate", "--model", str(out / "tower.keras"), "--data", str(small_dataset), "--split", "all",
                "--refs", "1,5", "--vs", "hog", "--no-floor", env=env)
    assert table.returncode == 0, table.stderr[-2000:]
    assert "against hog" in table.stdout and table.stdout.count("difference [") == 2


OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "omniglot"


def test_omniglot_smoke_run_gives_a_tower_that_evaluate_omniglot_scores(env, tmp_path):
    pytest.importorskip("tensorflow")
    images = np.load(OMNIGLOT / "images_background.npz")
    folder = tmp_path / "omniglot-small"  # 8 training and 20 validation characters
    folder.mkdir()
    np.savez(folder / "images_background.npz", images=images["images"][:28], labels=images["labels"][:28])
    out = tmp_path / "run"
    result = cli("train", "--data", str(folder), "--out", str(out), "--input-size", "32x32",
                 "--epochs", "1", "--steps-per-epoch", "2", "--writers-per-batch", "4",
                 "--forged-per-writer", "0", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "best val_one_shot_error" in result.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["validation"] == "val_one_shot_error" and run["input_size"] == [32, 32]
    assert run["training_writers"] == 8 and 0.0 <= run["best"]["val_one_shot_error"] <= 1.0
    scored = cli("evaluate-omniglot", "--model", str(out / "tower.keras"),
                 "--runs", str(OMNIGLOT / "all_runs.zip"), "--json", env=env)
    assert scored.returncode == 0, scored.stderr[-2000:]
    report = json.loads(scored.stdout)
    assert report["trials"] == 400 and 0.0 <= report["percent_correct"] <= 100.0


def test_input_size_must_read_height_x_width(env, tmp_path):
    result = cli("train", "--data", str(OMNIGLOT), "--out", str(tmp_path / "run"),
                 "--input-size", "32by32", env=env)
    assert result.returncode == 2 and "HxW" in result.stderr


def writer_scores(writers, overlap, seed=0):
    """protocol_scores-shaped scores: genuine near 0, skilled near 1 - overlap."""
    rng = np.random.default_rng(seed)
    return {("d", str(w)): {"genuine": rng.normal(0.0, 0.3, 10), "skilled": rng.normal(1.0 - overlap, 0.3, 10),
                            "random": rng.normal(1.5, 0.3, 5), "spread": 0.3} for w in range(writers)}


def test_bootstrap_interval_holds_the_eer_and_narrows_with_more_writers():
    from edge_verify.training.evaluate import bootstrap_eer, pooled

    few, many = writer_scores(8, 0.5), writer_scores(200, 0.5)
    for scores in (few, many):
        eer = equal_error_rate(pooled(scores, "genuine"), pooled(scores, "skilled"))[0]
        low, high = bootstrap_eer(scores, reps=300)
        assert low <= eer <= high
    assert np.ptp(bootstrap_eer(many, reps=300)) < np.ptp(bootstrap_eer(few, reps=300)) / 2


def test_paired_bootstrap_tells_a_better_model_from_an_equal_one():
    from edge_verify.training.evaluate import bootstrap_eer

    worse, better = writer_scores(40, 0.6, seed=1), writer_scores(40, 0.1, seed=2)
    low, high = bootstrap_eer(better, worse, reps=300)
    assert high < 0  # better's EER is lower on every resample of the writers
    assert bootstrap_eer(worse, worse, reps=300) == [0.0, 0.0]


def test_validation_pool_weighs_each_dataset_by_the_square_root_of_its_people():
    from edge_verify.training.evaluate import pool_eer

    fake = fake_signatures(writers=4)
    other = [Signature("other", s.writer, s.genuine, s.sample, Path(f"o{s.path}")) for s in fake_signatures(writers=16)]
    separated = separable_embeddings(fake, noise=0.05, seed=3)
    mixed = np.random.default_rng(4).normal(size=(len(other), separated.shape[1]))
    pool = pool_eer(fake + other, np.concatenate([separated, mixed / np.linalg.norm(mixed, axis=1, keepdims=True)]))
    assert pool["datasets"]["fake"] == 0.0 and pool["datasets"]["other"] > 0.2
    assert pool["eer"] == pytest.approx(pool["datasets"]["other"] * 4 / (2 + 4))  # sqrt(16) : sqrt(4)


def test_pool_bootstrap_draws_people_not_their_writer_keys():
    """Two Cross-media people, each writing 50 names: one perfectly told from the forgeries, one
    not at all. Drawn as 100 independent writers the interval would be narrow; it is as wide as
    drawing either person twice."""
    from edge_verify.training.evaluate import pool_bootstrap

    good = {("x", f"e001-{n:02d}"): v for n, v in enumerate(writer_scores(50, 0.0, seed=1).values())}
    bad = {("x", f"e002-{n:02d}"): v for n, v in enumerate(writer_scores(50, 1.0, seed=2).values())}
    low, high = pool_bootstrap({"x": {1: {**good, **bad}}}, reps=200)
    assert low < 0.1 and high > 0.4


def test_a_fraction_of_the_people_keeps_each_person_whole_in_every_dataset():
    from edge_verify.training.datasets import person_of, some_people

    names = [Signature("x", f"e{p:03d}-{n:02d}", True, 1, Path(f"{p}_{n}")) for p in range(10) for n in range(10)]
    small = [Signature("y", str(w), genuine, 1, Path(f"y{w}{genuine}")) for w in range(3) for genuine in (True, False)]
    half = some_people(names + small, 0.5, seed=1)
    people = {(s.dataset, person_of(s.writer)) for s in half}
    assert len([p for p in people if p[0] == "x"]) == 5 and len([s for s in half if s.dataset == "x"]) == 50
    assert len([p for p in people if p[0] == "y"]) == 2  # round(1.5), each with genuine and forged
    assert some_people(names + small, 1.0) == names + small
    assert some_people(names, 0.5, seed=2) != some_people(names, 0.5, seed=1)
    assert person_of("e007-03") == "e007" and person_of("jean-luc") == "jean-luc"  # only Cross-media keys split


def test_batches_draw_big_and_small_datasets_by_the_square_root_of_their_people():
    pytest.importorskip("tensorflow")  # training.train imports Keras
    from edge_verify.training.train import writer_weights

    keys = [("big", f"e{p:03d}-{n:02d}") for p in range(100) for n in range(10)] + [("small", str(w)) for w in range(4)]
    weights = writer_weights(keys)
    share = lambda d: sum(v for k, v in weights.items() if k[0] == d)
    assert share("big") / share("small") == pytest.approx(10 / 2)  # sqrt(100 people) : sqrt(4)


def test_augmentation_leaves_the_background_exactly_zero():
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.augment import augment

    images = np.zeros((8, 32, 64, 1), np.float32)
    images[:, 12:20, 20:44] = 0.8  # a bar of ink in the middle
    out = augment(tf.constant(images)).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out[:, :4] == 0).all() and (out[:, -4:] == 0).all()  # far from the ink: untouched paper
    assert (out > 0).any()


def test_floor_descriptor_tells_apart_different_shapes_and_is_unit_length():
    pytest.importorskip("skimage")
    from edge_verify.training.floor import hog_descriptors

    images = np.zeros((3, 96, 192, 1), np.float32)
    images[0, 40:56, 20:170] = 1.0      # a horizontal bar
    images[1, 41:57, 22:172] = 1.0      # nearly the same bar
    images[2, 10:86, 88:104] = 1.0      # a vertical bar
    d = hog_descriptors(images)
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    assert np.linalg.norm(d[0] - d[1]) < np.linalg.norm(d[0] - d[2])


def test_the_shipped_threshold_lets_at_most_2_percent_of_other_writers_pass():
    signatures = fake_signatures(writers=6)
    rng = np.random.default_rng(5)
    # skilled forgeries sit right on their writer (EER near 50 %), other writers far away but spread
    embeddings = np.array([np.eye(8)[int(s.writer)] + 0.4 * rng.normal(size=8) for s in signatures])
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    calibration = calibrate(signatures, embeddings, refs=5)
    assert calibration["threshold"] <= calibration["threshold_eer"]
    [result] = evaluate_embeddings(signatures, embeddings, refs_list=(5,), calibration=calibration)
    assert result["far_random"] <= 0.02


@pytest.mark.parametrize("head, output_stride, multiplier", [("pool", 32, 1.0), ("flatten", 32, 1.0),
                                                             ("flatten", 16, 1.0), ("flatten", 32, 1.5),
                                                             ("multiscale", 32, 1.0)])
def test_every_tower_gives_unit_embeddings_within_the_device_budget(head, output_stride, multiplier):
    pytest.importorskip("tensorflow")
    from edge_verify.training.model import build_tower

    tower = build_tower(input_size=(96, 192), head=head, output_stride=output_stride,
                        width_multiplier=multiplier)
    # in training mode: an untrained tower's batch-norm statistics shrink the multiscale head's
    # product of three maps to about 1e-26, below what the normalisation can lift
    images = np.random.default_rng(0).random((2, 96, 192, 1), np.float32)
    embeddings = np.asarray(tower(images, training=True))
    size = 7 * 64 if head == "multiscale" else 128  # multiscale: 7 parts of half the embedding size
    assert embeddings.shape == (2, size) and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert tower.count_params() < 3_000_000  # the budget for the shipped tower
    if head != "multiscale":
        last_map = tower.get_layer("block8_pw_relu").output.shape
        assert last_map[1:3] == (96 // output_stride, 192 // output_stride)
        assert last_map[3] == 512 * multiplier


@pytest.mark.parametrize("input_size", [(64, 128), (96, 192), (160, 320)])
def test_the_multiscale_head_pools_the_whole_map_three_columns_and_three_rows(input_size):
    pytest.importorskip("tensorflow")
    from edge_verify.training.model import build_tower

    tower = build_tower(input_size=input_size, head="multiscale")
    deep = tower.get_layer("block7_pw_relu").output.shape
    assert deep[1:3] == (input_size[0] // 16, input_size[1] // 16)
    assert [tower.get_layer(f"{name}_pool").output.shape[1:3] for name in ("global", "column", "row")] == [
        (1, 1), (1, 3), (3, 1)]
    with pytest.raises(ValueError, match="leave output_stride at 32"):
        build_tower(input_size=input_size, head="multiscale", output_stride=16)


def test_the_multiscale_tower_converts_to_int8_that_maps_entirely_to_the_edge_tpu(tmp_path):
    pytest.importorskip("tensorflow")
    from edge_verify.convert.convert import export_saved_model, tflite_model
    from edge_verify.convert.edgetpu import compatibility_report
    from edge_verify.training.model import build_tower

    export_saved_model(build_tower(input_size=(64, 128), head="multiscale"), tmp_path / "saved_model")
    ink = np.random.default_rng(0).random((8, 64, 128, 1), np.float32)
    (tmp_path / "model.tflite").write_bytes(tflite_model(tmp_path / "saved_model", "int8", ink))
    report = compatibility_report(tmp_path / "model.tflite")
    assert report["compatible"] is True and report["unsupported"] == [] and report["rank_problems"] == []
    assert {"MUL", "AVERAGE_POOL_2D", "CONCATENATION"} <= {o["name"] for o in report["operators"]}


def test_a_wider_tower_has_more_parameters_and_width_one_is_the_shipped_tower():
    pytest.importorskip("tensorflow")
    from edge_verify.training.model import build_tower

    shipped = build_tower(input_size=(96, 192), head="flatten").count_params()
    assert shipped == 709_184  # the bundled model (MODEL_CARD.md)
    assert build_tower(input_size=(96, 192), head="flatten", width_multiplier=1.5).count_params() > 1.5 * shipped


def test_geometry_scale_zero_leaves_the_shapes_where_they_are():
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from edge_verify.training.augment import augment

    keras.utils.set_random_seed(0)  # unseeded, the thickening drew past the 3 % bound about once in 14 runs

    images = np.zeros((8, 32, 64, 1), np.float32)
    images[:, 12:20, 20:44] = 0.8
    still = augment(tf.constant(images), geometry_scale=0).numpy()
    assert ((still > 0) == (images > 0)).mean() > 0.97  # strokes may thicken or thin, not move
    moved = augment(tf.constant(images), geometry_scale=3).numpy()
    assert ((moved > 0) == (images > 0)).mean() < ((still > 0) == (images > 0)).mean()


def test_rotation_sets_how_far_training_images_turn():
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from edge_verify.training.augment import augment

    keras.utils.set_random_seed(0)
    images = np.zeros((32, 64, 128, 1), np.float32)
    images[:, 30:34, 24:104] = 1.0  # a level stroke

    def turns(rotation):
        """The angle, in degrees, of each augmented stroke's principal axis."""
        moved = augment(tf.constant(images), ink=False, rotation=rotation).numpy()[..., 0]
        angles = []
        for image in moved:
            rows, columns = np.nonzero(image > 0.5)
            covariance = np.cov(np.stack([columns, -rows]))
            values, vectors = np.linalg.eigh(covariance)
            x, y = vectors[:, -1]
            angles.append(np.degrees(np.arctan(y / x)))
        return np.abs(angles)

    assert turns(7.2).max() < 12  # the default: a few degrees (shear adds about 3)
    assert turns(30).max() > 20


def test_without_ink_augmentation_the_strokes_keep_their_pixels():
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.augment import augment

    images = np.zeros((8, 32, 64, 1), np.float32)
    images[:, 12:20, 20:44] = 0.8
    assert (augment(tf.constant(images), geometry_scale=0, ink=False).numpy() == images).all()
    assert not (augment(tf.constant(images), geometry_scale=0).numpy() == images).all()


def test_erasing_blanks_one_rectangle_of_the_picked_images_and_leaves_the_others():
    tf = pytest.importorskip("tensorflow")
    from edge_verify.training.augment import erase

    tf.random.set_seed(0)
    images = np.full((64, 32, 64, 1), 0.8, np.float32)
    erased = erase(tf.constant(images), probability=0.5).numpy()
    blank = (erased == 0).mean(axis=(1, 2, 3))
    assert 16 < (blank > 0).sum() < 48  # about half the images picked
    # 10-30 % of each side, in whole pixels: 3-10 of 32 rows, 6-20 of 64 columns
    assert ((blank == 0) | ((blank >= 3 * 6 / 2048) & (blank <= 10 * 20 / 2048))).all()
    for image in erased[blank > 0]:  # one rectangle: the blank rows and columns enclose only blank pixels
        rows, columns = np.nonzero(image[..., 0] == 0)
        assert (image[rows.min():rows.max() + 1, columns.min():columns.max() + 1] == 0).all()
    assert (erase(tf.constant(images), probability=0.0).numpy() == images).all()


def test_evaluate_writes_a_json_report_for_a_bundle(tiny_bundle, small_dataset, env, tmp_path):
    pytest.importorskip("skimage")  # the floor
    report = tmp_path / "report.json"
    result = cli("evaluate", "--model", str(tiny_bundle), "--data", str(small_dataset), "--split", "all",
                 "--refs", "1,5", "--report", str(report), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads(report.read_text())
    assert written["calibration"]["threshold"] == json.loads((tiny_bundle / "manifest.json").read_text())["calibration"]["threshold"]


def test_evaluate_pools_datasets_weighted_by_the_square_root_of_their_people(tiny_bundle, small_dataset, env,
                                                                           tmp_path):
    three = tmp_path / "cedar-three"
    for writer in ("w01", "w02", "w03"):
        shutil.copytree(small_dataset / writer, three / writer)
    result = cli("evaluate", "--model", str(tiny_bundle), "--data", str(small_dataset), "--data", str(three),
                 "--split", "all", "--refs", "1,5", "--no-floor", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    figures, dataset = defaultdict(list), None
    for line in result.stdout.splitlines():
        if re.match(r"^\S+, all writers, model", line):
            dataset = line.split(",")[0]
        elif row := re.match(r"^\s+[15]\s+([\d.]+)%", line):
            figures[dataset].append(float(row.group(1)))
    pool = float(re.search(r"pool of 2 datasets .*?: ([\d.]+) %", result.stdout).group(1))
    small, few = np.mean(figures["cedar-small"]), np.mean(figures["cedar-three"])
    assert pool == pytest.approx((12 ** 0.5 * small + 3 ** 0.5 * few) / (12 ** 0.5 + 3 ** 0.5), abs=0.02)


def test_train_init_from_starts_from_a_saved_towers_weights(small_dataset, env, tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    common = ["--data", str(small_dataset), "--layout", "generic", "--steps-per-epoch", "2",
              "--writers-per-batch", "4", "--epochs", "1"]
    first = cli("train", *common, "--out", str(tmp_path / "first"), "--seed", "3", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    saved = tmp_path / "first" / "tower.keras"
    # another seed, and a learning rate of 0: whatever the tower ends with, it started with
    tuned = cli("train", *common, "--out", str(tmp_path / "tuned"), "--seed", "4", "--learning-rate", "0",
                "--init-from", str(saved), env=env)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    kernel = lambda path: keras.models.load_model(path).get_layer("embedding_dense").get_weights()[0]
    np.testing.assert_array_equal(kernel(tmp_path / "tuned" / "tower.keras"), kernel(saved))
    other = cli("train", *common, "--out", str(tmp_path / "other"), "--width-multiplier", "0.5",
                "--init-from", str(saved), env=env)
    assert other.returncode == 2 and "not a tower of this architecture" in other.stderr


def test_train_with_a_teacher_imitates_it_and_refuses_a_teacher_it_cannot_use(small_dataset, env, tmp_path):
    pytest.importorskip("tensorflow")
    common = ["--data", str(small_dataset), "--layout", "generic", "--steps-per-epoch", "2",
              "--writers-per-batch", "4", "--epochs", "1"]
    first = cli("train", *common, "--out", str(tmp_path / "teacher"), "--seed", "3", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    teacher = str(tmp_path / "teacher" / "tower.keras")
    student = cli("train", *common, "--out", str(tmp_path / "student"), "--teacher", teacher,
                  "--distill-loss", "10", env=env)
    assert student.returncode == 0, student.stderr[-2000:]
    config = json.loads((tmp_path / "student" / "run.json").read_text())["config"]
    assert (config["teachers"], config["distill_loss"]) == ([teacher], 10.0)
    unweighted = cli("train", *common, "--out", str(tmp_path / "unweighted"), "--teacher", teacher, env=env)
    assert unweighted.returncode == 2 and "--distill-loss" in unweighted.stderr
    smaller = cli("train", *common, "--out", str(tmp_path / "smaller"), "--input-size", "48x96",
                  "--teacher", teacher, "--distill-loss", "1", env=env)
    assert smaller.returncode == 2 and "takes images of" in smaller.stderr


def test_the_towers_kept_in_the_repository_fit_the_tower_their_run_trained():
    """training/towers/README.md's fine-tuning command must be able to start from each kept tower:
    a change to the tower's layers or the default input size that breaks this fails here."""
    pytest.importorskip("tensorflow")
    from edge_verify.training.train import DEFAULT_INPUT_SIZES, make_tower, start_from
    kept = sorted((Path(__file__).parents[1] / "training" / "towers").glob("*.keras"))
    assert kept, "training/towers/ holds no tower"
    for path in kept:
        config = json.loads(path.with_suffix(".run.json").read_text())["config"]
        tower = make_tower(config, DEFAULT_INPUT_SIZES["signatures", config["arch"]])
        start_from(tower, path)
