"""`roost publish SRC`: pull mode. Sign a release, seed it, and roll it out to `roost agent`s.

Exit codes are those of `roost deploy`: 0 at least --min-success hosts run
the release; 1 a local error; 2 bad arguments; 3 fewer than --min-success
hosts staged it (nothing switched); 4 activation left fewer than
--min-success on it; 5 the rollout stopped at a failing batch (rolled back);
130 interrupted.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import click

from roost.commands.deploy import deploy_options, overrides
from roost.deploy.config import load_config, resolve_hosts
from roost.deploy.run import EXIT_INTERRUPTED, Deploy, default_tag, new_deploy
from roost.errors import RoostError, UsageError


@click.command(name="publish")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path),
              help="roost.toml to read (default: ./roost.toml if present)")
@click.option("--hosts", multiple=True, help="agent names, comma separated (their --name)")
@click.option("--hosts-file", help="file with one agent name per line")
@click.option("-i", "--inventory", help="Ansible inventory (INI or YAML)")
@click.option("-g", "--group", "groups", multiple=True, help="inventory group (repeatable)")
@click.option("--key", "sign_key", required=True, type=click.Path(path_type=Path),
              help="the publisher's OpenSSH private key; agents trust its public key")
@click.option("--listen", required=True,
              help="address the channel, tracker and origin bind (the agents reach it)")
@click.option("--port", type=int, default=8470, show_default=True, help="channel port")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="serve the channel over TLS")
@click.option("--tls-key", type=click.Path(path_type=Path), help="the certificate's key")
@click.option("--json", "as_json", is_flag=True, help="print a JSON report on stdout")
@deploy_options
def command(src: Path, config_path: Path | None, sign_key: Path, listen: str, port: int,
            tls_cert: Path | None, tls_key: Path | None, as_json: bool, **params: Any) -> int:
    """Publish SRC to the agents that follow this channel, then roll it out.

    \b
    Exit codes (as `roost deploy`):
      0    at least --min-success hosts run the release
      1    a local error (packing, signing, tracker, origin)
      2    bad arguments or configuration
      3    fewer than --min-success hosts staged it: nothing was switched
      4    after activation fewer than --min-success hosts run it
      5    rollout stopped: a batch failed and was rolled back
      130  interrupted
    """
    if params.get("peer_tls"):
        raise UsageError("--peer-tls is not available with publish yet; use roost deploy")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    for path in (sign_key, tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"{path} is not a file")
    config = load_config(config_path, overrides(params))
    if not (config.hosts or config.hosts_file or config.inventory):
        raise UsageError("missing hosts (--hosts, --hosts-file or --inventory): the agents "
                         "this release is for")
    hosts = resolve_hosts(config)
    deploy = new_deploy(config, hosts, config.tag or default_tag(src))
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    return execute(deploy, src, sign_key, listen, port, tls, as_json)


def execute(deploy: Deploy, src: Path, key: Path, listen: str, port: int,
            tls: tuple[Path, Path] | None, as_json: bool) -> int:
    from rich.console import Console

    from roost.deploy.coordinator import Coordinator, report_json, run_publish
    from roost.deploy.view import final_table

    err = Console(stderr=True)

    def ready(coordinator: Coordinator) -> None:
        err.print(f"roost publish: channel {coordinator.url} for {len(deploy.hosts)} agents, "
                  f"deploy {deploy.deploy_id}", highlight=False)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await run_publish(deploy, src, key, listen, port, tls, on_ready=ready)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        deploy.interrupted = True
        deploy.exit_code = EXIT_INTERRUPTED
        deploy.message = "interrupted; the agents were told to stop"
    except OSError as exc:  # the channel's port taken, a key unreadable: one line, no traceback
        raise RoostError(f"publish failed: {exc}") from None
    if as_json:
        click.echo(report_json(deploy))
    else:
        console = Console(stderr=False) if sys.stdout.isatty() else err
        final_table(deploy, console, command="roost publish")
    return deploy.exit_code
