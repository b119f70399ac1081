"""``qaudio ui``: ``qaudio serve`` with its page opened in the browser once the model is
loaded."""

from __future__ import annotations

from typing import Any

import click

from .main import handle_errors, main
from .serve import serve_with, server_options


@main.command()
@server_options
@click.option(
    "--no-browser", is_flag=True, help="Do not open a browser; print the page's address only."
)
@handle_errors
@click.pass_context
def ui(ctx: click.Context, **opts: Any) -> None:
    """Serve the model and open its page in the browser: talk to it, transcribe a
    recording, live captions from the microphone, and what runs here.

    Everything `qaudio serve` takes, the same way (the page needs no internet; with
    --api-key the page asks for the key once per tab). Ctrl+C stops the server.

    \b
    Examples:
      qaudio ui
      qaudio ui --port 8080 --api-key-file ~/.qaudio-key
    """
    if opts["no_ui"]:
        raise click.UsageError("qaudio ui serves the page; --no-ui is for qaudio serve")
    no_browser = opts.pop("no_browser")

    def open_page(url: str) -> None:
        if no_browser:
            return
        import webbrowser

        if not webbrowser.open(url):
            click.echo(f"no browser could be opened here: open {url} yourself", err=True)

    serve_with(ctx, opts, then=open_page)


# qaudio ui always serves the page: keep serve's --no-ui out of its --help (it is still
# refused with a clear error if given)
for _param in ui.params:
    if _param.name == "no_ui" and isinstance(_param, click.Option):
        _param.hidden = True
