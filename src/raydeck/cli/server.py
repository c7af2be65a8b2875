"""raydeck server: run the control plane (first start creates and shows the admin token)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from typing import Annotated

import httpx
import typer

from raydeck.cli.output import console, err_console
from raydeck.client.config import write_credentials, write_server_info
from raydeck.core.errors import UnavailableError
from raydeck.core.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8770).")] = None,
    log_level: Annotated[str, typer.Option(help="debug|info|warning")] = "info",
    background: Annotated[
        bool,
        typer.Option(
            "--background",
            "-b",
            help="Start the server as a background process (log: $RAYDECK_HOME/server.log), "
            "wait until it answers, then return.",
        ),
    ] = False,
) -> None:
    """Run the Raydeck control-plane server (in the foreground unless --background)."""
    if background:
        _start_in_background(host, port, log_level)
        return
    # The server stack (FastAPI, SQLAlchemy, Alembic) is imported only here: every other
    # command stays fast to start.
    import uvicorn

    from raydeck.core.errors import RaydeckError
    from raydeck.db.session import Database
    from raydeck.server.app import create_app
    from raydeck.server.filesystem import isolation_warning, ray_users, secure_home
    from raydeck.server.secret_box import secret_box
    from raydeck.server.services.tokens import ensure_admin_token

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    url = f"http://{settings.host}:{settings.port}"
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if log_level.lower() != "debug":  # one line per migration step is noise on a first start
        logging.getLogger("alembic").setLevel(logging.WARNING)

    try:
        ray_users(settings)  # a setting that cannot work stops here, not in a traceback
    except RaydeckError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    secure_home(settings)  # before the database file exists: created 0600
    db = Database(settings.db_url)
    db.migrate(secret_box(settings.secret_key_path))  # 0009 encrypts stored Ray tokens
    with db.session() as session:
        admin = ensure_admin_token(session)
    db.dispose()
    if admin is not None:
        write_credentials(settings, url, admin.secret)
        console.print(
            f"[bold]Created the admin token[/bold] (shown once; also saved to "
            f"{settings.credentials_path}, mode 600):\n{admin.secret}",
            highlight=False,
        )
    write_server_info(settings, url, os.getpid())
    console.print(f"Raydeck server on {url} (home {settings.home})", highlight=False)
    if (warning := isolation_warning(settings)) is not None:
        console.print(f"[yellow]{warning}[/yellow]", highlight=False, soft_wrap=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)


def _start_in_background(host: str | None, port: int | None, log_level: str) -> None:
    """``raydeck server`` as a detached process of its own session (so closing this shell or
    Ctrl-C here does not stop it); returns once ``/healthz`` answers, with its pid and log."""
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    first_start = not settings.credentials_path.exists()
    command = [sys.executable, "-m", "raydeck.cli.main", "server", "--log-level", log_level]
    command += ["--host", host] if host else []
    command += ["--port", str(port)] if port else []
    log_path = settings.home / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://{host or settings.host}:{port or settings.port}"
    deadline = time.monotonic() + 300  # a first start migrates; a busy machine is slow
    with err_console.status(f"starting the Raydeck server on {url}"):
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise UnavailableError(
                    f"the server exited (code {process.returncode}); see {log_path}: "
                    f"{tail[0] if tail else ''}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).is_success:
                    break
            if time.monotonic() > deadline:
                raise UnavailableError(f"the server did not answer on {url}; see {log_path}")
            time.sleep(0.2)
    if first_start and settings.credentials_path.exists():
        token = json.loads(settings.credentials_path.read_text())["token"]
        console.print(
            f"[bold]Created the admin token[/bold] (shown once; also saved to "
            f"{settings.credentials_path}, mode 600):\n{token}",
            highlight=False,
        )
    console.print(
        f"Raydeck server on {url} (pid {process.pid}, log {log_path}, home {settings.home})",
        highlight=False,
    )
