"""The evaluation protocol of EVALUATION.md (writer-independent, skilled forgeries, WI-R).

For each writer: the first R genuine signatures (by sample number) are the references; the
remaining genuine ones, every skilled forgery of the writer and one genuine signature of each
other writer of the same dataset are the queries. A query's score is what `edge-verify check`
computes (edge_verify.edge.scoring). Scores of all writers are pooled and one global threshold
is swept. Works on embeddings, so any model (Keras, TFLite float, TFLite int8) plugs in.
"""
from collections import defaultdict

import numpy as np

from edge_verify.edge import scoring
from edge_verify.edge.bundle import UNCALIBRATED
from edge_verify.training.datasets import dataset_weights, people_by_dataset


def writers_of(signatures):
    """{(dataset, writer): {"genuine": [indices by sample], "forged": [indices]}}."""
    groups = defaultdict(lambda: {"genuine": [], "forged": []})
    for i, s in enumerate(signatures):
        groups[(s.dataset, s.writer)]["genuine" if s.genuine else "forged"].append(i)
    for group in groups.values():
        group["genuine"].sort(key=lambda i: signatures[i].sample)
        group["forged"].sort(key=lambda i: signatures[i].sample)
    return dict(sorted(groups.items()))


def protocol_queries(signatures, refs):
    """Per writer with more than `refs` genuine signatures: (key, reference indices, genuine,
    skilled-forgery and random-forgery query indices), as EVALUATION.md lays them out."""
    writers = writers_of(signatures)
    for key, group in writers.items():
        genuine = group["genuine"]
        if len(genuine) <= refs:
            continue
        randoms = [g["genuine"][-1] for k, g in writers.items()
                   if k != key and k[0] == key[0] and g["genuine"]]
        yield key, genuine[:refs], genuine[refs:], group["forged"], randoms


def protocol_scores(signatures, embeddings, refs, calibration=UNCALIBRATED):
    """Adapted distances of the genuine, skilled-forgery and random-forgery queries, per writer."""
    scores = {}
    for key, reference_indices, genuine, skilled, randoms in protocol_queries(signatures, refs):
        references = embeddings[reference_indices]
        # check accepts when distance <= user threshold, i.e. distance - shift <= bundle threshold
        shift = scoring.user_threshold(references, calibration) - float(calibration["threshold"])
        score = lambda indices: np.array(
            [scoring.user_distance(embeddings[i], references) - shift for i in indices], np.float64)
        scores[key] = {"genuine": score(genuine), "skilled": score(skilled),
                       "random": score(randoms), "spread": scoring.reference_spread(references)}
    return scores


def equal_error_rate(genuine, impostor):
    """(EER, threshold): where false rejects of genuine equal false accepts of impostors.

    A query is accepted when its distance is <= the threshold.
    """
    genuine, impostor = np.sort(genuine), np.sort(impostor)
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([genuine, impostor]))])
    frr = 1.0 - np.searchsorted(genuine, thresholds, side="right") / len(genuine)
    far = np.searchsorted(impostor, thresholds, side="right") / len(impostor)
    best = int(np.argmin(np.abs(frr - far)))
    return float((frr[best] + far[best]) / 2), float(thresholds[best])


def threshold_at_far(impostor, far):
    """The largest threshold whose false-accept rate on the impostors is at most `far`."""
    impostor = np.sort(impostor)
    allowed = int(np.floor(far * len(impostor)))
    return float(impostor[allowed] - 1e-6) if allowed < len(impostor) else float(impostor[-1])


def roc_auc(genuine, impostor):
    """Probability that a genuine query is closer than an impostor (ties count half)."""
    genuine, impostor = np.asarray(genuine), np.sort(impostor)
    below = np.searchsorted(impostor, genuine, side="left")
    equal = np.searchsorted(impostor, genuine, side="right") - below
    return float(np.mean((len(impostor) - below - equal + 0.5 * equal) / len(impostor)))


def pooled(scores, kind):
    return np.concatenate([s[kind] for s in scores.values()]) if scores else np.array([])


def rate(errors):
    """The share of True in `errors`; None when there were no queries of that kind."""
    return float(np.mean(errors)) if len(errors) else None


