"""Genomic relatedness matrices accumulated over variant blocks with Dask."""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import kernels

__all__ = ["grm"]


def _grm_part(block, samples, covariates, maf, max_missing, standardise):
    use = kernels.block_stats(np.asarray(block, dtype=np.float64)[:, samples], covariates,
                              maf=maf, max_missing=max_missing)["tested"]
    return kernels.grm_block(block, use, standardise)[None]


def _grm_count(block, samples, covariates, maf, max_missing):
    use = kernels.block_stats(np.asarray(block, dtype=np.float64)[:, samples], covariates,
                              maf=maf, max_missing=max_missing)["tested"]
    return np.array([use.sum()], dtype=np.float64)


def grm(ds: xr.Dataset, samples: np.ndarray | None = None, covariates: np.ndarray | None = None,
        *, standardise: bool = False, maf: float = 0.01, max_missing: float = 0.05) -> xr.DataArray:
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

    Returns
    -------
    Lazy DataArray (samples, samples_2), float64, named ``grm``, with the
    ``sample_id`` coordinate (when ``ds`` has it) and ``attrs["kind"]``
    (``"centred"`` or ``"standardised"``).
    """
    import dask
    import dask.array as da

    dosage = ds["call_dosage"].data
    if not isinstance(dosage, da.Array):
        dosage = da.from_array(dosage, chunks=(10_000, -1))
    dosage = dosage.rechunk({1: -1})
    n = dosage.shape[1]
    if samples is None:
        samples = np.ones(n, dtype=bool)
    nb = dosage.numblocks[0]
    samples, covariates = (dask.delayed(v, pure=True) for v in (samples, covariates))
    parts = dosage.map_blocks(_grm_part, samples, covariates, maf, max_missing, standardise,
                              new_axis=2, chunks=((1,) * nb, (n,), (n,)), dtype=np.float64)
    counts = dosage.map_blocks(_grm_count, samples, covariates, maf, max_missing,
                               drop_axis=1, chunks=((1,) * nb,), dtype=np.float64)
    K = parts.sum(axis=0) / counts.sum()
    out = xr.DataArray(K, dims=("samples", "samples_2"), name="grm")
    if "sample_id" in ds:
        out = out.assign_coords(sample_id=("samples", np.asarray(ds["sample_id"].values)))
    out.attrs.update(kind="standardised" if standardise else "centred",
                     gemma_equivalent=f"gemma -gk {2 if standardise else 1}")
    return out
