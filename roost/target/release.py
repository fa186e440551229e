"""Target-side release handling: safe unpack, atomic switch, prune, rollback.

Standard library only: this module ships in the zipapp and runs on bare hosts.

Theory of operation. A destination directory looks like this:

    <dest>/releases/<tag>/...          one directory per release, never edited
    <dest>/current -> releases/<tag>   a relative symlink, switched atomically
    <dest>/.roost/state.json           releases (tag -> payload SHA-256) + history
    <dest>/.roost/lock                 flock: one roost operation at a time
    <dest>/.roost/deploys/<id>/        one deploy's torrent, manifest, staging
                                       payload and fetch pid; removed by `clean`

Staging unpacks into `releases/.<tag>.tmp-XXXX` and renames it to
`releases/<tag>` only once every byte is written, so a release directory that
exists is whole. `current` is switched by making a symlink under a temporary
name and os.replace()-ing it over `current`: readers see the old or the new
release, never neither. The payload's SHA-256 (from the manifest, which came
over SSH, the trusted channel) is checked before anything is unpacked, and is
recorded in the state file, so staging a tag the host already has with the
same digest is a no-op, and the same tag with other bytes is refused.

Unpacking trusts nothing in the archive: every member path must be relative,
without `..`, and its parent must be a real directory made by this unpack
(never a symlink), so nothing can be written outside the release; symlinks
must resolve inside the release; hard links must point at an earlier file;
device files and FIFOs are refused. Files are created with O_EXCL|O_NOFOLLOW.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from roost.core.tree import link_stays_inside
from roost.errors import DiskFullError as DiskFullError  # re-exported: importers name it here
from roost.errors import ReleaseError as ReleaseError  # re-exported, as DiskFullError
from roost.errors import UsageError
from roost.target import Runner
from roost.target.checked import was_checked
from roost.target.fsutil import atomic_write as atomic_write  # re-exported
from roost.target.protocol_common import (
    EXIT_CODES,
    ActivateResult,
    ErrorKind,
    HookPhase,
    HookRecord,
    PayloadFormat,
    RollbackResult,
    StageResult,
)
from roost.target.protocol_common import FORMATS as FORMATS  # re-exported: importers name them here
from roost.target.protocol_common import Manifest as Manifest
from roost.target.protocol_common import check_tag as check_tag

if TYPE_CHECKING:
    import tarfile

STATE_DIR = ".roost"
STATE_FILE = "state.json"
HISTORY_MAX = 200
#: beside a deploy's manifest: the SHA-256 fetch checked for each tree file, with proofs
VERIFIED = "verified.json"
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path) -> str:
    """Digest of a directory's regular files: sorted "path NUL size NUL sha256 LF".

    The multi-file payload format carries contents only (BitTorrent has no
    modes or links), so this is what "the same payload" means for it."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            lines.append(f"{rel}\0{path.stat().st_size}\0{sha256_file(path)}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def payload_digest(path: Path, fmt: PayloadFormat) -> str:
    return sha256_tree(path) if fmt is PayloadFormat.DIR else sha256_file(path)


# --- state and locking --------------------------------------------------------


class Dest:
    """One destination directory and its state file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "releases"
        self.meta = root / STATE_DIR
        self.current = root / "current"

    def ensure(self) -> None:
        try:
            self.releases.mkdir(parents=True, exist_ok=True)
            self.meta.mkdir(exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"cannot create {self.root}") from None

    @contextlib.contextmanager
    def locked(self, timeout: float = 60.0) -> Iterator[None]:
        """Hold the destination's lock (bounded wait: a stuck peer is reported)."""
        self.ensure()
        fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ReleaseError(f"{self.root} is locked by another roost") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.meta / STATE_FILE).read_text())
        except FileNotFoundError:
            return {"releases": {}, "history": []}
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"cannot read {self.meta / STATE_FILE}: {exc}") from None
        if not isinstance(data, dict):
            raise ReleaseError(f"{self.meta / STATE_FILE} is not a JSON object")
        data.setdefault("releases", {})
        data.setdefault("history", [])
        return data

    def save_state(self, state: dict[str, Any]) -> None:
        state["history"] = state["history"][-HISTORY_MAX:]
        atomic_write(self.meta / STATE_FILE, json.dumps(state, indent=1).encode())

    def current_tag(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise ReleaseError(f"{self.current} exists and is not a symlink") from None
            raise
        parts = Path(target).parts
        return parts[-1] if parts and parts[-2:-1] == ("releases",) else None

    def release_tags(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir()
                      if not p.name.startswith(".") and p.is_dir())


def _os_error(exc: OSError, what: str) -> ReleaseError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"disk full: {what}")
    return ReleaseError(f"{what}: {exc.strerror or exc}")


