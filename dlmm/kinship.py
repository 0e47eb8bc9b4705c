"""Genomic relatedness matrices accumulated over variant blocks with Dask."""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import kernels

__all__ = ["grm", "grm_factor", "grm_loco", "split_at_contigs"]


def dosage_blocks(ds: xr.Dataset):
    """``call_dosage`` as a (variants, samples) dask array with one chunk over the samples
    (a numpy one is split in chunks of 10,000 variants)."""
    import dask.array as da

    dosage = ds["call_dosage"].data
    if not isinstance(dosage, da.Array):
        dosage = da.from_array(dosage, chunks=(10_000, -1))
    return dosage.rechunk({1: -1})


def _used(block, samples, covariates, maf, max_missing):
    """(m,) bool: the block's variants that pass GEMMA's filters on the analysed samples."""
    return kernels.block_stats(kernels.analysed(block, samples), covariates, maf=maf,
                               max_missing=max_missing)["tested"]


def _grm_part(block, samples, covariates, maf, max_missing, standardise, subset):
    """One task per block: ``[vec(sum x_c x_c^T), number of variants]``, (1, N*N + 1)."""
    from .blas import single_threaded

    use = _used(block, samples, covariates, maf, max_missing)
    k = int(samples.sum()) if subset else block.shape[1]
    out = np.empty(k * k + 1)  # the task's output, written in place (no n x n copy)
    with single_threaded():
        kernels.grm_block(block, use, standardise, cols=samples if subset else None,
                          out=out[:-1].reshape(k, k))
    out[-1] = float(use.sum())
    return out[None]


def _grm_parts(ds, samples, covariates, maf, max_missing, standardise, subset,
               split_contigs=False):
    """The genotype pass, one task per block (split at contigs on request).

    Returns ``(parts, n_out, block_contig)``: the lazy (blocks, n_out**2 + 1)
    array of :func:`_grm_part`, n_out (all samples, or the analysed ones with
    ``subset``) and each block's contig index (None unless ``split_contigs``).
    """
    import dask

    dosage = dosage_blocks(ds)
    n = dosage.shape[1]
    if samples is None:
        samples = np.ones(n, dtype=bool)
    block_contig = None
    if split_contigs:
        dosage, block_contig = split_at_contigs(dosage, ds["variant_contig"].values)
    n_out = int(np.sum(samples)) if subset else n
    nb = dosage.numblocks[0]
    samples, covariates = (dask.delayed(v, pure=True) for v in (samples, covariates))
    parts = dosage.map_blocks(_grm_part, samples, covariates, maf, max_missing, standardise,
                              subset, chunks=((1,) * nb, (n_out * n_out + 1,)),
                              dtype=np.float64)
    return parts, n_out, block_contig


def _sum_parts(parts):
    """Sum of the GRM pass's (blocks, N) parts over blocks, pairwise: each sum runs as
    soon as two parts are done (dask's default holds 4 to 16) and adds them without
    first concatenating them (3 parts in memory per sum, not 4)."""
    import dask.array as da

    def add(xs, axis, keepdims):  # xs: a list of (1, N) parts (or one part)
        xs = xs if isinstance(xs, list) else [xs]
        total = xs[0] + xs[1] if len(xs) > 1 else xs[0]
        for x in xs[2:]:
            total += x
        return total

    return da.reduction(parts, chunk=lambda x, axis, keepdims: x, combine=add, aggregate=add,
                        axis=0, keepdims=True, split_every=2, concatenate=False,
                        dtype=parts.dtype)[0]


