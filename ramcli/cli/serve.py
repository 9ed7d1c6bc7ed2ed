"""`ramcli serve`: the local gallery (``ramcli.web``), run by uvicorn."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app


@app.command()
def serve(
    index: o.IndexOpt = None,
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback needs --token.")]
    = "127.0.0.1",
    token: Annotated[str | None, typer.Option(
        "--token", help="Require this token on every request (give it once as ?token=…; a cookie keeps it). "
                        "`--token auto` makes one and prints the URL.")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the gallery in the default browser.")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Whose tags (default: the model that tagged "
                                                                    "most photos).")] = None,
) -> None:
    """Look at your library: search, thumbnails, every tag with its score, confirm/reject, add a tag.

    Example: `ramcli serve --open`  then search, or open http://127.0.0.1:8765/search?q=red+bicycle

    Binds 127.0.0.1 (this machine only). Ctrl-C stops it.
    """
    import uvicorn

    from ramcli import Library
    from ramcli.errors import UsageError
    from ramcli.web.app import create_app

    if token == "auto":
        token = secrets.token_urlsafe(16)
    if not _loopback(host) and not token:
        render.fail(UsageError(f"--host {host} lets other machines in: give --token (or --token auto)",
                               hint="or leave --host out: 127.0.0.1 serves this machine only"))
    lib = Library(index, model=model, download=False, report=render.say)
    with render.errors():
        lib.open_index().close()  # no index: one clear line now, not an error page later
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/" + (f"?token={token}" if token else "")
    render.say(f"ramcli gallery at {url} (Ctrl-C stops it)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    uvicorn.run(create_app(lib, token=token), host=host, port=port, log_level="warning")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
