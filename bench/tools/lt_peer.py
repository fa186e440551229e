#!/usr/bin/env python3
"""libtorrent peer for the benchmark: seed (origin) or download-then-seed.

Runs inside a host namespace until SIGTERM. A receiver records completion
(verify_done) the first time the torrent is seeding, then keeps uploading.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import libtorrent as lt
from verify_done import verify_and_record  # same directory

stop = False


def _on_term(signum: int, frame: object) -> None:
    global stop
    stop = True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--save", required=True)
    ap.add_argument("--ip", required=True)
    ap.add_argument("--port", type=int, default=6881)
    ap.add_argument("--seed", action="store_true", help="origin: start with the payload")
    ap.add_argument("--sha256")
    ap.add_argument("--out")
    ap.add_argument("--host", default="")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    settings = {
        "listen_interfaces": f"{a.ip}:{a.port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # TCP only, like aria2c and roost, so every tool meets the same links.
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "alert_mask": 0,
    }
    ses = lt.session(settings)  # type: ignore[call-overload]  # a dict works
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(a.torrent)
    atp.save_path = a.save
    if a.seed:
        atp.flags |= lt.torrent_flags.seed_mode
    handle = ses.add_torrent(atp)
    payload = os.path.join(a.save, atp.ti.name())
    recorded = a.seed
    while not stop:
        st = handle.status()
        if not recorded and st.is_seeding:
            recorded = True
            t_complete = time.time()
            verify_and_record(payload, a.sha256, a.out, a.host, t_complete)
        time.sleep(0.05 if not recorded else 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
