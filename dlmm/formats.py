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
_VCF = (".vcf", ".vcf.gz", ".bcf")


def _strip(path: str, suffixes) -> str | None:
    for suffix in suffixes:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return None


def genotype_format(path: str | os.PathLike) -> tuple[str, str]:
    """``(format, location)`` of a genotype path: ``zarr`` (a store or URL), ``plink``
    (a prefix, or one of its .bed/.bim/.fam files), ``text`` (the course lab's matrix);
    a format dlmm does not read is an InputError that says how to convert it."""
    g = str(path)
    try:
        return _format(g)
    except OSError as e:  # a name too long, a loop of links, ...
        raise InputError(g, f"cannot be opened ({e.strerror or e})",
                         "check the path (a shorter name, a real file)") from None


def _format(g: str) -> tuple[str, str]:
    if io.is_url(g) or io.is_zarr_store(g) or Path(g).is_dir():
        return "zarr", g
    prefix = _strip(g, _PLINK1)
    if prefix is not None and Path(f"{prefix}.bed").exists():
        return "plink", prefix
    if Path(f"{g}.bed").exists() or Path(f"{g}.fam").exists():
        return "plink", g
    if _strip(g, _PLINK2) is not None or Path(f"{g}.pgen").exists():
        raise InputError(g, "PLINK 2 .pgen/.pvar/.psam files are not read yet",
                         "convert them: plink2 --pfile PREFIX --make-bed --out PREFIX")
    if g.endswith(".bgen"):
        raise InputError(g, "BGEN files are not read yet",
                         "convert: plink2 --bgen FILE ref-first --sample FILE.sample "
                         "--make-bed --out PREFIX")
    if _strip(g, _VCF) is not None:
        raise InputError(g, "VCF/BCF is read through a VCF Zarr store",
                         "convert it: vcf2zarr convert FILE g.zarr (pip install bio2zarr), "
                         "then scan g.zarr")
    if Path(g).is_file():
        return "text", g
    raise InputError(g, "no genotypes of that name (a Zarr store, a PLINK prefix with "
                     ".bed/.bim/.fam, or a text matrix)",
                     "give a PLINK prefix without extension, a .zarr store or a text matrix")


def open_genotypes(path: str | os.PathLike, *, chunk_size: int | None = None) -> xr.Dataset:
    """Open genotypes lazily as a VCF Zarr-style Dataset, whatever their format.

    Parameters
    ----------
    path : a VCF Zarr store (folder or fsspec URL), a PLINK prefix (or its .bed), or
        the course lab's whitespace text matrix.
    chunk_size : variants per task (default: the store's chunks, else 10,000).

    Returns
    -------
    Dataset with ``call_dosage`` (variants, samples) and the variant and sample fields
    (:func:`dlmm.io.genotype_dataset`); ``sample_phenotype`` (samples, phenotypes) when
    the genotypes carry phenotypes (a .fam's columns 6..., a store's); ``attrs``:
    ``format`` and ``source`` (the path as given).
    """
    positive_int("chunk_size", chunk_size)
    fmt, where = genotype_format(path)
    if fmt == "zarr":
        ds = io.open_store(where, chunk_size=chunk_size)
    elif fmt == "plink":
        ds = io.read_plink(where, chunk_size=chunk_size or io.DEFAULT_CHUNK)
    else:
        ds = io.read_text_genotypes(where, chunk_size=chunk_size or io.DEFAULT_CHUNK)
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
