"""How the orchestrator runs shell commands on a host: over SSH, or locally (demo).

Both transports take the same shell command text, so `roost demo` runs the
very commands `roost deploy` sends over SSH. Failures become HostFailure
with a `kind` (unreachable, auth, hostkey, lost, timeout, ...) that the
final table and --json report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import socket
import stat
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from roost.deploy import pace
from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.sshlib import asyncssh
from roost.target import lifeline
from roost.target.protocol import ErrorKind

MAX_LINE = 1 << 20
PREFERRED_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                     "chacha20-poly1305@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr"]
LOST_MID_TRANSFER = "the host died or its network went away mid-transfer (SSH connection lost)"


async def spawn_roost_child(*args: str, stdin: int, cwd: Path | None = None
                            ) -> asyncio.subprocess.Process:
    """Start `python -m <args>` beside the deploy (its tracker, its origin): its own
    session, so a Ctrl-C at the terminal reaches only the deploy, which stops it;
    dying with the deploy even by SIGKILL (asked through the environment, see
    roost.target.lifeline: no preexec_fn once the deploy's threads run); and on
    Python 3.11+ with -P, so a roost/ folder in the operator's working directory
    cannot shadow the installed one."""
    safe_path = ("-P",) if sys.version_info >= (3, 11) else ()
    return await asyncio.create_subprocess_exec(
        sys.executable, *safe_path, "-m", *args,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=lifeline.asked_by(os.getpid()),
        cwd=cwd,
    )


class AgentCommand(str):
    """The shell text that runs an agent command, carrying its arguments (and the fetch's
    pid file): an agent session sends those as a record without parsing the text."""

    args: tuple[str, ...]
    pidfile: str | None

    def __new__(cls, text: str, args: Sequence[str], pidfile: str | None = None
                ) -> AgentCommand:
        self = super().__new__(cls, text)
        self.args, self.pidfile = tuple(args), pidfile
        return self


class HostFailure(Exception):
    """A failure confined to one host; `kind` is a short machine-readable reason."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def last_error(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit {self.code}"


class Stream(Protocol):
    def lines(self) -> AsyncIterator[str]: ...
    async def wait(self) -> int: ...
    def close(self) -> None: ...
    async def send(self, text: str, eof: bool = False) -> None: ...


class Transport(Protocol):
    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float = 120.0
    ) -> Result: ...
    async def start(self, command: str, *, stdin: bool = False) -> Stream: ...
    async def close(self) -> None: ...


# --- SSH ---------------------------------------------------------------------------------


_known: dict[tuple[str, int], Any] = {}  # the one known_hosts file read, by path and mtime


def _known_hosts(config: DeployConfig) -> Any:
    if config.known_hosts == "off":
        return None  # asyncssh: no host key check (documented as unsafe)
    if config.known_hosts:
        # read once per deploy, not once per connection: a file that names the whole
        # fleet would otherwise be parsed N times, O(N^2) in all
        path = str(Path(config.known_hosts).expanduser())
        try:
            key = (path, os.stat(path).st_mtime_ns)
            if key not in _known:
                _known.clear()
                _known[key] = asyncssh.read_known_hosts(path)
            return _known[key]
        except (OSError, ValueError, asyncssh.Error):
            return path  # asyncssh reports the problem at connect, per host
    return ()  # asyncssh's default: ~/.ssh/known_hosts


_keys: dict[tuple[str, int], Any] = {}  # the one --key read, by path and mtime


def _client_keys(key: str) -> Any:
    """--key, loaded once per deploy rather than once per connection (0.4 ms of the
    deploy's CPU per host, to read and parse the same file); a key asyncssh cannot
    load here is left to it, to be reported at connect, per host."""
    path = str(Path(key).expanduser())
    try:
        stamp = (path, os.stat(path).st_mtime_ns)
        if stamp not in _keys:
            _keys.clear()
            _keys[stamp] = asyncssh.load_keypairs([path])
        return _keys[stamp]
    except (OSError, ValueError, asyncssh.Error):
        return [path]


def ssh_hostname(alias: str, config: DeployConfig) -> str:
    """The address an ~/.ssh/config alias stands for (its HostName), else `alias`:
    the deploy host needs it to pick the address its tracker binds."""
    return str(_ssh_config_value(_ssh_config_path(config), alias, "Hostname") or alias)


def _ssh_config_path(config: DeployConfig) -> str:
    return str(Path(config.ssh_config or "~/.ssh/config").expanduser())