# --- safe unpacking -------------------------------------------------------------


def _member_parts(name: str) -> tuple[str, ...]:
    if name.startswith("/"):
        raise ReleaseError(f"archive member {name!r} has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise ReleaseError(f"archive member {name!r} climbs out with '..'")
    return parts


def _parent_dir(root: Path, parts: tuple[str, ...], made: set[tuple[str, ...]]) -> Path:
    """The member's parent, created as real directories; never through a symlink."""
    path = root
    for i in range(1, len(parts)):
        path = path / parts[i - 1]
        prefix = parts[:i]
        if prefix in made:
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
            made.add(prefix)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ReleaseError(f"archive member {'/'.join(parts)!r} goes through a non-directory")
        made.add(prefix)
    return path


@dataclass
class _Pending:
    path: Path
    mode: int
    mtime: float
    uid: int
    gid: int


def unpack_tar(stream: IO[bytes], root: Path, *, owners: bool) -> int:
    """Unpack a tar stream into the empty directory `root`; returns files written."""
    made: set[tuple[str, ...]] = set()
    dirs: list[_Pending] = []
    seen_files: dict[tuple[str, ...], Path] = {}
    count = 0
    # here, not at the top: a tree release (the default) never reads a tar, and the
    # fetch and the agent session, which import this module, start faster without it
    import tarfile

    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                count += _unpack_member(tar, member, root, made, dirs, seen_files, owners)
    except tarfile.TarError as exc:
        raise ReleaseError(f"the payload is not a valid tar archive: {exc}") from None
    for d in reversed(dirs):  # deepest last-made first, so read-only dirs do not block
        _apply_meta(d, owners, is_dir=True)
    return count


def _unpack_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, made: set[tuple[str, ...]],
    dirs: list[_Pending], seen_files: dict[tuple[str, ...], Path], owners: bool,
) -> int:
    parts = _member_parts(member.name)
    meta = _Pending(root, member.mode & 0o7777, member.mtime, member.uid, member.gid)
    if not parts:  # the archive's "." entry: the release root itself
        if member.isdir():
            dirs.append(meta)
        return 0
    parent = _parent_dir(root, parts, made)
    path = parent / parts[-1]
    meta.path = path
    if member.isdir():
        if parts not in made:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise ReleaseError(f"archive member {member.name!r} is duplicated") from None
            made.add(parts)
        dirs.append(meta)
        return 0
    if member.issym():
        if not link_stays_inside(parts, member.linkname):
            raise ReleaseError(
                f"symlink {member.name!r} -> {member.linkname!r} escapes the release")
        os.symlink(member.linkname, path)
        if owners:
            os.lchown(path, member.uid, member.gid)
        return 0
    if member.islnk():
        target = seen_files.get(_member_parts(member.linkname))
        if target is None:
            raise ReleaseError(f"hard link {member.name!r} points at no earlier file")
        os.link(target, path)
        return 0
    if not member.isreg():
        raise ReleaseError(f"archive member {member.name!r} is a device, FIFO or other special")
    source = tar.extractfile(member)
    assert source is not None  # a regular member always has a file object
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
    _apply_meta(meta, owners, is_dir=False)
    seen_files[parts] = path
    return 1


def _apply_meta(p: _Pending, owners: bool, *, is_dir: bool) -> None:
    if owners:
        os.chown(p.path, p.uid, p.gid)
    # setuid/setgid bits survive only for root: a user cannot hand them out anyway
    mode = p.mode if owners else p.mode & 0o1777
    os.chmod(p.path, mode | (0o700 if is_dir and not owners else 0))
    os.utime(p.path, (p.mtime, p.mtime))


