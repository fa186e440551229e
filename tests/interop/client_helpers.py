"""Transmission (transmission-daemon) and rTorrent as real peers on loopback.

Both are Debian packages. Each runs in its own temp config/session dir under
the test's root, listens on a free 127.0.0.1 port, has DHT, PEX, LSD and uTP
off (the torrent is private; only the tracker names peers) and takes plain
BitTorrent connections. Each process is ended by its own PID, every wait is
bounded.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import require_tool
from tests.interop.engine_helpers import free_port, stop_process

#: Transmission's torrent status codes (libtransmission TR_STATUS_*)
TR_SEED = 6


class Transmission:
    """One transmission-daemon with one torrent, driven through its JSON RPC
    (what transmission-remote speaks)."""

    def __init__(self, torrent: bytes, directory: Path, home: Path) -> None:
        daemon = require_tool("transmission-daemon")
        home.mkdir(parents=True)
        directory.mkdir(parents=True, exist_ok=True)
        self.log = home / "daemon.log"
        self.port = free_port()
        self.rpc_port = free_port()
        settings = {
            "dht-enabled": False,
            "lpd-enabled": False,
            "pex-enabled": False,
            "utp-enabled": False,
            "encryption": 0,  # prefer plain connections: roost does not speak MSE/PE
            "peer-port": self.port,
            "peer-port-random-on-start": False,
            "port-forwarding-enabled": False,
            "bind-address-ipv4": "127.0.0.1",
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": self.rpc_port,
            "rpc-authentication-required": False,
            "rpc-whitelist-enabled": False,
            "rpc-host-whitelist-enabled": False,
            "download-dir": str(directory),
            "incomplete-dir-enabled": False,
            "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False,
            "speed-limit-down-enabled": False,
            "speed-limit-up-enabled": False,
            "message-level": 2,
        }
        (home / "settings.json").write_text(json.dumps(settings))
        with self.log.open("wb") as out:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [daemon, "-f", "-g", str(home)], stdout=out, stderr=subprocess.STDOUT
            )
        self._session = ""
        self._torrent = torrent
        self._directory = directory

    def rpc(self, method: str, **arguments: Any) -> dict[str, Any]:
        """One RPC call; a 409 hands out the session id, then it is retried."""
        body = json.dumps({"method": method, "arguments": arguments}).encode()
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", self.rpc_port, timeout=10)
            try:
                headers = {"X-Transmission-Session-Id": self._session}
                conn.request("POST", "/transmission/rpc", body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status == 409:
                    self._session = resp.getheader("X-Transmission-Session-Id") or ""
                    continue
                reply: dict[str, Any] = json.loads(raw)
                assert reply.get("result") == "success", reply
                return dict(reply.get("arguments", {}))
            finally:
                conn.close()
        raise AssertionError(f"transmission RPC {method}: no session id")

    def rpc_up(self) -> bool:
        try:
            self.rpc("session-get")
        except OSError:
            return False
        return True

    def add(self) -> None:
        """Add the torrent (its data, when there, is verified first)."""
        metainfo = base64.b64encode(self._torrent).decode()
        self.rpc("torrent-add", metainfo=metainfo, **{"download-dir": str(self._directory)})

    def status(self) -> dict[str, Any]:
        fields = ["status", "percentDone", "error", "errorString", "peersConnected"]
        torrents = self.rpc("torrent-get", fields=fields)["torrents"]
        return dict(torrents[0]) if torrents else {}

    def seeding(self) -> bool:
        st = self.status()
        return st.get("status") == TR_SEED and st.get("percentDone") == 1

    def tail(self) -> str:
        try:
            st = self.status() if self.proc.poll() is None else {}
        except (OSError, AssertionError) as exc:
            st = {"rpc": str(exc)}
        try:
            text = self.log.read_text(errors="replace")[-2000:]
        except OSError:
            text = "unreadable"
        return f"transmission: {st}\nlog (tail):\n{text}"

    def close(self) -> None:
        stop_process(self.proc)


class RTorrent:
    """One headless rtorrent (`-n -o import=<rc>`, system.daemon) with one
    torrent, loaded and started by the rc. It tells that it has every piece
    by touching `finished` (on its download.finished event, or on hash_done
    when the hash check found the torrent complete: a seed)."""

    def __init__(self, torrent: Path, directory: Path, home: Path) -> None:
        binary = require_tool("rtorrent")
        session = home / "session"
        session.mkdir(parents=True)
        directory.mkdir(parents=True, exist_ok=True)
        self.log = home / "rtorrent.log"
        self.finished = home / "finished"
        self.port = free_port()
        rc = home / "rtorrent.rc"
        rc.write_text(
            "\n".join(
                [
                    "system.daemon.set = true",
                    f"session.path.set = {session}",
                    f"directory.default.set = {directory}",
                    f"network.port_range.set = {self.port}-{self.port}",
                    "network.port_random.set = no",
                    "network.bind_address.set = 127.0.0.1",
                    "dht.mode.set = disable",
                    "protocol.pex.set = no",
                    "trackers.use_udp.set = no",
                    "protocol.encryption.set = allow_incoming,try_outgoing,enable_retry",
                    "pieces.hash.on_completion.set = no",
                    f'log.open_file = "main", {self.log}',
                    'log.add_output = "info", "main"',
                    "method.set_key = event.download.finished, roost_test, "
                    f'"execute.nothrow = touch, {self.finished}"',
                    # a seed: its hash check found every piece
                    "method.set_key = event.download.hash_done, roost_test, "
                    f'"branch=d.complete=,\\"execute.nothrow=touch,{self.finished}\\""',
                    f"load.start_verbose = {torrent}",
                    "",
                ]
            )
        )
        self._stderr = home / "stderr.log"
        with self._stderr.open("wb") as err:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [binary, "-n", "-o", f"import={rc}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def done(self) -> bool:
        return self.finished.exists()

    def tail(self) -> str:
        parts = []
        for path in (self.log, self._stderr):
            try:
                parts.append(f"{path.name} (tail):\n{path.read_text(errors='replace')[-2000:]}")
            except OSError:
                parts.append(f"{path.name}: unreadable")
        return f"rtorrent exit={self.proc.poll()}\n" + "\n".join(parts)

    def close(self) -> None:
        stop_process(self.proc)
