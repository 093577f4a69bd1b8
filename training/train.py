"""Training of the Siamese signature embedding.

One tower embeds every image of a batch; the objective (contrastive, triplet, co-tuplet or Koch's
L1 + sigmoid head) is computed over all the pairs of the batch, or (writer) the batch's genuine
signatures are classified by writer. Batches hold a few training writers each, with genuine
signatures and skilled forgeries. After each epoch the tower is scored on the validation
writers (EVALUATION.md, 5 references) and the best one is kept.

Omniglot (a folder with images_background.npz) trains the same way: each character is a
"writer" whose 20 drawings are genuine, without forgeries; the tower is scored on 20-way
one-shot runs drawn from held-out background characters.
"""
import json
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edge_verify.edge.preprocess import PREPROCESS_VERSION
from edge_verify.training import losses
from edge_verify.training.arrays import preprocessed_images, to_model_input
from edge_verify.training.augment import augment
from edge_verify.training.choices import OBJECTIVES, TRAINING_DEFAULTS, TrainingOptions
from edge_verify.training.datasets import (dataset_weights, is_stroke_file, read_signatures, select_split,
                                          some_people)
from edge_verify.training.evaluate import koch_evaluate_embeddings, pool_eer
from edge_verify.training.model import ARCHITECTURES, build_koch_head
from edge_verify.training.omniglot import (euclidean_similarity, is_omniglot_folder,
                                           omniglot_training_set, sample_runs, score_one_shot)
from edge_verify.training.strokes import FORGERY_BEND

DEFAULT_MARGINS = {"contrastive": 1.0, "triplet": 0.3, "cotuplet": 0.2}  # cotuplet: its epsilon
TOWER_OPTIONS = ("head", "output_stride", "width_multiplier", "dropout")  # the TrainingOptions for build_tower
# (height, width) when --input-size is not given: signatures are wide, characters square.
DEFAULT_INPUT_SIZES = {("signatures", "tower"): (96, 192), ("signatures", "koch"): (64, 128),
                       ("omniglot", "tower"): (48, 48), ("omniglot", "koch"): (105, 105)}


class SiameseTrainer(keras.Model):
    """Trains a tower with a pairwise objective; `call` is the tower itself."""

    def __init__(self, tower, objective="triplet", margin=None, mining="hard", writer_loss=0.0, writers=0,
                 pooled_loss=0.0, forgery_loss=0.0, imitated=None, teachers=(), distill_loss=0.0):
        super().__init__()
        self.tower = tower
        self.objective = objective
        self.margin = DEFAULT_MARGINS.get(objective) if margin is None else margin
        self.mining = mining
        self.head = build_koch_head(tower.output_shape[-1]) if objective == "koch" else None
        self.writer_loss = writer_loss or (1.0 if objective == "writer" else 0.0)  # writer: the term alone
        self.pooled_loss = pooled_loss
        if objective == "koch" and (writer_loss or pooled_loss):
            option = "--writer-loss" if writer_loss else "--pooled-loss"
            others = ", ".join(name for name in OBJECTIVES if name != "koch")
            raise ValueError(f"{option} needs unit embeddings: use it with {others}, not koch")
        if self.writer_loss:  # one centre per training writer, for losses.writer_softmax_loss
            self.writer_centres = self.add_weight(shape=(tower.output_shape[-1], writers), name="writer_centres")
        self.forgery_loss = forgery_loss
        if forgery_loss:  # losses.forgery_loss: a logistic head, and which writers' forgeries are imitations
            self.forgery_head = keras.layers.Dense(1, name="forgery_head")
            self.forgery_head.build((None, tower.output_shape[-1]))  # before the optimizer takes the variables
            self.imitated = tf.constant([True] * writers if imitated is None else imitated, tf.bool)
        if bool(teachers) != bool(distill_loss):
            raise ValueError("distillation needs both --teacher and a --distill-loss above 0")
        self.teachers, self.distill_loss = list(teachers), distill_loss  # frozen towers to imitate
        for teacher in self.teachers:
            teacher.trainable = False
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, images, training=False):
        return self.tower(images, training=training)

    def pair_loss(self, embeddings, writers, genuine):
        if self.objective == "writer":
            return 0.0
        if self.objective == "contrastive":
            return losses.contrastive_loss(embeddings, writers, genuine, self.margin)
        if self.objective == "triplet":
            return losses.triplet_loss(embeddings, writers, genuine, self.margin, self.mining)
        if self.objective == "cotuplet":
            return losses.cotuplet_loss(embeddings, writers, genuine, self.margin)
        return losses.koch_loss(embeddings, writers, genuine, self.head)

    def total_loss(self, embeddings, writers, genuine, teacher_embeddings=()):
        loss = self.pair_loss(embeddings, writers, genuine)
        if self.writer_loss:
            loss += self.writer_loss * losses.writer_softmax_loss(embeddings, writers, genuine, self.writer_centres)
        if self.pooled_loss:
            loss += self.pooled_loss * losses.pooled_ranking_loss(embeddings, writers, genuine)
        if self.forgery_loss:
            counted = tf.cast(genuine, tf.bool) | tf.gather(self.imitated, writers)
            loss += self.forgery_loss * losses.forgery_loss(embeddings, genuine, counted, self.forgery_head)
        if self.distill_loss:
            loss += self.distill_loss * losses.distillation_loss(embeddings, teacher_embeddings)
        return loss

    def train_step(self, data):
        images, (writers, genuine) = data
        teacher_embeddings = [teacher(images, training=False) for teacher in self.teachers]
        with tf.GradientTape() as tape:
            loss = self.total_loss(self(images, training=True), writers, genuine, teacher_embeddings)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def make_strategy(name="default", cpu_replicas=0):
    """default: one device; mirrored: all local GPUs (or `cpu_replicas` logical CPUs);
    multiworker: the cluster described by the TF_CONFIG environment variable."""
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = None
        if cpu_replicas > 1 and not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use default, mirrored or multiworker")