def copy_tree(src: Path, root: Path) -> int:
    """The multi-file payload: copy regular files and directories (contents only)."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for d in dirnames:
            (root / rel / d).mkdir(mode=0o755)
        for name in filenames:
            source = Path(dirpath) / name
            if source.is_symlink() or not source.is_file():
                raise ReleaseError(f"payload entry {rel / name} is not a regular file")
            shutil.copyfile(source, root / rel / name)
            os.chmod(root / rel / name, 0o644)
            count += 1
    os.chmod(root, 0o755)
    return count


def unpack(payload: Path, fmt: str, root: Path, *, owners: bool) -> int:
    """Fill the empty directory `root` from the payload in format `fmt`."""
    if fmt == "file":
        shutil.copy2(payload, root / payload.name)
        os.chmod(root, 0o755)
        return 1
    if fmt == "dir":
        return copy_tree(payload, root)
    if fmt == "tar":
        with payload.open("rb") as f:
            return unpack_tar(f, root, owners=owners)
    return _unpack_zstd(payload, root, owners=owners)


def _unpack_zstd(payload: Path, root: Path, *, owners: bool) -> int:
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ReleaseError("the payload is zstd-compressed and this host has no zstd binary")
    with subprocess.Popen([zstd, "-dcq", "--", str(payload)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            count = unpack_tar(proc.stdout, root, owners=owners)
            proc.stdout.read()  # drain, so zstd can finish
        finally:
            proc.stdout.close()
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            code = proc.wait(timeout=60)
    if code != 0:
        raise ReleaseError(f"zstd failed: {stderr.strip() or f'exit {code}'}")
    return count


# --- staging, switching, pruning ---------------------------------------------------


def stage(dest: Dest, manifest: Manifest, payload: Path, *, owners: bool | None = None,
          record: Path | None = None) -> StageResult:
    """Verify the payload and make `releases/<tag>`; a no-op when it is already there."""
    owners = os.geteuid() == 0 if owners is None else owners
    with dest.locked():
        state = dest.load_state()
        known = state["releases"].get(manifest.tag)
        final = dest.releases / manifest.tag
        if known and final.is_dir():
            if known.get("sha256") != manifest.sha256:
                raise ReleaseError(f"release {manifest.tag} already exists with other content")
            return StageResult(manifest.tag, False, reason="already present")
        if final.exists() or final.is_symlink():
            raise ReleaseError(f"{final} exists but roost did not make it; remove it first")
        if not payload.exists():
            raise ReleaseError(f"payload {payload} is missing")
        if manifest.tree is not None:
            files = _stage_tree(dest, manifest, payload, final, owners, record)
            state["releases"][manifest.tag] = {"sha256": manifest.sha256, "format": "tree",
                                               "staged_at": time.time(), "files": files}
            state["history"].append({"at": time.time(), "action": "stage",
                                     "tag": manifest.tag})
            dest.save_state(state)
            return StageResult(manifest.tag, True, files)
        if manifest.format is not PayloadFormat.TAR:  # a plain tar is hashed while it is unpacked
            _check_digest(payload_digest(payload, manifest.format), manifest)
        files = _unpack_fresh(dest, manifest, payload, final, owners)
        state["releases"][manifest.tag] = {"sha256": manifest.sha256, "format": manifest.format,
                                           "staged_at": time.time(), "files": files}
        state["history"].append({"at": time.time(), "action": "stage", "tag": manifest.tag})
        dest.save_state(state)
    return StageResult(manifest.tag, True, files)


def _stage_tree(dest: Dest, manifest: Manifest, staging: Path, final: Path,
                owners: bool, record: Path | None) -> int:
    """A tree release: pieces were written into `staging` by fetch, which recorded
    each file's checked SHA-256 in `verified.json` beside the manifest."""
    from roost.target import treestage  # only tree releases need it

    assert manifest.tree is not None
    if staging.parent != dest.releases or not staging.name.startswith(f".{manifest.tag}.tmp-"):
        raise ReleaseError(f"{staging} is not a staging directory of {manifest.tag}")
    if staging.is_symlink() or not staging.is_dir():
        raise ReleaseError(f"staging directory {staging} is missing")
    checked = treestage.load_record(record) if record is not None else {}
    try:
        return treestage.finalize(staging, final, treestage.record_path(dest.meta, manifest.tag),
                                  manifest.tree, checked, owners=owners)
    except OSError as exc:
        raise _os_error(exc, f"staging {manifest.tag} in {dest.releases}") from None


