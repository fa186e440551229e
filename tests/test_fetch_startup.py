"""A plain `roost fetch` imports only what it uses: start-up is CPU paid on every host.

The release, protocol-record and tree-staging modules are imported lazily (by
`--tree-manifest`, `seed --tree`, or an error with --json); this proves a real
fetch, run in its own interpreter, never loads them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tracker.helpers import make_torrent

#: modules a plain fetch must not import (each was once imported at start-up)
LAZY = (
    "roost.target.protocol",
    "roost.target.release",
    "roost.target.treestage",
    "roost.target.fetch_tree",
    "roost.engine.treestorage",
    "tarfile",
)

PROBE = (
    "import json, sys\n"
    "from roost.__main__ import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)


def test_plain_fetch_imports_no_tree_or_protocol_modules(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 256  # 64 KiB, already on disk: the fetch completes at once
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "p.bin").write_bytes(payload)
    torrent = tmp_path / "p.torrent"
    torrent.write_bytes(make_torrent(payload, "p.bin", "http://127.0.0.1:9/announce"))
    argv = ["fetch", str(torrent), "-d", str(tmp_path / "dl"), "--no-seed", "--no-tracker",
            "--quiet"]
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    assert "roost.engine.session" in report["modules"]  # the probe did run a real fetch
    assert [m for m in LAZY if m in report["modules"]] == []
