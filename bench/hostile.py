"""Hostile idle connections against one peer port, bounded in count and time.

Three kinds, in equal shares, from source addresses 127.0.0.2..127.0.0.9
(loopback only: the target must be a loopback address):
  * mute: connects and never sends a byte;
  * silent: sends a valid handshake for the torrent, then nothing, ever;
  * drip: sends a valid handshake one byte every DRIP_SECONDS.
A connection the target closes is opened again after `--reopen` seconds
(default 1), so the attack keeps `count` connections pressing for `seconds`,
and never opens more than `max_opens` in all. Prints one JSON line of counts at the end.

    python -m bench.hostile --target 127.0.0.1:6881 --info-hash HEX --count 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import resource
import signal
import time
from dataclasses import dataclass

DRIP_SECONDS = 0.5
REOPEN_SECONDS = 1.0  # default of --reopen
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
KINDS = ("mute", "silent", "drip")


@dataclass
class Tally:
    opened: int = 0
    failed: int = 0
    closed_by_target: int = 0


# asyncio.wait_for can swallow a cancellation (Python 3.11), so a stop also sets
# this flag and closes every open socket
STOP = asyncio.Event()
OPEN: set[asyncio.StreamWriter] = set()


def handshake(info_hash: bytes, n: int) -> bytes:
    peer_id = b"-XX0001-" + n.to_bytes(12, "big")
    return b"\x13BitTorrent protocol" + bytes(8) + info_hash + peer_id


async def one(
    n: int, host: str, port: int, info_hash: bytes, deadline: float, max_opens: int, tally: Tally,
    reopen: float,
) -> None:
    kind = KINDS[n % len(KINDS)]
    source = SOURCES[n % len(SOURCES)]
    while time.monotonic() < deadline and tally.opened < max_opens and not STOP.is_set():
        tally.opened += 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(source, 0)), 5.0
            )
        except (OSError, asyncio.TimeoutError):
            tally.failed += 1
            await asyncio.sleep(reopen)
            continue
        OPEN.add(writer)
        try:
            left = deadline - time.monotonic()
            await asyncio.wait_for(_behave(kind, n, reader, writer, info_hash), left)
            tally.closed_by_target += 1
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            OPEN.discard(writer)
            writer.close()
        await asyncio.sleep(reopen)


async def _behave(
    kind: str, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info_hash: bytes
) -> None:
    """Misbehave until the target hangs up (returns then)."""
    if kind == "silent":
        writer.write(handshake(info_hash, n))
    elif kind == "drip":
        for byte in handshake(info_hash, n):
            writer.write(bytes([byte]))
            with contextlib.suppress(asyncio.TimeoutError):
                if not await asyncio.wait_for(reader.read(65536), DRIP_SECONDS):
                    return
    while await reader.read(65536):  # read whatever comes, answer nothing
        pass


async def attack(host: str, port: int, info_hash: bytes, count: int, seconds: float,
                 max_opens: int, reopen: float = REOPEN_SECONDS) -> Tally:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("hostile: loopback targets only")
    tally = Tally()
    deadline = time.monotonic() + seconds
    everything = asyncio.gather(
        *(one(n, host, port, info_hash, deadline, max_opens, tally, reopen) for n in range(count))
    )

    def stop() -> None:  # SIGTERM ends the attack early and still prints the counts
        STOP.set()
        for writer in list(OPEN):
            writer.close()
        everything.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    with contextlib.suppress(asyncio.CancelledError):
        await everything
    return tally


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT (loopback)")
    parser.add_argument("--info-hash", required=True, help="hex")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-opens", type=int, default=50_000)
    parser.add_argument("--reopen", type=float, default=REOPEN_SECONDS,
                        help="seconds before a closed connection is opened again")
    ns = parser.parse_args()
    if not 1 <= ns.count <= 1000 or not 0 < ns.seconds <= 600:
        raise SystemExit("hostile: --count 1..1000, --seconds up to 600")
    host, _, port = ns.target.rpartition(":")
    raise_fd_limit()
    tally = asyncio.run(
        attack(host, int(port), bytes.fromhex(ns.info_hash), ns.count, ns.seconds, ns.max_opens,
               max(0.05, ns.reopen))
    )
    print(json.dumps(tally.__dict__), flush=True)


if __name__ == "__main__":
    main()
