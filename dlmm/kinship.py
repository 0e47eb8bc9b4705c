"""Genomic relatedness matrices accumulated over variant blocks with Dask."""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import kernels

__all__ = ["factor_rows", "grm", "grm_factor", "grm_loco", "split_at_contigs"]


def dosage_blocks(ds: xr.Dataset):
    """``call_dosage`` as a (variants, samples) dask array with one chunk over the samples
    (a numpy one is split by :func:`dlmm.io.variant_chunks`)."""
    import dask.array as da

    from .io import variant_chunks

    dosage = ds["call_dosage"].data
    if not isinstance(dosage, da.Array):
        dosage = da.from_array(dosage, chunks=(variant_chunks(*dosage.shape), -1))
    return dosage.rechunk({1: -1})


def _used(block, samples, covariates, maf, max_missing):
    """(m,) bool: the block's variants that pass GEMMA's filters on the analysed samples."""
    return kernels.block_stats(kernels.analysed(block, samples), covariates, maf=maf,
                               max_missing=max_missing)["tested"]


class _Blocks:
    """A (variants, samples) dask array whose blocks a task computes itself (``block(i)``,
    with the synchronous scheduler): the GRM pass's tasks read their block when they run,
    so no read task runs ahead of them and holds genotypes in memory."""

    def __init__(self, dosage):
        self.dosage = dosage

    def block(self, i: int) -> np.ndarray:
        return np.asarray(self.dosage.blocks[i].compute(scheduler="sync"))

    def __dask_tokenize__(self):
        return ("dlmm-blocks", self.dosage.name)


def _block_source(dosage):
    """``(source, ref)``: what a pass's task is given to read block i, ``source`` (a
    Delayed :class:`_Blocks`, or None) and ``ref(i)``; :func:`_read` reads it.

    A task reads its own block (``ref(i) = i``).  An array persisted on a cluster holds
    futures, which a task cannot compute: its blocks are then the tasks' dependencies
    (``ref(i)`` the block, no source), already in memory, so nothing runs ahead.
    """
    import dask

    try:
        from distributed import Future
    except ImportError:
        Future = ()
    if any(isinstance(v, Future) for v in dict(dosage.__dask_graph__()).values()):
        return None, lambda i: dosage.blocks[i]
    return dask.delayed(_Blocks(dosage), pure=True), lambda i: i


def _read(source, ref) -> np.ndarray:
    """Block ``ref`` of :func:`_block_source`."""
    return np.asarray(ref) if source is None else source.block(ref)


