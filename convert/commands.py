"""CLI command of the converter workstation: convert. TensorFlow is imported only when it runs."""
import click


@click.command()
def convert():
    """Turn a trained tower into a device model bundle (needs edge-verify[train])."""
    raise click.ClickException("not implemented yet")
