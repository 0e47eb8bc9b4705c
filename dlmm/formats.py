"""Which reader opens a genotype path: one function for every command and the pipeline."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
import xarray as xr

from . import io
from .errors import DlmmWarning, InputError
from .options import positive_int
from .samples import few

__all__ = ["open_genotypes", "genotype_format"]

_PLINK1 = (".bed", ".bim", ".fam")
_PLINK2 = (".pgen", ".pvar", ".psam")


def _strip(path: str, suffixes) -> str | None:
    for suffix in suffixes:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return None


def _bgen_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(20)[16:20] == b"bgen"
    except OSError:
        return False


def genotype_format(path: str | os.PathLike) -> tuple[str, str]:
    """``(format, location)`` of a genotype path: ``zarr`` (a store or URL), ``plink`` (a
    prefix, or one of its .bed/.bim/.fam files), ``pgen`` (a PLINK 2 prefix or one of its
    files), ``bgen`` (a .bgen), ``vcf`` (refused with the way to convert it), ``text``
    (the course lab's matrix)."""
    g = str(path)
    try:
        return _format(g)
    except OSError as e:  # a name too long, a loop of links, ...
        raise InputError(g, f"cannot be opened ({e.strerror or e})",
                         "check the path (a shorter name, a real file)") from None


def _format(g: str) -> tuple[str, str]:
    from .pgen import pgen_prefix
    from .vcf import VCF_SUFFIXES

    if io.is_url(g) or io.is_zarr_store(g) or Path(g).is_dir():
        return "zarr", g
    prefix = _strip(g, _PLINK1)
    if prefix is not None and Path(f"{prefix}.bed").exists():
        return "plink", prefix
    if Path(f"{g}.bed").exists() or Path(f"{g}.fam").exists():
        return "plink", g
    if _strip(g, _PLINK2) is not None or Path(f"{g}.pgen").exists():
        return "pgen", pgen_prefix(g)
    if g.endswith(".bgen") or (Path(g).is_file() and _bgen_magic(Path(g))):
        return "bgen", g
    if g.endswith(VCF_SUFFIXES):
        return "vcf", g
    if Path(g).is_file():
        return "text", g
    raise InputError(g, "no genotypes of that name (a Zarr store, a PLINK prefix with "
                     ".bed/.bim/.fam or .pgen/.pvar/.psam, a .bgen, or a text matrix)",
                     "give a PLINK prefix without extension, a .zarr store, a .bgen or a "
                     "text matrix")


def open_genotypes(path: str | os.PathLike, *, chunk_size: int | None = None) -> xr.Dataset:
    """Open genotypes lazily as a VCF Zarr-style Dataset, whatever their format.

    Parameters
    ----------
    path : a VCF Zarr store (folder or fsspec URL), a PLINK prefix (or its .bed), a
        PLINK 2 prefix (or its .pgen), a .bgen (with its .sample beside it), or the
        course lab's whitespace text matrix.
    chunk_size : variants per task (default: as many as a task holds in its byte budget,
        :func:`dlmm.io.variant_chunks`; a Zarr store's chunks when they are smaller).

    Returns
    -------
    Dataset with ``call_dosage`` (variants, samples) and the variant and sample fields
    (:func:`dlmm.io.genotype_dataset`); ``sample_phenotype`` (samples, phenotypes) when
    the genotypes carry phenotypes (a .fam's columns 6..., a store's); ``attrs``:
    ``format`` and ``source`` (the path as given).
    """
    positive_int("chunk_size", chunk_size)
    fmt, where = genotype_format(path)
    chunk = chunk_size
    if fmt == "zarr":
        ds = io.open_store(where, chunk_size=chunk_size)
    elif fmt == "plink":
        ds = io.read_plink(where, chunk_size=chunk)
    elif fmt == "pgen":
        from .pgen import read_pgen
        ds = read_pgen(where, chunk_size=chunk)
    elif fmt == "bgen":
        from .bgen import read_bgen
        ds = read_bgen(where, chunk_size=chunk)
    elif fmt == "vcf":
        from .vcf import read_vcf
        ds = read_vcf(where)
    else:
        ds = io.read_text_genotypes(where, chunk_size=chunk)
    ds.attrs.update(format=fmt, source=str(path),
                    sample_source=f"{where}.fam" if fmt == "plink" else str(path))
    _warn_duplicate_ids(ds, f"{where}.bim" if fmt == "plink" else str(path))
    return ds


def _warn_duplicate_ids(ds: xr.Dataset, source: str) -> None:
    """Duplicated variant ids are kept (each variant is tested) but named: the tables
    cannot tell those rows apart, nor --kinship-variants those variants."""
    ids = pd.Index(ds["variant_id"].values)
    if ids.is_unique:
        return
    dup = ids[ids.duplicated()].unique()
    warnings.warn(f"{source}: {len(dup)} variant id(s) given to more than one variant "
                  f"({few(dup)}); the result tables have a row for each",
                  DlmmWarning, stacklevel=2)
