"""The `edge-verify` command line: a thin wrapper around the public functions of edge_verify.edge.

Exit codes: 0 match / ok, 1 no match, 2 error (one line on stderr).
Workstation commands (train, evaluate, convert) live in training/ and convert/ and import
TensorFlow only when they run.
"""
import click

from edge_verify.convert.commands import convert
from edge_verify.training.commands import evaluate, evaluate_omniglot, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-verify")
def main():
    """Offline handwritten-signature verification on the device."""


main.add_command(train)
main.add_command(evaluate)
main.add_command(evaluate_omniglot)
main.add_command(convert)
