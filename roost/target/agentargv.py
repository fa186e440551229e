"""The agent subcommands' argv, built in one place (standard library only).

The operator (roost.deploy) and the pull agent run the agent's subcommands by
these lists; the agent parses them with the parsers its subcommands register
(roost.target.agent.AGENT_COMMANDS). tests/test_host_protocol.py feeds every
builder's output to those parsers, so a flag renamed on one side fails there,
not on a host. Each list starts with the subcommand; every reply is `--json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def _opt(flag: str, value: str | None) -> list[str]:
    return [flag, value] if value is not None else []


def prepare(dest: str, deploy_id: str, tracker_host: str, tracker_port: int, *,
            address: str | None = None, interface: str | None = None,
            allowed_signers: str | None = None) -> list[str]:
    """host-prepare: the request comes on stdin (protocol.PrepareRequest)."""
    return ["host-prepare", "--dest", dest, "--deploy-id", deploy_id, "--json",
            "--tracker-host", tracker_host, "--tracker-port", str(tracker_port),
            *_opt("--address", address),
            *([] if address is not None else _opt("--interface", interface)),
            *_opt("--allowed-signers", allowed_signers)]


@dataclass(frozen=True)
class TlsFiles:
    """fetch's --tls-*: this host's certificate and key and the deploy CA (paths)."""

    cert: str
    key: str
    ca: str


@dataclass(frozen=True)
class FetchArgs:
    """What `roost fetch` is told; the defaults are fetch's own."""

    torrent: str
    directory: str
    tracker: str
    expected_peers: int
    port: str
    timeout: float
    tree_manifest: str | None = None  # format tree: with dest and reuse
    dest: str | None = None
    reuse: str | None = None
    stage: bool = False  # format tree: make releases/<tag> before saying complete
    bind: str | None = None
    announce_ip: str | None = None
    allow: Sequence[str] | None = None
    location: str | None = None
    local_nets: Sequence[str] = ()  # the location's networks: peers outside are remote
    upload_rate: str | None = None
    download_rate: str | None = None
    web_seeds: Sequence[str] = ()
    tls: TlsFiles | None = None
    quiet: bool = False
    progress_every: float = 0.0  # 0: fetch's own default (a line every tick)


def fetch(a: FetchArgs) -> list[str]:
    argv = ["fetch", a.torrent,
            *_opt("--tree-manifest", a.tree_manifest), *_opt("--dest", a.dest),
            *_opt("--reuse", a.reuse), *(["--stage"] if a.stage else []),
            "-d", a.directory, "--json", *(["--quiet"] if a.quiet else []),
            "--tracker", a.tracker, "--expected-peers", str(a.expected_peers),
            "--port", a.port, "--timeout", f"{a.timeout:g}",
            *_opt("--bind", a.bind), *_opt("--announce-ip", a.announce_ip),
            *_opt("--allow", ",".join(a.allow) if a.allow is not None else None),
            *_opt("--location", a.location), *_opt("--upload-rate", a.upload_rate),
            *_opt("--download-rate", a.download_rate),
            *_opt("--progress-every", f"{a.progress_every:g}" if a.progress_every else None)]
    for net in a.local_nets:
        argv += ["--local-net", net]
    for url in a.web_seeds:
        argv += ["--web-seed", url]
    if a.tls is not None:
        argv += ["--tls-cert", a.tls.cert, "--tls-key", a.tls.key, "--tls-ca", a.tls.ca]
    return argv


def seed(torrent: str, directory: str, tracker: str, expected_peers: int, bind: str, *,
         super_seed: bool = False, tree: bool = False, upload_rate: str | None = None,
         allow: Sequence[str] | None = None, tls: TlsFiles | None = None) -> list[str]:
    """The deploy's origin: seeds the payload it packed (-d is the tree itself for a tree)."""
    argv = ["seed", torrent, "-d", directory, *(["--super-seed"] if super_seed else []),
            *(["--tree"] if tree else []), "--skip-check", "--json", "--quiet",
            "--port", "0", "--bind", bind, "--tracker", tracker,
            "--expected-peers", str(expected_peers), *_opt("--upload-rate", upload_rate),
            *_opt("--allow", ",".join(allow) if allow is not None else None)]
    if tls is not None:
        argv += ["--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca]
    return argv


def origin(path: str, deploy_id: str, tracker_host: str, tracker_port: int, *,
           address: str | None = None, interface: str | None = None) -> list[str]:
    """host-origin: prove PATH is the payload, then seed it (driven on stdin,
    roost.target.originseed)."""
    return ["host-origin", "--path", path, "--deploy-id", deploy_id, "--json",
            "--tracker-host", tracker_host, "--tracker-port", str(tracker_port),
            *_opt("--address", address),
            *([] if address is not None else _opt("--interface", interface))]


def stage(dest: str, manifest: str, payload: str | None = None) -> list[str]:
    """activate --no-switch: verify and unpack the fetched payload into releases/<tag>."""
    return ["activate", "--dest", dest, "--manifest", manifest, *_opt("--payload", payload),
            "--no-switch", "--json"]


def activate(dest: str, tag: str, keep: int, hook_timeout: float,
             pre: Sequence[str] = (), post: Sequence[str] = ()) -> list[str]:
    argv = ["activate", "--dest", dest, "--tag", tag, "--keep", str(keep), "--json",
            "--hook-timeout", f"{hook_timeout:g}"]
    for command in pre:
        argv += ["--pre", command]
    for command in post:
        argv += ["--post", command]
    return argv


def status(dest: str) -> list[str]:
    return ["host-status", "--dest", dest, "--json"]


def clean(dest: str, deploy_id: str | None = None) -> list[str]:
    return ["host-clean", "--dest", dest, "--json", *_opt("--deploy-id", deploy_id)]


def rollback(dest: str, to: str | None = None) -> list[str]:
    """Back to `to`, or (None) to the release before the current one."""
    return ["host-rollback", "--dest", dest, "--json", *_opt("--to", to)]


def unswitch(dest: str, expect: str) -> list[str]:
    """host-rollback --none: undo a first deploy, only if `current` is still `expect`."""
    return ["host-rollback", "--dest", dest, "--json", "--none", "--expect", expect]


def health(dest: str, command: str, timeout: float, previous: str | None = None) -> list[str]:
    return ["host-health", "--dest", dest, "--command", command, "--timeout", f"{timeout:g}",
            "--json", *_opt("--previous", previous)]


def lock(dest: str, deploy_id: str, who: str, tag: str, break_lock: bool = False) -> list[str]:
    """host-lock: holds the lock until `release` arrives on stdin (protocol.release_line)."""
    return ["host-lock", "--dest", dest, "--deploy-id", deploy_id, "--who", who, "--tag", tag,
            "--json", *(["--break-lock"] if break_lock else [])]