def grm(ds: xr.Dataset, samples: np.ndarray | None = None, covariates: np.ndarray | None = None,
        *, standardise: bool = False, maf: float = 0.01, max_missing: float = 0.05,
        subset: bool = False) -> xr.DataArray:
    """Genomic relatedness matrix of all samples, as GEMMA ``-gk 1`` (``-gk 2``).

    The variants used are those passing GEMMA's filters on the analysed
    samples; each is centred (and, with ``standardise``, scaled to unit
    variance) over all samples with missing calls at the mean, and
    ``K = sum x_c x_c^T / (number of variants)``.  The genotype matrix is
    never in memory at once: each variant chunk adds its part.

    Parameters
    ----------
    ds : genotype Dataset with ``call_dosage`` (variants, samples).
    samples : (samples,) bool, the analysed samples (default: all).
    covariates : (n_analysed, c) covariates, for GEMMA's collinearity filter.
    standardise : False for ``-gk 1`` (centred), True for ``-gk 2``.
    subset : only the analysed samples' rows and columns (what a scan uses:
        ``(n_analysed / n)^2`` of the work); the centring is still over all
        samples, so they equal those entries of the full GRM.

    Returns
    -------
    Lazy DataArray (samples, samples_2), float64, named ``grm``, with the
    ``sample_id`` coordinate (when ``ds`` has it) and ``attrs["kind"]``
    (``"centred"`` or ``"standardised"``).
    """
    parts, n, _ = _grm_parts(ds, samples, covariates, maf, max_missing, standardise, subset)
    total = _sum_parts(parts)
    K = total[:-1].reshape(n, n) / total[-1]
    out = xr.DataArray(K, dims=("samples", "samples_2"), name="grm")
    if "sample_id" in ds:
        ids = np.asarray(ds["sample_id"].values)
        out = out.assign_coords(sample_id=("samples", ids[samples] if subset else ids))
    out.attrs.update(kind="standardised" if standardise else "centred",
                     gemma_equivalent=f"gemma -gk {2 if standardise else 1}")
    return out


def _factor_part(block, samples, covariates, maf, max_missing, standardise):
    """One task per block: ``[x_c (m, n_out) (0 for unused variants), used (m, 1)]``."""
    use = _used(block, samples, covariates, maf, max_missing)
    out = np.zeros((block.shape[0], int(np.sum(samples)) + 1))
    out[use, :-1] = kernels.grm_genotypes(block, use, standardise, cols=samples)
    out[:, -1] = use
    return out


def grm_factor(ds: xr.Dataset, variants: np.ndarray, samples: np.ndarray | None = None,
               covariates: np.ndarray | None = None, *, standardise: bool = False,
               maf: float = 0.01, max_missing: float = 0.05) -> xr.Dataset:
    """The low-rank kinship's factor: ``Z Z^T`` is the GRM of the chosen variants.

    ``Z = [x_1 .. x_q] / sqrt(q)`` holds the centred (standardised) dosages of
    the chosen variants that pass GEMMA's filters (q of them), exactly as
    :func:`grm` builds them, on the analysed samples: so ``Z Z^T`` equals
    ``grm(ds.isel(variants=variants), samples, covariates, subset=True)`` with
    no n x n matrix.  A chosen variant failing the filters is a zero column.

    Parameters
    ----------
    ds : genotype Dataset with ``call_dosage`` (variants, samples).
    variants : int indices (or a bool mask) of the variants forming the kinship.
    samples, covariates, standardise, maf, max_missing : as in :func:`grm`.

    Returns
    -------
    Lazy Dataset: ``grm_factor`` (samples, kinship_variants) float64 and
    ``kinship_variant_used`` (kinship_variants,) bool, with the
    ``kinship_variant_index`` coordinate (the chosen variants' indices) and
    ``sample_id`` (when ``ds`` has it).
    """
    import dask
    import dask.array as da

    dosage = dosage_blocks(ds)
    variants = np.asarray(variants)
    idx = np.flatnonzero(variants) if variants.dtype == bool else np.unique(variants)
    n = dosage.shape[1]
    samples = np.ones(n, dtype=bool) if samples is None else np.asarray(samples, dtype=bool)
    n_out = int(samples.sum())
    sub = dosage[idx]
    s_d, w_d = (dask.delayed(v, pure=True) for v in (samples, covariates))
    parts = sub.map_blocks(_factor_part, s_d, w_d, maf, max_missing, standardise,
                           chunks=(sub.chunks[0], (n_out + 1,)), dtype=np.float64)
    used = parts[:, -1]
    Z = parts[:, :-1].T / da.sqrt(da.maximum(used.sum(), 1.0))
    out = xr.Dataset({"grm_factor": (("samples", "kinship_variants"), Z),
                      "kinship_variant_used": ("kinship_variants", used.astype(bool))},
                     coords={"kinship_variant_index": ("kinship_variants", idx)})
    if "sample_id" in ds:
        out = out.assign_coords(sample_id=("samples", np.asarray(ds["sample_id"].values)[samples]))
    out.attrs.update(kind="standardised" if standardise else "centred")
    return out


