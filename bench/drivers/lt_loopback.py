#!/usr/bin/env python3
"""libtorrent peer for bench/loopback.py: seed, or fetch then keep seeding.

Prints "complete" once the torrent is fully downloaded and verified, then
keeps uploading until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import time

import libtorrent as lt

stop = False


def _stop(signum: int, frame: object) -> None:
    global stop
    stop = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--save", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seed", action="store_true")
    ap.add_argument("--peer", action="append", default=[])
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    ses = lt.session({
        "listen_interfaces": f"127.0.0.1:{a.port}",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_incoming_utp": False, "enable_outgoing_utp": False,
        "alert_mask": 0,
        # loopback is not a WAN: allow many peers from one IP and deep queues
        "allow_multiple_connections_per_ip": True,
    })
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(a.torrent)
    atp.save_path = a.save
    if a.seed:
        atp.flags |= lt.torrent_flags.seed_mode
    handle = ses.add_torrent(atp)
    for peer in a.peer:
        host, port = peer.rsplit(":", 1)
        handle.connect_peer((host, int(port)))
    said = a.seed
    while not stop:
        status = handle.status()
        if not said and status.is_seeding:
            print("complete", flush=True)
            said = True
        time.sleep(0.05)


if __name__ == "__main__":
    main()
