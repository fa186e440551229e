"""Find and remove lab leftovers (namespaces, their processes, temp dirs).

Every object a lab creates carries its prefix ``rl<pid>x<k>``: namespaces
``<prefix>-sw`` and ``<prefix>-h<i>``, temp dirs ``<prefix>-*`` under
/dev/shm and the system temp dir, CPU-counting cgroups ``<prefix>-<tool>``
(bench.lab.cgroup). Interfaces live only inside those
namespaces and vanish with them; nothing is ever configured in the root
namespace. A lab is a leftover when the process whose PID is in its prefix is
gone (or always, with ``force``).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.lab.cgroup import unified_root
from bench.lab.procs import NETNS_DIR, kill_pids, pid_alive, pids_in_netns

PREFIX_RE = re.compile(r"^(rl(\d+)x\d+)-")
TEMP_ROOTS = (Path("/dev/shm"), Path(tempfile.gettempdir()))


@dataclass
class Leftovers:
    namespaces: list[str] = field(default_factory=list)
    tempdirs: list[Path] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.namespaces or self.tempdirs or self.pids or self.cgroups)


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _owned(name: str, prefix: str | None, force: bool) -> bool:
    m = PREFIX_RE.match(name)
    if m is None:
        return False
    if prefix is not None:
        return m.group(1) == prefix
    return force or not pid_alive(int(m.group(2)))


def find_leftovers(prefix: str | None = None, force: bool = False) -> Leftovers:
    """Objects of lab `prefix`, or of every lab whose owner is dead (or all, `force`)."""
    found = Leftovers()
    found.namespaces = [n for n in list_netns() if _owned(n, prefix, force)]
    for root in TEMP_ROOTS:
        if root.is_dir():
            found.tempdirs += sorted(
                p for p in root.iterdir() if p.is_dir() and _owned(p.name, prefix, force)
            )
    cg_root = unified_root()
    if cg_root is not None:
        found.cgroups = sorted(p for p in cg_root.iterdir()
                               if p.is_dir() and _owned(p.name, prefix, force))
    found.pids = pids_in_netns(found.namespaces)
    return found


def remove(found: Leftovers) -> list[str]:
    """Remove `found`; return a list of error messages (empty on success)."""
    errors: list[str] = []
    kill_pids(found.pids)
    # Processes may have forked while we were killing; one more sweep.
    kill_pids(pids_in_netns(found.namespaces))
    for ns in found.namespaces:
        r = subprocess.run(
            ["ip", "netns", "delete", ns], capture_output=True, text=True, timeout=30
        )
        if r.returncode != 0 and (NETNS_DIR / ns).exists():
            errors.append(f"ip netns delete {ns}: {r.stderr.strip()}")
    for group in found.cgroups:
        # Emptied by the kills above (a group holds only its lab's processes).
        kill = group / "cgroup.kill"
        with contextlib.suppress(OSError):
            if (group / "cgroup.procs").read_text().strip() and kill.exists():
                kill.write_text("1")
        for _ in range(100):
            with contextlib.suppress(OSError):
                group.rmdir()
            if not group.exists():
                break
            time.sleep(0.05)
        else:
            errors.append(f"could not remove cgroup {group}")
    for d in found.tempdirs:
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            errors.append(f"could not remove {d}")
    return errors
