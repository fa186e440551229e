"""`roost tracker`: run the roost HTTP tracker standalone until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from roost.core.inert import inert
from roost.core.tracker_swarm import IPNetwork, LocalityPolicy, TrackerPolicy
from roost.errors import UsageError
from roost.tracker.server import TrackerConfig, TrackerServer


class InertFormatter(logging.Formatter):
    """Log lines with outside strings' control characters escaped (roost.core.inert)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        # the message only: a newline in it could forge a log line; a traceback
        # appended after it keeps its own lines
        return inert(super().formatMessage(record))


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"not a network (CIDR): {text!r}") from None


def _location_rule(text: str) -> tuple[IPNetwork, str]:
    cidr, sep, label = text.partition("=")
    if not sep or not label:
        raise UsageError(f"--location wants CIDR=LABEL, got {text!r}")
    return _network(cidr), label


async def serve(config: TrackerConfig, as_json: bool, show_token: bool) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully (state written last)."""
    server = TrackerServer(config)
    await server.start()
    # long-lived objects out of the collector's way: fewer, shorter GC pauses (p99)
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        info = {
            "url": server.url,
            "host": config.host,
            "port": server.port,
            "admin_token": server.admin_token,
            "state": str(config.state_path) if config.state_path else None,
            "swarms": len(server.tracker.swarms),
        }
        if as_json:
            click.echo(json.dumps(info))
        else:
            click.echo(f"roost tracker listening on {server.url} ({info['swarms']} swarms)")
            if show_token:
                click.echo(f"admin token: {server.admin_token}")
        sys.stdout.flush()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
    click.echo("roost tracker stopped", err=True)


@click.command(name="tracker")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=6969, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--interval",
    default=5,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds between a peer's announces; a large swarm gets at least peers / 1,000 s "
    "(regular announces stay under 1,000/s).",
)
@click.option(
    "--min-interval",
    default=2,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Shortest re-announce interval clients are told to respect (grows with the interval).",
)
@click.option(
    "--peer-timeout",
    default=None,
    type=click.FloatRange(1, 86400),
    help="Drop a peer silent this long [default: 4 x interval; grows with the interval].",
)
@click.option(
    "--max-numwant",
    default=100,
    show_default=True,
    type=click.IntRange(0, 200),
    help="Most peers returned per announce (numwant is clamped to it; 60 at most in "
    "swarms over 1,000 peers).",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="State file keeping registrations and secrets across restarts.",
)
@click.option(
    "--torrent-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Serve every .torrent in this directory (rescanned).",
)
@click.option(
    "--admin-token",
    envvar="ROOST_TRACKER_ADMIN_TOKEN",
    help="Bearer token of the admin API [default: from state, else generated].",
)
@click.option(
    "--trust-ip-from",
    "trusted",
    multiple=True,
    metavar="CIDR",
    help="Honour the `ip` parameter only from these networks (repeatable).",
)
@click.option(
    "--location",
    "locations",
    multiple=True,
    metavar="CIDR=LABEL",
    help="Label peers from a subnet with a location (repeatable).",
)
@click.option("--public-url", help="Base URL peers use to reach this tracker.")
@click.option("--json", "as_json", is_flag=True, help="Print the bound address and token as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log registrations and warnings.")
def command(
    host: str,
    port: int,
    interval: int,
    min_interval: int,
    peer_timeout: float | None,
    max_numwant: int,
    state_path: Path | None,
    torrent_dir: Path | None,
    admin_token: str | None,
    trusted: tuple[str, ...],
    locations: tuple[str, ...],
    public_url: str | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Run the roost HTTP tracker (private swarms, locality-aware peer lists)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # torrent names and paths in messages
        handler.setFormatter(InertFormatter(logging.BASIC_FORMAT))
    policy = TrackerPolicy(
        interval=interval,
        min_interval=min(min_interval, interval),
        peer_timeout=peer_timeout or 4.0 * interval,
        max_numwant=max_numwant,
        ip_override="trusted" if trusted else "off",
        trusted_networks=tuple(_network(t) for t in trusted),
        location_map=tuple(_location_rule(rule) for rule in locations),
        locality=LocalityPolicy(),
    )
    config = TrackerConfig(
        host=host,
        port=port,
        policy=policy,
        state_path=state_path,
        torrent_dir=torrent_dir,
        admin_token=admin_token,
        public_url=public_url,
    )
    _run(serve(config, as_json, show_token=admin_token is None))


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # the optional fast event loop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before handlers exist
            loop.run_until_complete(main)
    finally:
        loop.close()