def writer_keys(signatures):
    """The (dataset, writer) keys of the records, in the order that numbers them: writer_batches
    gives key i (mirror m of `mirrors`) the writer id i x mirrors + m."""
    return sorted({(s.dataset, s.writer) for s in signatures})


def writer_batches(signatures, writers_per_batch, genuine_per_writer, forged_per_writer, seed,
                   mirrors=1):
    """Endless index batches: a few writers, each with genuine signatures and forgeries.

    A writer without forgeries gives genuine signatures in their place, so every batch has
    the same size. With `mirrors` 2 or 4, each writer also appears left-right mirrored (and,
    with 4, upside down and both) as new writers: see MIRRORS. Yields (indices, writer ids,
    genuine flags, mirror of each image).
    """
    rng = np.random.default_rng(seed)
    keys = writer_keys(signatures)
    weight = writer_weights(keys)
    writer_id = {key: i for i, key in enumerate(keys)}
    genuine = {k: [] for k in keys}
    forged = {k: [] for k in keys}
    for i, s in enumerate(signatures):
        (genuine if s.genuine else forged)[(s.dataset, s.writer)].append(i)
    if mirrors not in MIRRORS:
        raise ValueError(f"mirrors is one of {sorted(MIRRORS)}, not {mirrors}")
    usable = [(k, m) for k in keys if len(genuine[k]) >= 2 for m in range(mirrors)]
    if len(usable) < writers_per_batch:
        raise ValueError(f"only {len(usable)} training writers have two genuine signatures or more: "
                         f"use a writers-per-batch of at most {len(usable)}")
    p = np.array([weight[k] for k, _ in usable])
    while True:
        chosen = rng.choice(len(usable), writers_per_batch, replace=False, p=p / p.sum())
        indices, flags, writers, mirrored = [], [], [], []
        for k, mirror in (usable[c] for c in chosen):
            start = len(indices)
            n_forged = forged_per_writer if forged[k] else 0
            n_genuine = genuine_per_writer + forged_per_writer - n_forged
            indices += list(rng.choice(genuine[k], n_genuine, replace=len(genuine[k]) < n_genuine))
            flags += [True] * n_genuine
            if n_forged:
                indices += list(rng.choice(forged[k], n_forged, replace=len(forged[k]) < n_forged))
                flags += [False] * n_forged
            writers += [writer_id[k] * mirrors + mirror] * (len(indices) - start)
            mirrored += [mirror] * (len(indices) - start)
        yield (np.array(indices, np.int32), np.array(writers, np.int32), np.array(flags, np.int32),
               np.array(mirrored, np.int32))


def writer_weights(keys):
    """How often each (dataset, writer) is drawn into a batch: each dataset's share is its
    weight (datasets.dataset_weights, the square root of its people), split evenly between its
    writers, so that the few writers of a small set are not seen over and over."""
    weights, keys_of = dataset_weights(keys), Counter(dataset for dataset, _ in keys)
    return {(d, w): weights[d] / keys_of[d] for d, w in keys}


