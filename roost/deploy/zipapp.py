"""Build the target-side agent as one self-contained zipapp (roost.pyz).

`roost deploy` copies it to hosts that lack roost (Murder's
distribute_files). It holds only the standard-library modules listed in
roost.layers.TARGET_SIDE and runs with `python3 roost.pyz fetch ...`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import roost
from roost.layers import is_target_side

MAIN = b"import sys\nfrom roost.target.agent import main\nsys.exit(main())\n"


def target_side_files() -> list[tuple[str, Path]]:
    """(archive name, source path) for every target-side module."""
    package_dir = Path(roost.__file__).parent
    files: list[tuple[str, Path]] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent)
        module = ".".join(rel.with_suffix("").parts)
        module = module.removesuffix(".__init__")
        if is_target_side(module):
            files.append((rel.as_posix(), path))
    return files


def build_zipapp_bytes(interpreter: str = "/usr/bin/env python3") -> bytes:
    """The zipapp's bytes; deterministic for a given source tree."""
    buf = io.BytesIO()
    buf.write(b"#!" + interpreter.encode() + b"\n")
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, source in target_side_files():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, source.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo("__main__.py", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, MAIN, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def build_zipapp(out: Path) -> Path:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(build_zipapp_bytes())
    tmp.chmod(0o755)
    tmp.replace(out)
    return out