def _check_digest(digest: str, manifest: Manifest) -> None:
    if digest != manifest.sha256:
        raise ReleaseError(f"payload SHA-256 {digest[:16]}... does not match the manifest")


class _HashingReader:
    """A read-only file that hashes what passes through: one pass verifies and unpacks."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        for chunk in iter(lambda: self.read(CHUNK), b""):  # the tar's trailing padding
            del chunk
        return self.digest.hexdigest()


def _unpack_fresh(dest: Dest, manifest: Manifest, payload: Path, final: Path,
                  owners: bool) -> int:
    """Unpack into a temporary directory; only a whole, verified tree gets the tag's name."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.tag}.tmp-", dir=dest.releases))
    except OSError as exc:
        raise _os_error(exc, f"cannot create a directory in {dest.releases}") from None
    try:
        if manifest.format is PayloadFormat.TAR:
            with payload.open("rb") as f:
                reader = _HashingReader(f)
                files = unpack_tar(reader, tmp, owners=owners)  # type: ignore[arg-type]
                _check_digest(reader.finish(), manifest)
        else:
            files = unpack(payload, manifest.format, tmp, owners=owners)
        os.rename(tmp, final)
    except OSError as exc:
        _remove_tree(tmp)
        raise _os_error(exc, f"unpacking {manifest.tag} into {dest.releases}") from None
    except BaseException:
        _remove_tree(tmp)
        raise
    return files


