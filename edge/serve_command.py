"""The `serve` command of the CLI (registered in edge/cli.py). The service is edge/serve.py,
imported only when the command runs, so the other commands do not load Starlette or uvicorn."""
import os

import click

EPILOG = """\b
Endpoints, authentication and errors: README, "The local service and the capture page".
Stops cleanly on SIGTERM or Ctrl-C: requests in flight finish, then the store is closed.
"""


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --allow-remote and a token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port; the URL printed names it).")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="File holding the bearer token [default: the EDGE_VERIFY_TOKEN variable].")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host (needs a token; the traffic is plain HTTP).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Requests scored at once; each worker holds its own interpreter and store connection.")
@click.pass_obj
def serve(settings, host, port, token_file, allow_remote, workers):
    """Run the local verification service (HTTP + JSON) and the browser capture page at /.

    Prints the service's address and a one-time link for the capture page. Every endpoint
    but /v1/health needs 'Authorization: Bearer TOKEN' (EDGE_VERIFY_TOKEN or --token-file) or
    the page's session cookie.
    """
    from edge_verify.edge import serve as service
    from edge_verify.edge.cli import lockout_settings, profile_threshold

    token = service.read_token(token_file, os.environ)
    service.check_exposure(host, allow_remote, token)
    meta = click.get_current_context().meta
    service.serve(settings, host=host, port=port, workers=workers, token=token,
                  lockout=lockout_settings(False), threshold=profile_threshold(None),
                  profile={"name": meta["profile_name"], "settings": meta["profile"]},
                  announce=click.echo)
