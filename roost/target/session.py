"""Target side: one agent process per deploy, driven over one SSH channel (stdlib only).

Theory of operation. `roost session` is started once per host per deploy.
It reads request records on stdin and writes reply records on stdout, one
JSON object per line:

    in:  {"id": 3, "op": "run", "argv": ["host-prepare", ...], "input": <base64>|null,
          "stdin": false, "pidfile": null}
         {"id": 3, "op": "send", "data": "release {...}\\n", "eof": true}
         {"id": 3, "op": "kill"}
         {"op": "bye"}                                 (the deploy is done: exit quietly)
    out: {"session": 1, "pid": 1234}                   (once, when ready)
         {"id": 3, "out": "<one stdout line>"}  {"id": 3, "err": "<stderr text>"}
         {"id": 3, "exit": 0}

A request runs the agent command it names, with the very argv and stdin the
separate SSH commands had, so every reply's contents are what the operator
already reads. Each request runs in a fork of this process: no interpreter
start, no SSH channel, and a long fetch streams its events while lock,
stage or activate requests come and go beside it. One thread only (a
selector loop), so fork is safe. `fetch` alone execs a fresh agent after
the fork: it runs for the whole transfer, and hosts' tooling (and the pid
file host-clean stops it by) see it as the `roost fetch` it always was.

When stdin closes without `bye` (the operator died, or its connection
dropped), the session cleans up after the deploy itself: it stops every
running request (fetch first), runs `host-clean` for the deploy it holds
the lock for, then releases that lock recording the result `lost` in the
host's history, and exits.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import selectors
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from roost.target import Runner
from roost.target.fsutil import write_pid_file
from roost.target.lifeline import die_with_parent
from roost.target.protocol_common import HostStatus

STOP_GRACE = 5.0  # seconds a stopped request gets between SIGTERM and SIGKILL
LOST = {"result": HostStatus.LOST.value,
        "reason": "the deploy's connection closed before it released the lock; "
                  "the agent cleaned up"}


@dataclass
class Request:
    id: int
    argv: list[str]
    pid: int
    out: int | None
    err: int | None
    stdin: int | None
    out_buf: bytes = b""
    started: float = field(default_factory=time.monotonic)


def add_session(parser: argparse.ArgumentParser) -> Runner:
    parser.description = ("Run agent commands sent as JSON records on stdin, replying on "
                          "stdout; on EOF stop them, clean up and release the deploy lock.")
    return lambda ns: Session().serve()


def _preload() -> None:
    """Import the commands' modules once, so every forked request starts warm."""
    import importlib

    from roost.target.agent import AGENT_COMMANDS

    for name in ("host-lock", "host-prepare", "activate", "host-clean"):  # fetch is exec'd
        with contextlib.suppress(ImportError):
            importlib.import_module(AGENT_COMMANDS[name].split(":")[0])