def imitated_writers(signatures, mirrors=1):
    """For each writer id that writer_batches gives: whether the writer's forgeries imitate them
    (False where they are other people's own writing of the same text, as Cross-media's are)."""
    stand_ins = {(s.dataset, s.writer) for s in signatures if not s.genuine and not s.imitation}
    return [key not in stand_ins for key in writer_keys(signatures) for _ in range(mirrors)]


def with_stroke_variants(signatures, variants, bend=0.0):
    """Each pen-stroke signature drawn `variants` times (strokes.render_variant 0..variants-1),
    each drawing a sample of the same writer; variants other than 0 bent by `bend`."""
    return [replace(s, variant=v, bend=bend) if v else s for s in signatures
            for v in range(variants if is_stroke_file(s.path) else 1)]


def with_bent_forgeries(signatures, count):
    """The records plus `count` synthetic skilled forgeries of each genuine pen-stroke file: its
    trajectory redrawn bent by strokes.FORGERY_BEND (see strokes.bent), with another pen, as a
    forger's hand strays from the writer's. Variant numbers follow the genuine variants'."""
    first = 1 + max((s.variant for s in signatures), default=0)
    return signatures + [replace(s, genuine=False, variant=first + k, bend=FORGERY_BEND)
                         for s in signatures
                         if s.genuine and s.variant == 0 and is_stroke_file(s.path)
                         for k in range(count)]


# Class augmentation: a mirrored writer is a new writer, as rotated characters are new classes
# for Omniglot one-shot learners (Santoro et al. 2016, Vinyals et al. 2016). Mirror m flips
# left-right when m is odd and upside down when m >= 2; its forgeries are mirrored alike.
MIRRORS = {1: "none", 2: "left-right", 4: "left-right, upside down and both"}


def mirror(images, mirrors):
    """Flip each image of a (B, H, W, 1) batch by its mirror number (B,), as MIRRORS says."""
    m = tf.reshape(mirrors, (-1, 1, 1, 1))
    images = tf.where(m % 2 == 1, tf.reverse(images, [2]), images)
    return tf.where(m >= 2, tf.reverse(images, [1]), images)


def training_dataset(images_u8, signatures, batch_shape, seed, mirrors=1, geometry_scale=1.0,
                     ink_augmentation=True, erase=0.0, rotation=TRAINING_DEFAULTS.rotation):
    """tf.data pipeline: sampled writer batches -> augmented float images + pair labels."""
    images = tf.constant(images_u8)
    batch = batch_shape[0] * (batch_shape[1] + batch_shape[2])
    # all int32 (genuine flags as 0/1): tf.distribute splits no bools
    spec = tuple(tf.TensorSpec((batch,), tf.int32) for _ in range(4))
    next(writer_batches(signatures, *batch_shape, seed, mirrors))  # fails early on an impossible batch
    dataset = tf.data.Dataset.from_generator(
        lambda: writer_batches(signatures, *batch_shape, seed, mirrors), output_signature=spec)

    def to_example(indices, writers, genuine, mirrored):
        x = tf.cast(tf.gather(images, indices), tf.float32)[..., None] / 255.0
        x = augment(mirror(x, mirrored), geometry_scale, ink_augmentation, erase, rotation)
        return x, (writers, genuine)

    return dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def signature_data(data, input_size, stroke_variants=1, stroke_bend=0.0, people_fraction=1.0, seed=0,
                   bent_forgeries=0):
    """The training writers' images and records (of `people_fraction` of each dataset's training
    people), and the validation: val_eer, the figure of the validation pool (evaluate.pool_eer:
    each dataset's validation writers, R = 1 and 5)."""
    signatures = [s for root, layout in data for s in read_signatures(root, layout)]
    train_set = some_people(select_split(signatures, "train"), people_fraction, seed)
    train_set = with_bent_forgeries(with_stroke_variants(train_set, stroke_variants, stroke_bend), bent_forgeries)
    val_set = select_split(signatures, "val")
    print(f"training writers: {len(writer_keys(train_set))}, "
          f"images: {len(train_set)}; validation images: {len(val_set)}")
    val_images = to_model_input(preprocessed_images(val_set, input_size))

    def val_eer(trainer):
        """Scored as the model decides: the device's distance rule, or for the Koch objective
        its head's mean match probability."""
        embeddings = trainer.tower.predict(val_images, batch_size=128, verbose=0)
        if trainer.head is not None:
            probability = lambda d: trainer.head.predict(d, batch_size=4096, verbose=0)[:, 0]
            return koch_evaluate_embeddings(val_set, embeddings, probability, refs_list=(5,))[0]["eer"]
        pool = pool_eer(val_set, embeddings)
        print(" - " + ", ".join(f"{d} {100 * e:.1f}" for d, e in pool["datasets"].items()), end="")
        return pool["eer"]

    return preprocessed_images(train_set, input_size), train_set, "val_eer", val_eer