def summarize(scores, refs, threshold):
    """The metrics of EVALUATION.md for one R, from protocol_scores output."""
    genuine, skilled, random = (pooled(scores, k) for k in ("genuine", "skilled", "random"))
    if not len(genuine) or not len(skilled):
        return {"refs": refs, "eer": None, "eer_ci95": None, "writers": len(scores),
                "genuine_queries": int(len(genuine)), "skilled_queries": int(len(skilled)),
                "random_queries": int(len(random))}
    eer, eer_threshold = equal_error_rate(genuine, skilled)
    writer_eers = [equal_error_rate(s["genuine"], s["skilled"])[0]
                   for s in scores.values() if len(s["genuine"]) and len(s["skilled"])]
    return {
        "refs": refs,
        "eer": eer,
        "eer_ci95": bootstrap_eer(scores),
        "eer_threshold": eer_threshold,
        "auc": roc_auc(genuine, skilled),
        "mean_writer_eer": float(np.mean(writer_eers)),
        "threshold": threshold,
        "frr": rate(genuine > threshold),
        "far_skilled": rate(skilled <= threshold),
        "far_random": rate(random <= threshold),
        "writers": len(scores),
        "genuine_queries": int(len(genuine)),
        "skilled_queries": int(len(skilled)),
        "random_queries": int(len(random)),
    }


def bootstrap_eer(scores, other=None, reps=1000, level=0.95, seed=0):
    """Writer-level bootstrap interval of the pooled skilled EER: writers are drawn with
    replacement, their queries pooled, the EER recomputed; (low, high) percentiles. With
    `other` (another model's scores of the same writers), the interval of EER(scores) -
    EER(other) on the same draws: how far apart two models really are on this writer pool."""
    keys = [k for k, s in scores.items() if len(s["genuine"]) and len(s["skilled"])
            and (other is None or k in other)]
    if not keys:
        return None
    rng = np.random.default_rng(seed)

    def eer(scores, drawn):
        return equal_error_rate(np.concatenate([scores[k]["genuine"] for k in drawn]),
                                np.concatenate([scores[k]["skilled"] for k in drawn]))[0]

    values = []
    for _ in range(reps):
        drawn = [keys[i] for i in rng.integers(0, len(keys), len(keys))]
        values.append(eer(scores, drawn) - (eer(other, drawn) if other is not None else 0.0))
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


POOL_REFS = (1, 5)


def dataset_figure(scores_by_refs):
    """One dataset's part of the pool figure: its mean skilled EER over R ({R: protocol_scores});
    an R without queries is left out; None when no R has any."""
    eers = [equal_error_rate(pooled(s, "genuine"), pooled(s, "skilled"))[0] for s in scores_by_refs.values()
            if len(pooled(s, "genuine")) and len(pooled(s, "skilled"))]
    return float(np.mean(eers)) if eers else None


def pool_figure(scores_by, weights=None):
    """The validation pool's figure for choosing between models, from {dataset: {R: protocol_scores}}:
    the mean over datasets of dataset_figure, each dataset weighing the square root of its
    people (datasets.dataset_weights), or as `weights` says."""
    weights = weights or dataset_weights({key for by_refs in scores_by.values() for s in by_refs.values()
                                          for key in s})
    figures = {d: f for d, f in ((d, dataset_figure(b)) for d, b in scores_by.items()) if f is not None}
    return float(sum(weights[d] * f for d, f in figures.items()) / sum(weights[d] for d in figures))


def pool_eer(signatures, embeddings, refs_list=POOL_REFS):
    """pool_figure of embeddings (uncalibrated), with each dataset's figure beside it.
    Datasets without skilled forgeries are left out."""
    by_dataset = defaultdict(list)
    for i, s in enumerate(signatures):
        by_dataset[s.dataset].append(i)
    scores_by = {dataset: {refs: protocol_scores([signatures[i] for i in indices], embeddings[indices], refs)
                           for refs in refs_list}
                 for dataset, indices in sorted(by_dataset.items())}
    per_dataset = {d: f for d, f in ((d, dataset_figure(b)) for d, b in scores_by.items()) if f is not None}
    return {"eer": pool_figure(scores_by), "datasets": per_dataset}


