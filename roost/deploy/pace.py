"""How often a deploy of N hosts hears from each one, so the fleet's traffic to the
deploy process stays bounded whatever N is.

Theory of operation. The deploy process is one asyncio thread that reads every
host's SSH channel. While a host fetches, its `roost fetch --json` prints a
progress line every tick (0.5 s), and each line costs this thread about 0.1 ms
(decrypt, channel, the session record and the event parsed): at 10,000 hosts
that is 20,000 lines and two CPU seconds every second, on one core. So each
host's fetch is asked for a line every N / PROGRESS_BUDGET seconds, from 1 to
20 s: the whole fleet sends about PROGRESS_BUDGET lines a second, and the live
view still moves, since some host reports every 1 / PROGRESS_BUDGET s. State
changes (started, complete, error) are never held back.

A host that dies without closing its TCP connection is found by the kernel,
which costs this process nothing: TCP keepalive probes after KEEPALIVE_IDLE s of
silence and a TCP_USER_TIMEOUT on unacknowledged data, ~15 s either way
(roost.deploy.transport). asyncssh's own keepalive (a request and a reply
through this thread for every connection idle a few seconds, and a timer reset
on every packet received) is then off: a hung sshd on a live kernel is left to
the commands' own timeouts. A connection without a socket of its own (through
a ProxyJump) keeps it, every KEEPALIVE_IDLE s, or slower in a fleet so large
that this would be over KEEPALIVE_BUDGET requests a second.
"""

from __future__ import annotations

PROGRESS_BUDGET = 50  # progress lines per second, the whole fleet
MIN_PROGRESS_EVERY = 1.0
MAX_PROGRESS_EVERY = 20.0

KEEPALIVE_IDLE = 5  # seconds of silence before the kernel's first probe
KEEPALIVE_PROBES = 2  # unanswered probes, KEEPALIVE_IDLE s apart, that end the connection
USER_TIMEOUT_S = 15  # data unacknowledged this long ends the connection
KEEPALIVE_BUDGET = 400  # asyncssh keepalives per second, the whole fleet (no socket)


def progress_every(hosts: int) -> float:
    """Seconds between two progress lines of one host's fetch, for a fleet of `hosts`."""
    return min(MAX_PROGRESS_EVERY, max(MIN_PROGRESS_EVERY, hosts / PROGRESS_BUDGET))


def ssh_keepalive(hosts: int, kernel_watches: bool) -> float:
    """asyncssh's keepalive interval for one connection of a fleet of `hosts` (0: off)."""
    if kernel_watches:
        return 0.0
    return max(float(KEEPALIVE_IDLE), hosts / KEEPALIVE_BUDGET)
