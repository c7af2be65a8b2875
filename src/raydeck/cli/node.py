"""raydeck node join: register this machine as a host and run its agent."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated
from urllib.parse import urlsplit

import typer

from raydeck.cli.output import console
from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError
from raydeck.core.settings import Settings

app = typer.Typer(help="Run this machine's host agent (the `hosts` backend).", no_args_is_help=True)

_UNIT = """[Unit]
Description=Raydeck host agent ({name})
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={exec_start}
Restart=always
RestartSec=5
# Only the agent restarts: the Ray processes it started keep running, and the restarted
# agent re-attaches to them.
KillMode=process

[Install]
WantedBy=multi-user.target
"""


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"{option} {item!r} must look like key=value", field=option)
        pairs[key] = value
    return pairs


def _route_ip(server: str) -> str:
    """The local IP this machine reaches the server from (no packet is sent)."""
    parts = urlsplit(server)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        ip: str = sock.getsockname()[0]
    return ip


def _default_name() -> str:
    name = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower()).strip("-")
    return (name or "host")[:40].strip("-")


@app.command("join")
def join(
    server: Annotated[str, typer.Argument(help="The control plane's URL.")],
    token: Annotated[
        str | None, typer.Option(help="Join token (rdj_…); not needed once joined.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Host name (default: hostname).")] = None,
    address: Annotated[
        str | None,
        typer.Option(help="IP other hosts reach this one on (default: route to the server)."),
    ] = None,
    resource: Annotated[
        list[str] | None, typer.Option("--resource", help="Custom resource key=amount.")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="key=value.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="Default: all CPUs.")] = None,
    num_gpus: Annotated[float, typer.Option(help="GPUs to offer.")] = 0,
    memory: Annotated[int | None, typer.Option(help="Bytes to offer (default: all RAM).")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Agent state and Ray temp dirs (default $RAYDECK_HOME/agent)."),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA bundle to verify an https server with.")
    ] = None,
    service: Annotated[
        bool, typer.Option("--service", help="Join, write a systemd unit, and exit.")
    ] = False,
    unit_path: Annotated[Path, typer.Option(help="Where --service writes the unit.")] = Path(
        "/etc/systemd/system/raydeck-agent.service"
    ),
    log_level: Annotated[str, typer.Option(help="debug|info|warning")] = "info",
) -> None:
    """Register this machine with the control plane, then run as its agent (foreground)."""
    import psutil

    from raydeck.backends.hosts.agent import AgentState, HostAgent, agent_lock
    from raydeck.client.hosts import join_host
    from raydeck.core.models.hosts import HostRegistration

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = server.rstrip("/")
    directory = (data_dir or Settings().home / "agent").absolute()
    with agent_lock(directory):
        state = AgentState.load(directory)
        if state is not None and state.server != server:
            raise FailedPreconditionError(
                f"{directory} belongs to host {state.host_name!r} of {state.server}; "
                "use another --data-dir",
                field="data_dir",
            )
        if state is None:
            if not token:
                raise InvalidArgumentError("--token is required to join", field="token")
            ip = address or _route_ip(server)
            registration = HostRegistration(
                name=name or _default_name(),
                address=ip,
                num_cpus=num_cpus if num_cpus is not None else float(os.cpu_count() or 1),
                num_gpus=num_gpus,
                memory=memory if memory is not None else int(psutil.virtual_memory().total),
                resources={k: float(v) for k, v in _pairs(resource, "--resource").items()},
                labels=_pairs(label, "--label"),
                agent_version=_version(),
            )
            verify: str | bool = str(ca_file) if ca_file else True
            joined = join_host(server, token, registration, verify=verify)
            state = AgentState(
                server=server,
                host_id=joined.host.id,
                host_name=joined.host.name,
                credential=joined.credential,
                address=joined.host.address,
                ca_file=str(ca_file) if ca_file else None,
            )
            state.save(directory)
            console.print(
                f"joined {server} as host {state.host_name} ({state.address}, "
                f"{registration.num_cpus:g} CPU)",
                highlight=False,
            )
        else:
            console.print(f"re-attaching as host {state.host_name} of {server}", highlight=False)
        if service:
            _write_unit(unit_path, server, directory, state.host_name)
            return
        agent = HostAgent(directory, state)

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            agent.stop_event.set()  # Ray nodes keep running; a restarted agent re-attaches

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        agent.run()


def _write_unit(path: Path, server: str, data_dir: Path, name: str) -> None:
    argv = [sys.executable, "-m", "raydeck", "node", "join", server, "--data-dir", str(data_dir)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_UNIT.format(name=name, exec_start=shlex.join(argv)))
    console.print(
        f"wrote {path}; start it with: systemctl daemon-reload && "
        f"systemctl enable --now {path.stem}",
        highlight=False,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raydeck")
    except PackageNotFoundError:
        return ""
