"""Per-sample inputs (phenotypes, covariates, kinships) joined to the genotypes by sample id.

A table with sample ids -- a PLINK 2 / REGENIE file with a header (``#FID IID ...``,
``FID IID ...``, ``#IID ...`` or ``IID ...``), a pandas object indexed by sample id, an
xarray DataArray with a ``sample_id`` coordinate, a kinship ``.npz`` or Zarr store with
``sample_id`` -- is joined to the genotypes' ``sample_id``, in any order: genotype samples
it lacks are dropped (counted in the log), its samples that are not genotyped are ignored
(counted), and a duplicated id is an error.  A table without ids (GEMMA's headerless
files, a numpy array) is taken in the genotypes' sample order, checked by its row count.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["SampleTable", "Joined", "Kinship", "read_sample_table", "as_sample_table",
           "select_columns", "join", "join_kinship", "check_unique", "check_text", "few",
           "MISSING"]

#: Text read as a missing value (GEMMA: NA and -9; PLINK: also NaN and '.').
MISSING = ("NA", "na", "NaN", "nan", "-9", "-9.0", ".")
_ID_HEADS = ("#FID", "FID", "#IID", "IID")


@dataclass(frozen=True)
class SampleTable:
    """Per-sample values: ``values`` (rows, k) float64, NaN where missing; ``names`` (k,)
    the columns' names; ``ids`` (rows,) str sample ids, or None when the rows are in the
    genotypes' sample order; ``source`` where it came from (for messages)."""

    values: np.ndarray
    names: tuple[str, ...]
    ids: np.ndarray | None
    source: str

    @property
    def has_ids(self) -> bool:
        return self.ids is not None


@dataclass(frozen=True)
class Joined:
    """A table in the genotypes' sample order: ``values`` (samples, k), NaN for samples
    it lacks; ``note`` says how it was joined (for the log)."""

    values: np.ndarray
    names: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Kinship:
    """A kinship as read: ``values`` (k, k) and its sample ``ids`` (k,) or None (rows in
    the genotypes' sample order)."""

    values: np.ndarray
    ids: np.ndarray | None
    source: str


def few(values, k: int = 3) -> str:
    """Up to ``k`` values for a message: ``'a', 'b', 'c', ...``."""
    values = [str(v) for v in values]
    shown = ", ".join(repr(v) for v in values[:k])
    return shown + (", ..." if len(values) > k else "") if values else "none"


def check_unique(ids: np.ndarray, source, what: str = "sample id") -> None:
    """A duplicated id is an error naming it."""
    index = pd.Index(ids)
    if not index.is_unique:
        dup = index[index.duplicated()].unique()
        raise InputError(source, f"{len(dup)} duplicated {what}(s) ({few(dup)})",
                         f"give each {what} once")


#: compressed text pandas reads by its suffix
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")


def check_text(path: Path, what: str) -> None:
    """A file given as a text table holds text: control bytes (a .bed, a .pgen, a
    binary matrix) are an error naming the file, not a parser's puzzle."""
    if Path(path).suffix in _COMPRESSED:
        return
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if re.search(rb"[\x00-\x08\x0e-\x1f]", head):
        raise InputError(path, f"the {what} file is not text (it holds binary data)",
                         "give a whitespace-separated text table")


def read_text(path: Path, what: str, header: bool = False) -> pd.DataFrame:
    """A whitespace-separated text table, every field a string (pandas' C parser)."""
    check_text(path, what)
    try:
        return pd.read_csv(path, sep=r"\s+", header=0 if header else None, dtype=str,
                           comment=None, keep_default_na=False, na_values=[""],
                           quoting=csv.QUOTE_NONE, engine="c")
    except pd.errors.EmptyDataError:
        raise InputError(path, f"the {what} file is empty", "give a non-empty file") from None
    except pd.errors.ParserError as e:
        raise InputError(path, f"the {what} file's rows differ in length "
                         f"({str(e).split(': ')[-1].strip()})",
                         "give every row the same number of columns") from None
    except UnicodeDecodeError:
        raise InputError(path, f"the {what} file is not text",
                         "give a whitespace-separated text table") from None
    except (OSError, EOFError) as e:  # e.g. a .gz that is not gzip
        raise InputError(path, f"the {what} file cannot be read ({type(e).__name__}: {e})",
                         "give a whitespace-separated text table (or it gzipped)") from None