def split_at_contigs(dosage, contig: np.ndarray):
    """Rechunk a (variants, samples) dask array so no chunk spans two contigs.

    Only splits chunks (at the variants where ``contig`` changes), never merges
    them, so no data moves between tasks.  Returns ``(dosage, block_contig)``:
    the rechunked array and each chunk's contig index.
    """
    bounds = np.concatenate([[0], np.cumsum(dosage.chunks[0])])
    change = np.flatnonzero(np.diff(np.asarray(contig))) + 1
    cuts = np.union1d(bounds, change)
    chunks = tuple(int(c) for c in np.diff(cuts))
    dosage = dosage.rechunk({0: chunks}) if chunks != dosage.chunks[0] else dosage
    block_contig = np.asarray(contig)[cuts[:-1]] if len(cuts) > 1 else np.zeros(0, int)
    return dosage, block_contig


def grm_loco(ds: xr.Dataset, samples: np.ndarray | None = None,
             covariates: np.ndarray | None = None, *, standardise: bool = False,
             maf: float = 0.01, max_missing: float = 0.05) -> xr.DataArray:
    """Leave-one-contig-out GRMs from one pass over the genotypes.

    Each variant chunk (split at contig boundaries) adds its ``x_c x_c^T`` to
    its contig's sum ``S_c`` and its variant count to ``N_c``; the GRM without
    contig ``c`` is ``(S - S_c) / (N - N_c)`` with ``S = sum S_c``, ``N = sum N_c``
    -- the whole-genome accumulation minus that contig's, no second pass.  The
    variants and their centring (scaling) are those of :func:`grm`.

    Cost: the same genotype pass and the same flops as :func:`grm`; memory for
    ``n_contigs + 1`` matrices of N x N float64 (the per-contig sums, N samples),
    and the result holds ``n_contigs`` of them.

    Returns
    -------
    Lazy DataArray (contigs, samples, samples_2), float64: entry ``c`` is the
    GRM of all samples from the variants of every contig but ``c``
    (``contigs`` indexes ``ds.contig_id``; a contig without variants gets the
    whole-genome GRM).
    """
    import dask.array as da

    parts, n, block_contig = _grm_parts(ds, samples, covariates, maf, max_missing,
                                        standardise, False, split_contigs=True)
    n_contigs = ds.sizes.get("contigs", int(block_contig.max(initial=-1)) + 1)
    sums, nums = [], []
    for c in range(n_contigs):
        idx = np.flatnonzero(block_contig == c)
        if idx.size:
            total = _sum_parts(parts[idx])
            sums.append(total[:-1].reshape(n, n))
            nums.append(total[-1])
        else:
            sums.append(da.zeros((n, n), chunks=(n, n)))
            nums.append(da.zeros((), dtype=np.float64))
    S, N = da.stack(sums), da.stack(nums)
    K = (S.sum(axis=0)[None] - S) / (N.sum() - N)[:, None, None]
    out = xr.DataArray(K, dims=("contigs", "samples", "samples_2"), name="grm_loco")
    if "sample_id" in ds:
        out = out.assign_coords(sample_id=("samples", np.asarray(ds["sample_id"].values)))
    out.attrs.update(kind="standardised" if standardise else "centred", loco=True)
    return out
