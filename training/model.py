"""The embedding tower and the Siamese heads.

The tower maps one preprocessed signature (H, W, 1), ink high in [0, 1], to an L2-normalised
embedding. It uses only layers that quantise to int8 and map onto the Coral Edge TPU:
Conv2D, DepthwiseConv2D, BatchNormalization (folded at conversion), ReLU6, global average
pooling, Dense and a unit normalisation (which the device applies in float after the int8
model: see convert.export_saved_model).
"""
import keras
from keras import layers

from edge_verify.training.choices import DEFAULT_DROPOUT, HEADS, OUTPUT_STRIDES

# (filters, stride) of the depthwise-separable blocks after the stem.
TOWER_BLOCKS = [(64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (256, 1), (512, 2)]


def conv_bn_relu(x, filters, kernel_size=3, strides=1, name=None):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def separable_block(x, filters, strides, name):
    """MobileNet block: 3x3 depthwise conv, then 1x1 pointwise conv, each with BN + ReLU6."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return conv_bn_relu(x, filters, kernel_size=1, name=f"{name}_pw")


FLATTEN_CHANNELS = 128  # the last map is narrowed to this many channels before it is flattened
MULTISCALE_CHANNELS = 256  # channels of the fused map the multiscale head pools


def widened(filters, multiplier):
    """`filters` times a width multiplier, in multiples of 8 (as MobileNet's alpha)."""
    return max(8, int(round(filters * multiplier / 8)) * 8)


def build_tower(input_size=(96, 192), embedding_size=128, stem_filters=32, dropout=DEFAULT_DROPOUT, head="pool",
                output_stride=32, width_multiplier=1.0):
    """The compact embedding network that ships on the device (~0.5 M parameters with the
    pooling head, ~0.7 M with the flatten head at 96x192).

    head "pool": global average pooling of the last map, which keeps what the features are but
    not where they are; "flatten": the last map (1/32 of the input a side) narrowed by a 1x1
    convolution and flattened, so the embedding also knows where each stroke feature sits, as
    the fully connected layers of SigNet-style networks do.

    output_stride 16 keeps the last block at the size of the one before (stride 1), so the
    flatten head sees twice as many cells a side (HOG's cells are 8 px; 32 px is coarse).

    width_multiplier multiplies the filters of the stem and of every block (1.5: about twice the
    parameters and multiply-adds of the blocks).

    head "multiscale" (after MS-SigNet, Huang & Lu 2023): the map at 1/16 (the last block is not
    used), in two branches, each multiplied by shallower features (blocks 3 and 5, brought to
    1/16) so that fine stroke detail reaches the embedding; one branch average-pooled whole,
    the other over 3 overlapping column strips and 3 overlapping row strips; each of the 7
    pooled vectors goes through one shared Dense layer, and the 7 parts are concatenated.

    dropout is the rate at which training drops the features that feed the embedding layer
    (the device never drops any).
    """
    if head not in HEADS:
        raise ValueError(f"head is one of {HEADS}, not {head!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride is one of {OUTPUT_STRIDES}, not {output_stride!r}")
    if head == "multiscale" and output_stride != 32:
        raise ValueError("the multiscale head sets its own grid (1/16): leave output_stride at 32")
    blocks = TOWER_BLOCKS if output_stride == 32 else TOWER_BLOCKS[:-1] + [(TOWER_BLOCKS[-1][0], 1)]
    if head == "multiscale":
        blocks = TOWER_BLOCKS[:-1]
    height, width = input_size
    image = keras.Input((height, width, 1), name="signature")
    x = conv_bn_relu(image, widened(stem_filters, width_multiplier), strides=2, name="stem")
    maps = []
    for i, (filters, strides) in enumerate(blocks):
        x = separable_block(x, widened(filters, width_multiplier), strides, name=f"block{i + 1}")
        maps.append(x)
    if head == "multiscale":
        return multiscale_head(image, maps, embedding_size, dropout)
    if head == "flatten":
        x = conv_bn_relu(x, FLATTEN_CHANNELS, kernel_size=1, name="narrow")
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(embedding_size, name="embedding_dense")(x)
    embedding = layers.UnitNormalization(name="embedding")(x)
    return keras.Model(image, embedding, name="tower")


def multiscale_head(image, maps, embedding_size, dropout):
    """The multiscale head of build_tower: `maps` are the outputs of blocks 1-7 (1/16 at the end)."""
    channels = MULTISCALE_CHANNELS
    deep = maps[-1]
    # shallow features at 1/4 (block 3) and 1/8 (block 5), brought to the deep map's 1/16 grid
    # Each factor of the products is batch-normalised after its ReLU6, as in MS-SigNet, so that it
    # is seldom exactly 0 (a product of three ReLU outputs would pass gradients at few places).
    factor = lambda x, name: layers.BatchNormalization(momentum=0.9, name=f"{name}_factor_bn")(
        separable_block(x, channels, strides=2 if name.startswith("shallow") else 1, name=name))
    shallow_a = factor(layers.AveragePooling2D(2, name="shallow_a_pool")(maps[2]), "shallow_a")
    shallow_b = factor(maps[4], "shallow_b")
    fused = [layers.Multiply(name=f"{branch}_fused")([factor(deep, f"{branch}_branch"), shallow_a, shallow_b])
             for branch in ("global", "regional")]
    rows, cols = deep.shape[1], deep.shape[2]
    pools = {"global": (fused[0], (rows, cols), (rows, cols)),  # the whole map
             "column": (fused[1], (rows, cols // 2), (rows, (cols - cols // 2) // 2)),  # 3 strips, half as wide
             "row": (fused[1], (rows - 2, cols), (1, cols))}  # 3 strips, 2 rows less high than the map
    parts = [layers.Reshape((1, -1, channels), name=f"{name}_parts")(
                 layers.AveragePooling2D(size, strides=strides, name=f"{name}_pool")(x))
             for name, (x, size, strides) in pools.items()]
    x = layers.Concatenate(axis=2, name="parts")(parts)  # (1, 7, channels)
    x = layers.Dropout(dropout, name="dropout")(x)
    # one Dense layer shared by the 7 parts, as a 1x1 convolution (the Edge TPU's fully connected
    # layers give one-dimensional outputs only)
    x = layers.Conv2D(embedding_size // 2, 1, name="embedding_dense")(x)
    x = layers.Flatten(name="flatten")(x)
    embedding = layers.UnitNormalization(name="embedding")(x)
    return keras.Model(image, embedding, name="tower")


def build_koch_tower(input_size=(64, 128)):
    """The Koch et al. (2015) Siamese tower as used for signatures: the benchmark's baseline.

    conv 64@10x10 -> pool -> 128@7x7 -> pool -> 128@4x4 -> pool -> 256@4x4 -> 4096-d sigmoid;
    on a 64x128 input that is about 35 M parameters, nearly all in the last Dense layer.
    """
    height, width = input_size
    image = keras.Input((height, width, 1), name="signature")
    x = layers.Conv2D(64, 10, activation="relu", name="conv1")(image)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(128, 7, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(128, 4, activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(name="pool3")(x)
    x = layers.Conv2D(256, 4, padding="same", activation="relu", name="conv4")(x)
    x = layers.Flatten(name="flatten")(x)
    embedding = layers.Dense(4096, activation="sigmoid", name="embedding")(x)
    return keras.Model(image, embedding, name="koch_tower")


def build_koch_head(embedding_size):
    """Koch et al. head: |a - b| -> Dense(1) -> sigmoid, the probability that a and b match."""
    difference = keras.Input((embedding_size,), name="l1_distance")
    probability = layers.Dense(1, activation="sigmoid", name="match_probability")(difference)
    return keras.Model(difference, probability, name="koch_head")


ARCHITECTURES = {"tower": build_tower, "koch": build_koch_tower}