def _ssh_config_value(path: str, alias: str, option: str) -> object:
    """One option of ~/.ssh/config (or ssh.config) for `alias`, as asyncssh reads it;
    None when unset or the file is missing. Cached by the file's identity and
    modification time: read once per host and option while the file stays the
    same, read again once it is rewritten (a long-running caller sees the edit)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return _ssh_config_lookup(path, (st.st_ino, st.st_size, st.st_mtime_ns), alias, option)


@functools.lru_cache(maxsize=4096)
def _ssh_config_lookup(path: str, _version: tuple[int, int, int], alias: str,
                       option: str) -> object:
    import getpass

    from asyncssh.config import SSHClientConfig

    with contextlib.suppress(Exception):  # a config asyncssh rejects fails at connect, clearly
        parsed = SSHClientConfig.load(None, [Path(path)], False, False, False,
                                      getpass.getuser(), "", alias, ())
        return parsed.get(option)
    return None


def ssh_options(spec: HostSpec, config: DeployConfig) -> dict[str, Any]:
    """asyncssh.connect's options for one host: flags first, then what asyncssh reads
    from the ssh config itself."""
    options: dict[str, Any] = {
        "known_hosts": _known_hosts(config),
        "connect_timeout": config.connect_timeout,
        # a host that dies mid-transfer is noticed in ~15 s, not at TCP timeout: by the
        # kernel once connected (watch_socket), by asyncssh until then
        "keepalive_interval": pace.KEEPALIVE_IDLE,
        "keepalive_count_max": 3,
    }
    if _ssh_config_value(_ssh_config_path(config), spec.address, "Ciphers") is None:
        # AES-GCM first: asyncssh's chacha20-poly1305 costs the deploy host ~17 us of
        # CPU per packet, AES-GCM ~2 us (bench/launch.py); both are OpenSSH defaults.
        # A Ciphers line in the operator's ssh config wins, as it would for ssh(1).
        options["encryption_algs"] = PREFERRED_CIPHERS
    if spec.port is not None:
        options["port"] = spec.port
    if config.ssh_config:
        options["config"] = [str(Path(config.ssh_config).expanduser())]
    if spec.user:
        options["username"] = spec.user
    if config.key:
        options["client_keys"] = _client_keys(config.key)
    if options["known_hosts"] == ():
        del options["known_hosts"]
    return options


async def ssh_connect(spec: HostSpec, config: DeployConfig, fleet: int = 1) -> Transport:
    """Connect as OpenSSH would: ~/.ssh/config (or ssh.config) supplies HostName, User,
    Port, IdentityFile, ProxyJump and UserKnownHostsFile unless a flag overrides them;
    keys come from ssh-agent ($SSH_AUTH_SOCK) too. `fleet`: the deploy's host count,
    which sets how often an idle connection is checked (roost.deploy.pace)."""
    options = ssh_options(spec, config)
    try:
        conn = await asyncssh.connect(spec.address, **options)
    except asyncssh.PermissionDenied:
        raise HostFailure(ErrorKind.AUTH, "authentication failed") from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostFailure(ErrorKind.HOSTKEY, f"host key not verified: {exc.reason}") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise HostFailure(ErrorKind.UNREACHABLE,
                          f"no answer within {config.connect_timeout:g} s") from None
    except OSError as exc:
        raise HostFailure(ErrorKind.UNREACHABLE, exc.strerror or str(exc)) from None
    except asyncssh.Error as exc:
        raise HostFailure(ErrorKind.SSH, f"SSH failed: {exc.reason}") from None
    except ValueError as exc:  # e.g. an unreadable key file
        raise HostFailure(ErrorKind.SSH, str(exc)) from None
    kernel_watches = watch_socket(conn.get_extra_info("socket"))
    conn.set_keepalive(pace.ssh_keepalive(fleet, kernel_watches), 3)
    transport: Transport = SSHTransport(conn)
    if config.sudo or config.sudo_user:
        transport = SudoTransport(transport, config.sudo_user or "root")
    return transport


def watch_socket(sock: Any) -> bool:
    """Let the kernel find a dead peer on this TCP socket: keepalive probes after
    KEEPALIVE_IDLE s of silence, and a limit on unacknowledged data. False when there
    is no such socket (a ProxyJump channel) or the options are missing."""
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, pace.KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, pace.KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, pace.KEEPALIVE_PROBES)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                        pace.USER_TIMEOUT_S * 1000)
    except (OSError, AttributeError):  # not TCP, or not Linux
        return False
    return True


class _SSHStream:
    def __init__(self, process: asyncssh.SSHClientProcess[str]) -> None:
        self.process = process

    async def lines(self) -> AsyncIterator[str]:
        try:
            async for line in self.process.stdout:
                yield line
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
            raise HostFailure(ErrorKind.LOST, f"{LOST_MID_TRANSFER} ({exc})") from None

    async def wait(self) -> int:
        try:
            result = await self.process.wait()
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
            raise HostFailure(ErrorKind.LOST, f"{LOST_MID_TRANSFER} ({exc})") from None
        if result.exit_status is None:
            raise HostFailure(ErrorKind.LOST, LOST_MID_TRANSFER)
        return int(result.exit_status)

    def close(self) -> None:
        self.process.close()

    async def send(self, text: str, eof: bool = False) -> None:
        try:
            self.process.stdin.write(text)
            if eof:
                self.process.stdin.write_eof()
        except (asyncssh.Error, OSError, BrokenPipeError):
            pass  # the process is gone; its exit status tells the rest


class SSHTransport:
    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float = 120.0
    ) -> Result:
        try:
            result = await asyncio.wait_for(
                self.conn.run(command, input=input, encoding=None, check=False), timeout
            )
        except (asyncio.TimeoutError, TimeoutError):
            raise HostFailure(ErrorKind.TIMEOUT, f"a command took over {timeout:g} s") from None
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError,
                OSError) as exc:  # ChannelOpenError: the host died between two commands
            raise HostFailure(ErrorKind.LOST, f"connection lost: {exc}") from None
        if result.exit_status is None:
            raise HostFailure(ErrorKind.LOST, "connection lost before the command finished")
        return Result(result.exit_status, _text(result.stdout), _text(result.stderr))

    async def start(self, command: str, *, stdin: bool = False) -> Stream:
        try:
            process = await self.conn.create_process(
                command, **({} if stdin else {"stdin": asyncssh.DEVNULL}))
        except (
            asyncssh.ConnectionLost,
            asyncssh.DisconnectError,
            OSError,
            asyncssh.ChannelOpenError,
        ) as exc:
            raise HostFailure(ErrorKind.LOST, f"cannot start a command: {exc}") from None
        return _SSHStream(process)

    async def close(self) -> None:
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.wait_closed(), 5)


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data or "")


SUDO_REFUSALS = ("password is required", "not allowed", "not in the sudoers", "unknown user",
                 "no tty present")


class SudoTransport:
    """Every command through `sudo -n -u USER`: a non-root login runs roost as the
    destination's owner. -n: never prompt (a password prompt would hang the deploy);
    sudo sets $HOME to the owner's, so the agent cache lives there too."""

    def __init__(self, inner: Transport, user: str) -> None:
        self.inner = inner
        self.user = user

    def wrap(self, command: str) -> str:
        return f"sudo -n -u {shlex.quote(self.user)} -H -- /bin/sh -c {shlex.quote(command)}"

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float = 120.0
    ) -> Result:
        result = await self.inner.run(self.wrap(command), input=input, timeout=timeout)
        refusal = [line for line in result.stderr.splitlines() if line.startswith("sudo: ")
                   and any(w in line for w in SUDO_REFUSALS)]
        if result.code != 0 and refusal:
            raise HostFailure(ErrorKind.SUDO, f"sudo -n -u {self.user} refused: {refusal[0][6:]}")
        if result.code == 127 and "sudo" in result.stderr and "not found" in result.stderr:
            raise HostFailure(ErrorKind.SUDO, "sudo is not installed on this host")
        return result

    async def start(self, command: str, *, stdin: bool = False) -> Stream:
        return await self.inner.start(self.wrap(command), stdin=stdin)

    async def close(self) -> None:
        await self.inner.close()


