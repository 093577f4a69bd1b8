"""Siamese objectives computed over every pair in a batch of embeddings.

A batch holds a few writers, each with genuine signatures and skilled forgeries. Pairs:
- positive: two genuine signatures of one writer;
- negative: a genuine signature and a skilled forgery of the same writer, or a genuine
  signature and any signature of another writer.
Two forgeries are never paired (they come from different forgers). The co-tuplet loss uses
only the skilled forgeries of the anchor's writer as negatives.
"""
import tensorflow as tf


def off_diagonal(size):
    """(size, size) boolean mask of every pair of two different images of a batch."""
    return tf.logical_not(tf.eye(size, dtype=tf.bool))


def pair_masks(writers, genuine):
    """(B, B) boolean masks of the positive and negative pairs; the anchor (row) is genuine."""
    same_writer = tf.equal(writers[:, None], writers[None, :])
    genuine = tf.cast(genuine, tf.bool)
    anchor = genuine[:, None]
    not_self = off_diagonal(tf.shape(writers)[0])
    positive = anchor & same_writer & genuine[None, :] & not_self
    negative = anchor & (tf.logical_not(same_writer) | tf.logical_not(genuine[None, :]))
    return positive, negative


def skilled_pairs(writers, negative):
    """The negative pairs within one writer: a genuine signature and a skilled forgery of it."""
    return negative & tf.equal(writers[:, None], writers[None, :])


def pairwise_squared_distances(embeddings):
    """Squared Euclidean distances between every two embeddings of a batch."""
    return tf.reduce_sum(tf.square(embeddings[:, None, :] - embeddings[None, :, :]), axis=-1)


def pairwise_distances(embeddings):
    """Euclidean distances between every two embeddings of a batch."""
    return tf.sqrt(tf.maximum(pairwise_squared_distances(embeddings), 1e-12))


def masked_mean(values, mask):
    mask = tf.cast(mask, values.dtype)
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def contrastive_loss(embeddings, writers, genuine, margin=1.0):
    """Hadsell, Chopra & LeCun (2006): pull positives together, push negatives past a margin.

    Skilled forgeries and other writers are pushed as two equal terms: in a batch the other
    writers' signatures outnumber a writer's forgeries many times, and would drown them.
    """
    positive, negative = pair_masks(writers, genuine)
    skilled = skilled_pairs(writers, negative)
    random = negative & tf.logical_not(skilled)
    distance = pairwise_distances(embeddings)
    pull = masked_mean(tf.square(distance), positive)
    push = tf.square(tf.nn.relu(margin - distance))
    return pull + 0.5 * (masked_mean(push, skilled) + masked_mean(push, random))


def triplet_loss(embeddings, writers, genuine, margin=0.3, mining="hard"):
    """Triplet loss with in-batch mining (Schroff et al. 2015; Hermans et al. 2017).

    hard: each anchor's farthest positive against its closest negative.
    semihard: every positive, against the closest negative farther than it (else the farthest).
    """
    positive, negative = pair_masks(writers, genuine)
    distance = pairwise_distances(embeddings)
    big = tf.reduce_max(distance) + 1.0
    if mining == "hard":
        hardest_positive = tf.reduce_max(tf.where(positive, distance, 0.0), axis=1)
        hardest_negative = tf.reduce_min(tf.where(negative, distance, big), axis=1)
        has_triplet = tf.reduce_any(positive, axis=1) & tf.reduce_any(negative, axis=1)
        return masked_mean(tf.nn.relu(hardest_positive - hardest_negative + margin), has_triplet)
    # semihard: for every (anchor, positive), a negative with d_ap < d_an, the closest one.
    d_ap = distance[:, :, None]
    d_an = distance[:, None, :]
    semihard = negative[:, None, :] & (d_an > d_ap)
    closest_semihard = tf.reduce_min(tf.where(semihard, d_an, big), axis=2)
    farthest_negative = tf.reduce_max(tf.where(negative, distance, 0.0), axis=1)[:, None]
    chosen = tf.where(tf.reduce_any(semihard, axis=2), closest_semihard, farthest_negative)
    valid = positive & tf.reduce_any(negative, axis=1)[:, None]
    return masked_mean(tf.nn.relu(distance - chosen + margin), valid)


def cotuplet_loss(embeddings, writers, genuine, epsilon=0.2):
    """Co-tuplet loss (Huang & Lu 2023, MS-SigNet), on squared distances: a soft-margin tuplet
    of each genuine anchor against its writer's other genuine signatures and its writer's skilled
    forgeries only (a writer with none in the batch takes the other writers' signatures).

    With d+ the anchor's farthest positive and d- its closest negative, every positive farther
    than d- - epsilon adds exp(d_p - d-), every negative closer than d+ + epsilon adds
    exp(d+ - d_n); the anchor's loss is log(1 + the sum).
    """
    positive, negative = pair_masks(writers, genuine)
    skilled = skilled_pairs(writers, negative)
    negative = tf.where(tf.reduce_any(skilled, axis=1, keepdims=True), skilled, negative)
    distance = pairwise_squared_distances(embeddings)
    farthest_positive = tf.reduce_max(tf.where(positive, distance, 0.0), axis=1, keepdims=True)
    closest_negative = tf.reduce_min(tf.where(negative, distance, tf.reduce_max(distance) + 1.0),
                                     axis=1, keepdims=True)
    hard_positive = positive & (distance >= closest_negative - epsilon)
    hard_negative = negative & (distance <= farthest_positive + epsilon)
    total = (tf.reduce_sum(tf.where(hard_positive, tf.exp(distance - closest_negative), 0.0), axis=1)
             + tf.reduce_sum(tf.where(hard_negative, tf.exp(farthest_positive - distance), 0.0), axis=1))
    has_tuplet = tf.reduce_any(positive, axis=1) & tf.reduce_any(negative, axis=1)
    return masked_mean(tf.math.log1p(total), has_tuplet)


