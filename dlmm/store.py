"""Writing results: GEMMA-style TSV (and, later, Zarr)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["to_gemma_table", "write_tsv"]

#: GEMMA ``-lmm 2`` columns first, then ours.
GEMMA_COLUMNS = ["chr", "rs", "ps", "n_miss", "allele1", "allele0", "af", "logl_H1", "l_mle",
                 "p_lrt"]


def to_gemma_table(results: xr.Dataset) -> pd.DataFrame:
    """The tested variants of a computed result Dataset as GEMMA's table.

    Columns: ``chr rs ps n_miss allele1 allele0 af logl_H1 l_mle p_lrt``, then
    ``beta se`` (``beta_dom se_dom`` for the genotypic model),
    ``sigma_sq_a sigma_sq_e iterations``.
    """
    r = results
    tested = np.asarray(r["variant_lmm_tested"].values, dtype=bool)
    contigs = np.asarray(r["contig_id"].values).astype(str)
    allele = np.asarray(r["variant_allele"].values)
    table = {
        "chr": contigs[np.asarray(r["variant_contig"].values)],
        "rs": np.asarray(r["variant_id"].values).astype(str),
        "ps": np.asarray(r["variant_position"].values),
        "n_miss": np.asarray(r["variant_n_missing"].values),
        "allele1": allele[:, 1],
        "allele0": allele[:, 0],
        "af": np.asarray(r["variant_allele_frequency"].values),
        "logl_H1": r["variant_lmm_logl"].values,
        "l_mle": r["variant_lmm_lambda"].values,
        "p_lrt": r["variant_lmm_p_value"].values,
        "beta": r["variant_lmm_beta"].values,
        "se": r["variant_lmm_beta_se"].values,
    }
    if "variant_lmm_beta_dominance" in r:
        table["beta_dom"] = r["variant_lmm_beta_dominance"].values
        table["se_dom"] = r["variant_lmm_beta_dominance_se"].values
    table["sigma_sq_a"] = r["variant_lmm_sigma_sq_a"].values
    table["sigma_sq_e"] = r["variant_lmm_sigma_sq_e"].values
    table["iterations"] = r["variant_lmm_iterations"].values
    df = pd.DataFrame(table)[tested]
    df["iterations"] = df["iterations"].astype(np.int64)
    return df.reset_index(drop=True)


def write_tsv(results: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write GEMMA's ``.assoc.txt``-style TSV, to a temporary name then renamed."""
    path = Path(path)
    df = to_gemma_table(results)
    tmp = path.with_name(path.name + ".partial")
    # af at GEMMA's precision; the fitted values with 10 significant digits
    df.assign(af=df["af"].map("{:.3f}".format)).to_csv(tmp, sep="\t", index=False,
                                                       float_format="%.10g")
    os.replace(tmp, path)
    return path
