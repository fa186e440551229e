"""One target host's part of a deploy: agent push, prepare, fetch, stage, activate, clean.

Theory of operation. Every step is one agent command sent through a
Transport (SSH, or local for the demo); once the host's agent session runs
(roost.deploy.session), that Transport sends it as a record on the session's
one channel instead of a new SSH command. The agent is `python3 -I <pyz>`
(its session `python3 -I -S`: it needs nothing of site-packages, and skips
the .pth files and sitecustomize a host's Python may run at every start;
the fetch it execs keeps them, to find uvloop where it is installed):
the zipapp is cached on the host under ~/.cache/roost by version and
content hash and pushed only when missing (its sources, which the host
compiles: Agent.push_text, RECEIVE_AGENT), so hosts need nothing but
CPython >= 3.10. `fetch` writes its pid into the deploy's directory before
exec'ing, so `host-clean` can stop exactly that process later — on success,
failure or Ctrl-C — and nothing keyed on a process name is ever killed.

A HostRun records what happened (phase, status, reason) for the live view
and the final table; failures are HostFailure and stay on their host.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import lzma
import shlex
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from roost.core.metainfo import parse
from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.pki import CA_FILE, CERT_FILE, KEY_FILE, DeployCA
from roost.deploy.transport import AgentCommand, HostFailure, Result, Stream, Transport
from roost.deploy.zipapp import build_zipapp_bytes
from roost.target import agentargv
from roost.target.protocol import (
    EXIT_CODES,
    MAX_PREPARE_INPUT,
    ActivateResult,
    Check,
    CleanResult,
    ErrorKind,
    ErrorRecord,
    EventName,
    FetchEvent,
    HealthResult,
    HookRecord,
    HostStatus,
    Manifest,
    PayloadFormat,
    Phase,
    PrepareRequest,
    PrepareResult,
    ProtocolError,
    kind_of_exit,
)

MIN_PYTHON = (3, 10)
# formats written in place (no archive beside its unpacked copy): half the disk
_IN_PLACE = (PayloadFormat.FILE, PayloadFormat.TREE)


@dataclass
class Agent:
    """The zipapp to run on hosts."""

    name: str  # roost-<version>-<sha12>.pyz
    python: str = "python3"
    #: what a host without the agent is sent (roost.deploy.zipapp.build_source_zip)
    source: bytes = b""

    @functools.cached_property
    def data(self) -> bytes:
        """The compiled zipapp, for a host that takes it whole (`push_agent`). Built
        when first asked: 0.18 s of the operator's CPU that a deploy whose hosts have
        the agent, or are sent its sources (push_text), never pays."""
        return build_zipapp_bytes()

    @functools.cached_property
    def push_sha256(self) -> str:
        """What the receiving host checks the sources it unpacked against. Not the name's
        digest: that one also digests the bytecode version the operator compiles for."""
        return hashlib.sha256(self.source).hexdigest()

    @functools.cached_property
    def push_text(self) -> str:
        """What a probe that found no agent reads on the channel it already has (a text
        channel, on SSH, sudo and local transports alike): the sources' zip as one lzma
        stream (PUSH_PRESET) in base85 (a quarter over the bytes where base64 is a third), after its
        length in PUSH_HEADER digits. Made when the first host asks for it, so a deploy
        whose hosts all have the agent never compresses it."""
        body = base64.b85encode(lzma.compress(self.source, preset=PUSH_PRESET))
        return f"{len(body):0{PUSH_HEADER}d}{body.decode()}\n"


#: digits of push_text's length, which the host reads before the text
PUSH_HEADER = 10
#: lzma's preset for push_text: 1 takes 0.05 s of the deploy's CPU for 169 KB, the
#: default 6 takes 0.26 s for 146 KB (the difference pays back only past ~2,000 hosts)
PUSH_PRESET = 1
#: the most push_text the host reads, and the most its sources unpack to
PUSH_CAP = 64 << 20

#: exec'd by the probe that finds no agent: read push_text from stdin (exactly its
#: length: the agent's session reads what follows), check the sources it unpacks to
#: against their SHA-256 (argv[2]), add each module's bytecode for this very Python
#: (as roost.deploy.zipapp.compiled does: a host whose Python has another bytecode
#: version gets its own), write the zipapp uncompressed (0.05 s of the host's CPU
#: less than deflating it, for 1 MB more on its disk) to argv[1] atomically (a full disk exits as
#: protocol.EXIT_CODES says), then run it with the rest of argv in this same
#: interpreter, as `python3 -I <pyz> ARGS` would
RECEIVE_AGENT = """import base64, errno, hashlib, importlib.util, io, lzma, marshal, os, runpy, sys
import zipfile
target, digest = sys.argv[1], sys.argv[2]
def read(size):
    text = bytearray()
    while len(text) < size:
        chunk = os.read(0, size - len(text))
        if not chunk:
            print("pusherror the deploy stopped sending the agent"); sys.exit(1)
        text += chunk
    return bytes(text)