def pooled_ranking_loss(embeddings, writers, genuine, sharpness=10.0):
    """Every genuine pair of the batch against every skilled-forgery pair of the batch, whoever
    the writers: the mean of softplus(sharpness x (d+ - d-)) / sharpness on squared distances.

    The per-anchor objectives (co-tuplet, triplet) only order each writer's own pairs; the device
    holds every writer to one threshold, and the evaluation pools all writers' scores. This term
    asks that one writer's genuine pairs also sit closer than another writer's forgery pairs:
    one distance scale for all writers. 0 for a batch without skilled forgeries.
    """
    positive, negative = pair_masks(writers, genuine)
    skilled = skilled_pairs(writers, negative)
    distance = pairwise_squared_distances(embeddings)
    positives = tf.boolean_mask(distance, positive)
    negatives = tf.boolean_mask(distance, skilled)
    margins = positives[:, None] - negatives[None, :]
    return tf.math.divide_no_nan(tf.reduce_sum(tf.math.softplus(sharpness * margins)),
                                 sharpness * tf.cast(tf.size(margins), tf.float32))


def forgery_loss(embeddings, genuine, counted, head):
    """Forgery classification of single images, as an extra term beside a pair objective (SigNet-F,
    Hafemann, Sabourin & Oliveira 2017): `head` (a Dense(1) layer) reads each embedding alone and
    says forged or genuine, so the embedding must carry what skilled forgeries of any writer have
    in common. Only the images where `counted` is true take part (genuine signatures, and forgeries
    that are imitations); genuine and forged weigh the same. 0 when either class is absent.
    """
    genuine = tf.cast(genuine, tf.bool)
    counted = tf.cast(counted, tf.bool)
    logits = tf.squeeze(head(embeddings), axis=-1)
    forged = tf.cast(tf.logical_not(genuine), tf.float32)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=forged, logits=logits)
    real, fake = genuine & counted, tf.logical_not(genuine) & counted
    both = tf.cast(tf.reduce_any(real) & tf.reduce_any(fake), tf.float32)
    return both * 0.5 * (masked_mean(cross_entropy, real) + masked_mean(cross_entropy, fake))


def koch_loss(embeddings, writers, genuine, head):
    """Koch, Zemel & Salakhutdinov (2015): |a - b| -> Dense -> sigmoid, binary cross-entropy.

    Positive and negative pairs are weighted equally, whatever their counts in the batch.
    """
    positive, negative = pair_masks(writers, genuine)
    rows, cols = tf.unstack(tf.cast(tf.where(positive | negative), tf.int32), axis=1)
    difference = tf.abs(tf.gather(embeddings, rows) - tf.gather(embeddings, cols))
    probability = tf.squeeze(head(difference), axis=-1)
    label = tf.gather_nd(positive, tf.stack([rows, cols], axis=1))
    bce = tf.keras.losses.binary_crossentropy(tf.cast(label, tf.float32)[:, None],
                                              probability[:, None])
    return 0.5 * (masked_mean(bce, label) + masked_mean(bce, tf.logical_not(label)))


def writer_softmax_loss(embeddings, writers, genuine, centres, scale=16.0):
    """Writer classification of the genuine signatures, as an extra term beside a pair objective.

    A cosine softmax (NormFace, Wang et al. 2017): each training writer has a learned unit
    centre (a column of `centres`, (D, writers)); the logits are `scale` x the cosine of the
    unit embedding with each centre. Unlike the pairs of one batch, it places every training
    writer against all the others at each step.
    """
    logits = scale * tf.matmul(embeddings, tf.math.l2_normalize(centres, axis=0))
    cross_entropy = tf.keras.losses.sparse_categorical_crossentropy(writers, logits, from_logits=True)
    return masked_mean(cross_entropy, tf.cast(genuine, tf.bool))


def distillation_loss(embeddings, teacher_embeddings):
    """Relational knowledge distillation (Park et al. 2019): the student's cosine similarity of
    every two images of the batch should equal the teachers'. `teacher_embeddings` is a list of
    (B, D_i) unit embeddings, one per teacher; their ensemble's similarity is the mean of theirs,
    as for the concatenation of the teachers' embeddings. The mean squared difference over the
    pairs (the diagonal, always 1, left out)."""
    student = tf.matmul(embeddings, embeddings, transpose_b=True)
    teacher = tf.add_n([tf.matmul(t, t, transpose_b=True) for t in teacher_embeddings]) / len(teacher_embeddings)
    return masked_mean(tf.square(student - tf.stop_gradient(teacher)), off_diagonal(tf.shape(embeddings)[0]))