def omniglot_data(folder, input_size):
    """The training characters' images and records, and the validation: the error rate of
    200 20-way one-shot runs (4000 trials) drawn from the held-out characters."""
    train_images, train_set, val_characters = omniglot_training_set(
        Path(folder) / "images_background.npz", input_size)
    print(f"training characters: {len({s.writer for s in train_set})}, images: {len(train_set)}; "
          f"validation characters: {len(val_characters)}")
    val_images = to_model_input(val_characters.reshape(-1, *input_size))

    def val_one_shot_error(trainer):
        embeddings = trainer.tower.predict(val_images, batch_size=256, verbose=0)
        runs = sample_runs(embeddings.reshape(*val_characters.shape[:2], -1))
        return 1.0 - score_one_shot(runs, euclidean_similarity) / 100.0

    return train_images, train_set, "val_one_shot_error", val_one_shot_error


def training_data(data, input_size, stroke_variants=1, stroke_bend=0.0, people_fraction=1.0, seed=0,
                  bent_forgeries=0):
    """(uint8 training images, their records, validation metric name, tower -> metric) of `data`."""
    omniglot = [root for root, _ in data if is_omniglot_folder(root)]
    if omniglot and len(data) > 1:
        raise ValueError(f"{omniglot[0]} is Omniglot: train on it alone, not with other --data")
    if omniglot and (people_fraction < 1 or bent_forgeries):
        option = "--bent-forgeries" if bent_forgeries else "--people-fraction"
        raise ValueError(f"{option} is for signature datasets, not Omniglot")
    if omniglot:
        return omniglot_data(omniglot[0], input_size)
    return signature_data(data, input_size, stroke_variants, stroke_bend, people_fraction, seed, bent_forgeries)


def make_optimizer(learning_rate, weight_decay=0.0, ema=0.0):
    """Adam. With `weight_decay`, each step also shrinks the kernels by weight_decay x the learning
    rate (decoupled, as AdamW), not the biases or the batch-norm scales and offsets; with `ema`, it
    keeps a moving average of the weights with that momentum (see averaged_weights)."""
    optimizer = keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None, use_ema=bool(ema),
                                      ema_momentum=ema or 0.99)  # the momentum is unused without ema
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def make_tower(config, input_size):
    """The untrained tower that a run's config (TrainingOptions as a dict, run.json's "config") describes."""
    options = {name: config[name] for name in TOWER_OPTIONS} if config["arch"] == "tower" else {}
    return ARCHITECTURES[config["arch"]](input_size=input_size, **options)


def start_from(tower, path):
    """Give `tower` the weights of the tower saved at `path`, which must have the same layers."""
    saved = keras.saving.load_model(path, compile=False)
    shapes = lambda model: [tuple(w.shape) for w in model.weights]
    if shapes(saved) != shapes(tower):
        raise ValueError(f"{path} is not a tower of this architecture, width and input size: "
                         "the shapes of its weights differ from those of the tower to train")
    tower.set_weights(saved.get_weights())


def load_teacher(tower, path):
    """The tower saved at `path`, to imitate: it must take `tower`'s input (its layers and
    embedding size may differ: only its similarities are imitated)."""
    saved = keras.saving.load_model(path, compile=False)
    if tuple(saved.input_shape[1:]) != tuple(tower.input_shape[1:]):
        raise ValueError(f"teacher {path} takes images of {saved.input_shape[1:]}, "
                         f"the tower to train {tower.input_shape[1:]}")
    return saved


class KeepBest(keras.callbacks.Callback):
    """Scores the tower on held-out data after each epoch; keeps the best tower.

    `score(trainer)` gives `metric`, an error rate: lower is better.
    """

    def __init__(self, metric, score, out_dir):
        super().__init__()
        self.metric, self.score = metric, score
        self.out_dir = Path(out_dir)
        self.best = self.best_state_path().exists() and json.loads(self.best_state_path().read_text())

    def best_state_path(self):
        return self.out_dir / "best.json"

    def on_epoch_end(self, epoch, logs=None):
        with averaged_weights(self.model):
            self.score_and_keep(epoch, logs)

    def score_and_keep(self, epoch, logs):
        value = self.score(self.model)
        logs[self.metric] = value
        print(f" - {self.metric}: {100 * value:.2f} %")
        if not self.best or value <= self.best[self.metric]:
            self.best = {"epoch": epoch + 1, self.metric: value}
            self.model.tower.save(self.out_dir / "tower.keras")
            self.best_state_path().write_text(json.dumps(self.best))
            if self.model.head is not None:
                self.model.head.save(self.out_dir / "koch_head.keras")


