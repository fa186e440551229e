"""`roost agent`: the pull-mode service a host runs under systemd (standard library only).

Theory of operation. The agent long-polls its coordinator's channel
(GET /v1/channel), which serves the current deploy's signed envelopes: the
release (manifest, torrent digest, swarm) and the activate / rollback /
finish instructions. Every envelope is verified with the host's
`ssh-keygen -Y verify` against --allowed-signers and checked for freshness
(roost.target.signing) before anything happens; a refused one is reported once,
with its reason, and changes nothing.

A release is fetched by `roost fetch` (the same engine as push mode) as a
child process whose pid file sits in the deploy directory, exactly where
`roost host-clean` looks; when the payload is complete it is staged with
roost.target.release.stage, which verifies the manifest's SHA-256 and only renames a
whole tree into releases/<tag>. Activation, hooks and the health check run
here, on the host, with roost.target.release's activate and run_hook.

State (<dest>/.roost/agent.json, written atomically) holds the highest
sequence accepted and the deploy in progress, so a restart resumes: a
fetch that was running is stopped by its pid file and started again (the
engine rechecks what is on disk and fetches only the rest); a half-unpacked
release (releases/.<tag>.tmp-*) is removed; `current` is only ever switched
by a verified activation instruction.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

import roost
from roost.errors import RoostError, UsageError
from roost.target import Runner, agentargv
from roost.target.hostops import clean, deploy_dir, health_check, route_source, stop_pid
from roost.target.protocol import (
    MAX_TEXT,
    ActivateOrder,
    AgentReport,
    ErrorKind,
    EventName,
    FetchEvent,
    HealthResult,
    HostStatus,
    Instruction,
    ProtocolError,
    PullPhase,
    ReleaseOrder,
    RollbackOrder,
)
from roost.target.release import (
    Dest,
    HookError,
    Manifest,
    ReleaseError,
    _remove_tree,
    activate,
    atomic_write,
    rollback,
    stage,
)
from roost.target.signing import Freshness, SignatureError, Verified, open_envelope

STATE_FILE = "agent.json"
MAX_CHANNEL = 4 * 1024 * 1024
MAX_TORRENT = 64 * 1024 * 1024
HTTP_TIMEOUT = 15.0
PROGRESS_EVERY = 1.0  # seconds between progress reports
RETRY_MAX = 5.0  # seconds between attempts while the coordinator is unreachable


def add_agent(parser: argparse.ArgumentParser) -> Runner:
    parser.description = ("Follow a coordinator's release channel: verify signed releases, "
                          "fetch them through the swarm, stage, activate when told.")
    parser.add_argument("--coordinator", required=True, metavar="URL",
                        help="the coordinator, http(s)://host:port")
    parser.add_argument("--allowed-signers", required=True, type=Path, metavar="FILE",
                        help="OpenSSH allowed-signers file naming the publishers' keys")
    parser.add_argument("--dest", required=True, type=Path, help="destination directory")
    parser.add_argument("--name", default=socket.gethostname(),
                        help="this host's name in the coordinator's host list (default: hostname)")
    parser.add_argument("--ca", type=Path, metavar="PEM",
                        help="CA certificate that signed an https coordinator's certificate")
    parser.add_argument("--poll-wait", type=float, default=20.0,
                        help="seconds one long poll may wait for news (default 20)")
    return run_agent


def run_agent(ns: argparse.Namespace) -> int:
    if not ns.dest.is_absolute():
        raise UsageError("--dest must be an absolute path")
    if not ns.allowed_signers.is_file():
        raise UsageError(f"--allowed-signers {ns.allowed_signers} is not a file")
    parts = urllib.parse.urlsplit(ns.coordinator)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--coordinator {ns.coordinator!r} is not http(s)://host:port")
    if not ns.name or len(ns.name) > 253 or not ns.name.isprintable() or " " in ns.name:
        raise UsageError(f"--name {ns.name!r} is not a host name")
    service = PullAgent(ns)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        service.run()
    except (KeyboardInterrupt, SystemExit) as exc:
        service.stop_fetch()
        service.log("stopped")
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
    return 0


def roost_command() -> list[str]:
    """How to run another `roost` subcommand: this zipapp, or this package."""
    archive = getattr(getattr(roost, "__loader__", None), "archive", None)
    if isinstance(archive, str):
        return [sys.executable, "-I", archive]
    return [sys.executable, "-m", "roost"]


_O = TypeVar("_O", ActivateOrder, RollbackOrder)


class PullAgent:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.base = ns.coordinator.rstrip("/")
        self.signers: Path = ns.allowed_signers
        self.dest = Dest(ns.dest)
        self.name: str = ns.name
        self.poll_wait = max(0.0, min(float(ns.poll_wait), 60.0))
        self.ssl: ssl.SSLContext | None = None
        if self.base.startswith("https:"):
            self.ssl = ssl.create_default_context(cafile=str(ns.ca) if ns.ca else None)
        self.lock = threading.RLock()
        self.state: dict[str, Any] = {}
        self.fresh = Freshness()
        self.refused: set[str] = set()  # digests of envelopes already refused (report once)
        self.done: set[str] = set()  # ... and of those applied: no ssh-keygen run per poll
        self.fetch: subprocess.Popen[bytes] | None = None

    # --- output ----------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> None:
        """One JSON line on stdout (journald keeps it under systemd)."""
        print(json.dumps({"event": event, "host": self.name, "t": round(time.time(), 3),
                          **fields}), flush=True)

    def report(self, state: HostStatus, **fields: Any) -> None:
        """Tell the coordinator (best effort: silence counts as failure there) and log it."""
        deploy_id = self.state.get("deploy_id")
        if isinstance(fields.get("reason"), str):  # the coordinator refuses longer text
            fields["reason"] = fields["reason"][:MAX_TEXT]
        report = AgentReport(self.name, state, str(deploy_id) if deploy_id else None,
                             present=frozenset(fields), **fields)
        body = report.to_json()
        self.log("report", **report.to_dict())
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            self._http("POST", "/v1/report", body.encode(), 64 * 1024)

    def _http(self, method: str, path: str, data: bytes | None, limit: int,
              timeout: float = HTTP_TIMEOUT) -> bytes:
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl) as response:
            body: bytes = response.read(limit + 1)
        if len(body) > limit:
            raise ValueError(f"{path}: answer larger than {limit} bytes")
        return body

    # --- state -----------------------------------------------------------------------

    def load(self) -> None:
        self.dest.ensure()
        try:
            data = json.loads((self.dest.meta / STATE_FILE).read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"cannot read {self.dest.meta / STATE_FILE}: {exc}") from None
        self.state = data if isinstance(data, dict) else {}
        self.fresh = Freshness(int(self.state.get("seq", 0)), str(self.state.get("seq_deploy", "")))

    def _phase(self) -> PullPhase | None:
        """The state file's phase (None: none, or one this version does not know)."""
        try:
            return PullPhase(self.state.get("phase"))
        except ValueError:
            return None

    def _release(self) -> ReleaseOrder:
        """The release this agent follows, as the state file keeps it (checked again)."""
        return ReleaseOrder.from_dict(self.state.get("release"))

    def save(self, **changes: Any) -> None:
        with self.lock:
            self.state.update(changes)
            self.state["seq"], self.state["seq_deploy"] = self.fresh.seq, self.fresh.deploy_id
            atomic_write(self.dest.meta / STATE_FILE, json.dumps(self.state, indent=1).encode())

    # --- the loop --------------------------------------------------------------------

    def run(self) -> None:
        self.load()
        self.recover()
        self.log("ready", coordinator=self.base, dest=str(self.dest.root))
        version, retry, down = -1, 0.5, ""
        while True:
            query = urllib.parse.urlencode({"host": self.name, "since": version,
                                            "wait": self.poll_wait})
            try:
                data = json.loads(self._http("GET", f"/v1/channel?{query}", None, MAX_CHANNEL,
                                             timeout=self.poll_wait + HTTP_TIMEOUT))
                if not isinstance(data, dict) or not isinstance(data.get("envelopes"), list):
                    raise ValueError("the channel's answer is not {version, envelopes}")
            except (OSError, ValueError, urllib.error.URLError) as exc:
                if str(exc) != down:  # once per outage and cause, not once per attempt
                    self.log("coordinator_unreachable", error=str(exc)[:300])
                down = str(exc)
                time.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            down, retry = "", 0.5
            version = int(data.get("version", -1)) if isinstance(data.get("version"), int) else -1
            for envelope in sorted(data["envelopes"], key=_claimed_seq):
                self.handle(envelope)

    def handle(self, envelope: Any) -> None:
        # body and signature: an unsigned copy refused must not hide the signed original
        parts = [envelope.get(k) for k in ("body", "signature")] if isinstance(
            envelope, dict) else [None, None]
        digest = hashlib.sha256(repr(parts).encode()).hexdigest()
        if digest in self.refused or digest in self.done:
            return
        try:
            v = open_envelope(envelope, self.signers)
            if not self.fresh.check(v):
                self.done.add(digest)
                return
        except SignatureError as exc:
            self.refused.add(digest)
            self.report(HostStatus.REFUSED, kind=ErrorKind.SIGNATURE, reason=str(exc),
                        instruction=_claimed(envelope))
            return
        self.fresh.accept(v)
        self.done.add(digest)
        self.save()
        try:
            instruction = Instruction(v.kind)
        except ValueError:
            instruction = Instruction.PROBE  # never published: refused below
        action = {Instruction.RELEASE: self.on_release, Instruction.ACTIVATE: self.on_activate,
                  Instruction.ROLLBACK: self.on_rollback,
                  Instruction.FINISH: self.on_finish}.get(instruction)
        if action is None:
            self.report(HostStatus.REFUSED, kind=ErrorKind.SIGNATURE,
                        reason=f"unknown instruction {v.kind!r}")
            return
        self.log("instruction", kind=v.kind, deploy_id=v.deploy_id, seq=v.seq,
                 signer=v.principal)
        try:
            action(v)
        except (RoostError, OSError) as exc:
            self.report(HostStatus.FAILED, kind=instruction.step, reason=str(exc), seq=v.seq)
        except (KeyError, TypeError, ValueError) as exc:  # signed, yet not what we expect
            self.report(HostStatus.FAILED, kind=ErrorKind.INTERNAL, seq=v.seq,
                        reason=f"cannot apply {v.kind}: {type(exc).__name__}: {exc}")

    # --- release: fetch and stage --------------------------------------------------------

    def on_release(self, v: Verified) -> None:
        try:
            order = ReleaseOrder.from_dict(v.body)
            manifest = Manifest.load(order.manifest)
        except (ProtocolError, UsageError) as exc:
            raise SignatureError(f"the signed release is malformed: {exc}") from None
        self.stop_fetch()
        self.save(deploy_id=v.deploy_id, release=order.to_dict(), phase=PullPhase.FETCHING,
                  tag=manifest.tag, previous=self.dest.current_tag())
        if self._have(manifest):
            self.save(phase=PullPhase.STAGED)
            self.report(HostStatus.STAGED, already_had=True, current=self.dest.current_tag())
            return
        work = deploy_dir(self.dest, v.deploy_id)
        (work / "staging").mkdir(parents=True, exist_ok=True)
        torrent = self._http("GET", f"/v1/torrent/{urllib.parse.quote(v.deploy_id)}", None,
                             MAX_TORRENT)
        if hashlib.sha256(torrent).hexdigest() != order.torrent_sha256:
            self.save(phase=PullPhase.FAILED)
            raise SignatureError("the torrent served does not match the signed release's digest; "
                                 "nothing was fetched")
        atomic_write(work / "payload.torrent", torrent)
        atomic_write(work / "manifest.json", json.dumps(manifest.to_dict()).encode())
        self.start_fetch(order)

    def _have(self, manifest: Manifest) -> bool:
        known = self.dest.load_state()["releases"].get(manifest.tag)
        return bool(known and known.get("sha256") == manifest.sha256
                    and (self.dest.releases / manifest.tag).is_dir())

    def start_fetch(self, order: ReleaseOrder) -> None:
        work = deploy_dir(self.dest, self.state["deploy_id"])
        address = None
        if order.route is not None:
            with contextlib.suppress(OSError, ValueError):
                address = route_source(*order.route)
                if address.startswith("127."):
                    address = None
        argv = [*roost_command(), *agentargv.fetch(agentargv.FetchArgs(
            str(work / "payload.torrent"), str(work / "staging"), quiet=True,
            tracker=order.announce_url, expected_peers=order.expected_peers,
            port=order.port_range or "6881-6999",
            timeout=round(max(1.0, order.expires - time.time())),
            bind=address, announce_ip=address,
            upload_rate=order.upload_rate or None, download_rate=order.download_rate or None,
            web_seeds=order.web_seeds))]  # BEP 19: HTTP servers of the payload (signed)
        errors = (work / "fetch.err").open("wb")
        self.fetch = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=errors, start_new_session=True)
        errors.close()
        (work / "fetch.pid").write_text(f"{self.fetch.pid}\n")
        self.log("fetch_started", pid=self.fetch.pid, deploy_id=self.state["deploy_id"])
        threading.Thread(target=self._follow, args=(self.fetch, self.state["deploy_id"]),
                         daemon=True).start()

    def _follow(self, proc: subprocess.Popen[bytes], deploy_id: str) -> None:
        """Read the fetch's events; stage once the payload is complete."""
        assert proc.stdout is not None
        complete, error, last, peer_id = False, "", 0.0, None
        kind = ErrorKind.FETCH
        for line in proc.stdout:
            try:
                event = FetchEvent.from_json(line.decode(errors="replace"))
            except ProtocolError:
                continue  # not an event: never fatal
            if event is None:
                continue
            if event.event is EventName.STARTED and event.peer_id is not None:
                peer_id = event.peer_id
            elif event.event is EventName.CHECKED:
                self.log("resumed", have=event.have, pieces=event.pieces)
            elif (event.event is EventName.PROGRESS and not complete
                  and time.monotonic() - last >= PROGRESS_EVERY):
                last = time.monotonic()
                self.report(HostStatus.FETCHING, peer_id=peer_id,
                            bytes_done=event.bytes_done or 0,
                            bytes_total=event.bytes_total or 0,
                            rate=event.down_Bps or 0)
            elif event.event is EventName.COMPLETE and not complete:
                complete = True
                self._stage(deploy_id, peer_id)
            elif event.event is EventName.ERROR:
                error = (event.message or "")[:500]
                if event.kind is not None and event.kind is not ErrorKind.ERROR:
                    kind = event.kind
        code = proc.wait()
        if complete or self.state.get("deploy_id") != deploy_id or proc is not self.fetch:
            return
        if code < 0:  # stopped by us (restart, a newer release, shutdown)
            return
        tail = (deploy_dir(self.dest, deploy_id) / "fetch.err")
        with contextlib.suppress(OSError):
            error = error or (tail.read_text(errors="replace").strip().splitlines() or [""])[-1]
        self.save(phase=PullPhase.FAILED)
        self.report(HostStatus.FAILED, kind=kind, peer_id=peer_id,
                    reason=error or f"fetch exited with {code} before completing")

    def _stage(self, deploy_id: str, peer_id: str | None) -> None:
        with self.lock:
            if self.state.get("deploy_id") != deploy_id:
                return
            manifest = Manifest.load(self._release().manifest)
        work = deploy_dir(self.dest, deploy_id)
        try:
            stage(self.dest, manifest, work / "staging" / manifest.name)
        except RoostError as exc:
            self.save(phase=PullPhase.FAILED)
            self.report(HostStatus.FAILED, kind=ErrorKind.STAGE, reason=str(exc), peer_id=peer_id)
            return
        self.save(phase=PullPhase.STAGED)
        self.report(HostStatus.STAGED, peer_id=peer_id, bytes_done=manifest.size,
                    bytes_total=manifest.size, current=self.dest.current_tag())

    def stop_fetch(self) -> None:
        proc, self.fetch = self.fetch, None
        if proc is not None and proc.poll() is None:
            stop_pid(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    # --- instructions ------------------------------------------------------------------

    def _order(self, v: Verified, kind: type[_O]) -> _O:
        try:
            return kind.from_dict(v.body)
        except ProtocolError as exc:
            raise SignatureError(f"the signed {v.kind} is malformed: {exc}") from None

    def _for_my_release(self, v: Verified, tag: str) -> str:
        if v.deploy_id != self.state.get("deploy_id") or tag != self.state.get("tag"):
            raise SignatureError(
                f"{v.kind} for deploy {v.deploy_id} ({tag}), but this host follows deploy "
                f"{self.state.get('deploy_id')} ({self.state.get('tag')}); nothing was changed")
        return tag

    def on_activate(self, v: Verified) -> None:
        order = self._order(v, ActivateOrder)
        if self.name not in order.hosts:
            return
        tag = self._for_my_release(v, order.tag)
        if self._phase() not in (PullPhase.STAGED, PullPhase.ACTIVATED):
            raise ReleaseError(f"{tag} is not staged here (phase {self.state.get('phase')}); "
                               "nothing was changed")
        try:
            result = activate(self.dest, tag, keep=order.keep, pre=list(order.pre),
                              post=list(order.post), hook_timeout=order.hook_timeout)
        except HookError as exc:
            self.report(HostStatus.FAILED, kind=ErrorKind.HOOK, reason=str(exc), seq=v.seq,
                        hooks=exc.hooks, current=self.dest.current_tag())
            return
        previous = result.previous if result.changed else self.state.get("previous")
        self.save(phase=PullPhase.ACTIVATED, previous=previous)
        health: HealthResult | None = None
        if order.health_check:
            health = health_check(self.dest, tag, order.health_check, order.health_timeout,
                                  previous)
            if not health.ok:
                self.report(HostStatus.FAILED, kind=ErrorKind.HEALTH, reason=health.reason,
                            seq=v.seq, health=health, hooks=result.hooks, current=tag,
                            previous=previous)
                return
        self.report(HostStatus.OK, seq=v.seq, current=tag, previous=previous, hooks=result.hooks,
                    health=health)

    def on_rollback(self, v: Verified) -> None:
        order = self._order(v, RollbackOrder)
        if self.name not in order.hosts:
            return
        tag = self._for_my_release(v, order.tag)
        previous = self.state.get("previous")
        with self.dest.locked():
            now = self.dest.current_tag()
        if now == tag and previous and previous != tag:
            rollback(self.dest, previous)
        elif now == tag and not previous:
            with self.dest.locked(), contextlib.suppress(FileNotFoundError):
                if self.dest.current_tag() == tag:
                    self.dest.current.unlink()
        self.save(phase=PullPhase.STAGED)
        self.report(HostStatus.ROLLED_BACK, seq=v.seq, current=self.dest.current_tag())

    def on_finish(self, v: Verified) -> None:
        if v.deploy_id != self.state.get("deploy_id"):
            return
        self.stop_fetch()
        clean(self.dest, v.deploy_id)  # the deploy directory and its pid file
        self.report(HostStatus.FINISHED, seq=v.seq, current=self.dest.current_tag())

    # --- restart ---------------------------------------------------------------------

    def recover(self) -> None:
        """After a restart: no half-unpacked release stays; a fetch resumes."""
        try:
            self._recover()
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:  # another version's
            self.log("state_ignored", error=f"{type(exc).__name__}: {exc}")
            self.save(phase=PullPhase.FAILED)

    def _recover(self) -> None:
        if self.dest.releases.is_dir():
            with self.dest.locked(timeout=10):
                for tmp in self.dest.releases.glob(".*.tmp-*"):
                    _remove_tree(tmp)
                    self.log("removed_partial", path=tmp.name)
        deploy_id = self.state.get("deploy_id")
        phase = self._phase()
        if not deploy_id or phase not in (PullPhase.FETCHING, PullPhase.STAGED):
            return
        work = deploy_dir(self.dest, str(deploy_id))
        with contextlib.suppress(OSError, ValueError):
            stop_pid(int((work / "fetch.pid").read_text().strip()))  # the old run's fetch
        tag = str(self.state.get("tag"))
        if phase is PullPhase.STAGED and (self.dest.releases / tag).is_dir():
            self.report(HostStatus.STAGED, current=self.dest.current_tag())
            return
        order = self._release()
        if time.time() > order.expires:
            self.save(phase=PullPhase.FAILED)
            self.report(HostStatus.FAILED, kind=ErrorKind.STALE,
                        reason=f"the release of deploy {deploy_id} "
                        "expired while this agent was down")
            return
        if not (work / "payload.torrent").is_file():
            self.save(phase=PullPhase.FAILED)
            self.report(HostStatus.FAILED, kind=ErrorKind.FETCH,
                        reason="the deploy directory is gone")
            return
        self.save(phase=PullPhase.FETCHING)
        self.log("resuming", deploy_id=deploy_id)
        self.start_fetch(order)


def _claimed(envelope: Any) -> dict[str, Any]:
    """What an envelope says about itself, unverified: only for the refusal report."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(envelope["body"])
        if isinstance(body, dict):
            return {k: str(body.get(k))[:100] for k in ("kind", "deploy_id", "seq")}
    return {}


def _claimed_seq(envelope: Any) -> int:
    seq = _claimed(envelope).get("seq", "0")
    return int(seq) if str(seq).isdigit() else 0