def corrupted():
    print("pusherror the agent arrived corrupted"); sys.exit(1)
head = read(%(header)d)
if not head.isdigit() or int(head) > %(cap)d:
    corrupted()
try:
    unpack = lzma.LZMADecompressor()
    source = unpack.decompress(base64.b85decode(read(int(head))), %(cap)d)
except (ValueError, lzma.LZMAError):
    corrupted()
if not unpack.eof or hashlib.sha256(source).hexdigest()[:len(digest)] != digest:
    corrupted()
out = io.BytesIO()
out.write(b"#!/usr/bin/env python3\\n")
with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(out, "w") as zf:
    for info in src.infolist():
        text = src.read(info)
        zf.writestr(info, text)
        if info.filename.endswith(".py") and info.filename != "__main__.py":
            code = compile(text, info.filename, "exec", dont_inherit=True)
            pyc = zipfile.ZipInfo(info.filename + "c", info.date_time)
            pyc.external_attr = info.external_attr
            zf.writestr(pyc, importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
                        + importlib.util.source_hash(text) + marshal.dumps(code))
data = out.getvalue()
part = f"{target}.tmp.{os.getpid()}"
try:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # a crash must not leave a truncated agent under its name
    os.chmod(part, 0o755)
    os.replace(part, target)
except OSError as exc:
    if os.path.exists(part):
        os.unlink(part)
    print("pusherror", exc.strerror or exc)
    sys.exit(%(full)d if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 1)
