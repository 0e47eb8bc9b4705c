"""Where a result came from: dlmm's version, the call, the date and each input's identity."""

from __future__ import annotations

import datetime
import hashlib
import os
import sys
from pathlib import Path

__all__ = ["version", "file_identity", "provenance", "HASH_LIMIT"]

#: Files up to this size are identified by a content hash too (size and mtime beyond).
HASH_LIMIT = 64 << 20


def version() -> str:
    """The installed dlmm's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("dlmm")
    except PackageNotFoundError:  # pragma: no cover (run from a source tree)
        return "unknown"


def _files(path: Path) -> list[Path]:
    """The files of an input: itself, a PLINK prefix's three, a store's every file."""
    plink = (".bed", ".bim", ".fam")
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.suffix in plink and path.with_suffix(".bed").exists():  # a .bed given: all three
        path = path.with_suffix("")
    elif path.exists():
        return [path]
    return [Path(f"{path}{ext}") for ext in plink if Path(f"{path}{ext}").exists()]


def file_identity(path: str | os.PathLike) -> dict:
    """``{path, size, mtime, sha256?}`` of an input (a file, a PLINK prefix or a store:
    its files' total size and latest modification; a content hash when small)."""
    p = Path(path)
    if "://" in str(path):
        return {"path": str(path)}
    files = _files(p)
    out = {"path": str(p.resolve()), "size": sum(f.stat().st_size for f in files),
           "mtime": max((f.stat().st_mtime_ns for f in files), default=0)}
    if files and out["size"] <= HASH_LIMIT:
        h = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        out["sha256"] = h.hexdigest()
    return out


def provenance(inputs: dict, command: list[str] | None = None) -> dict:
    """The run's provenance: version, command line (default ``sys.argv``), date, and the
    identity of each input (``{role: path}``, None entries skipped)."""
    return {"dlmm_version": version(),
            "command": " ".join(command if command is not None else sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "inputs": {role: file_identity(p) for role, p in inputs.items()
                       if p is not None}}