def pool_bootstrap(scores_by, other_by=None, reps=500, level=0.95, seed=0):
    """Person-level bootstrap interval of pool_figure (each dataset's people drawn with
    replacement, each with all of their writer keys; the datasets keep the whole pool's
    weights); with `other_by`, of pool_figure(scores_by) - pool_figure(other_by) on the same
    draws: the difference between two models this pool can resolve."""
    rng = np.random.default_rng(seed)
    keys = sorted({key for by_refs in scores_by.values() for s in by_refs.values() for key in s})
    weights = dataset_weights(keys)
    people = {dataset: list(by_person.values()) for dataset, by_person in people_by_dataset(keys).items()}
    values = []
    for _ in range(reps):
        draw = {dataset: [key for i in rng.integers(0, len(groups), len(groups)) for key in groups[i]]
                for dataset, groups in people.items()}
        resample = lambda by: {d: {r: {i: s[k] for i, k in enumerate(draw[d]) if k in s} for r, s in by_refs.items()}
                               for d, by_refs in by.items()}
        value = pool_figure(resample(scores_by), weights)
        values.append(value - pool_figure(resample(other_by), weights) if other_by else value)
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def evaluate_embeddings(signatures, embeddings, refs_list=(1, 5, 10), calibration=UNCALIBRATED):
    """One result per R, at the calibrated operating threshold."""
    return [summarize(protocol_scores(signatures, embeddings, refs, calibration), refs,
                      float(calibration["threshold"]))
            for refs in refs_list]


def calibrate(signatures, embeddings, refs=5, alphas=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0), far=0.01,
              random_far=0.02):
    """The shipped operating point, chosen on validation writers only.

    reference_spread is the median spread of the writers' references; alpha (the per-user
    adaptation) is the one with the lowest validation EER; threshold is that EER point
    (threshold_eer), lowered where needed so that at most `random_far` of other writers'
    genuine signatures pass (zero-effort impostors are the commonest attack);
    threshold_far1_skilled is the threshold whose skilled-forgery FAR is 1 %. A user enrolled
    with one reference has no spread and is scored against threshold_one_reference: the EER
    point with one reference, capped the same way. threshold_max bounds every adapted threshold:
    the distance (not adapted) within which `random_far` of other writers' genuine signatures
    fall, or the threshold where that is lower. validation_eer is the EER with all of it applied.
    """
    while refs > 2 and not any(protocol_queries(signatures, refs)):  # writers with fewer signatures
        refs -= 1
    spreads = [s["spread"] for s in protocol_scores(signatures, embeddings, refs).values()]
    base = {"threshold": 0.0, "reference_spread": float(np.median(spreads))}
    best = None
    for alpha in alphas:
        calibration = dict(base, alpha=alpha)
        scores = protocol_scores(signatures, embeddings, refs, calibration)
        eer, threshold = equal_error_rate(pooled(scores, "genuine"), pooled(scores, "skilled"))
        if best is None or eer < best[0] - 1e-9:
            best = (eer, threshold, alpha, scores)
    _, threshold, alpha, scores = best
    one = protocol_scores(signatures, embeddings, 1)
    one_threshold = equal_error_rate(pooled(one, "genuine"), pooled(one, "skilled"))[1]
    random_cap = lambda scores: threshold_at_far(pooled(scores, "random"), random_far) \
        if len(pooled(scores, "random")) else np.inf
    capped = min(threshold, random_cap(scores))
    distances = protocol_scores(signatures, embeddings, refs)  # UNCALIBRATED: plain distances
    threshold_max = max(random_cap(distances), capped)
    calibration = {"threshold": capped, "alpha": alpha, "reference_spread": base["reference_spread"],
                   "threshold_max": None if np.isinf(threshold_max) else threshold_max,
                   "threshold_far1_skilled": threshold_at_far(pooled(scores, "skilled"), far),
                   "threshold_one_reference": min(one_threshold, random_cap(one)),
                   "threshold_eer": threshold, "random_far_cap": random_far, "refs": refs}
    final = protocol_scores(signatures, embeddings, refs, calibration)
    return {**calibration, "validation_eer": equal_error_rate(pooled(final, "genuine"), pooled(final, "skilled"))[0]}


