"""Writing outputs safely: beside the final name then renamed in, never replacing what
exists unless asked, and one run per output prefix at a time."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

__all__ = ["partial_path", "check_writable", "check_new", "write_file", "replace_dir",
           "os_error", "lock", "check_unlocked", "remove", "discard"]


def partial_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """Where ``path`` is written before it is renamed in: ``NAME.partial`` beside it
    (``NAME.partial.SUFFIX`` with ``keep_suffix``, for writers that look at it)."""
    p = Path(path)
    return p.with_name(p.name + ".partial" + (p.suffix if keep_suffix else ""))


def check_writable(path: str | os.PathLike) -> Path:
    """``path``'s folder exists and a file can be made in it (tried: permission checks
    alone miss read-only mounts, /proc and root's power), its name fits the file system,
    and ``path`` is not a folder that a file would replace (an InputError naming it
    otherwise)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if len(p.name.encode()) > 255 - len(".partial"):
        raise InputError(p, "the file name is too long for the file system "
                         f"({len(p.name.encode())} bytes)", "choose a shorter --out")
    try:
        if not parent.is_dir():
            raise InputError(parent, "output folder does not exist", "create it first")
        _probe(parent)
    except OSError as e:
        raise InputError(parent, f"output folder is not writable ({_why(e)})",
                         "choose another --out, or fix the folder") from None
    return p


_probed: set = set()


def _probe(folder: Path) -> None:
    """Make and remove an empty file in ``folder`` (once per folder and process)."""
    key = str(folder.resolve())
    if key in _probed:
        return
    probe = folder / f".dlmm-probe-{os.getpid()}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    os.unlink(probe)
    _probed.add(key)


def check_new(paths, overwrite: bool, *, dirs: tuple = ()) -> None:
    """Refuse to replace any existing ``paths`` unless ``overwrite``; a path that must be
    a file is never a folder (and ``dirs``, stores, never a plain file)."""
    for p in map(Path, paths):
        check_writable(p)
        is_dir_output = p in {Path(d) for d in dirs}
        if p.is_symlink() and not p.exists():
            raise InputError(p, "is a broken symbolic link", "remove it or choose another --out")
        if p.exists():
            if p.is_dir() != is_dir_output:
                raise InputError(p, f"exists and is a {'folder' if p.is_dir() else 'file'}",
                                 "remove it or choose another --out")
            if not overwrite:
                raise InputError(p, "output exists", "pass --overwrite, or another --out")


def write_file(path: str | os.PathLike, write, keep_suffix: bool = False,
               fix: str | None = None) -> Path:
    """``write(tmp)`` writes the file at a temporary name beside ``path``, which is then
    renamed to ``path``: a reader never sees half a file, and a failure leaves nothing
    (an OSError becomes an InputError, with ``fix`` if given)."""
    path = Path(path)
    tmp = partial_path(path, keep_suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise (os_error(path, e) if fix is None else os_error(path, e, fix)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def replace_dir(tmp: Path, path: Path) -> Path:
    """Rename the finished folder ``tmp`` to ``path``, replacing an old one there only
    once the new one is complete."""
    old = path.with_name(path.name + ".old")
    if path.exists():
        remove(old)
        os.replace(path, old)
    os.replace(tmp, path)
    remove(old)
    return path


def remove(path: Path) -> None:
    """Remove a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def discard(path: Path) -> None:
    """Remove the partial output ``path`` of a failed write, once the Zarr writes still
    in flight have ended (a failed write does not cancel its siblings, which would write
    into the folder after it is removed); quietly (a read-only folder keeps it)."""
    _drain_zarr()
    try:
        remove(path)
    except OSError:
        pass


def _drain_zarr(timeout: float = 60.0) -> None:
    """Wait for every task on Zarr's IO event loop (Zarr 3; Zarr 2 writes in the caller)."""
    import asyncio

    try:
        from zarr.core.sync import loop
    except ImportError:
        return
    if loop[0] is None or not loop[0].is_running():
        return

    async def others():
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*pending, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(others(), loop[0]).result(timeout)


def _why(e: OSError) -> str:
    return {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EROFS: "the file system is read-only",
            errno.EDQUOT: "the disk quota is exceeded",
            errno.ENAMETOOLONG: "the name is too long"}.get(e.errno, e.strerror or str(e))


def os_error(path: Path, e: OSError, fix: str = "free space or choose another --out; "
             "nothing was left behind") -> InputError:
    """An OSError met while writing ``path`` as a one-line InputError."""
    return InputError(path, f"cannot write ({_why(e)})", fix)


_held: dict[str, int] = {}


def _lock_path(prefix) -> Path:
    return Path(f"{prefix}.lock")


def check_unlocked(prefix: str | os.PathLike) -> None:
    """Refuse at once if another process holds the lock of ``prefix`` (see :func:`lock`)."""
    path = _lock_path(prefix)
    if str(path.absolute()) in _held:
        return
    try:
        fh = open(path, "rb")
    except OSError:  # no lock file: no run (or one that has not started writing)
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(path) from None


def _busy(path: Path) -> InputError:
    return InputError(path, "another dlmm run is writing these outputs",
                      "wait for it to finish, or choose another --out")


@contextmanager
def lock(prefix: str | os.PathLike):
    """Hold ``PREFIX.lock`` for the life of a run: a second run with the same outputs
    refuses at once instead of writing beside the first.  Re-entrant in one process (a
    demo locks its folder's prefix, then runs the scan that locks it again)."""
    path = _lock_path(prefix)
    key = str(path.absolute())
    if key in _held:
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    check_writable(path)
    try:
        fh = open(path, "a")
    except OSError as e:
        raise os_error(path, e, "choose another --out") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise _busy(path) from None
    _held[key] = 1
    try:
        yield path
    finally:
        del _held[key]
        try:
            path.unlink()
        except OSError:
            pass
        fh.close()
