"""The deploy's tracker, in a process of its own: `python -m roost.deploy.trackerproc LISTEN`.

The deploy process is one asyncio thread whose work is SSH: every host's
channel goes through it. The tracker's announces (aiohttp, bencoding, peer
selection; ~4 per host per deploy) are not SSH work, and on a machine with
two cores they need not queue behind it. So the deploy's embedded tracker
runs here, in a child (roost.deploy.swarm.Swarm starts it and drives it
through the admin API, as it would an external `roost tracker`).

Protocol with the parent: the admin token comes as the first line of stdin
(not argv: `ps` shows argv); the child answers one line `port P` once it
listens; when stdin closes (the deploy is done, or it died) the child prints
`cpu_s S`, its own CPU time, so the deploy can tell what its tracker cost,
and exits at once. Plain `name value` lines: this is a child's two numbers,
not the host protocol's records.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from ipaddress import ip_network

from roost.core.tracker_swarm import TrackerPolicy
from roost.tracker.server import TrackerConfig, TrackerServer

# Hosts advertise the address the deploy configured (`ip=`), which may differ
# from their route's source. Honouring it from anywhere is safe here: the swarm
# is private and only holders of its secret, handed out over SSH, can announce.
POLICY = TrackerPolicy(
    interval=2,
    min_interval=1,
    peer_timeout=15.0,
    ip_override="trusted",
    trusted_networks=(ip_network("0.0.0.0/0"), ip_network("::/0")),
)


async def serve(listen: str, admin_token: str) -> None:
    tracker = TrackerServer(TrackerConfig(host=listen, port=0, policy=POLICY,
                                          housekeeping_interval=0.5, admin_token=admin_token))
    await tracker.start()
    print(f"port {tracker.port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)  # until the deploy is done
    # no graceful stop: the swarm lives in memory only and goes with the process
    # (the deploy waits for this exit, so it is the deploy's time)
    _report_cpu()
    os._exit(0)


def _report_cpu() -> None:
    me = resource.getrusage(resource.RUSAGE_SELF)
    print(f"cpu_s {me.ru_utime + me.ru_stime:.3f}", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m roost.deploy.trackerproc LISTEN-ADDRESS (token on stdin)",
              file=sys.stderr)
        return 2
    token = sys.stdin.readline(256).strip()
    if not token:
        return 0  # the deploy ended before it needed a tracker
    try:
        asyncio.run(serve(argv[0], token))
    except OSError as exc:  # the address cannot be bound: one line, the parent reports it
        print(f"cannot listen on {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from roost.target.lifeline import honour_request

    honour_request()
    sys.exit(main(sys.argv[1:]))
