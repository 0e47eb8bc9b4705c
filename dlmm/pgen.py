"""PLINK 2 ``.pgen/.pvar/.psam`` into a lazy genotype Dataset (read by pgenlib).

The Dataset has the layout of :func:`dlmm.io.genotype_dataset`: ``call_dosage``
(variants, samples) float32, the dosage of the ALT allele (``variant_allele[:, 1]``;
``variant_allele[:, 0]`` is REF), NaN where missing, one Dask task per chunk of
variants.  Dosages are read where the .pgen stores them, hardcalls elsewhere.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .errors import InputError
from .io import contig_index, genotype_dataset, variant_chunks
from .samples import need_file, to_float

__all__ = ["read_pgen", "read_pvar", "read_psam", "pgen_prefix"]

#: .pgen (and variant-major .bed) files start with these two bytes
_MAGIC = b"\x6c\x1b"
#: .psam columns that are not phenotypes (plink2's reserved names)
_PSAM_IDS = {"FID", "IID", "SID", "PAT", "MAT", "SEX"}


def pgen_prefix(prefix_or_path: str | os.PathLike) -> str:
    """``X`` from ``X``, ``X.pgen``, ``X.pvar`` or ``X.psam``."""
    s = str(prefix_or_path)
    for ext in (".pgen", ".pvar", ".psam"):
        if s.endswith(ext):
            return s[: -len(ext)]
    return s


def _text_table(path: Path, what: str, names: list[str], skip: int,
                keep: list[str] | None = None) -> pd.DataFrame:
    """A tab- or space-delimited table of strings (pandas' C parser, no quoting)
    with columns ``names`` (a data row of another length is an error), only
    those in ``keep`` (default all) parsed."""
    keep = names if keep is None else keep
    try:  # object, not str: pandas 3's Arrow strings cost 30% more to build here
        table = pd.read_csv(path, sep=r"\s+", header=None, skiprows=skip, dtype=object,
                            keep_default_na=False, na_values=[""], quoting=csv.QUOTE_NONE,
                            engine="c", comment=None,
                            usecols=[names.index(c) for c in keep])
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in keep})
    except pd.errors.ParserError as e:
        raise InputError(path, f"the {what} file's rows differ in length "
                         f"({str(e).split(': ')[-1].strip()})",
                         "give every row the same number of columns") from None
    except ValueError as e:  # usecols beyond the columns found
        raise InputError(path, f"has fewer columns than its {len(names)} ({e})",
                         "give every row the header's columns") from None
    keep = sorted(keep, key=names.index)  # pandas gives them in the file's order
    # a short row leaves its last fields NaN
    if table.shape[1] != len(keep) or table.iloc[:, -1].isna().any():
        raise InputError(path, f"has rows with fewer than the {len(names)} columns "
                         f"{' '.join(names)}", "give every row the header's columns")
    table.columns = keep
    return table


def _header(path: Path) -> tuple[list[str] | None, int]:
    """The ``#``-line column names of a .pvar/.psam (None when absent) and the
    number of lines before the data (``##`` meta lines and the header)."""
    skip = 0
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("##"):
                skip += 1
                continue
            if line.startswith("#"):
                return line[1:].split(), skip + 1
            return None, skip
    return None, skip


def read_pvar(path: str | os.PathLike) -> pd.DataFrame:
    """A .pvar (or .bim) as a table with columns CHROM, POS, ID, REF, ALT (strings).

    A .pvar without a ``#CHROM`` header line has the .bim's columns
    (CHROM ID CM POS ALT REF).
    """
    p = need_file(path, "PLINK 2 .pvar")
    names, skip = _header(p)
    if names is None:
        names = ["CHROM", "ID", "CM", "POS", "ALT", "REF"]
    missing = [c for c in ("CHROM", "POS", "ID", "REF", "ALT") if c not in names]
    if missing:
        raise InputError(p, f"the header has no {', '.join(missing)} column",
                         "give a .pvar written by plink2 (#CHROM POS ID REF ALT ...)")
    return _text_table(p, ".pvar", names, skip, keep=["CHROM", "POS", "ID", "REF", "ALT"])


def read_psam(path: str | os.PathLike) -> pd.DataFrame:
    """A .psam (or .fam) as a table of strings, with plink2's column names.

    A .psam without a header line has the .fam's columns (FID IID PAT MAT SEX
    PHENO1).  Columns other than FID, IID, SID, PAT, MAT and SEX are phenotypes.
    """
    p = need_file(path, "PLINK 2 .psam")
    names, skip = _header(p)
    if names is None:  # a .fam: FID IID PAT MAT SEX, then phenotypes
        with open(p) as fh:
            width = len(fh.readline().split())
        names = ["FID", "IID", "PAT", "MAT", "SEX"][:width]
        names += [f"PHENO{i + 1}" for i in range(width - len(names))]
    table = _text_table(p, ".psam", names, skip)
    if "IID" not in table.columns:
        raise InputError(p, "the header has no IID column",
                         "give a .psam written by plink2 (#FID IID ... or #IID ...)")
    return table


def _psam_phenotypes(psam: pd.DataFrame, path: str) -> tuple[np.ndarray, list[str]]:
    """The numeric phenotype columns of a .psam, (samples, phenotypes) float64.

    NA and -9 are NaN; a column with other text (a categorical covariate) is not
    a phenotype and is left out.
    """
    names = [c for c in psam.columns if c.upper() not in _PSAM_IDS]
    cols, kept = [], []
    for c in names:
        try:
            cols.append(to_float(psam[[c]], Path(path), "phenotype")[:, 0])
            kept.append(c)
        except InputError:
            continue
    values = np.column_stack(cols) if cols else np.zeros((len(psam), 0))
    return values, kept


def _read_pgen_chunk(path: str, n_samples: int, n_variants: int, block_info=None) -> np.ndarray:
    """Variants of one chunk as (variants, samples) float32 ALT dosages, NaN missing."""
    import pgenlib

    (start, stop), _ = block_info[None]["array-location"]
    out = np.empty((stop - start, n_samples), dtype=np.float32)
    reader = pgenlib.PgenReader(path.encode(), raw_sample_ct=n_samples, variant_ct=n_variants)
    try:
        reader.read_dosages_range(start, stop, out)  # allele_idx=1: the ALT dosage
    finally:
        reader.close()
    out[out == -9] = np.nan
    return out


def _pgen_counts(pgen: Path) -> tuple[int, int]:
    """(samples, variants) that a .pgen holds, checking its magic bytes."""
    import pgenlib

    with open(pgen, "rb") as fh:
        magic = fh.read(3)
    if magic[:2] != _MAGIC:
        raise InputError(pgen, f"not a PLINK 2 .pgen (starts with {magic.hex()}, not 6c1b)",
                         "give the .pgen written with the .pvar/.psam by plink2 --make-pgen")
    try:
        reader = pgenlib.PgenReader(str(pgen).encode())
    except RuntimeError as e:
        raise InputError(pgen, f"pgenlib cannot open it ({e})",
                         "regenerate it with plink2 --make-pgen") from None
    try:
        return reader.get_raw_sample_ct(), reader.get_variant_ct()
    finally:
        reader.close()


def read_pgen(prefix_or_path: str | os.PathLike, chunk_size: int | None = None) -> xr.Dataset:
    """Open PLINK 2 ``X.pgen/.pvar/.psam`` as a lazy genotype Dataset.

    Parameters
    ----------
    prefix_or_path : ``X`` or the path of any of the three files.
    chunk_size : variants per chunk (one Dask task each, all samples); default: from
        a byte budget per task (:func:`dlmm.io.variant_chunks`).

    Returns
    -------
    Dataset with ``call_dosage`` (variants, samples) float32 dask array, the
    ALT dosage (``variant_allele[:, 1]``), NaN missing; ``variant_id``,
    ``variant_contig`` (index into ``contig_id``), ``variant_position``,
    ``variant_allele`` (variants, 2) = [REF, ALT], ``sample_id`` (IID),
    ``sample_family_id`` when the .psam has FID, and ``sample_phenotype``
    (samples, phenotypes) float64 with coordinate ``phenotype_name`` when it
    has numeric phenotype columns (NA and -9 are NaN).
    """
    import dask.array as da
    from dask.base import tokenize

    prefix = pgen_prefix(prefix_or_path)
    pgen = need_file(f"{prefix}.pgen", "PLINK 2 .pgen")
    if not Path(f"{prefix}.pvar").exists() and Path(f"{prefix}.pvar.zst").exists():
        raise InputError(f"{prefix}.pvar.zst", "a compressed .pvar is not read",
                         f"decompress it: zstd -d {prefix}.pvar.zst")
    pvar, psam = read_pvar(f"{prefix}.pvar"), read_psam(f"{prefix}.psam")
    n, m = _pgen_counts(pgen)
    if len(psam) != n:
        raise InputError(f"{prefix}.psam", f"has {len(psam)} samples but the .pgen has {n}",
                         "give the .psam written with this .pgen")
    if len(pvar) != m:
        raise InputError(f"{prefix}.pvar", f"has {len(pvar)} variants but the .pgen has {m}",
                         "give the .pvar written with this .pgen")
    multi = np.fromiter(("," in a for a in pvar["ALT"].to_numpy()), bool, m)
    if multi.any():
        raise InputError(f"{prefix}.pvar", f"{int(multi.sum())} variants have more than two "
                         f"alleles (first: {pvar['ID'].iloc[int(np.argmax(multi))]})",
                         f"split them (plink2 --pfile {prefix} --make-pgen multiallelics=- "
                         "--out SPLIT) or drop them (--max-alleles 2)")
    try:
        position = pvar["POS"].astype(np.int64).to_numpy()
    except ValueError:
        raise InputError(f"{prefix}.pvar", "POS is not an integer", "fix the positions") from None
    chunks = (variant_chunks(m, n, chunk_size), (n,))
    dosage = da.map_blocks(
        _read_pgen_chunk, path=str(pgen), n_samples=n, n_variants=m, chunks=chunks,
        dtype=np.float32, meta=np.empty((0, 0), dtype=np.float32),
        name="read-pgen-" + tokenize(str(pgen), pgen.stat().st_mtime_ns, n, m, chunks),
    ) if m else da.zeros((0, n), dtype=np.float32)
    variant_contig, contig_id = contig_index(pvar["CHROM"].to_numpy())
    ds = genotype_dataset(
        dosage, sample_id=psam["IID"].to_numpy(), variant_id=pvar["ID"].to_numpy(),
        variant_contig=variant_contig, contig_id=contig_id, variant_position=position,
        variant_allele=pvar[["REF", "ALT"]].to_numpy())
    if "FID" in psam.columns:
        ds["sample_family_id"] = (("samples",), psam["FID"].to_numpy().astype(object))
    pheno, names = _psam_phenotypes(psam, f"{prefix}.psam")
    if names:
        ds["sample_phenotype"] = (("samples", "phenotypes"), pheno)
        ds = ds.assign_coords(phenotype_name=("phenotypes", np.array(names, dtype=object)))
    return ds
