"""CLI commands of the training workstation: train, evaluate, evaluate-omniglot.

TensorFlow is imported inside each command, never at module import.
"""
import click


@click.command()
def train():
    """Train the Siamese signature embedding (needs edge-verify[train])."""
    raise click.ClickException("not implemented yet")


@click.command()
def evaluate():
    """Score a model on a dataset with the protocol of EVALUATION.md."""
    raise click.ClickException("not implemented yet")


@click.command("evaluate-omniglot")
def evaluate_omniglot():
    """Score a model on Lake's 20-way one-shot runs."""
    raise click.ClickException("not implemented yet")