sys.argv = [target, *sys.argv[3:]]
runpy.run_path(target, run_name="__main__")
"""


@dataclass
class FetchPlan:
    tracker_url: str
    tracker_host: str
    tracker_port: int
    expected_peers: int
    port_range: str
    upload_rate: str | None = None
    download_rate: str | None = None
    timeout: float = 900.0
    pki: DeployCA | None = None  # --peer-tls: issues each host's certificate
    allow: list[str] | None = None  # whom peers accept and dial (roost.deploy.allowlist)
    signature: str | None = None  # --sign-key: the manifest's OpenSSH signature
    allowed_signers: str | None = None  # --require-signature: hosts verify against this file
    web_seeds: tuple[str, ...] = ()  # --web-seed: given to every host's fetch (BEP 19)
    progress_every: float = 0.0  # seconds between a fetch's progress lines (roost.deploy.pace)


@dataclass
class HostRun:
    spec: HostSpec
    status: HostStatus = HostStatus.WAITING
    phase: Phase = Phase.CONNECT
    kind: ErrorKind | None = None
    reason: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    rate: float = 0.0
    pushed_agent: bool = False
    already_had: bool = False
    address: str | None = None  # what this host announces
    address_local: bool = True  # ... and can listen on (not a NAT's address)
    previous: str | None = None
    times: dict[str, float] = field(default_factory=dict)
    transport: Transport | None = None
    pyz: str = ""
    work: str = ""
    fetch_stream: Stream | None = None
    fetch_exit: int | None = None
    fetch_task: asyncio.Task[None] | None = None
    peer_id: bytes | None = None  # from fetch's `started` event
    batch: int | None = None  # rollout batch (0 = the canary when there is one)
    current: str | None = None  # the release this host runs now, as far as we know
    hooks: tuple[HookRecord, ...] = ()  # each hook's captured output
    health: HealthResult | None = None  # the health check's verdict and output
    checks: dict[str, Check] = field(default_factory=dict)  # --dry-run: check -> verdict
    lock_stream: Stream | None = None  # `roost host-lock`, alive while we hold the lock
    staging: str = ""  # format tree: releases/.<tag>.tmp-<deploy id>, where pieces land
    bytes_reused: int | None = None  # format tree: placed from kept releases, no network
    files_reused: int = 0
    # kept files whose proof no longer held (hashed afresh), and those whose
    # bytes had changed since (edited in place: fetched, never reused)
    files_rehashed: int = 0
    files_refused: int = 0
    bytes_to_fetch: int | None = None  # what the swarm had to bring after reuse
    bytes_fetched: int | None = None  # what fetch downloaded (from its `complete` event)
    tag: str = ""  # the release this deploy stages
    staged_by_fetch: bool = False  # fetch made releases/<tag> itself (--stage)

    def dest(self, config: DeployConfig) -> str:
        return self.spec.dest or config.dest

    @property
    def failed(self) -> bool:
        return self.status is HostStatus.FAILED

    def fail(self, exc: HostFailure) -> None:
        if not self.failed:
            self.status, self.kind, self.reason = HostStatus.FAILED, exc.kind, str(exc)

    def mark(self, name: str) -> None:
        self.times[name] = time.monotonic()

    def mark_first(self, name: str) -> None:
        """For the timeline: when something first happened on this host."""
        self.times.setdefault(name, time.monotonic())

    # --- the steps ----------------------------------------------------------------------

    async def ensure_agent(self, agent: Agent) -> None:
        """Check python3 and push the zipapp if this host lacks this exact build."""
        assert self.transport is not None
        self.phase = Phase.AGENT
        result = await self.transport.run(self.probe_command(agent), timeout=60)
        if not self.read_probe(agent, result.stdout):
            await self.push_agent(agent)

    def probe_command(self, agent: Agent, then: str = "", push: bool = False) -> str:
        """python3's version, $HOME, and whether this build is cached; with `then`
        (agent arguments), a cached agent is exec'd with them on the same channel. With
        `push` too, a host without it says `push`, reads it from stdin (Agent.push_text)
        and runs it in the interpreter that read it (RECEIVE_AGENT): a first deploy
        needs no second and third channel, nor a third interpreter."""
        python = shlex.quote(agent.python)
        cached = f'"$HOME/.cache/roost/{agent.name}"'
        # -S: the agent (the session) is the standard library alone; each host's site
        # (its .pth files, sitecustomize) is start-up CPU it never uses
        run = f"exec {python} -I -S {cached} {then}; " if then else ""
        receive = ""
        if then and push:
            digest = agent.push_sha256
            script = RECEIVE_AGENT % {"header": PUSH_HEADER, "cap": PUSH_CAP,
                                      "full": EXIT_CODES[ErrorKind.DISK_FULL]}
            receive = (f'test -n "$fit" && {{ echo push; exec {python} -I -S -c '
                       f"{shlex.quote(script)} {cached} "
                       f"{shlex.quote(digest)} {then}; }}; ")
        return (
            f"command -v {python} >/dev/null 2>&1 || "
            "{ echo nopython; exit 0; }; "
            # exits 0 only for a python the agent runs on: only that one gets exec'd
            f"{python} -S -c 'import sys; print(\"py\", *sys.version_info[:2]); "
            f"sys.exit(sys.version_info < {MIN_PYTHON})' && fit=1; "
            'echo "home $HOME"; '
            f'if test -f {cached}; then echo have; test -n "$fit" && {run}:; '
            f"else echo missing; {receive}fi"
        )

    def read_probe(self, agent: Agent, stdout: str) -> bool:
        """Check the probe's answer and set `pyz`; True when the agent is cached."""
        words = dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)
        if "nopython" in stdout:
            raise HostFailure(ErrorKind.PYTHON, f"no {agent.python} on this host")
        version = tuple(int(v) for v in words.get("py", "0 0").split())
        if version < MIN_PYTHON:
            raise HostFailure(ErrorKind.PYTHON, f"{agent.python} is {version}; roost needs >= 3.10")
        home = words.get("home", "").strip()
        if not home.startswith("/"):
            raise HostFailure(ErrorKind.AGENT, "cannot find the remote home directory")
        self.pyz = f"{home}/.cache/roost/{agent.name}"
        return "have" in stdout.split()

    async def push_agent(self, agent: Agent) -> None:
        assert self.transport is not None
        target = shlex.quote(self.pyz)
        # a failed copy where the free space is under the agent's size exits as a
        # full disk does (protocol.EXIT_CODES): the kind is the code, not stderr's words
        full = EXIT_CODES[ErrorKind.DISK_FULL]
        command = (
            f'mkdir -p "$HOME/.cache/roost" && {{ cat > {target}.tmp.$$ || {{ '
            f'rm -f {target}.tmp.$$; df -Pk "$HOME/.cache/roost" | '
            f"awk 'NR==2 {{ exit ($4 * 1024 < {len(agent.data)}) ? {full} : 1 }}'; exit; }}; }} && "
            f"chmod 755 {target}.tmp.$$ && mv -f {target}.tmp.$$ {target}"
        )
        result = await self.transport.run(command, input=agent.data, timeout=120)
        if result.code != 0:
            raise HostFailure(
                kind_of_exit(result.code, ErrorKind.AGENT),
                f"cannot install the roost agent: {result.last_error()}",
            )
        self.pushed_agent = True

    def agent_cmd(self, agent: Agent, *args: str) -> AgentCommand:
        return AgentCommand(
            " ".join(shlex.quote(a) for a in (agent.python, "-I", self.pyz, *args)), args)

    async def prepare(
        self,
        agent: Agent,
        dest: str,
        deploy_id: str,
        manifest: Manifest,
        torrent: bytes,
        plan: FetchPlan,
    ) -> PrepareResult:
        assert self.transport is not None
        self.phase = Phase.PREPARE
        args = agentargv.prepare(dest, deploy_id, plan.tracker_host, plan.tracker_port,
                                 address=self.spec.announce or None,
                                 interface=self.spec.interface or None,
                                 allowed_signers=plan.allowed_signers or None)
        blob = prepare_input(manifest, torrent, plan.pki.issue(self.spec.name).to_dict()
                             if plan.pki is not None else None, plan.signature)
        if len(blob) > MAX_PREPARE_INPUT:  # the host would refuse it: say so here
            raise HostFailure(ErrorKind.PREPARE, f"the deploy request is {_mib(len(blob))}, "
                              f"over the {_mib(MAX_PREPARE_INPUT)} a host accepts")
        result = await self.transport.run(self.agent_cmd(agent, *args), input=blob, timeout=120)
        info = agent_reply(result, ErrorKind.PREPARE, PrepareResult.from_json)
        self.work = info.dir
        self.address = info.address
        self.address_local = info.address_local
        self.previous = self.current = info.current
        self.already_had = info.have
        self.tag = manifest.tag
        if manifest.format is PayloadFormat.TREE:
            self.staging = f"{dest.rstrip('/')}/releases/.{manifest.tag}.tmp-{deploy_id}"
        # staging holds the payload, and a tarball is unpacked beside it
        need = manifest.size * (1 if manifest.format in _IN_PLACE else 2)
        if not self.already_had and info.free_bytes < need:
            raise HostFailure(
                ErrorKind.DISK_FULL,
                f"disk full: {dest} has {_mib(info.free_bytes)} "
                f"free, the release needs {_mib(need)}",
            )
        return info

    async def start_fetch(self, agent: Agent, plan: FetchPlan, location: str | None,
                          dest: str = "", reuse: str = "copy",
                          local_nets: Sequence[str] = ()) -> None:
        assert self.transport is not None
        self.phase = Phase.FETCH
        bind = None
        if self.address:
            # listen where we announce: the engine's default 0.0.0.0 is IPv4-only, and an
            # IPv6 swarm whose peers cannot reach each other stalls behind a super-seeder
            # an address forwarded to us (not ours): listen on every address of its
            # family and announce it; binding it would fail with EADDRNOTAVAIL
            wildcard = "::" if ":" in self.address else "0.0.0.0"
            bind = self.address if self.address_local else wildcard
        tls = None
        if plan.pki is not None:
            tls = agentargv.TlsFiles(f"{self.work}/{CERT_FILE}", f"{self.work}/{KEY_FILE}",
                                     f"{self.work}/{CA_FILE}")
        args = agentargv.fetch(agentargv.FetchArgs(
            f"{self.work}/payload.torrent", self.staging or f"{self.work}/staging",
            tracker=plan.tracker_url, expected_peers=plan.expected_peers, port=plan.port_range,
            timeout=plan.timeout,
            tree_manifest=f"{self.work}/manifest.json" if self.staging else None,
            dest=dest if self.staging else None, reuse=reuse if self.staging else None,
            stage=bool(self.staging),
            bind=bind, announce_ip=(self.address if self.address
                                    and not self.address.startswith("127.") else None),
            allow=plan.allow, location=location or None, local_nets=local_nets,
            upload_rate=plan.upload_rate or None,
            download_rate=plan.download_rate or None, web_seeds=plan.web_seeds, tls=tls,
            progress_every=plan.progress_every))
        pidfile = f"{self.work}/fetch.pid"
        # an agent session writes the pid file itself (whole, then renamed into place)
        # before it execs the fetch; this shell text, for a plain transport, does the same:
        # noclobber makes `>` an O_EXCL create, and mv renames the whole file into place
        tmp = f"{shlex.quote(f'{self.work}/.fetch.pid.')}$$.tmp"
        command = AgentCommand(
            f"set -C && echo $$ > {tmp} && mv -f {tmp} {shlex.quote(pidfile)} && "
            f"exec {self.agent_cmd(agent, *args)}", args, pidfile)
        self.fetch_stream = await self.transport.start(command)
        self.mark("fetch_started")

    async def follow_fetch(self, completed: asyncio.Event) -> None:
        """Read fetch's JSON events until it exits; set `completed` on `complete`."""
        assert self.fetch_stream is not None
        error: FetchEvent | None = None
        base: int | None = None  # bytes held at the start (else at the first progress event)
        async for line in self.fetch_stream.lines():
            try:
                event = FetchEvent.from_json(line)
            except ProtocolError:
                continue  # not an event (fetch's other output): never fatal
            if event is None:
                continue
            if event.event is EventName.STARTED and event.peer_id is not None:
                self.mark_first("fetch_running")
                self.peer_id = event.peer_id.encode("latin-1")
                if base is None and event.bytes_done is not None:
                    base = event.bytes_done  # held at the start (an older fetch: the first line)
            elif event.event is EventName.ANNOUNCED:
                self.mark_first("announced")
            elif event.event is EventName.CHECKED:
                self.mark_first("opened")  # the storage is open: next, the session starts
            elif event.event is EventName.PROGRESS:
                if base is None:
                    base = event.bytes_done
                elif event.bytes_done is not None and event.bytes_done > base:
                    self.mark_first("first_bytes")  # the first progress that gained bytes
                self.bytes_done = _or(event.bytes_done, self.bytes_done)
                self.bytes_total = _or(event.bytes_total, self.bytes_total)
                self.rate = float(event.down_Bps or 0)
            elif event.event is EventName.REUSED:
                self.mark_first("reused")
                self.bytes_reused = event.bytes or 0
                self.files_reused = event.files or 0
                self.bytes_to_fetch = event.fetch_bytes or 0
                self.files_rehashed = event.hashed or 0
                self.files_refused = event.refused or 0
            elif event.event is EventName.PLACED:
                self.mark_first("placed")
            elif event.event is EventName.COMPLETE:
                self.staged_by_fetch = bool(self.staging) and event.staged == self.tag
                self.bytes_fetched = event.downloaded or 0
                self.bytes_done = self.bytes_total = _or(event.bytes, self.bytes_total)
                self.rate = 0.0
                self.mark("fetched")
                completed.set()
            elif event.event is EventName.ERROR:
                error = event
        self.fetch_exit = await self.fetch_stream.wait()
        if not completed.is_set():
            # fetch's exit 3 means incomplete, so its kind is the error event's
            kind = error.kind if error is not None and error.kind else ErrorKind.FETCH
            if kind is ErrorKind.ERROR:
                kind = ErrorKind.FETCH
            detail = (error.message if error is not None and error.message else
                      f"fetch exited with {self.fetch_exit} before completing")
            raise HostFailure(kind, detail)

    async def stage(self, agent: Agent, dest: str) -> None:
        assert self.transport is not None
        self.phase = Phase.STAGE
        if self.staged_by_fetch:  # a tree's fetch made releases/<tag> before "complete"
            self.status = HostStatus.STAGED
            self.mark("staged")
            return
        args = agentargv.stage(dest, f"{self.work}/manifest.json", self.staging or None)
        result = await self.transport.run(self.agent_cmd(agent, *args), timeout=1800)
        agent_reply(result, ErrorKind.STAGE, ActivateResult.from_json)
        self.status = HostStatus.STAGED
        self.mark("staged")

    async def activate(
        self,
        agent: Agent,
        dest: str,
        tag: str,
        keep: int,
        pre: list[str],
        post: list[str],
        hook_timeout: float,
    ) -> None:
        assert self.transport is not None
        self.phase = Phase.ACTIVATE
        args = agentargv.activate(dest, tag, keep, hook_timeout, pre, post)
        result = await self.transport.run(
            self.agent_cmd(agent, *args), timeout=hook_timeout * (len(pre) + len(post) + 1)
        )
        try:
            info = agent_reply(result, ErrorKind.ACTIVATE, ActivateResult.from_json)
        except AgentError as exc:
            self.hooks = exc.hooks  # what the hooks printed, up to the failing one
            raise
        self.hooks = info.hooks
        self.previous = info.previous
        self.current = tag
        self.status = HostStatus.ACTIVATED
        self.mark("activated")

    async def clean(self, agent: Agent, dest: str, deploy_id: str) -> None:
        """Stop this deploy's fetch by pid and remove its files (idempotent)."""
        if self.transport is None or not self.pyz:
            return
        result = await self.transport.run(
            self.agent_cmd(agent, *agentargv.clean(dest, deploy_id)), timeout=60)
        agent_reply(result, ErrorKind.CLEAN, CleanResult.from_json)


