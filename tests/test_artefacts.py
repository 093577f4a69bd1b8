"""The scan-artefact check: a dataset whose forgeries sit on brighter paper is caught."""
import cv2
import numpy as np
from click.testing import CliRunner

from edge_verify.training.artefacts import artefact_eers, main
from edge_verify.training.datasets import read_signatures


def write_cedar(root, forged_paper, writers=4, samples=6, seed=0, pens=(2, 2), scale=1):
    """A CEDAR-layout folder of scribbles; genuine paper is 230 +- 3, forged paper `forged_paper` +- 3.
    Strokes `pens` px wide (genuine, forged); images `scale` x 60 x 160 px."""
    rng = np.random.default_rng(seed)
    for writer in range(1, writers + 1):
        for sample in range(1, samples + 1):
            for kind, paper, pen in (("original", 230, pens[0]), ("forgeries", forged_paper, pens[1])):
                image = np.full((60 * scale, 160 * scale), paper + int(rng.integers(-3, 4)), np.uint8)
                points = scale * rng.integers((10, 10), (150, 50), (6, 2)).astype(np.int32)
                cv2.polylines(image, [points], False, int(rng.integers(20, 60)), pen)
                cv2.imwrite(str(root / f"{kind}_{writer}_{sample}.png"), image)
    return root


def test_forgeries_on_brighter_paper_are_given_away_by_the_paper_alone(tmp_path):
    eers = artefact_eers(read_signatures(write_cedar(tmp_path, forged_paper=250)))
    assert eers["paper grey"] < 0.05
    assert eers["ink grey"] > 0.2


def test_forgeries_on_the_same_paper_are_not(tmp_path):
    eers = artefact_eers(read_signatures(write_cedar(tmp_path, forged_paper=230)))
    assert eers["paper grey"] > 0.2
    assert eers["network's ink tone"] > 0.2


def test_forgeries_in_a_finer_pen_are_given_away_by_the_networks_ink_tone(tmp_path):
    """Another pen: the preprocessing scales the darkest ink to 1, but a fine pen's strokes, shrunk to
    the network's 96 x 192 px, come out paler."""
    eers = artefact_eers(read_signatures(write_cedar(tmp_path, forged_paper=230, pens=(8, 2), scale=4)))
    assert eers["network's ink tone"] < 0.05
    assert eers["paper grey"] > 0.2


def test_the_command_prints_one_line_per_dataset(tmp_path):
    result = CliRunner().invoke(main, ["--data", str(write_cedar(tmp_path, 250)), "--split", "all"])
    assert result.exit_code == 0, result.output
    assert "paper grey alone" in result.output and result.output.count("\n") == 1
