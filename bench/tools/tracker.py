"""opentracker (Debian) on the origin host, shared by the BitTorrent tools."""

from __future__ import annotations

import sys

from bench.lab import LabError
from bench.tools.base import TRACKER_PORT, RunContext, which_or_not_run
from bench.tools.metainfo import info_hash


def announce_url(ctx_ip: str) -> str:
    return f"http://{ctx_ip}:{TRACKER_PORT}/announce"


def start_opentracker(ctx: RunContext) -> None:
    """Start opentracker on the origin, whitelisting the run's torrent.

    Debian's opentracker is built in whitelist mode and chroots to -d before
    reading the list as user nobody, so the list lives in a world-readable
    directory and is named by its path inside the chroot.
    """
    exe = which_or_not_run("opentracker")
    o = ctx.origin
    root = ctx.run_dir / "tracker"
    root.mkdir(exist_ok=True)
    root.chmod(0o755)
    wl = root / "whitelist"
    wl.write_text(info_hash(ctx.torrent.read_bytes()).hex() + "\n")
    wl.chmod(0o644)
    ctx.spawn(o, "tracker", [exe, "-i", o.ip, "-p", str(TRACKER_PORT), "-P", str(TRACKER_PORT),
                             "-d", str(root), "-w", "/whitelist"])
    ctx.lab.wait_listen(o, TRACKER_PORT)


def wait_seeder_announced(ctx: RunContext, info_hash: bytes, timeout: float = 30) -> None:
    """Wait until the tracker lists a complete peer (the seeder) for the torrent."""
    from urllib.parse import quote_from_bytes

    url = (f"http://{ctx.origin.ip}:{TRACKER_PORT}/scrape?info_hash="
           f"{quote_from_bytes(info_hash, safe='')}")
    code = (
        "import sys,time,urllib.request,re\n"
        f"end=time.monotonic()+{timeout}\n"
        "while time.monotonic()<end:\n"
        "    try:\n"
        f"        b=urllib.request.urlopen({url!r},timeout=2).read()\n"
        "        m=re.search(rb'8:completei(\\d+)e',b)\n"
        "        if m and int(m.group(1))>0: sys.exit(0)\n"
        "    except OSError: pass\n"
        "    time.sleep(0.1)\n"
        "sys.exit(1)\n"
    )
    r = ctx.lab.run(ctx.origin, [sys.executable, "-c", code], timeout=timeout + 10)
    if r.returncode != 0:
        raise LabError(f"the seeder did not announce to the tracker within {timeout}s")
