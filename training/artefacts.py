"""Scan artefacts: can a dataset's forgeries be told from its genuine signatures without
looking at the signature at all?

If forgeries were scanned or collected differently (brighter paper, another pen), a model that
sees raw grey levels can score a low EER from that alone, and its figure says nothing about
signatures. For each image this measures two global grey levels of the raw scan (the paper and
the ink, split by Otsu's threshold), and the mean ink value of the network's input (after
`preprocess`, which removes the paper but keeps the ink's tone, and at 96 x 192 px, where thin
strokes come out lighter). Each is scored as a "model" through EVALUATION.md's protocol with
one reference: the distance of a query is the absolute difference of the level. An EER far
below 50 % means the level gives forgeries away: a published result on images that keep it may
owe its figure to it, and a model that reads it would learn the pen, not the hand.

    python -m edge_verify.training.artefacts --data ../shared/datasets/cedar [--split train]
"""
import click
import cv2
import numpy as np

from edge_verify.edge.image_io import load_image
from edge_verify.edge.preprocess import preprocess, to_grey
from edge_verify.training.datasets import SPLIT_NAMES, is_stroke_file, read_signatures, select_split
from edge_verify.training.evaluate import equal_error_rate, protocol_queries

LEVELS = ("paper grey", "ink grey", "network's ink tone")


def grey_levels(path) -> np.ndarray:
    """(paper, ink, tone): the mean grey level of the raw scan above and below Otsu's threshold,
    and the mean value of the ink in the preprocessed network input."""
    image = load_image(path)
    network_input = preprocess(image)
    tone = network_input[network_input > 0].mean()
    grey = to_grey(image)
    threshold, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    ink = grey <= threshold  # Otsu: above the threshold is the brighter class
    if ink.all() or not ink.any():
        return np.array([grey.mean(), grey.mean(), tone])
    return np.array([grey[~ink].mean(), grey[ink].mean(), tone])


def artefact_eers(signatures) -> dict[str, float]:
    """{level: skilled-forgery EER of that level alone, one reference}; {} without forgeries
    or for pen-stroke files (they have no scan)."""
    signatures = [s for s in signatures if not is_stroke_file(s.path)]
    queries = [(references[0], genuine, skilled)
               for _, references, genuine, skilled, _ in protocol_queries(signatures, 1) if skilled]
    if not queries:
        return {}
    levels = np.array([grey_levels(s.path) for s in signatures])
    eers = {}
    for column, level in enumerate(LEVELS):
        value = levels[:, column]
        distance = lambda reference, others: np.abs(value[others] - value[reference])
        genuine = np.concatenate([distance(reference, queried) for reference, queried, _ in queries])
        skilled = np.concatenate([distance(reference, forged) for reference, _, forged in queries])
        eers[level] = equal_error_rate(genuine, skilled)[0]
    return eers


@click.command()
@click.option("--data", "roots", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder; repeat for several.")
@click.option("--split", type=click.Choice(SPLIT_NAMES), default="train", show_default=True,
              help="Whose signatures to measure (a check of the data, not of a model: train is enough).")
def main(roots, split):
    """Print, per dataset, the EER that the paper's and the ink's grey level, and the network's
    ink tone, alone reach."""
    for root in roots:
        eers = artefact_eers(select_split(read_signatures(root), split))
        if not eers:
            click.echo(f"{root}: no scanned skilled forgeries to compare")
            continue
        found = ", ".join(f"{level} alone {100 * eer:.1f} %" for level, eer in eers.items())
        click.echo(f"{root} ({split} writers): skilled-forgery EER with one reference: {found}")


if __name__ == "__main__":
    main()