def to_float(df: pd.DataFrame, path, what: str, first_line: int = 1) -> np.ndarray:
    """String fields -> float64, the :data:`MISSING` texts -> NaN; a non-number is an
    error naming its line and column (``first_line``: the file line of row 0)."""
    vals = df.to_numpy(dtype=str)
    out = np.full(vals.shape, np.nan)
    miss = np.isin(vals, MISSING)
    try:
        out[~miss] = vals[~miss].astype(np.float64)
    except ValueError:
        bad = next(v for v in vals[~miss].ravel() if not _is_number(v))
        r, c = np.argwhere(vals == bad)[0]
        column = f"column {c + 1}" if df.columns.dtype.kind in "iu" else \
            f"column {df.columns[c]!r}"
        raise InputError(path, f"{what}: non-numeric value {str(bad)!r} at line "
                         f"{r + first_line}, {column}",
                         "use numbers, with NA or -9 for missing") from None
    return out


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def need_file(path, what: str) -> Path:
    """``path`` as a readable file, or an InputError saying why not."""
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError(p, f"is a folder, not a {what} file", "give the file's path")
        if p.exists() and not p.is_file():
            raise InputError(p, f"is not a regular file (a device, a pipe?), not a {what} "
                             "file", "give the file's path")
        if not p.is_file():
            raise InputError(p, f"{what} file not found", "check the path")
        if not os.access(p, os.R_OK):
            raise InputError(p, f"{what} file is not readable", "check its permissions")
    except OSError as e:  # a name too long, a loop of links
        raise InputError(p, f"{what} file cannot be opened ({e.strerror or e})",
                         "check the path") from None
    return p


def _has_id_header(path: Path) -> bool:
    with open(path, "rb") as f:
        first = f.readline().split()
    return bool(first) and first[0].decode(errors="replace").upper() in _ID_HEADS


def read_sample_table(path, what: str = "phenotype") -> SampleTable:
    """A phenotype or covariate file.

    With a header whose first field is ``#FID``, ``FID``, ``#IID`` or ``IID`` (PLINK 2,
    REGENIE), the rows carry sample ids (the ``IID`` column) and the other columns after
    ``FID``/``IID`` are named by the header.  Otherwise (GEMMA's ``-p``/``-c`` files) every
    column is a value, the rows are in the genotypes' sample order, and the columns are
    numbered from 1.  ``NA``, ``-9``, ``NaN`` and ``.`` are missing.
    """
    p = need_file(path, what)
    if not _has_id_header(p):
        df = read_text(p, what)
        names = tuple(str(j + 1) for j in range(df.shape[1]))
        return SampleTable(to_float(df, p, what), names, None, str(p))
    df = read_text(p, what, header=True)
    df.columns = [str(c).lstrip("#") for c in df.columns]
    upper = [c.upper() for c in df.columns]
    if "IID" not in upper:
        raise InputError(p, "the header has FID but no IID column",
                         "name the sample id column IID (PLINK 2: #FID IID ...)")
    iid = df.columns[upper.index("IID")]
    value_cols = [c for c, u in zip(df.columns, upper) if u not in ("FID", "IID")]
    if not value_cols:
        raise InputError(p, f"no {what} column after the sample ids",
                         f"add {what} columns after FID/IID")
    ids = df[iid].to_numpy(dtype=str)
    check_unique(ids, p)
    values = to_float(df[value_cols], p, what, first_line=2)
    return SampleTable(values, tuple(value_cols), ids, str(p))


def as_sample_table(obj, what: str = "phenotype", source: str | None = None) -> SampleTable:
    """A phenotype or covariate input in any accepted form, as a :class:`SampleTable`.

    ``obj`` is a file path (:func:`read_sample_table`), a SampleTable, a numpy array
    (samples,) or (samples, k) in the genotypes' sample order, a pandas Series or
    DataFrame indexed by sample id (or with an ``IID`` column), or an xarray DataArray
    over ``samples`` with a ``sample_id`` coordinate.
    """
    if isinstance(obj, SampleTable):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return read_sample_table(obj, what)
    source = source or f"{what}s ({type(obj).__name__})"
    if isinstance(obj, (pd.Series, pd.DataFrame)):
        return _from_pandas(obj, what, source)
    if type(obj).__module__.startswith("xarray"):
        return _from_xarray(obj, what, source)
    values = np.asarray(obj)
    if values.dtype.kind not in "biuf" or values.ndim not in (1, 2):
        raise InputError(source, f"{what}s must be numbers, (samples,) or (samples, k); got "
                         f"{values.dtype} {values.shape}",
                         "give a numeric array, or a pandas object indexed by sample id")
    values = values.astype(np.float64).reshape(values.shape[0], -1)
    names = tuple(str(j + 1) for j in range(values.shape[1]))
    return SampleTable(values, names, None, source)


def _from_pandas(obj, what: str, source: str) -> SampleTable:
    df = obj.to_frame() if isinstance(obj, pd.Series) else obj
    if "IID" in df.columns and df.index.dtype.kind != "O":
        df = df.set_index("IID").drop(columns=[c for c in ("FID", "#FID") if c in df])
    if df.index.dtype.kind not in "OUS" and not pd.api.types.is_string_dtype(df.index):
        raise InputError(source, f"the {what}s' index is not sample ids "
                         f"({df.index.dtype})", "index it by sample id (df.set_index('IID'))"
                         ", or pass df.to_numpy() for rows in genotype order")
    try:
        values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise InputError(source, f"the {what}s have non-numeric columns",
                         "code every column as numbers") from None
    ids = df.index.to_numpy().astype(str)
    check_unique(ids, source)
    return SampleTable(values, tuple(str(c) for c in df.columns), ids, source)