# --- local (the demo's hosts are directories and processes on this machine) -------------


class _LocalStream:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def lines(self) -> AsyncIterator[str]:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            yield line.decode(errors="replace")

    async def wait(self) -> int:
        return await self.proc.wait()

    def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    async def send(self, text: str, eof: bool = False) -> None:
        if self.proc.stdin is None:
            return
        with contextlib.suppress(OSError, BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(text.encode())
            await self.proc.stdin.drain()
            if eof:
                self.proc.stdin.close()


class LocalTransport:
    """Runs commands with /bin/sh in `home` (its own $HOME: its own zipapp cache).

    `prefix` wraps the shell, e.g. ["ip", "netns", "exec", NS] for a namespace host."""

    def __init__(self, home: Path, prefix: list[str] | None = None) -> None:
        self.home = home
        self.prefix = prefix or []
        home.mkdir(parents=True, exist_ok=True)
        # a bare environment, like a fresh SSH session: nothing leaks from ours
        self.env = {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
        }

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float = 120.0
    ) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            "/bin/sh",
            "-c",
            command,
            cwd=self.home,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            proc.kill()
            await proc.wait()
            raise HostFailure(ErrorKind.TIMEOUT, f"a command took over {timeout:g} s") from None
        return Result(
            proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def start(self, command: str, *, stdin: bool = False) -> Stream:
        proc = await asyncio.create_subprocess_exec(
            # dies with the deploy, even by SIGKILL: armed by an exec'd setpriv, not by a
            # preexec_fn, which may deadlock in a fork of a process whose threads run
            *lifeline.armed_argv(),
            *self.prefix,
            "/bin/sh",
            "-c",
            command,
            cwd=self.home,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=MAX_LINE,
            start_new_session=True,
        )
        return _LocalStream(proc)

    async def close(self) -> None:
        return None
