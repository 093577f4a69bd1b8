"""Augmentation of preprocessed signatures that mimics real capture.

Works on batches (B, H, W, 1) of ink-high images in [0, 1], inside the tf.data pipeline:
small rotation, scale, shear and shift; thicker or thinner strokes; blur; ink intensity;
grain on the ink. The background stays exactly 0, as `preprocess` leaves it on the device
(paper texture and noise are handled by preprocessing, so the network never sees them).
"""
from functools import cache

import keras
import tensorflow as tf

from edge_verify.training.choices import TRAINING_DEFAULTS


@cache
def geometry(scale=1.0, rotation=TRAINING_DEFAULTS.rotation):
    """Small rotation (up to `rotation` degrees either way), scale, shear and shift, each range
    times `scale` (built on first use: it creates TF state). Slant and proportions are also what
    gives a forgery away, so an embedding taught to ignore large changes of them may stop seeing
    them: `scale` < 1 keeps them."""
    return keras.Sequential([
        keras.layers.RandomRotation(rotation / 360 * scale, fill_mode="constant"),  # a factor is of a turn
        keras.layers.RandomZoom((-0.1 * scale, 0.1 * scale), fill_mode="constant"),
        keras.layers.RandomShear(x_factor=0.15 * scale, y_factor=0.05 * scale, fill_mode="constant"),
        keras.layers.RandomTranslation(0.05 * scale, 0.05 * scale, fill_mode="constant"),
    ], name="geometry")


def dilate(images):
    return tf.nn.max_pool2d(images, 3, 1, "SAME")


def erode(images):
    return -tf.nn.max_pool2d(-images, 3, 1, "SAME")


def blur(images):
    kernel = tf.constant([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
    return tf.nn.depthwise_conv2d(images, kernel[:, :, None, None], [1, 1, 1, 1], "SAME")


def per_image(batch_size, probability):
    """A (B, 1, 1, 1) mask that picks each image with the given probability."""
    return tf.random.uniform((batch_size, 1, 1, 1)) < probability


def erase(images, probability, largest=0.3):
    """Random erasing (Zhong et al. 2020): in each image picked with `probability`, a rectangle of
    10 % to `largest` of each side set to the background's 0, as if that part had not been
    written, so that no one part of a signature carries the embedding alone."""
    shape = tf.shape(images)
    batch, extent = shape[0], tf.cast(shape[1:3], tf.float32)[:, None, None, None]  # (height, width)
    sides = tf.random.uniform((2, batch, 1, 1), 0.1, largest) * extent
    corner = tf.random.uniform((2, batch, 1, 1)) * (extent - sides)
    rows = tf.range(extent[0, 0, 0, 0])[None, :, None]
    columns = tf.range(extent[1, 0, 0, 0])[None, None, :]
    inside = ((rows >= corner[0]) & (rows < corner[0] + sides[0])
              & (columns >= corner[1]) & (columns < corner[1] + sides[1]))
    picked = tf.random.uniform((batch, 1, 1)) < probability
    return tf.where((inside & picked)[..., None], 0.0, images)


def augment(images, geometry_scale=1.0, ink=True, erase_probability=0.0,
            rotation=TRAINING_DEFAULTS.rotation):
    """Return a randomly altered copy of a batch of preprocessed signatures.

    ink False leaves the strokes as they are (no thickening, thinning, blur, intensity or grain):
    line quality and pen pressure are also what gives a forgery away. erase_probability: the
    share of images that lose a rectangle (`erase`). rotation: the largest turn, in degrees either
    way, at geometry_scale 1.
    """
    shape = tf.shape(images)
    batch = shape[0]
    x = geometry(geometry_scale, rotation)(images, training=True) if geometry_scale else images
    if erase_probability:
        x = erase(x, erase_probability)
    if not ink:
        return x
    x = tf.where(per_image(batch, 0.25), dilate(x), x)
    x = tf.where(per_image(batch, 0.15), erode(x), x)
    x = tf.where(per_image(batch, 0.3), blur(x), x)
    x = x * tf.random.uniform((batch, 1, 1, 1), 0.7, 1.2)
    # Grain on the ink only: the background stays exactly 0, as preprocess leaves every device image.
    noise = tf.random.normal(shape, stddev=1.0) * tf.random.uniform((batch, 1, 1, 1), 0.0, 0.04)
    x = tf.where(x > 0, x + noise, 0.0)
    return tf.clip_by_value(x, 0.0, 1.0)