def _from_xarray(obj, what: str, source: str) -> SampleTable:
    if "samples" not in obj.dims or "sample_id" not in obj.coords:
        raise InputError(source, f"the {what} DataArray needs a samples dim with a "
                         "sample_id coordinate", "assign_coords(sample_id=('samples', ids))")
    other = [d for d in obj.dims if d != "samples"]
    if len(other) > 1:
        raise InputError(source, f"the {what} DataArray has dims {obj.dims}",
                         "give (samples,) or (samples, traits)")
    arr = obj.transpose("samples", *other)
    values = np.asarray(arr.values, dtype=np.float64).reshape(arr.shape[0], -1)
    if other:
        dim = other[0]
        names = tuple(str(v) for v in (arr[dim].values if dim in arr.coords
                                       else range(1, values.shape[1] + 1)))
    else:
        names = (str(obj.name) if obj.name is not None else "1",)
    ids = np.asarray(arr["sample_id"].values).astype(str)
    check_unique(ids, source)
    return SampleTable(values, names, ids, source)


def select_columns(table: SampleTable, spec=None, *, option: str = "pheno_col") -> SampleTable:
    """The columns ``spec`` of a table: None (all), a 1-based number, a name, ``"all"``, a
    comma-separated string of numbers or names, or a list of them."""
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return table
    items = spec.split(",") if isinstance(spec, str) else (
        [spec] if isinstance(spec, (int, np.integer)) else list(spec))
    items = [str(x).strip() for x in items if str(x).strip()]
    k = len(table.names)
    picked = []
    for item in items:
        if item in table.names:
            picked.append(table.names.index(item))
        elif item.isdigit() and 1 <= int(item) <= k:
            picked.append(int(item) - 1)
        else:
            raise InputError(table.source, f"{option.replace('_', '-')} {item}: no such column "
                             f"(the file has {k}: {few(table.names, 6)})",
                             f"give a column number from 1 to {k} or a column name")
    if not picked or len(set(picked)) != len(picked):
        raise InputError(table.source, f"{option.replace('_', '-')} {spec!r} repeats a column "
                         "or is empty", "list each column once")
    return replace(table, values=table.values[:, picked],
                   names=tuple(table.names[j] for j in picked))


def join(table: SampleTable, sample_id: np.ndarray, what: str, *,
         id_source: str = "genotypes") -> Joined:
    """``table`` in the genotypes' sample order (see the module's docstring);
    ``id_source`` names where ``sample_id`` comes from (e.g. the .fam), in errors."""
    n = len(sample_id)
    if not table.has_ids:
        if table.values.shape[0] != n:
            raise InputError(table.source, f"has {table.values.shape[0]} rows but the "
                             f"genotypes have {n} samples", f"give one {what} row per "
                             "sample in the genotypes' order, or a header with sample ids "
                             "(#FID IID ...)")
        return Joined(table.values, table.names,
                      f"{table.source}: rows taken in the genotypes' sample order (no ids)")
    genotype_ids = np.asarray(sample_id).astype(str)
    check_unique(genotype_ids, id_source, "genotype sample id")
    pos = pd.Index(table.ids).get_indexer(genotype_ids)
    found = pos >= 0
    if not found.any():
        raise InputError(table.source, f"none of its {len(table.ids)} sample ids is a "
                         f"genotype sample id ({few(table.ids)} vs {few(genotype_ids)})",
                         "use the genotypes' sample ids (IID) in the IID column")
    values = np.full((n, table.values.shape[1]), np.nan)
    values[found] = table.values[pos[found]]
    extra = len(table.ids) - int(found.sum())
    note = (f"{table.source}: joined by sample id, {int(found.sum())} of {n} genotype "
            f"samples found, {n - int(found.sum())} missing (dropped), {extra} not "
            "genotyped (ignored)")
    return Joined(values, table.names, note)


def join_kinship(kinship: Kinship, sample_id: np.ndarray, *,
                 id_source: str = "genotypes") -> tuple[np.ndarray, str]:
    """Where each genotype sample is in the kinship: (samples,) int positions, -1 for a
    sample the kinship lacks (dropped from the scan); and the log's note (``id_source``
    as in :func:`join`)."""
    k = kinship.values.shape[0]
    n = len(sample_id)
    if kinship.ids is None:
        if k != n:
            raise InputError(kinship.source, f"kinship is {k} x {k} but the genotypes have "
                             f"{n} samples", "give the kinship of all genotype samples in "
                             "their order, or one with sample ids (.npz, dlmm grm's Zarr)")
        return np.arange(n), f"{kinship.source}: rows taken in the genotypes' sample order"
    genotype_ids = np.asarray(sample_id).astype(str)
    check_unique(genotype_ids, id_source, "genotype sample id")
    pos = pd.Index(kinship.ids).get_indexer(genotype_ids)
    found = int((pos >= 0).sum())
    if found == 0:
        raise InputError(kinship.source, "none of the kinship's sample ids is a genotype "
                         f"sample id ({few(kinship.ids)} vs {few(genotype_ids)})",
                         "give the kinship of the genotype samples (sample_id)")
    note = (f"{kinship.source}: joined by sample id, {found} of {n} genotype samples found, "
            f"{n - found} missing (dropped), {k - found} not genotyped (ignored)")
    return pos, note