class Session:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.requests: dict[int, Request] = {}
        self.inbuf = b""
        self.outbuf: list[bytes] = []  # replies of this loop turn, written at its end
        self.out_ok = True
        self.bye = False
        self.eof = False

    # --- replies ----------------------------------------------------------------------

    def reply(self, record: dict[str, Any]) -> None:
        """Queue a reply; flush() writes a loop turn's replies as one write, so a
        request's last lines and its exit reach the deploy host as one SSH packet
        (each packet costs the deploy process's one thread the same, whatever its size)."""
        if self.out_ok:
            self.outbuf.append((json.dumps(record) + "\n").encode())

    def flush(self) -> None:
        data, self.outbuf = b"".join(self.outbuf), []
        if not data or not self.out_ok:
            return
        try:
            while data:
                try:
                    data = data[os.write(1, data):]
                except BlockingIOError:  # stdout shares a non-blocking socket with stdin
                    select.select([], [1], [], 1.0)
        except OSError:  # the channel is gone: keep going to clean up
            self.out_ok = False

    # --- the loop ---------------------------------------------------------------------

    def serve(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # stdin stays blocking: the selector says when a read will not block, and stdout
        # may be the same socket (sshd), which must not turn non-blocking under us
        self.sel.register(0, selectors.EVENT_READ, None)
        self.reply({"session": 1, "pid": os.getpid()})
        self.flush()
        # after saying ready: the deploy's first request (host-lock) crosses the network
        # while the commands' modules load; it is read once they are in
        _preload()
        try:
            while not self.eof and not self.bye:
                for key, _ in self.sel.select(timeout=1.0):
                    if key.data is None:
                        self._read_stdin()
                    else:
                        self._read_child(*key.data)
                self.flush()
        except _Stop:
            pass
        self.flush()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the cleanup below runs to its end
        if not self.bye:
            self.lost()
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        raise _Stop

    def _read_stdin(self) -> None:
        try:
            chunk = os.read(0, 1 << 20)
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            self.sel.unregister(0)
            return
        self.inbuf += chunk
        while b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            if line.strip():
                self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            record = json.loads(line)
            op = record["op"]
            rid = int(record.get("id", 0))
        except (ValueError, KeyError, TypeError):
            self.reply({"error": "unreadable request record"})
            return
        if op == "bye":
            self.bye = True
        elif op == "run":
            self._start(rid, record)
        elif op == "send":
            self._send(rid, str(record.get("data", "")), bool(record.get("eof")))
        elif op == "kill":
            req = self.requests.get(rid)
            if req is not None:
                _signal(req.pid, signal.SIGTERM)
        else:
            self.reply({"id": rid, "error": f"unknown op {op!r}"})

    # --- requests ---------------------------------------------------------------------

    def _start(self, rid: int, record: dict[str, Any]) -> None:
        argv = [str(a) for a in record.get("argv", [])]
        data = base64.b64decode(record["input"]) if record.get("input") else None
        want_stdin = bool(record.get("stdin")) or data is not None
        in_r, in_w = os.pipe() if want_stdin else (os.open(os.devnull, os.O_RDONLY), -1)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: becomes the agent command
            _child(argv, in_r, out_w, err_w, record.get("pidfile"))
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        stdin: int | None = in_w if in_w >= 0 else None
        if data is not None and stdin is not None:
            # a small blob fits the pipe; a big one (a tree manifest) is written in
            # full before we read on: the child reads all its input first
            with contextlib.suppress(OSError):
                view = memoryview(data)
                while view:
                    view = view[os.write(stdin, view):]
            if not record.get("stdin"):
                os.close(stdin)
                stdin = None
        req = Request(rid, argv, pid, out_r, err_r, stdin)
        self.requests[rid] = req
        self.sel.register(out_r, selectors.EVENT_READ, (req, "out"))
        self.sel.register(err_r, selectors.EVENT_READ, (req, "err"))

    def _send(self, rid: int, data: str, eof: bool) -> None:
        req = self.requests.get(rid)
        if req is None or req.stdin is None:
            return
        with contextlib.suppress(OSError):
            os.write(req.stdin, data.encode())
        if eof:
            os.close(req.stdin)
            req.stdin = None

    def _read_child(self, req: Request, stream: str) -> None:
        fd = req.out if stream == "out" else req.err
        assert fd is not None
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            chunk = b""
        if stream == "out":
            req.out_buf += chunk
            lines = req.out_buf.split(b"\n")
            req.out_buf = b"" if not chunk else lines.pop()
            for line in lines:
                if line or chunk:
                    self.reply({"id": req.id, "out": line.decode(errors="replace") + "\n"})
        elif chunk:
            self.reply({"id": req.id, "err": chunk.decode(errors="replace")})
        if not chunk:
            self.sel.unregister(fd)
            os.close(fd)
            if stream == "out":
                req.out = None
            else:
                req.err = None
            if req.out is None and req.err is None:
                self._finish(req)

    def _finish(self, req: Request) -> None:
        _, status = os.waitpid(req.pid, 0)
        if req.stdin is not None:
            with contextlib.suppress(OSError):
                os.close(req.stdin)
        del self.requests[req.id]
        code = os.waitstatus_to_exitcode(status)
        self.reply({"id": req.id, "exit": code if code >= 0 else 128 - code})

    # --- the deploy went away -----------------------------------------------------------

    def lost(self) -> None:
        """Stop every request (the lock holder last), clean the deploy's files, and
        release the lock with the result `lost`."""
        locks = [r for r in self.requests.values() if r.argv[:1] == ["host-lock"]]
        others = [r for r in self.requests.values() if r not in locks]
        self._stop(others)
        for lock in locks:
            dest, deploy_id = _flag(lock.argv, "--dest"), _flag(lock.argv, "--deploy-id")
            if dest and deploy_id:
                self._run_quietly(["host-clean", "--dest", dest, "--deploy-id", deploy_id,
                                   "--json"])
            if lock.stdin is not None:
                with contextlib.suppress(OSError):
                    os.write(lock.stdin, ("release " + json.dumps(LOST) + "\n").encode())
                    os.close(lock.stdin)
                lock.stdin = None
        self._stop(locks, grace=STOP_GRACE * 3)

    def _stop(self, requests: list[Request], grace: float = STOP_GRACE) -> None:
        for req in requests:
            if req.argv[:1] != ["host-lock"]:
                _signal(req.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for req in requests:
            while time.monotonic() < deadline and _alive(req.pid):
                time.sleep(0.05)
            if _alive(req.pid):
                _signal(req.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(req.pid, 0)

    def _run_quietly(self, argv: list[str]) -> None:
        pid = os.fork()
        if pid == 0:
            null = os.open(os.devnull, os.O_RDWR)
            _child(argv, null, null, null, None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


class _Stop(Exception):
    """SIGTERM/SIGHUP: treated as the channel closing."""


def _child(argv: list[str], stdin: int, stdout: int, stderr: int, pidfile: object) -> None:
    """In the forked child: wire the pipes to fds 0-2 and run the agent command."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        die_with_parent()
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.closerange(3, 1024)
        os.set_blocking(0, True)
        if pidfile:  # whole before the exec; no fetch if host-clean moved its directory
            try:
                write_pid_file(str(pidfile), os.getpid())
            except OSError as exc:
                print(f"roost {argv[0] if argv else 'session'}: error: cannot write "
                      f"{pidfile}: {exc.strerror}", file=sys.stderr)
                return  # exit 1 (finally)
        if argv[:1] == ["fetch"]:
            # the long-lived fetch is its own program: seen by its pid and command line
            # (ps, host-clean's pid file), and apart from the session's memory
            os.execv(sys.executable, [sys.executable, *_self_argv(), *argv])
        from roost.target.agent import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a child must never return into the session loop
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _self_argv() -> list[str]:
    """How to start a fresh agent: `-I <pyz>` from the zipapp, else `-m roost`. Not `-S`,
    though the session itself runs under it: the fetch finds uvloop in site-packages."""
    if sys.argv[0].endswith(".pyz"):
        return ["-I", sys.argv[0]]
    return ["-m", "roost"]


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _flag(argv: list[str], name: str) -> str | None:
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(name) + 1]
    return None