def _remove_tree(path: Path) -> None:
    """rmtree that also copes with read-only directories from the archive."""
    def fix(func: Callable[..., Any], p: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if path.exists():
        shutil.rmtree(path, onerror=fix)  # onexc is 3.12+; onerror still works there


def switch(dest: Dest, tag: str) -> str | None:
    """Point `current` at releases/<tag> atomically; returns the previous tag."""
    if not (dest.releases / tag).is_dir():
        raise ReleaseError(f"release {tag} is not staged on this host")
    previous = dest.current_tag()
    tmp = dest.root / f".current.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(f"releases/{tag}", tmp)
        os.replace(tmp, dest.current)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _os_error(exc, f"cannot switch {dest.current}") from None
    return previous


def previous_tag(dest: Dest, state: dict[str, Any]) -> str | None:
    """The release that was current before the current one (and still exists)."""
    current = dest.current_tag()
    present = set(dest.release_tags())
    for entry in reversed(state["history"]):
        if entry.get("action") == "switch" and entry.get("from") not in (None, current) \
                and entry["from"] in present:
            return str(entry["from"])
    return None


def prune(dest: Dest, state: dict[str, Any], keep: int) -> list[str]:
    """Delete all but the newest `keep` releases; never current or previous."""
    protected = {dest.current_tag(), previous_tag(dest, state)}
    def staged_at(tag: str) -> float:
        return float(state["releases"].get(tag, {}).get("staged_at", 0.0))
    tags = sorted(dest.release_tags(), key=staged_at, reverse=True)
    removed = []
    for tag in tags[max(keep, 0):]:
        if tag in protected:
            continue
        trash = dest.releases / f".{tag}.del-{os.getpid()}"
        os.rename(dest.releases / tag, trash)  # gone at once, deleted at leisure
        _remove_tree(trash)
        with contextlib.suppress(FileNotFoundError):
            (dest.meta / "trees" / f"{tag}.json").unlink()
        state["releases"].pop(tag, None)
        removed.append(tag)
    return removed


HOOK_OUTPUT_MAX = 4000  # characters of a hook's output kept for the report
# after the hook's shell exits, how long its output may still be read: a
# daemon it started can hold the pipe open for good (`service x restart`)
HOOK_OUTPUT_DRAIN_SECONDS = 2.0


class _OutputTail:
    """Read a pipe in a thread, keeping only its last `limit` bytes: a chatty
    hook must not fill the host's memory, and a silent one must not block us."""

    def __init__(self, stream: IO[bytes] | None, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        if self._stream is None:
            return
        with contextlib.suppress(OSError, ValueError):
            fd = self._stream.fileno()
            while chunk := os.read(fd, 65536):
                with self._lock:
                    self._buf += chunk
                    if len(self._buf) > 2 * self._limit:
                        del self._buf[: -self._limit]

    def finish(self, grace: float) -> str:
        """What was read (its last `limit` bytes), waiting at most `grace` s for EOF."""
        self._thread.join(grace)
        with self._lock:
            data = bytes(self._buf[-self._limit :])
        if self._stream is not None and not self._thread.is_alive():
            self._stream.close()  # else the reader still owns it; the daemon thread ends with it
        return data.decode("utf-8", "replace")


class HookError(ReleaseError):
    """A hook failed: `hook` is its record; `hooks` every hook this activation ran, the
    failing one last (they go into the JSON error: protocol.ErrorRecord.hooks)."""

    exit_code = EXIT_CODES[ErrorKind.HOOK]  # the operator reads the kind from it

    def __init__(self, message: str, hook: HookRecord,
                 hooks: tuple[HookRecord, ...] | None = None) -> None:
        super().__init__(message)
        self.hook = hook
        self.hooks = (hook,) if hooks is None else hooks


def hook_env(tag: str, dest: Path, release: Path, previous: str | None,
             phase: HookPhase) -> dict[str, str]:
    """The documented hook environment (docs/deploy.md, "Hook environment")."""
    return {
        "ROOST_TAG": tag,
        "ROOST_DEST": str(dest),
        "ROOST_RELEASE": str(release),
        "ROOST_PREVIOUS": previous or "",
        "ROOST_PREVIOUS_RELEASE": str(dest / "releases" / previous) if previous else "",
        "ROOST_HOOK": phase.value,
    }


def run_hook(command: str, cwd: Path, tag: str, dest: Path, timeout: float,
             previous: str | None = None, phase: HookPhase = HookPhase.HOOK) -> HookRecord:
    """Run one hook; returns its record or raises HookError."""
    env = {**os.environ, **hook_env(tag, dest, cwd, previous, phase)}
    started = time.monotonic()
    # its own session, so a timeout kills the hook's children too (not just the shell)
    proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    reader = _OutputTail(proc.stdout, HOOK_OUTPUT_MAX * 4)  # bytes: room for UTF-8
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    output = reader.finish(HOOK_OUTPUT_DRAIN_SECONDS)
    record = HookRecord(command, phase, code, round(time.monotonic() - started, 3),
                        output[-HOOK_OUTPUT_MAX:])
    what = "health check" if phase is HookPhase.HEALTH else f"{phase} hook"
    if code is None:
        raise HookError(f"{what} {command!r} timed out after {timeout:g} s", record)
    if code != 0:
        tail = output.strip().splitlines()[-1:] or [""]
        raise HookError(f"{what} {command!r} failed (exit {code}) {tail[0]}".strip(), record)
    return record


def activate(dest: Dest, tag: str, *, keep: int = 5, pre: list[str] | None = None,
             post: list[str] | None = None, hook_timeout: float = 300.0) -> ActivateResult:
    """pre hooks -> switch -> post hooks (a failure switches back) -> prune."""
    check_tag(tag)
    hooks: list[HookRecord] = []
    with dest.locked():
        state = dest.load_state()
        release = dest.releases / tag
        if not release.is_dir():
            raise ReleaseError(f"release {tag} is not staged on this host")
        before = dest.current_tag()
        try:
            for command in pre or []:
                hooks.append(run_hook(command, release, tag, dest.root, hook_timeout,
                                      before, HookPhase.PRE))
        except HookError as exc:
            exc.hooks = (*hooks, exc.hook)
            raise
        previous = switch(dest, tag)
        try:
            for command in post or []:
                hooks.append(run_hook(command, release, tag, dest.root, hook_timeout,
                                      previous, HookPhase.POST))
        except HookError as exc:
            ran = (*hooks, exc.hook)
            if previous and previous != tag:
                switch(dest, previous)
                raise HookError(f"{exc}; switched back to {previous}", exc.hook, ran) from None
            if previous is None:
                # a first deploy: there was nothing before, so nothing stays current
                with contextlib.suppress(FileNotFoundError):
                    dest.current.unlink()
                raise HookError(f"{exc}; no release is current (first deploy)", exc.hook,
                                ran) from None
            exc.hooks = ran
            raise
        if previous != tag:
            state["history"].append({"at": time.time(), "action": "switch", "tag": tag,
                                     "from": previous})
        removed = prune(dest, state, keep)
        dest.save_state(state)
    return ActivateResult(str(dest.root), tag=tag, previous=previous, changed=previous != tag,
                          pruned=tuple(removed), hooks=tuple(hooks))


def rollback(dest: Dest, to: str | None = None) -> RollbackResult:
    with dest.locked():
        state = dest.load_state()
        target = check_tag(to) if to else previous_tag(dest, state)
        if target is None:
            raise ReleaseError("there is no previous release to roll back to")
        previous = switch(dest, target)
        state["history"].append({"at": time.time(), "action": "switch", "tag": target,
                                 "from": previous, "rollback": True})
        dest.save_state(state)
    return RollbackResult(str(dest.root), target, previous)


# --- the agent subcommand `roost activate` -------------------------------------------


def add_dest_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, required=True, help="destination directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_activate(parser: argparse.ArgumentParser) -> Runner:
    parser.description = ("Make releases/<tag> current: pre hooks, atomic switch, post hooks "
                          "(a failing one switches back), prune. With --payload, stage first.")
    add_dest_args(parser)
    parser.add_argument("--tag", help="release to activate (default: the manifest's)")
    parser.add_argument("--manifest", type=Path, help="stage this manifest's payload first")
    parser.add_argument("--payload", type=Path, help="the payload file or directory to stage")
    parser.add_argument("--keep", type=int, default=5, help="releases to keep (default: 5)")
    parser.add_argument("--pre", action="append", default=[], help="pre-activate command")
    parser.add_argument("--post", action="append", default=[], help="post-activate command")
    parser.add_argument("--hook-timeout", type=float, default=300.0)
    parser.add_argument("--no-switch", action="store_true", help="stage only")
    return run_activate


def read_manifest(path: Path) -> Manifest:
    """A deploy's manifest; validated again unless host-prepare's record proves these
    are the bytes it validated (roost.target.checked)."""
    try:
        text = path.read_bytes()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"manifest {path} is not a JSON object")
    return Manifest.load(data, checked=was_checked(path, text))


def run_activate(ns: argparse.Namespace) -> int:
    if ns.keep < 0:  # prune() would read it as 0 and delete every old release
        raise UsageError(f"--keep must be 0 or more, not {ns.keep}")
    dest = Dest(ns.dest)
    staged = None
    tag = ns.tag
    if ns.manifest is not None:
        manifest = read_manifest(ns.manifest)
        payload = ns.payload or ns.manifest.parent / "staging" / manifest.name
        staged = stage(dest, manifest, payload, record=ns.manifest.parent / VERIFIED)
        tag = tag or manifest.tag
    if tag is None:
        raise UsageError("give --tag or --manifest")
    result = ActivateResult(str(ns.dest), stage=staged)
    if not ns.no_switch:
        switched = activate(dest, check_tag(tag), keep=ns.keep, pre=ns.pre, post=ns.post,
                            hook_timeout=ns.hook_timeout)
        result = dataclasses.replace(switched, dest=str(ns.dest), stage=staged)
    emit(result.to_dict(), ns.json)
    return 0


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    for key, value in result.items():
        print(f"{key}: {value}")
