"""The log of a scan, one per trait, as GEMMA's ``.log.txt`` prints it (``## name = value``),
with what dlmm adds: where the inputs came from and how the samples were joined."""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import schema

__all__ = ["log_lines", "fit_lines", "count_lines", "null_lines", "skipped_line",
           "calibration_lines"]


def _null(res: xr.Dataset, key: str, contig: int | None = None):
    name = schema.NULL_VARIABLES[key][0]
    if name not in res:
        return None
    v = res[name]
    if "contigs" in v.dims:
        v = v.isel(contigs=contig if contig is not None else 0)
    return v.values.item()


def count_lines(res: xr.Dataset, n_tested: int | None) -> list[str]:
    """Samples, covariates and variants of one trait's result (as GEMMA's log)."""
    a = res.attrs
    lines = [f"## number of total individuals = {a['n_samples_total']}",
             f"## number of analyzed individuals = {_null(res, 'n_analysed')}",
             f"## number of covariates = {_null(res, 'n_covariates')}",
             f"## number of total SNPs/var = {res.sizes['variants']}"]
    if n_tested is not None:
        lines.append(f"## number of analyzed SNPs/var = {n_tested}")
    return lines


def _kinship_lines(res: xr.Dataset) -> list[str]:
    a = res.attrs
    lines = [f"## kinship = {a.get('kinship', 'GRM')}, "
             + ("double-centred (as GEMMA)" if a.get("center", True) else "used as given "
                "(not centred, as the course lab's EM)")]
    rank = _null(res, "kinship_rank")
    if rank is not None and rank < _null(res, "n_analysed"):
        used = a.get("kinship_variants_used")
        lines.append(f"## low-rank kinship: rank {rank}"
                     + ("" if used is None else f", the GRM of {used} variants"))
    if a.get("rotation_dtype") == "float32":
        lines.append("## genotype rotation = float32")
    return lines


def null_lines(res: xr.Dataset, contig: int | None = None) -> list[str]:
    """The null fit as GEMMA's log prints it (6 significant digits)."""
    lines = []
    for key, (_, _, per_contig, label) in schema.NULL_VARIABLES.items():
        v = _null(res, key, contig)
        if per_contig and label is not None and v is not None:
            lines.append(f"## {label} in the null model = {v:.6g}")
    return lines


def _null_block(res: xr.Dataset) -> list[str]:
    """:func:`null_lines`, once per chromosome for a LOCO scan."""
    if "contigs" not in res.dims:
        return null_lines(res)
    lines = []
    fitted = ~np.isnan(res[schema.NULL_VARIABLES["mle_logl_null"][0]].values)
    for c in np.flatnonzero(fitted):
        name = str(res["contig_id"].values[c])
        lines.append(f"## LOCO: chromosome {name}, kinship from the other chromosomes")
        lines += null_lines(res, int(c))
    return lines


def skipped_line(res: xr.Dataset) -> str | None:
    """Why the variants that were not tested were skipped, as one log line."""
    skip = ~res["variant_lmm_tested"].values.astype(bool)
    if not skip.any():
        return None
    maf, max_missing = res.attrs["maf"], res.attrs["max_missing"]
    n = _null(res, "n_analysed")
    miss = res["variant_n_missing"].values[skip]
    af = res["variant_allele_frequency"].values[skip]
    kept = miss / n <= max_missing
    reasons = {
        "all missing": miss == n,
        f"missing rate above {max_missing:g}": (miss < n) & ~kept,
        "monomorphic": kept & ((af == 0) | (af == 1)),
        f"allele frequency below {maf:g}": (kept & (af > 0) & (af < 1)
                                             & ((af < maf) | (af > 1 - maf))),
    }
    other = skip.sum() - sum(int(v.sum()) for v in reasons.values())
    parts = [f"{int(v.sum())} {k}" for k, v in reasons.items() if v.any()]
    if other:
        parts.append(f"{other} without variation or explained by the covariates")
    return f"## number of skipped SNPs/var = {int(skip.sum())} ({', '.join(parts)})"


def _provenance_lines(res: xr.Dataset) -> list[str]:
    p = res.attrs.get("provenance") or {}
    lines = [f"## dlmm version = {p.get('dlmm_version', 'unknown')}"]
    if p.get("date"):
        lines.append(f"## date = {p['date']}")
    if p.get("command"):
        lines.append(f"## command line input = {p['command']}")
    for role, ident in (p.get("inputs") or {}).items():
        extra = [f"{ident['size']} bytes"] if "size" in ident else []
        if "mtime" in ident:
            extra.append(f"modified {ident['mtime']} ns")
        if "sha256" in ident:
            extra.append(f"sha256 {ident['sha256'][:16]}")
        lines.append(f"## input {role} = {ident['path']}"
                     + (f" ({', '.join(extra)})" if extra else ""))
    return lines


def fit_lines(res: xr.Dataset) -> list[str]:
    """What a run prints before its scan: the counts, the kinship and the null fits."""
    return count_lines(res, None) + _kinship_lines(res) + _null_block(res)


_P_VALUES = {"variant_lmm_p_value": "LRT", "variant_lmm_p_value_wald": "Wald",
             "variant_lmm_p_value_score": "score", "variant_linreg_p_value": "OLS"}


def calibration_lines(res: xr.Dataset) -> list[str]:
    """lambda_GC of each test's p-values of one trait (their median chi2 statistic over
    its expectation): about 1 when the kinship absorbs relatedness and structure."""
    from .plot import lambda_gc

    df = 2 if res.attrs.get("model") == "genotypic" else 1
    return [f"## lambda_GC ({label}) = {lambda_gc(res[name].values, df):.4f}"
            for name, label in _P_VALUES.items() if name in res]


def log_lines(res: xr.Dataset, minutes: float | None = None) -> list[str]:
    """The log of one trait of a computed result (select it with
    :func:`dlmm.export.select_trait`)."""
    tested = int(res["variant_lmm_tested"].values.sum())
    lines = ["##"] + _provenance_lines(res)
    if "trait_id" in res.coords:
        lines.append(f"## phenotype = {res['trait_id'].values.item()}")
    lines += [f"## samples: {note}" for note in res.attrs.get("sample_notes", [])]
    lines += count_lines(res, tested)
    skipped = skipped_line(res)
    if skipped:
        lines.append(skipped)
    lines += _kinship_lines(res) + _null_block(res) + calibration_lines(res)
    if minutes is not None:
        lines.append(f"## total computation time = {minutes:.6g} min")
    return lines