def score_split(embedder, signatures, split, refs_list):
    """(calibration, {R: protocol_scores}) of one embedder on one split. A bundle brings its
    calibration; anything else (a Keras tower, the floor) is calibrated here on the validation
    writers of the same signatures."""
    from edge_verify.training.arrays import preprocessed_images, to_model_input
    from edge_verify.training.datasets import select_split

    embed = lambda chosen: embedder.embed(to_model_input(preprocessed_images(chosen, embedder.input_size)))
    calibration = embedder.calibration
    if calibration is None:
        val = select_split(signatures, "val")
        calibration = calibrate(val, embed(val))
    chosen = select_split(signatures, split)
    embeddings = embed(chosen)
    return calibration, {refs: protocol_scores(chosen, embeddings, refs, calibration) for refs in refs_list}


def evaluate_model(model, root, layout=None, split="test", refs_list=(1, 5, 10), threads=2, floor=True):
    """Run EVALUATION.md for one model on one dataset; returns (report, scores by R).

    The operating threshold is the model's calibrated one (a bundle); a bare Keras model is
    calibrated here on the validation writers of the same dataset. With `floor`, the report
    also scores the non-learned floor (training.floor) the same way, and gives the interval of
    the model's EER minus the floor's on the same writers.
    """
    from edge_verify.training.datasets import read_signatures
    from edge_verify.training.embedders import load_embedder
    from edge_verify.training.floor import FLOOR, FLOOR_DESCRIPTION

    embedder = load_embedder(model, threads=threads)
    signatures = read_signatures(root, layout)
    calibration, scores = score_split(embedder, signatures, split, refs_list)
    summary = lambda scores, calibration: [summarize(scores[refs], refs, float(calibration["threshold"]))
                                           for refs in refs_list]
    report = {
        "model": str(embedder.path), "model_sha256": embedder.sha256,
        "dataset": signatures[0].dataset, "data": str(root), "split": split,
        "protocol": "EVALUATION.md WI-R, skilled forgeries; eer_ci95: writer-level bootstrap",
        "calibration": calibration,
        "results": summary(scores, calibration),
    }
    if floor and model != FLOOR:
        floor_calibration, floor_scores = score_split(load_embedder(FLOOR), signatures, split, refs_list)
        report["floor"] = {"descriptor": FLOOR_DESCRIPTION, "calibration": floor_calibration,
                           "results": summary(floor_scores, floor_calibration),
                           "eer_minus_floor_ci95": {refs: bootstrap_eer(scores[refs], floor_scores[refs])
                                                    for refs in refs_list}}
        report["floor_scores"] = floor_scores  # for pooling across datasets; not written to the JSON
    return report, scores


# ------------------------------------------------------------------ the Koch et al. baseline

KOCH_MATCH = 0.95  # Koch et al.: a pair matches when the head's probability is at least this


def koch_protocol_scores(signatures, embeddings, refs, head):
    """protocol_scores for the Koch et al. baseline, whose score is a match probability.

    head: (N, D) absolute differences |e_q - e_r| -> (N,) probabilities. A query's probability is
    its mean over the R references; its "distance" here is 1 - that probability, so that the
    sweep of equal_error_rate and summarize apply unchanged, and "probability >= 0.95" is
    "distance <= 1 - 0.95" (exactly: 1 - p is exact in floating point for p >= 0.5).
    """
    scores = {}
    for key, reference_indices, genuine, skilled, randoms in protocol_queries(signatures, refs):
        references = np.asarray(embeddings[reference_indices], np.float32)

        def score(indices):
            if not indices:
                return np.array([], np.float64)
            queries = np.asarray(embeddings[indices], np.float32)
            differences = np.abs(queries[:, None, :] - references[None, :, :]).reshape(-1, references.shape[1])
            probability = np.asarray(head(differences), np.float64).reshape(len(indices), refs)
            return 1.0 - probability.mean(axis=1)

        scores[key] = {"genuine": score(genuine), "skilled": score(skilled),
                       "random": score(randoms), "spread": None}
    return scores


def koch_evaluate_embeddings(signatures, embeddings, head, refs_list=(1, 5, 10), match=KOCH_MATCH):
    """EVALUATION.md for the Koch baseline, one result per R, at "match if probability >= match".

    Thresholds in the results (eer_threshold, threshold) are on the 1 - probability scale.
    """
    return [summarize(koch_protocol_scores(signatures, embeddings, refs, head), refs, 1.0 - match)
            for refs in refs_list]