def _task_threads() -> int:
    """The threads of the Dask worker running the calling task (the scheduler's pool
    size without one)."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):
        import dask
        from dask.system import CPU_COUNT

        return dask.config.get("num_workers", None) or CPU_COUNT


def _n_workers() -> int:
    """Workers of the current ``distributed`` client (1 without one)."""
    try:
        from distributed import default_client

        return max(1, len(default_client().nthreads()))
    except (ImportError, ValueError):
        return 1


def _fold(sums, source, i, group, samples, covariates, maf, max_missing, standardise, subset):
    """Add block ``i`` (:func:`_read`) into ``sums[group]`` (a GRM sum,
    :func:`dlmm.kernels.grm_block`) and return ``sums``: the previous block's result (or None for a new dict), changed
    in place. Safe because each sum has one user, the next task of its chain (a failed
    task fails the computation; Dask reruns a task on the same input only with retries).

    The product is shared by the worker's threads, a BLAS thread each: independent
    products keep their pace on a loaded machine, where one product on two BLAS
    threads waits for the slower (measured at n = 10,000: 1.4 s per 2,000 variants,
    against 2.3 s on two BLAS threads and 3.3 s for two tasks of 1,000 before).
    """
    from .blas import single_threaded

    block = _read(source, i)
    use = _used(block, samples, covariates, maf, max_missing)
    sums = {} if sums is None else sums
    k = int(samples.sum()) if subset else block.shape[1]
    acc = sums.get(group)
    if acc is None:
        acc = sums[group] = kernels.grm_accumulator(k)
    with single_threaded():
        kernels.grm_block(block, use, standardise, cols=samples if subset else None, acc=acc,
                          threads=_task_threads())
    return sums


def _merge(a, b):
    """Two chains' sums added, in place in ``a`` (its chain's only user)."""
    for group, acc in b.items():
        if group in a:
            a[group] += acc
        else:
            a[group] = acc
    return a


def _grm_sums(ds, samples, covariates, maf, max_missing, standardise, subset,
              split_contigs=False):
    """The genotype pass: one sum per worker, not one per block (:func:`sum_per_worker`).

    Each task adds its block into its chain's sum, on every thread of its worker.  A
    task reads its own block (:class:`_Blocks`): a separate read task would run ahead on
    the worker's idle threads and hold the genotypes in memory.  Memory per worker: one
    k x k sum (k = n_out), one block, and while two workers' sums are added, two sums.
    Whole chains are recomputed if a worker is lost.

    Returns ``(total, n_out, n_groups)``: a Delayed dict group -> GRM sum (group 0,
    or each block's contig index with ``split_contigs``), n_out (all samples, or
    the analysed ones with ``subset``).
    """
    import dask

    dosage = dosage_blocks(ds)
    n = dosage.shape[1]
    samples = np.ones(n, dtype=bool) if samples is None else np.asarray(samples, dtype=bool)
    group = np.zeros(dosage.numblocks[0], dtype=int)
    if split_contigs:
        dosage, group = split_at_contigs(dosage, ds["variant_contig"].values)
    n_out = int(samples.sum()) if subset else n
    nb = dosage.numblocks[0]
    token = dask.base.tokenize(dosage.name, samples, covariates, maf, max_missing,
                               standardise, subset)
    source, ref = _block_source(dosage)
    samples_d, covariates_d = (dask.delayed(v, pure=True) for v in (samples, covariates))
    total = sum_per_worker(nb, lambda sums, i: dask.delayed(_fold)(
        sums, source, ref(i), int(group[i]), samples_d, covariates_d, maf, max_missing,
        standardise, subset, dask_key_name=(f"grm-pass-{token}", i)),
        _merge, f"grm-merge-{token}")
    return (total if total is not None else dask.delayed({})), n_out, \
        int(group.max(initial=-1)) + 1


def sum_per_worker(n: int, fold, merge, merge_name: str):
    """One sum per worker of the current client (one without), not one per item.

    Items 0..n-1 are split into one run of consecutive items per worker; each run is a
    chain of tasks, ``fold(acc, i)`` making the Delayed task that adds item i into the
    sum the previous one returns (None first), in place.  Dask runs a chain's next task
    where its sum is.  The runs' sums are then added pairwise by ``merge(a, b)`` (in
    place in ``a``; keys ``(merge_name, ...)``), so a worker holds two sums at most.

    Returns the Delayed total (None for no item).
    """
    import dask

    bounds = np.linspace(0, n, min(_n_workers(), max(n, 1)) + 1).astype(int)
    chains = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        acc = None
        for i in range(lo, hi):
            acc = fold(acc, i)
        chains.append(acc)
    while len(chains) > 1:  # pairwise: two sums in memory per addition
        chains = [dask.delayed(merge)(*chains[j:j + 2],
                                      dask_key_name=(merge_name, len(chains), j))
                  if j + 1 < len(chains) else chains[j] for j in range(0, len(chains), 2)]
    return chains[0] if chains else None


def _grm_finish(total, k):
    """The (k, k) GRM from a pass's sums, in the sum's memory."""
    if 0 not in total:
        return np.full((k, k), np.nan)
    G, q = kernels.grm_total(total[0], k)
    G /= q
    return G


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
    import dask
    import dask.array as da

    total, n, _ = _grm_sums(ds, samples, covariates, maf, max_missing, standardise, subset)
    K = da.from_delayed(dask.delayed(_grm_finish)(total, n), shape=(n, n), dtype=np.float64)
    out = xr.DataArray(K, dims=("samples", "samples_2"), name="grm")
    if "sample_id" in ds:
        ids = np.asarray(ds["sample_id"].values)
        out = out.assign_coords(sample_id=("samples", ids[samples] if subset else ids))
    out.attrs.update(kind="standardised" if standardise else "centred",
                     gemma_equivalent=f"gemma -gk {2 if standardise else 1}")
    return out


def _factor_part(source, i, rows, samples, covariates, maf, max_missing, standardise,
                 center=False):
    """One task per block ``i`` (:func:`_read`): ``[x_c (m, n_out) (0 for
    unused variants), used (m, 1)]`` of its variants ``rows``; ``center``: each row's
    mean over the samples taken off."""
    block = _read(source, i)[rows]
    use = _used(block, samples, covariates, maf, max_missing)
    out = np.zeros((block.shape[0], int(np.sum(samples)) + 1))
    out[use, :-1] = kernels.grm_genotypes(block, use, standardise, cols=samples)
    if center:
        out[:, :-1] -= out[:, :-1].mean(axis=1, keepdims=True)
    out[:, -1] = use
    return out


def factor_rows(ds: xr.Dataset, variants: np.ndarray, samples: np.ndarray | None = None,
                covariates: np.ndarray | None = None, *, center: bool = False,
                standardise: bool = False, maf: float = 0.01, max_missing: float = 0.05):
    """The kinship variants' genotype rows of the low-rank factor, unscaled.

    Row i is variant i's centred (standardised) dosages on the analysed samples as
    :func:`grm` builds them (0 for a variant failing the filters); ``Z = rows^T /
    sqrt(q)``, q the variants used, is the factor of :func:`grm_factor`.  With
    ``center`` each row is also centred over the analysed samples (``P Z``, whose
    ``Z Z^T`` is the double-centred GRM).  Each chunk of rows is computed from its own
    genotypes alone (no total over chunks), so a chunk can be written as soon as it is
    done.

    Returns
    -------
    idx : (q,) int, the variants' indices.
    rows : (q, n_out) lazy float64, chunked over variants, every sample in a chunk.
    used : (q,) lazy float64, 1 for the variants passing the filters, else 0.
    """
    import dask
    import dask.array as da

    dosage = dosage_blocks(ds)
    variants = np.asarray(variants)
    idx = np.flatnonzero(variants) if variants.dtype == bool else np.unique(variants)
    n = dosage.shape[1]
    samples = np.ones(n, dtype=bool) if samples is None else np.asarray(samples, dtype=bool)
    n_out = int(samples.sum())
    # a task per block holding kinship variants, reading its block itself (no read task
    # runs ahead of it and holds genotypes in memory, as in the GRM pass)
    first = np.cumsum((0,) + dosage.chunks[0])  # each block's first variant
    block = np.searchsorted(first[1:], idx, side="right")
    source, ref = _block_source(dosage)
    s_d, w_d = (dask.delayed(v, pure=True) for v in (samples, covariates))
    token = dask.base.tokenize(dosage.name, idx, samples, covariates, maf, max_missing,
                               standardise, center)
    parts = [da.from_delayed(dask.delayed(_factor_part)(
        source, ref(b), idx[block == b] - first[b], s_d, w_d, maf, max_missing, standardise,
        center, dask_key_name=(f"factor-rows-{token}", int(b))),
        shape=(int((block == b).sum()), n_out + 1), dtype=np.float64)
        for b in np.unique(block)]
    parts = da.concatenate(parts) if parts else da.zeros((0, n_out + 1))
    return idx, parts[:, :-1], parts[:, -1]


def grm_factor(ds: xr.Dataset, variants: np.ndarray, samples: np.ndarray | None = None,
               covariates: np.ndarray | None = None, *, standardise: bool = False,
               maf: float = 0.01, max_missing: float = 0.05) -> xr.Dataset:
    """The low-rank kinship's factor: ``Z Z^T`` is the GRM of the chosen variants.

    ``Z = [x_1 .. x_q] / sqrt(q)`` holds the centred (standardised) dosages of
    the chosen variants that pass GEMMA's filters (q of them), exactly as
    :func:`grm` builds them, on the analysed samples: so ``Z Z^T`` equals
    ``grm(ds.isel(variants=variants), samples, covariates, subset=True)`` with
    no n x n matrix.  A chosen variant failing the filters is a zero column.
    (Z waits for every variant's filter before any of it is done: the scan's
    low-rank path uses :func:`factor_rows` instead.)

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
    import dask.array as da

    idx, rows, used = factor_rows(ds, variants, samples, covariates, standardise=standardise,
                                  maf=maf, max_missing=max_missing)
    Z = rows.T / da.sqrt(da.maximum(used.sum(), 1.0))
    out = xr.Dataset({"grm_factor": (("samples", "kinship_variants"), Z),
                      "kinship_variant_used": ("kinship_variants", used.astype(bool))},
                     coords={"kinship_variant_index": ("kinship_variants", idx)})
    if "sample_id" in ds:
        ids = np.asarray(ds["sample_id"].values)
        out = out.assign_coords(sample_id=("samples", ids if samples is None else
                                           ids[np.asarray(samples, dtype=bool)]))
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


