"""The evaluation report: JSON and a DET curve beside it."""
import json
from pathlib import Path

import numpy as np

from edge_verify.training.evaluate import pooled


def det_curve(genuine, impostor, points=200):
    """(FAR, FRR) pairs over thresholds spanning the scores."""
    thresholds = np.quantile(np.concatenate([genuine, impostor]), np.linspace(0, 1, points))
    far = np.array([np.mean(impostor <= t) for t in thresholds])
    frr = np.array([np.mean(genuine > t) for t in thresholds])
    return far, frr


def plot_det(scores_by_refs, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 5))
    for refs, scores in scores_by_refs.items():
        far, frr = det_curve(pooled(scores, "genuine"), pooled(scores, "skilled"))
        axes.plot(100 * far, 100 * frr, label=f"{refs} reference{'s' if refs > 1 else ''}")
    axes.plot([0, 100], [0, 100], color="grey", linewidth=0.5)
    axes.set(xlabel="false accepts of skilled forgeries (%)", ylabel="false rejects of genuine (%)",
             xlim=(0, 50), ylim=(0, 50), title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(report, scores_by_refs, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    plot_det(scores_by_refs, f"{report['dataset']} ({report['split']} writers)", path.with_suffix(".png"))
    return path, path.with_suffix(".png")
