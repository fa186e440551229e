"""`roost deploy SRC`: push a release to every host over a swarm, then activate it.

Exit codes: 0 at least --min-success hosts have the release current (or
staged, with --no-activate); 1 a local error (packing, tracker, origin);
2 bad arguments or configuration; 3 fewer than --min-success hosts staged
the release, so nothing was switched; 4 activation left fewer than
--min-success hosts on the new release; 5 the rollout stopped at a failing
batch (rolled back); 6 refused by another deploy's lock; 7 --dry-run found a
problem; 130 interrupted (everything cleaned).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from roost.deploy.config import DeployConfig, load_config, parse_location_nets, resolve_hosts
from roost.deploy.run import (
    EXIT_INTERRUPTED,
    Connector,
    Deploy,
    default_tag,
    new_deploy,
    run_deploy,
    ssh_connector,
)
from roost.errors import UsageError


def deploy_options(func: Any) -> Any:
    """Flags shared by deploy and demo; each overrides roost.toml."""
    options = [
        click.option("--tag", help="release name (default: UTC time + git commit)"),
        click.option("--keep", type=int, help="releases to keep per host (default 5)"),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["auto", "tree", "tar", "dir", "file"]),
            help="payload format (directory default: tree, or tar with --compress)",
        ),
        click.option("--reuse", type=click.Choice(["copy", "hardlink", "none"]),
                     help="tree: how hosts place files they already hold in a kept "
                     "release (default copy: reflink or copy_file_range)"),
        click.option("--compress", is_flag=True, default=None, help="zstd-compress the tar"),
        click.option("--min-success", help="hosts needed: a count, 0.9 or 90% (default 100%)"),
        click.option("--no-activate", is_flag=True, help="stage only; leave `current` alone"),
        click.option("--pre", "pre_activate", multiple=True, help="pre-activate command"),
        click.option("--post", "post_activate", multiple=True, help="post-activate command"),
        click.option("--timeout", type=float, help="fetch phase limit in seconds (default 900)"),
        click.option("--upload-rate", help="per-peer upload cap, e.g. 100mbit or 20M"),
        click.option("--download-rate", help="per-peer download cap"),
        click.option("--link-rate", help="the hosts' link rate R, to report the bound S·8/R"),
        click.option("--web-seed", "web_seeds", multiple=True, metavar="URL",
                     help="an HTTP server that holds the payload too (BEP 19; repeatable): "
                     "hosts fetch pieces from it besides the swarm, each hash-checked. "
                     "A directory URL gets the torrent name (the tag, for a tree) appended"),
        click.option("--tracker", help="an external `roost tracker` base URL (admin token in "
                     "$ROOST_TRACKER_TOKEN); default: a tracker inside this process"),
        click.option("--super-seed/--no-super-seed", default=None,
                     help="BEP 16 super-seeding on the origin (default: off)"),
        click.option("--batch", help="activate N hosts (or N%) at a time (default: all at once)"),
        click.option("--canary", type=int, help="activate N hosts first, alone (default 0)"),
        click.option("--health-check", help="command run in `current` after each batch; "
                     "a non-zero exit stops the rollout and rolls that batch back"),
        click.option("--health-timeout", type=float, help="health check limit (default 30 s)"),
        click.option("--allow", multiple=True, metavar="CIDR",
                     help="let these addresses join the swarm too (default: only the "
                     "deploy's own hosts and origin; 'any' lets anyone)"),
        click.option("--peer-tls/--no-peer-tls", default=None,
                     help="mutual TLS between peers with a per-deploy CA: hosts outside "
                     "the deploy can neither read nor join the transfer (default: off)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def overrides(params: dict[str, Any]) -> dict[str, Any]:
    mapping = {
        "dest": "dest",
        "tag": "tag",
        "keep": "keep",
        "fmt": "format",
        "compress": "compress",
        "reuse": "reuse",
        "min_success": "min_success",
        "timeout": "timeout",
        "upload_rate": "upload_rate",
        "download_rate": "download_rate",
        "link_rate": "link_rate",
        "web_seeds": "web_seeds",
        "origins": "origins",
        "super_seed": "super_seed",
        "batch": "batch",
        "canary": "canary",
        "health_check": "health_check",
        "health_timeout": "health_timeout",
        "ssh_config": "ssh_config",
        "sudo_user": "sudo_user",
        "peer_tls": "peer_tls",
        "tracker": "tracker",
        "concurrency": "concurrency",
        "pre_activate": "pre_activate",
        "post_activate": "post_activate",
        "hosts": "hosts",
        "hosts_file": "hosts_file",
        "inventory": "inventory",
        "groups": "groups",
        "user": "user",
        "ssh_port": "ssh_port",
        "key": "key",
        "known_hosts": "known_hosts",
        "connect_timeout": "connect_timeout",
        "python": "python",
        "listen": "listen",
        "allow": "allow",
        "sign_key": "sign_key",
        "allowed_signers": "allowed_signers",
    }
    out = {mapping[k]: v for k, v in params.items() if k in mapping}
    for key in ("pre_activate", "post_activate", "hosts", "groups", "allow", "web_seeds",
                "origins"):
        if key in out:
            out[key] = list(out[key] or [])
    if params.get("location_nets"):
        out["location_nets"] = parse_location_nets(params["location_nets"])
    if params.get("no_activate"):
        out["activate"] = False
    if params.get("no_local_origin"):
        out["local_origin"] = False
    # flags only ever switch these on
    for flag in ("sudo", "dry_run", "break_lock", "require_signature"):
        if params.get(flag):
            out[flag] = True
    return out


def execute(
    deploy: Deploy, src: Path, connect: Connector, *, as_json: bool, listen: str | None = None,
    notes: Callable[[Deploy], list[str]] | None = None,
) -> int:
    """Run a deploy with the live view; print the table (or JSON); return the exit code.

    `notes` gives lines printed under the summary (the demo explains itself there).
    """
    from rich.console import Console

    from roost.deploy.view import final_table, live_view, report

    err = Console(stderr=True)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM (a CI job cancelled, a supervisor stopping us) cleans up like Ctrl-C
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        async with live_view(deploy, err, enabled=not as_json and err.is_terminal):
            await run_deploy(deploy, src, connect, listen=listen)

    started = process_started()
    if started is not None:
        deploy.times.setdefault("main", started)  # the interpreter and imports, before "start"
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        deploy.interrupted = True
        deploy.exit_code = EXIT_INTERRUPTED
        deploy.message = "interrupted; remote fetches stopped and temp files removed"
    deploy.mark("reported")  # after the loop closed (its threads joined)
    if as_json:
        click.echo(json.dumps(report(deploy), indent=1))
    else:
        console = Console(stderr=False) if sys.stdout.isatty() else err
        final_table(deploy, console, notes(deploy) if notes else None)
    return deploy.exit_code


def process_started() -> float | None:
    """When this process was exec'd, on the time.monotonic() clock (Linux: its start
    in clock ticks since boot, against the uptime now); None where unknown."""
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rpartition(b")")[2].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        now = time.monotonic()
        return now - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def host_options(func: Any) -> Any:
    """Which hosts and how to reach them (deploy, status, rollback, clean)."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            help="roost.toml to read (default: ./roost.toml if present)",
        ),
        click.option("--hosts", multiple=True, help="hosts, comma separated: [user@]host[:port]"),
        click.option("--hosts-file", help="file with one host per line"),
        click.option("-i", "--inventory", help="Ansible inventory (INI or YAML)"),
        click.option("-g", "--group", "groups", multiple=True, help="inventory group (repeatable)"),
        click.option("--location-net", "location_nets", multiple=True, metavar="LABEL=CIDR",
                     help="the networks of hosts at location LABEL (repeatable): their "
                     "fetches ask peers outside them only for what no local peer has"),
        click.option("--dest", help="destination directory on every host (absolute)"),
        click.option("--user", help="SSH user"),
        click.option("--ssh-port", type=int, help="SSH port (default 22)"),
        click.option("--key", help="SSH private key file"),
        click.option("--known-hosts", help="known_hosts file, or 'off' to skip host key checks"),
        click.option("--ssh-config", help="OpenSSH client config (default: ~/.ssh/config): "
                     "Host aliases, HostName, User, Port, IdentityFile, ProxyJump"),
        click.option("--sudo", is_flag=True, default=None,
                     help="run roost on the hosts through `sudo -n` (a non-root SSH user)"),
        click.option("--sudo-user", help="... as this user, the destination's owner "
                     "(default root; implies --sudo)"),
        click.option("--connect-timeout", type=float, help="SSH connect timeout (default 10 s)"),
        click.option("--concurrency", type=int, help="hosts contacted at once (default 50)"),
        click.option("--python", help="python3 on the hosts (default: python3)"),
        click.option("--json", "as_json", is_flag=True, help="print a JSON report on stdout"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def host_config(config_path: Path | None, params: dict[str, Any]) -> DeployConfig:
    """The configuration, or one error naming every required input that is missing."""
    config = load_config(config_path, overrides(params))
    missing = []
    if not (config.hosts or config.hosts_file or config.inventory):
        missing.append("hosts (--hosts, --hosts-file or --inventory)")
    if not config.dest:
        missing.append("--dest")
    if missing:
        them = "it" if len(missing) == 1 else "them"
        raise UsageError(f"missing {' and '.join(missing)}; give {them} on the command line "
                         "or in roost.toml (see docs/deploy.md)")
    return config


@click.command(name="deploy")
@click.argument("src", type=click.Path(path_type=Path))
@host_options
@click.option(
    "--listen",
    help="address the tracker and origin bind (default: the source "
    "address of our route to the hosts)",
)
@click.option("--dry-run", is_flag=True,
              help="preflight checks on every host and what would happen; change nothing")
@click.option("--break-lock", is_flag=True,
              help="take over a stale lock left on a host by a deploy that died")
@click.option("--sign-key", help="sign the release's manifest with this OpenSSH private key")
@click.option("--require-signature", is_flag=True,
              help="each host verifies the manifest's signature before fetching anything")
@click.option("--allowed-signers", help="with --require-signature: the allowed-signers "
              "file on the hosts (absolute path)")
@click.option("--origin", "origins", multiple=True, metavar="HOST:PATH",
              help="a host (build machine or fleet host, reached over SSH like the hosts) "
              "that holds the payload at PATH and seeds it too, once every piece of its "
              "copy matched (repeatable)")
@click.option("--no-local-origin", is_flag=True,
              help="seed only from the --origin hosts, not from this machine")
@deploy_options
def command(src: Path, config_path: Path | None, as_json: bool, **params: Any) -> int:
    """Deploy SRC (a directory or a file) to every host.

    \b
    Exit codes:
      0    at least --min-success hosts run the release (staged, with --no-activate)
      1    a local error (packing, tracker, origin)
      2    bad arguments or configuration
      3    fewer than --min-success hosts staged it: nothing was switched
      4    after activation (hooks) fewer than --min-success hosts run it
      5    rollout stopped: a batch failed (health check or hook) and was rolled
           back; later batches kept their previous release
      6    refused: another deploy holds the lock on some host; nothing changed
      7    --dry-run: some host failed a preflight check (nothing was changed)
      130  interrupted; remote fetches stopped, temp files removed
    """
    config = host_config(config_path, params)
    hosts = resolve_hosts(config)
    tag = config.tag or default_tag(src)
    deploy = new_deploy(config, hosts, tag)
    return execute(deploy, src, ssh_connector(config, len(hosts)), as_json=as_json)
