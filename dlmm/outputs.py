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
           "os_error", "lock", "remove"]


def partial_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """Where ``path`` is written before it is renamed in: ``NAME.partial`` beside it
    (``NAME.partial.SUFFIX`` with ``keep_suffix``, for writers that look at it)."""
    p = Path(path)
    return p.with_name(p.name + ".partial" + (p.suffix if keep_suffix else ""))


def check_writable(path: str | os.PathLike) -> Path:
    """``path``'s folder exists and is writable, and ``path`` is not a folder that a
    file would replace (an InputError naming it otherwise)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if len(p.name.encode()) > 255 - len(".partial"):
        raise InputError(p, "the file name is too long for the file system "
                         f"({len(p.name.encode())} bytes)", "choose a shorter --out")
    if not parent.is_dir():
        raise InputError(parent, "output folder does not exist", "create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(parent, "output folder is not writable",
                         "choose another --out, or fix the folder's permissions")
    return p


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


def write_file(path: str | os.PathLike, write, keep_suffix: bool = False) -> Path:
    """``write(tmp)`` writes the file at a temporary name beside ``path``, which is then
    renamed to ``path``: a reader never sees half a file, and a failure leaves nothing."""
    path = Path(path)
    tmp = partial_path(path, keep_suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(path, e) from None
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


def os_error(path: Path, e: OSError) -> InputError:
    why = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied",
           errno.EROFS: "the file system is read-only", errno.EDQUOT: "the disk quota is "
           "exceeded", errno.ENAMETOOLONG: "the name is too long"}.get(e.errno, e.strerror)
    return InputError(path, f"cannot write ({why})", "free space or choose another --out; "
                      "nothing was left behind")


@contextmanager
def lock(prefix: str | os.PathLike):
    """Hold ``PREFIX.lock`` for the life of a run: a second run with the same outputs
    refuses at once instead of writing beside the first."""
    path = Path(f"{prefix}.lock")
    check_writable(path)
    fh = open(path, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise InputError(path, "another dlmm run is writing these outputs",
                         "wait for it to finish, or choose another --out") from None
    try:
        yield path
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        fh.close()