@contextmanager
def averaged_weights(trainer):
    """Inside the block the trainer holds the moving average of its weights when its optimizer
    keeps one (--ema), and its own weights again after it, so that training goes on from them."""
    if not trainer.optimizer.use_ema:
        yield
        return
    variables = trainer.trainable_variables
    own = [variable.numpy() for variable in variables]
    trainer.optimizer.finalize_variable_values(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, own):
            variable.assign(value)


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `minutes` of wall time have passed since `started`."""

    def __init__(self, minutes, started):
        super().__init__()
        self.deadline = started + 60 * minutes

    def on_train_batch_end(self, batch, logs=None):
        if time.time() > self.deadline:
            self.model.stop_training = True


def train(data, out_dir, **options):
    """Train a tower on the training writers of `data` [(root, layout or None), ...], or on the
    background characters of one Omniglot folder. `options` are choices.TrainingOptions' fields;
    the ones not given keep its defaults.

    With `ema` (a momentum, e.g. 0.995) the tower is scored and kept as the exponential moving
    average of its weights over the last steps (Polyak averaging), while training goes on from
    the weights themselves. With `init_from` (a saved tower.keras of the same architecture and
    input size) training starts from its weights instead of random ones. Writes to out_dir:
    tower.keras (best on validation), history.csv, run.json.
    """
    options = TrainingOptions(**options)
    # first: devices are fixed once TensorFlow starts
    distribution = make_strategy(options.strategy, options.cpu_replicas)
    started = time.time()
    out_dir = Path(out_dir)
    if not options.resume and (out_dir / "backup").exists():
        raise FileExistsError(f"{out_dir} holds an earlier run: pass --resume or use another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"data": data, **asdict(options)}
    keras.utils.set_random_seed(options.seed)
    kind = "omniglot" if any(is_omniglot_folder(root) for root, _ in data) else "signatures"
    input_size = tuple(options.input_size or DEFAULT_INPUT_SIZES[kind, options.arch])
    train_images, train_set, metric, score = training_data(
        data, input_size, options.stroke_variants, options.stroke_bend, options.people_fraction, options.seed,
        options.bent_forgeries)

    training_writers = len(writer_keys(train_set))
    with distribution.scope():
        writers = training_writers * options.mirrors  # the ids writer_batches gives
        tower = make_tower(config, input_size)
        if options.init_from:
            start_from(tower, options.init_from)
        teachers = [load_teacher(tower, path) for path in options.teachers]
        trainer = SiameseTrainer(tower, options.objective, options.margin, options.mining, options.writer_loss,
                                 writers, options.pooled_loss, options.forgery_loss,
                                 imitated_writers(train_set, options.mirrors), teachers, options.distill_loss)
        trainer.build((None, *input_size, 1))
        schedule = keras.optimizers.schedules.CosineDecay(
            options.learning_rate, decay_steps=options.epochs * options.steps_per_epoch, warmup_target=None)
        trainer.compile(optimizer=make_optimizer(schedule, options.weight_decay, options.ema))
    batch_shape = (options.writers_per_batch, options.genuine_per_writer, options.forged_per_writer)
    dataset = training_dataset(train_images, train_set, batch_shape, options.seed, options.mirrors,
                               options.geometry_scale, options.ink_augmentation, options.erase,
                               options.rotation)
    callbacks = [
        KeepBest(metric, score, out_dir),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=options.resume),
        keras.callbacks.BackupAndRestore(str(out_dir / "backup"), delete_checkpoint=False),
    ]
    if options.max_minutes:
        callbacks.append(TimeBudget(options.max_minutes, started))
    trainer.fit(dataset, epochs=options.epochs, steps_per_epoch=options.steps_per_epoch, callbacks=callbacks)

    run = {"config": config, "preprocess_version": PREPROCESS_VERSION,
           "input_size": list(input_size), "replicas": distribution.num_replicas_in_sync,
           "validation": metric,
           "parameters": trainer.tower.count_params(),
           "best": callbacks[0].best, "wall_seconds": round(time.time() - started, 1),
           "training_writers": training_writers,
           "training_images": len(train_set), "versions": {"tensorflow": tf.__version__,
                                                           "keras": keras.__version__}}
    (out_dir / "run.json").write_text(json.dumps(run, indent=2, default=str))
    return run
