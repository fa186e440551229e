"""Build the target-side agent as one self-contained zipapp (roost.pyz).

`roost deploy` copies it to hosts that lack roost (Murder's
distribute_files). It holds only the standard-library modules listed in
roost.layers.TARGET_SIDE and runs with `python3 roost.pyz fetch ...`.

Beside each module's source it holds the module compiled by the Python that
builds it (`x.pyc` next to `x.py`, where zipimport looks). Python cannot
write bytecode into a zipapp, so without it every agent process (a host's
session, each fetch) compiled every module it imports again: about 0.3 s of
CPU per process, per host, per deploy. The .pyc is an unchecked hash-based
one (PEP 552), made from the very source beside it; a host whose Python has
another bytecode version (magic number) skips it and compiles the source,
as before.

A host that lacks the agent is not sent this zip but `build_source_zip`'s:
the sources alone, in one uncompressed zip that the deploy compresses as a
whole (lzma, roost.deploy.host.Agent.push_text): a fifth of this zip's bytes,
which the deploy process encrypts and sends once per host. The host compiles
the bytecode itself, for its own Python (roost.deploy.host.RECEIVE_AGENT).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
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
            text = source.read_bytes()
            zf.writestr(info, text, compress_type=zipfile.ZIP_DEFLATED)
            info = zipfile.ZipInfo(name + "c", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, compiled(name, text), compress_type=zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo("__main__.py", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, MAIN, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def build_source_zip() -> bytes:
    """Every target-side module's source and __main__.py, stored uncompressed (one lzma
    stream over the whole zip finds the redundancy between modules that a per-file
    deflate cannot); deterministic for a given source tree."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, source in [*target_side_files(), ("__main__.py", None)]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, MAIN if source is None else source.read_bytes())
    return buf.getvalue()


def compiled(name: str, source: bytes) -> bytes:
    """PEP 552 bytecode of `source`: magic, flags 0b01 (hash-based, unchecked: the
    zip holds its source unchanged beside it), the source's hash, the code."""
    code = compile(source, name, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def source_digest() -> str:
    """What names a build (hosts cache the agent by it): the SHA-256 of every module's
    source and of the bytecode version it is compiled for. Not of the zip's bytes:
    marshal's output for the same code can differ between processes (it marks
    objects by their reference counts, which other threads move), and a host
    must not get the agent pushed again for that."""
    digest = hashlib.sha256(importlib.util.MAGIC_NUMBER + MAIN)
    for name, source in target_side_files():
        text = source.read_bytes()
        digest.update(f"{name}\0{len(text)}\0".encode() + text)
    return digest.hexdigest()


def build_zipapp(out: Path) -> Path:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(build_zipapp_bytes())
    tmp.chmod(0o755)
    tmp.replace(out)
    return out
