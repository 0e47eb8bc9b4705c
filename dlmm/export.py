"""Result tables: GEMMA's ``.assoc.txt`` layout as TSV (optionally gzipped) and Parquet."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import outputs, schema

__all__ = ["to_gemma_table", "gemma_columns", "format_table", "write_tsv", "write_parquet",
           "select_trait"]

#: The variant columns of GEMMA's table, before the tests' (from the result's fields).
_VARIANT_COLUMNS = {"chr": "variant_contig_name", "rs": "variant_id", "ps": "variant_position",
                    "n_miss": "variant_n_missing", "allele1": "variant_allele1",
                    "allele0": "variant_allele0", "af": "variant_allele_frequency"}


def select_trait(results: xr.Dataset, trait: int | str | None = None) -> xr.Dataset:
    """One trait of a result, by index or ``trait_id``; None: the only one (an error
    for a result of several traits)."""
    if "traits" not in results.dims:
        return results
    names = [str(t) for t in results["trait_id"].values]
    if trait is None:
        if len(names) != 1:
            raise ValueError(f"the result has {len(names)} traits ({', '.join(names)}): "
                             "choose one with trait=")
        trait = 0
    i = names.index(trait) if isinstance(trait, str) else int(trait)
    return results.isel(traits=i)


def gemma_columns(results: xr.Dataset, trait: int | str | None = None) -> dict:
    """The tested variants of one trait of a computed result as GEMMA's table's columns:
    ``chr rs ps n_miss allele1 allele0 af`` then the tests' (:func:`dlmm.schema.
    table_columns`: -lmm 2's order for the LRT alone, -lmm 4's with Wald or score; as
    in GEMMA -lmm 1, ``logl_H1`` is the REML one when Wald runs without the LRT)."""
    r = select_trait(results, trait)
    tested = np.asarray(r["variant_lmm_tested"].values, dtype=bool)
    table = {}
    for col, name in _VARIANT_COLUMNS.items():
        v = np.asarray(r[name].values)
        table[col] = v.astype(object).astype(str) if v.dtype.kind in "OUT" else v
    for key in schema.table_columns(r.data_vars):
        name = schema.variable(key).name
        if key == "logl_H1" and name not in r:
            name = "variant_lmm_logl_reml"
        table[key] = np.asarray(r[name].values)
    return {k: v[tested] for k, v in table.items()}


def to_gemma_table(results: xr.Dataset, trait: int | str | None = None) -> pd.DataFrame:
    """:func:`gemma_columns` as a DataFrame."""
    return pd.DataFrame(gemma_columns(results, trait))


def format_table(df: pd.DataFrame) -> str:
    """A GEMMA-style table as TSV text: the header, then one line per row.

    ``af`` at GEMMA's precision (``%.3f``), the other floats with 10 significant digits
    (``%.10g``), NaN as an empty field, integers and strings as they are; a string
    holding a tab, a quote or a line break is quoted as CSV does.  The same bytes as
    ``df.to_csv(sep="\\t", index=False, float_format="%.10g")`` with ``af``
    preformatted; the numbers are written by compiled code (:mod:`dlmm.table`), the rare
    cell whose rounding it cannot be sure of by Python's ``%``.
    """
    return _format_columns({name: df[name].to_numpy() for name in df.columns})


def _format_columns(table: dict[str, np.ndarray]) -> str:
    from . import table as tsv

    kinds, columns = [], []
    for name, a in table.items():
        if a.dtype.kind == "f":
            kinds.append(tsv.F3 if name == "af" else tsv.G10)
            columns.append(a.astype(np.float64))
        elif a.dtype.kind == "i" or (a.dtype.kind == "u" and a.max(initial=0) < 2**63):
            kinds.append(tsv.INT)
            columns.append(a.astype(np.int64))
        elif a.dtype.kind == "U" and not tsv.needs_quotes(a):  # no missing values either
            kinds.append(tsv.STR)
            columns.append(a)
        else:
            values = list(map(str, a.tolist()))
            for i in np.flatnonzero(pd.isna(a)).tolist():  # missing: an empty field
                values[i] = ""
            if any(c in "".join(values) for c in '\t"\n\r'):
                values = [_quote(v) for v in values]
            kinds.append(tsv.STR)
            columns.append(values)

    def python_row(r: int) -> str:
        fields = []
        for k, col in zip(kinds, columns):
            v = col[r]
            fields.append(str(v) if k == tsv.STR else "%d" % v if k == tsv.INT else
                          "%.3f" % v if k == tsv.F3 else "" if v != v else "%.10g" % v)
        return "\t".join(fields) + "\n"

    head = "\t".join(_quote(str(c)) for c in table) + "\n"
    n_rows = len(next(iter(table.values()))) if table else 0
    return head + tsv.render(kinds, columns, n_rows, python_row)


def _quote(v: str) -> str:
    if any(c in v for c in '\t"\n\r'):
        return '"' + v.replace('"', '""') + '"'
    return v


def write_tsv(results: xr.Dataset, path: str | os.PathLike, trait: int | str | None = None,
              *, compress: bool | None = None) -> Path:
    """Write one trait's GEMMA-style ``.assoc.txt`` table (temporary name, renamed in).
    ``compress``: gzip it (default: when ``path`` ends in ``.gz``)."""
    path = Path(path)
    text = _format_columns(gemma_columns(results, trait)).encode()
    if compress if compress is not None else path.suffix == ".gz":
        text = gzip.compress(text, compresslevel=6, mtime=0)
    return outputs.write_file(path, lambda tmp: tmp.write_bytes(text))


def write_parquet(results: xr.Dataset, path: str | os.PathLike,
                  trait: int | str | None = None) -> Path:
    """Write one trait's table (the TSV's columns and values) as zstd-compressed Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(gemma_columns(results, trait))
    return outputs.write_file(Path(path), lambda tmp: pq.write_table(
        table, tmp, compression="zstd"))