@dataclass
class _Shared:
    torrent: bytes
    text: str  # the JSON of the common part, without its braces
    blob: bytes | None = None  # compressed, without tls (the same for every host)
    signature: str | None = None


_shared: list[_Shared] = []  # the current deploy's, at most one


def prepare_input(manifest: Manifest, torrent: bytes, tls: dict[str, str] | None,
                  signature: str | None = None) -> bytes:
    """host-prepare's stdin. A tree goes as its manifest and piece hashes (the host
    rebuilds the torrent), zlib-compressed: a manifest of 100,000 entries is tens
    of MB of JSON. The common part is serialized once per deploy, not per host."""
    if not _shared or _shared[0].torrent is not torrent or _shared[0].signature != signature:
        if manifest.tree is not None:  # the host rebuilds the torrent from the manifest
            request = PrepareRequest(manifest.to_dict(), signature=signature, pieces=(
                base64.b64encode(parse(torrent).info.pieces).decode()))
        else:
            request = PrepareRequest(manifest.to_dict(), signature=signature,
                                     torrent=base64.b64encode(torrent).decode())
        # the host's tls is added per host, after the common part
        _shared[:] = [_Shared(torrent, request.to_json()[1:-1], signature=signature)]
    shared = _shared[0]
    text = "{" + shared.text + (f', "tls": {json.dumps(tls)}' if tls is not None else "") + "}"
    if manifest.tree is None:
        return text.encode()
    if tls is not None:
        return zlib.compress(text.encode(), 6)
    if shared.blob is None:
        shared.blob = zlib.compress(text.encode(), 6)
    return shared.blob