def _loco_finish(total, n_contigs, k):
    """Each contig's leave-one-out GRM ``(S - S_c) / (N - N_c)``, in its sum's memory: a
    list of n_contigs (k, k) arrays (a contig without variants: ``S / N``)."""
    parts = {c: kernels.grm_total(acc, k) for c, acc in total.items()}
    S = np.zeros((k, k))
    for G, _ in parts.values():
        S += G
    N = sum(q for _, q in parts.values())
    out = []
    for c in range(n_contigs):
        if c in parts:
            G, q = parts[c]
            np.subtract(S, G, out=G)
            G /= N - q
            out.append(G)
        else:
            out.append(S / N)
    return out


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
    ``n_contigs + 1`` matrices of N x N float64 (the per-contig sums, N samples,
    and their total; each sum becomes its contig's GRM in place), and the result
    holds ``n_contigs`` of them.

    Returns
    -------
    Lazy DataArray (contigs, samples, samples_2), float64: entry ``c`` is the
    GRM of all samples from the variants of every contig but ``c``
    (``contigs`` indexes ``ds.contig_id``; a contig without variants gets the
    whole-genome GRM).
    """
    import dask
    import dask.array as da

    total, n, n_groups = _grm_sums(ds, samples, covariates, maf, max_missing, standardise,
                                   False, split_contigs=True)
    n_contigs = ds.sizes.get("contigs", n_groups)
    each = dask.delayed(_loco_finish)(total, n_contigs, n)
    K = da.stack([da.from_delayed(each[c], shape=(n, n), dtype=np.float64)
                  for c in range(n_contigs)])
    out = xr.DataArray(K, dims=("contigs", "samples", "samples_2"), name="grm_loco")
    if "sample_id" in ds:
        out = out.assign_coords(sample_id=("samples", np.asarray(ds["sample_id"].values)))
    out.attrs.update(kind="standardised" if standardise else "centred", loco=True)
    return out
