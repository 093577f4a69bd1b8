"""The names a training setting may take, and every training option's default, each defined
once: the `train` command's options and the code that acts on them read them from here.

Nothing heavy is imported: the workstation commands build their options from these at
start-up, which must not load TensorFlow.
"""
from dataclasses import dataclass

OBJECTIVES = ("triplet", "contrastive", "cotuplet", "koch", "writer")  # training/losses.py, one function each
# (writer: the writer-classification term alone, losses.writer_softmax_loss)
HEADS = ("pool", "flatten", "multiscale")  # how the tower's last feature map becomes the embedding
OUTPUT_STRIDES = (32, 16)  # how much smaller a side of the tower's last feature map is than the input
DEFAULT_DROPOUT = 0.2  # the rate of the dropout layer before the tower's embedding layer


@dataclass(frozen=True)
class TrainingOptions:
    """Every setting of a training run, with its default: `edge-verify train`'s options and
    train.train() both take their defaults from here. run.json's "config" records them."""
    objective: str = "triplet"  # one of OBJECTIVES
    arch: str = "tower"  # "tower" (the device network) or "koch" (Koch et al.'s baseline)
    input_size: tuple | None = None  # (height, width); None: train.DEFAULT_INPUT_SIZES
    epochs: int = 40
    steps_per_epoch: int = 100
    writers_per_batch: int = 12
    genuine_per_writer: int = 4
    forged_per_writer: int = 4
    learning_rate: float = 1e-3
    margin: float | None = None  # None: the objective's default (train.DEFAULT_MARGINS)
    mining: str = "hard"
    seed: int = 0
    strategy: str = "default"
    cpu_replicas: int = 0
    resume: bool = False
    max_minutes: float | None = None
    mirrors: int = 1
    writer_loss: float = 0.0
    stroke_variants: int = 1
    head: str = "pool"  # one of HEADS
    geometry_scale: float = 1.0
    rotation: float = 7.2  # degrees either way at geometry_scale 1 (training/augment.py)
    output_stride: int = 32  # one of OUTPUT_STRIDES
    ink_augmentation: bool = True
    width_multiplier: float = 1.0
    dropout: float = DEFAULT_DROPOUT
    stroke_bend: float = 0.0
    ema: float = 0.0
    weight_decay: float = 0.0
    init_from: str | None = None
    teachers: tuple = ()  # saved towers whose ensemble the tower learns to imitate
    distill_loss: float = 0.0  # the weight of that term (losses.distillation_loss)
    pooled_loss: float = 0.0
    people_fraction: float = 1.0
    forgery_loss: float = 0.0
    bent_forgeries: int = 0
    erase: float = 0.0


TRAINING_DEFAULTS = TrainingOptions()