class AgentError(HostFailure):
    """An agent subcommand failed; `hooks` are its hooks' records, if it ran any."""

    def __init__(self, kind: ErrorKind, message: str, hooks: tuple[HookRecord, ...] = ()):
        super().__init__(kind, message)
        self.hooks = hooks


_T = TypeVar("_T")


def agent_reply(result: Result, step: ErrorKind, parse: Callable[[str], _T]) -> _T:
    """The agent's reply (its last stdout line, checked by `parse`, a record's from_json),
    or its typed error when it failed. The kind comes from the error record, else from
    the exit code, else it is the step's: never from the message."""
    lines = result.stdout.strip().splitlines()
    if result.code != 0:
        kind = kind_of_exit(result.code, step)
        try:
            record = ErrorRecord.from_json(lines[-1])
        except (ProtocolError, IndexError):
            record = None
        if record is None:
            # no record (an agent that died, a shell error): stderr's last line, as said
            raise AgentError(kind, _without_prefix(result.last_error()))
        kind = record.kind if record.kind is not ErrorKind.ERROR else kind
        raise AgentError(kind, record.message, record.hooks)
    if not lines:
        raise HostFailure(step, f"{step}: no answer from the agent")
    try:
        return parse(lines[-1])
    except ProtocolError as exc:
        raise HostFailure(step, str(exc)) from None


def _without_prefix(message: str) -> str:
    """`roost <command>: error: why` -> `why` (agent.py's stderr line)."""
    head, sep, rest = message.partition(": error: ")
    return rest if sep and head.startswith("roost ") and " " not in head[6:] else message


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
