"""The per-tool CPU count (bench/lab/cgroup.py): every process a run starts,
including those behind a wrapper that have already exited, inside a lab host.
Needs root and a cgroup v2 hierarchy."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from bench.lab import Lab
from bench.lab.cgroup import CpuGroup, unified_root
from bench.lab.cleanup import find_leftovers, remove

pytestmark = [pytest.mark.root]

# A wrapper that burns no CPU itself runs a child that burns about 0.3 s and
# exits: a /proc sampler that looks at live processes sees nothing of it.
BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def _needs_cgroup() -> None:
    if unified_root() is None:
        pytest.skip("no writable cgroup v2 hierarchy")


def test_a_group_counts_an_exited_grandchild_inside_a_lab_host(
        make_lab: Callable[..., Lab]) -> None:
    _needs_cgroup()
    lab = make_lab(2, 100)
    group = CpuGroup(f"{lab.prefix}-test")
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrapper = ["sh", "-c", f'{sys.executable} -c "$0"; sleep 0.2', BURN]
        proc = lab.spawn(lab.hosts[1], wrapper, cpu_group=group)
        assert proc.wait(timeout=30) == 0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # our own count of the same children, from the kernel's rusage of reaped ones
        reaped = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        used = group.usage_s()
        assert used >= 0.3
        assert abs(used - reaped) < 0.1
        user, system = group.user_system_s()
        assert abs(user - (after.ru_utime - before.ru_utime)) < 0.1
        assert abs(system - (after.ru_stime - before.ru_stime)) < 0.1
        assert abs(user + system - used) < 0.01
    finally:
        group.close()
    assert not group.path.exists()


def test_processes_outside_the_group_are_not_counted(make_lab: Callable[..., Lab]) -> None:
    _needs_cgroup()
    lab = make_lab(2, 100)
    group = CpuGroup(f"{lab.prefix}-test")
    try:
        lab.spawn(lab.hosts[1], [sys.executable, "-c", BURN]).wait(timeout=30)
        lab.spawn(lab.hosts[1], ["true"], cpu_group=group).wait(timeout=30)
        assert group.usage_s() < 0.1
    finally:
        group.close()


def test_lab_cleanup_removes_a_groups_leftover_process(make_lab: Callable[..., Lab]) -> None:
    _needs_cgroup()
    lab = make_lab(2, 100)
    group = CpuGroup(f"{lab.prefix}-tool")
    proc = subprocess.Popen(group.enter_argv(["sleep", "60"]), start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in group.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.pid in group.pids()
        found = find_leftovers(prefix=lab.prefix)
        assert group.path in found.cgroups
        assert remove(found) == []
        assert proc.wait(timeout=10) != 0
        assert not group.path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
