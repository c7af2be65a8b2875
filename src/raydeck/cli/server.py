"""raydeck server: run the control plane (first start creates and shows the admin token)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from raydeck.cli.output import console
from raydeck.client.config import write_credentials, write_server_info
from raydeck.core.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8770).")] = None,
    log_level: Annotated[str, typer.Option(help="debug|info|warning")] = "info",
) -> None:
    """Run the Raydeck control-plane server in the foreground."""
    # The server stack (FastAPI, SQLAlchemy, Alembic) is imported only here: every other
    # command stays fast to start.
    import uvicorn

    from raydeck.db.session import Database
    from raydeck.server.app import create_app
    from raydeck.server.secret_box import secret_box
    from raydeck.server.services.tokens import ensure_admin_token

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    url = f"http://{settings.host}:{settings.port}"
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

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
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
