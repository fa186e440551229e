"""Faults in the fleet lab (root): real roost tracker/seed/fetch processes in
network namespaces behind htb-shaped links.

Each test asserts the promise of issue 8 for its fault and records its
figures (see figures.py). Every wait is bounded; the lab's teardown stops
every process and removes every namespace and file, also on failure.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.lab import Host, Lab
from tests.faults.figures import record
from tests.faults.harness import MIB, LabProc, LabSwarm, sha256_of

pytestmark = [pytest.mark.root, pytest.mark.slow]
MakeLab = Callable[..., Lab]


def wait_all_complete(procs: list[LabProc], timeout: float) -> None:
    for proc in procs:
        proc.wait_event("complete", timeout)


def assert_copies_identical(swarm: LabSwarm, hosts: list[str]) -> None:
    by_name = {h.name: h for h in swarm.lab.hosts}
    for name in hosts:
        got = sha256_of(swarm.copy_of(by_name[name]))
        assert got == swarm.payload.sha256, f"{name}: the copy differs from the payload"


def completion_seconds(procs: list[LabProc], t0: float) -> list[float]:
    times = [p.time_of("complete") for p in procs]
    assert all(t is not None for t in times)
    return [t - t0 for t in times if t is not None]


# -- 1. the origin dies once every piece is among the peers ---------------------------------


def test_origin_killed_when_every_piece_is_among_peers_the_swarm_completes(
    make_lab: MakeLab,
) -> None:
    """Every piece exists among the peers, none has them all; then the origin is
    SIGKILLed mid-transfer. Measured in a deploy, this engine's hosts move in
    lockstep (each at 94-100 % when the last piece first reaches any host), so the
    spread is placed by construction instead: receiver k starts with the pieces
    i = k mod 4 (its resume check finds them), the rest come from the swarm."""
    size, piece = 16 * MIB, 64 * 1024
    lab = make_lab(5, 20.0)
    swarm = LabSwarm(lab, size, piece=piece)
    meta, data = swarm.payload.meta, swarm.payload.path.read_bytes()
    count = meta.info.num_pieces
    for k, host in enumerate(lab.receivers):
        part = bytearray(size)  # zeros: pieces k+4j only
        for index in range(k, count, len(lab.receivers)):
            part[index * piece : (index + 1) * piece] = data[index * piece : (index + 1) * piece]
        swarm.copy_of(host).parent.mkdir(parents=True)
        swarm.copy_of(host).write_bytes(bytes(part))
    expected = len(lab.receivers) + 1
    swarm.register(expected)
    swarm.start_tracker()
    origin = swarm.start_seed("--expected-peers", str(expected))
    procs = [swarm.start_fetch(h, expected, 120) for h in lab.receivers]
    had = [p.wait_event("checked", 60)["have"] for p in procs]
    assert all(0 < h < count for h in had) and sum(had) == count, had
    # mid-transfer: every receiver is downloading, none is complete
    wait_until = time.monotonic() + 60
    while time.monotonic() < wait_until and not all(
        size // 4 + 4 * piece < p.bytes_done() < size for p in procs
    ):
        time.sleep(0.05)
    at_kill = [p.bytes_done() / size for p in procs]
    assert all(0.25 < f < 1.0 for f in at_kill), at_kill
    origin.kill()
    for proc in procs:
        assert proc.wait(120) == 0, f"{proc.name}: {proc.tail()}"
    assert_copies_identical(swarm, [h.name for h in lab.receivers])
    record(
        "origin_killed_spread",
        size_mib=size // MIB,
        receivers=len(procs),
        pieces=count,
        pieces_per_receiver_at_start=had,
        fraction_at_kill=[round(f, 3) for f in at_kill],
    )


# -- 3. a quarter of the peers killed (SIGKILL) and restarted ------------------------------


def test_quarter_of_peers_killed_and_restarted_resume(make_lab: MakeLab) -> None:
    size, piece = 16 * MIB, 256 * 1024
    lab = make_lab(9, 20.0)
    swarm = LabSwarm(lab, size, piece=piece)
    expected = len(lab.receivers) + 1
    swarm.register(expected)
    swarm.start_tracker()
    swarm.start_seed("--expected-peers", str(expected), "--until-complete")
    fetches = [swarm.start_fetch(h, expected, 150) for h in lab.receivers]
    victims = lab.receivers[: len(lab.receivers) // 4]  # 2 of 8
    had: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(had) < len(victims) and time.monotonic() < deadline:
        for host in victims:
            proc = swarm.fetches[host.name]
            done = proc.bytes_done()
            if host.name not in had and size // 4 <= done < size:
                proc.kill()  # SIGKILL mid-transfer: no goodbye to anyone
                had[host.name] = done
        time.sleep(0.1)
    assert len(had) == len(victims), f"victims never reached a quarter: {had}"
    time.sleep(1.0)
    restarted = {h.name: swarm.start_fetch(h, expected, 150) for h in victims}
    others = [p for p in fetches if p.host not in victims]
    for proc in [*others, *restarted.values()]:
        assert proc.wait(180) == 0, f"{proc.name} exit {proc.proc.returncode}: {proc.tail()}"
    assert_copies_identical(swarm, [h.name for h in lab.receivers])
    kept, refetched = {}, {}
    for name, proc in restarted.items():
        checked = proc.wait_event("checked", 1)
        complete = proc.wait_event("complete", 1)
        kept[name] = checked["have"] * piece
        refetched[name] = complete["downloaded"]
        # resume: what was verified before the kill is kept (the last progress line
        # can lag the disk by the pieces in flight), and is not downloaded again
        assert kept[name] >= had[name] - 8 * piece, (name, kept[name], had[name])
        assert refetched[name] <= size - kept[name] + 8 * piece, (name, refetched[name])
    record(
        "quarter_killed",
        size_mib=size // MIB,
        rate_mbit=20,
        receivers=8,
        killed=sorted(had),
        bytes_at_kill=had,
        kept_after_restart=kept,
        downloaded_after_restart=refetched,
    )


# -- 4. 5 % random loss on every link ------------------------------------------------------


def _one_transfer(lab: Lab, size: int, timeout: float) -> tuple[float, list[float]]:
    swarm = LabSwarm(lab, size)
    expected = len(lab.receivers) + 1
    swarm.register(expected)
    swarm.start_tracker()
    swarm.start_seed("--expected-peers", str(expected), "--until-complete")
    procs = [swarm.start_fetch(h, expected, timeout) for h in lab.receivers]
    t0 = time.monotonic()
    wait_all_complete(procs, timeout)
    times = completion_seconds(procs, t0)
    assert_copies_identical(swarm, [h.name for h in lab.receivers])
    for proc in procs:
        assert proc.wait(30) == 0, f"{proc.name}: {proc.tail()}"
    swarm.stop_all()
    return max(times), times


def rx_packets(lab: Lab, host: Host) -> int:
    """Packets that passed the loss rule into `host` (its eth0 receive counter)."""
    out = lab.run(host, ["cat", "/sys/class/net/eth0/statistics/rx_packets"], check=True)
    return int(out.stdout)


def test_five_percent_loss_completes_and_slowdown_is_reported(make_lab: MakeLab) -> None:
    size, rate, n = 32 * MIB, 40.0, 5
    bound = size * 8 / (rate * 1e6)
    clean_lab = make_lab(n, rate)
    t_clean, _ = _one_transfer(clean_lab, size, 120)
    clean_lab.close()
    lossy = make_lab(n, rate, loss_pct=5.0)
    t_loss, times = _one_transfer(lossy, size, 240)
    dropped = sum(lossy.nft_drop_count(h) for h in lossy.hosts)
    received = sum(rx_packets(lossy, h) for h in lossy.hosts)
    # veth hands whole GSO/GRO packets (up to 64 KiB) to nftables, so the rule drops
    # 5 % of those, each a burst of TCP segments: more byte loss than 5 % of frames
    share = dropped / (dropped + received)
    assert 0.03 < share < 0.07, f"the loss rule dropped {dropped} of {dropped + received}"
    record(
        "loss_5pct",
        size_mib=size // MIB,
        rate_mbit=rate,
        receivers=n - 1,
        bound_s=round(bound, 2),
        t_all_clean_s=round(t_clean, 2),
        t_all_loss_s=round(t_loss, 2),
        loss_over_bound=round(t_loss / bound, 2),
        loss_over_clean=round(t_loss / t_clean, 2),
        packets_dropped=dropped,
        packets_received=received,
        drop_share=round(share, 4),
        host_seconds=[round(t, 2) for t in times],
    )


# -- 5. a peer serves corrupt blocks (the lab version: bans by IP) -------------------------


def test_corrupt_peer_is_banned_by_address_and_every_copy_verifies(make_lab: MakeLab) -> None:
    """The loopback test (tests/swarm) cannot exercise the ban by IP address, which
    the engine skips for loopback peers; here the liar has its own address."""
    size, piece = 8 * MIB, 64 * 1024
    lab = make_lab(5, 50.0)
    swarm = LabSwarm(lab, size, piece=piece)
    liar_host, fetch_hosts = lab.hosts[1], lab.hosts[2:]
    bad = swarm.root / "liar" / swarm.payload.path.name
    bad.parent.mkdir()
    shutil.copyfile(swarm.payload.path, bad)
    with bad.open("r+b") as f:  # spoil one block in every other piece
        for offset in range(0, size, 2 * piece):
            f.seek(offset + 100)
            f.write(b"\x00" * 64)
    expected = 1 + 1 + len(fetch_hosts)  # origin, liar (a "seed"), fetchers
    swarm.register(expected)
    swarm.start_tracker()
    # a slow origin, so the fetchers take most blocks from the liar
    swarm.start_seed("--expected-peers", str(expected), "--upload-rate", "1M")
    swarm.start_seed(host=liar_host, data=bad.parent, name="liar")
    procs = [swarm.start_fetch(h, expected, 120) for h in fetch_hosts]
    for proc in procs:
        proc.wait_event("complete", 120)
    assert_copies_identical(swarm, [h.name for h in fetch_hosts])
    bans: dict[str, int] = {}
    refused = 0
    for proc in procs:
        banned = proc.named("peer_banned")
        assert banned, f"{proc.name} never banned the liar"
        assert all(b["peer"].startswith(f"{liar_host.ip}:") for b in banned), banned
        assert proc.named("hash_failed"), f"{proc.name} saw no bad piece"
        bans[proc.name] = len(proc.named("hash_failed"))
        refused += sum(  # refusals are counted, reported once per interval
            c["counts"]["address not allowed"]
            for c in proc.named("connections_refused")
            if c["last"].get("address not allowed", "").startswith(f"{liar_host.ip}:")
        )
    # the liar keeps reconnecting from new ports (its peer list comes from the
    # tracker); the ban by IP turns it away before any handshake
    assert refused >= 1, "the liar never came back, or was not refused by address"
    record(
        "corrupt_peer_lab",
        size_mib=size // MIB,
        fetchers=len(procs),
        hash_failures_per_fetcher=bans,
        reconnects_refused_by_ip=refused,
    )


# -- 6. disk full on one host, a straggler at a tenth of the rate ---------------------------


def _timed_run(
    swarm: LabSwarm, normal: list[str], faulty: list[str], expected: int, timeout: float
) -> tuple[float, dict[str, LabProc]]:
    """One transfer; returns when the normal hosts are complete: (their T_all, procs)."""
    swarm.new_run()
    by_name = {h.name: h for h in swarm.lab.hosts}
    swarm.register(expected)
    swarm.start_tracker()
    swarm.start_seed("--expected-peers", str(expected))
    procs = [swarm.start_fetch(by_name[n], expected, timeout) for n in normal]
    t0 = time.monotonic()  # the same point in both runs: after the normal hosts' launch
    for name in faulty:
        host = by_name[name]
        swarm.dest(host).mkdir(parents=True, exist_ok=True)
        if name == "h5":  # the disk-full host: a 4 MiB file system under its destination
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=4m", "roost-faults", str(swarm.dest(host))],
                check=True,
                timeout=30,
            )
        swarm.start_fetch(host, expected, timeout)
    wait_all_complete(procs, timeout)
    t_all = max(completion_seconds(procs, t0))
    assert_copies_identical(swarm, normal)
    return t_all, dict(swarm.fetches)


def test_disk_full_and_straggler_do_not_slow_the_others(make_lab: MakeLab) -> None:
    size, rate = 48 * MIB, 40.0
    lab = make_lab(7, rate, slow_hosts={6: rate / 10})  # h6: the straggler
    swarm = LabSwarm(lab, size)
    normal, faulty = ["h1", "h2", "h3", "h4"], ["h5", "h6"]
    mounted: list[Path] = []
    try:
        # one run's T_all varies by about +-4 % on this shared machine (14.2 to
        # 15.4 s in six runs), so a ratio of two single runs crossed 1.10 in 2
        # of 7 runs of unchanged code: the baseline is the mean of two runs
        baselines = []
        for _ in range(2):
            baselines.append(_timed_run(swarm, normal, [], len(normal) + 1, 150)[0])
            swarm.stop_all()
        t_base = sum(baselines) / len(baselines)
        mounted.append(swarm.root / "run3" / "h5")
        t_fault, procs = _timed_run(swarm, normal, faulty, len(normal + faulty) + 1, 150)
        full = procs["h5"]
        assert full.wait(30) == 4, f"the disk-full fetch did not fail: {full.tail()}"  # disk-full
        assert "not enough disk space" in full.tail(), full.tail()
        straggler_done = procs["h6"].bytes_done()
        assert straggler_done < size, "the straggler finished with the others: not a straggler"
        swarm.stop_all()
    finally:
        for path in mounted:
            subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
    ratio = t_fault / t_base
    record(
        "disk_full_and_straggler",
        size_mib=size // MIB,
        rate_mbit=rate,
        straggler_mbit=rate / 10,
        normal_hosts=len(normal),
        t_without_s=[round(t, 2) for t in baselines],
        t_with_s=round(t_fault, 2),
        ratio=round(ratio, 3),
        straggler_fraction_done=round(straggler_done / size, 3),
        bound_s=round(size * 8 / (rate * 1e6), 2),
    )
    assert ratio <= 1.10, f"the others took {ratio:.3f}x as long with the faulty hosts"
