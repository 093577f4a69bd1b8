"""The names a training setting may take, each defined once: the `train` command's options and
the code that acts on them read them from here.

No imports: the workstation commands build their options from these at start-up, which must
not load TensorFlow.
"""

OBJECTIVES = ("triplet", "contrastive", "cotuplet", "koch")  # training/losses.py, one function each
HEADS = ("pool", "flatten", "multiscale")  # how the tower's last feature map becomes the embedding
OUTPUT_STRIDES = (32, 16)  # how much smaller a side of the tower's last feature map is than the input
DEFAULT_DROPOUT = 0.2  # the rate of the dropout layer before the tower's embedding layer
