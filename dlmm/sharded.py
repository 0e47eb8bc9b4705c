"""The low-rank mode sharded over samples: the Dask layer.

U1 (n, r), the kinship's eigenvectors, stays a Dask array chunked over
samples, persisted on the workers (never gathered to the client; a worker
holds the chunks it was given, or spills them under its memory limit).  Each
block of variants is read as pieces of samples matching U1's chunks; one task
per (block, chunk of samples) sums what the likelihood needs
(:func:`dlmm.lowrank.chunk_sums`: ``U1_c'x``, the block's Grams with the
covariates and traits, the filters' counts), a tree adds the chunks' sums
(:func:`dlmm.sums.combine`), and one task per block tests its variants from
the total (:func:`dlmm.lowrank.lowrank_block`).  No task holds U1 whole or a
block's n samples at once (beyond the read itself: a reader that returns all
samples of a block is split here, so its block should be sized by bytes).

The null model comes from the same kind of sums (``U1'W``, ``U1'Y``, and
``W'W``, ``W'Y``, ``Y'Y`` on the client, which holds W and Y anyway).
"""

from __future__ import annotations

import functools

import numpy as np

from . import kernels, lowrank, sums
from .nullmodel import NullModel, fit_null_rotated, null_figures

__all__ = ["lowrank_eigen", "lowrank_nulls", "lowrank_scan_blocks", "rows_to_workers",
           "sample_chunks"]

#: Bytes of U1 per chunk of samples (and so per task, with the block's piece), and of
#: the factor Z per block of its tall-and-skinny QR (which needs at least 2q rows).
SAMPLE_CHUNK_BYTES = 128 * 2**20
#: Chunk sums added per task of the reduction over chunks of samples: pairs, so a task
#: holds three sums at most (a chunk's sums are about the size of its U1 rows).
SPLIT_EVERY = 2


def _even(n: int, k: int) -> tuple[int, ...]:
    """``n`` split into ``k`` parts differing by at most one, larger first."""
    q, extra = divmod(n, k)
    return (q + 1,) * extra + (q,) * (k - extra)


def sample_chunks(n: int, r: int, sample_chunk: int | None = None) -> tuple[int, ...]:
    """Rows of U1 (n, r) per chunk: at most ``sample_chunk`` (default: as many as fit
    in :data:`SAMPLE_CHUNK_BYTES` of float64), evened out."""
    size = sample_chunk or max(1, SAMPLE_CHUNK_BYTES // (8 * max(r, 1)))
    return _even(n, max(1, -(-n // int(size))))


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def rows_to_workers(A: np.ndarray, chunks: tuple[int, ...]):
    """A client-side (n, f) array as a Dask array chunked over rows (``chunks``).

    With a ``distributed`` client the chunks are scattered to the workers (spread
    over them; not through the scheduler, nor embedded in graphs); without one
    the array is wrapped as it is.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    A = np.asarray(A)
    client = _client()
    if client is None:
        return da.from_array(A, chunks=(chunks, A.shape[1]))
    ends = np.cumsum((0,) + tuple(chunks))
    # unique keys (not content hashes): a scatter of the same rows elsewhere (the null
    # fits' [W, Y], then the scan's) whose futures are released would drop these too
    futures = client.scatter([np.ascontiguousarray(A[a:b]) for a, b in zip(ends, ends[1:])],
                             hash=False)
    name = "dlmm-rows-" + tokenize(A, chunks)
    dsk = {(name, i, 0): f for i, f in enumerate(futures)}
    return da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=[]), name,
                    chunks=(tuple(chunks), (A.shape[1],)), dtype=A.dtype)


def lowrank_eigen(Z, *, rank: int | None = None, tol: float | None = None,
                  sample_chunk: int | None = None, also=None):
    """Eigenpairs of ``K = Z Z^T`` from a lazy factor, without gathering U1.

    Dask's tall-and-skinny SVD of Z (TSQR: a QR per block of rows, then the
    SVD of the stacked R factors), persisted; only the singular values come to
    the client.  The blocks are ``sample_chunk`` rows or :data:`SAMPLE_CHUNK_BYTES`,
    but at least 2q: then dask's TSQR stacks the R factors (q x q each) in groups
    no taller than a block, so no task holds more than about two blocks.

    Parameters
    ----------
    Z : (n, q) Dask array (e.g. :func:`dlmm.kinship.grm_factor`, centred).
    rank, tol : as in :func:`dlmm.kernels.eigen_from_svd`.
    sample_chunk : rows of U1 per chunk (default :func:`sample_chunks`).
    also : a lazy value of the same graph as Z (e.g. how many variants the factor
        has), computed in the same pass over the genotypes.

    Returns
    -------
    s : (r,) numpy, the non-zero eigenvalues, descending.
    U1 : (n, r) Dask array chunked over samples, persisted (on the workers with a
        ``distributed`` client).
    value : ``also`` computed, when given.
    """
    import dask

    n, q = Z.shape
    rows = max(2 * q, sample_chunks(n, q, sample_chunk)[0], 1)
    u, sv, _ = dask.array.linalg.svd(Z.rechunk({0: _even(n, max(1, n // rows)), 1: -1}))
    # Z is not kept: its blocks go once their QR is done.  Unoptimised, as a scan
    # submits the same genotype reads later (a read fused here and not there would be
    # one key with two specs, which the scheduler warns about)
    u, sv, *extra = dask.persist(u, sv, *(() if also is None else (also,)),
                                 optimize_graph=False)
    s, r = kernels.eigen_from_svd(sv.compute(), tol=tol, rank=rank)
    U1 = u[:, :r]
    chunks = sample_chunks(n, r, sample_chunk)
    if chunks != U1.chunks[0]:
        U1 = U1.rechunk({0: chunks})
    out = (s, U1.persist())
    return out if also is None else out + (extra[0].compute(),)


def lowrank_nulls(s: np.ndarray, U1, W: np.ndarray, Y: np.ndarray, *, solver: str = "exact",
                  em_tol: float = 1e-5, em_max_iter: int = 100) -> list[NullModel]:
    """The null model of each trait in the low-rank mode, from sums over samples.

    Parameters
    ----------
    s : (r,) eigenvalues; U1 : (n, r) Dask array chunked over samples.
    W : (n, c) covariates; Y : (n, t) traits, on the analysed samples (numpy).
    solver, em_tol, em_max_iter : ``"em"`` also fits the classic EM null.

    Returns
    -------
    One :class:`NullModel` per trait, with ``U`` the Dask array U1.
    """
    n, c = W.shape
    F = np.column_stack([W, Y]).astype(np.float64)
    Fr = (U1.T @ rows_to_workers(F, U1.chunks[0])).compute()
    FF = F.T @ F
    nulls = []
    for j in range(Y.shape[1]):
        FFj, Frj = lowrank.null_grams(FF, Fr, c, j)
        nulls.append(fit_null_rotated(s, Frj[:, :c], Frj[:, c], n=n,
                                      rest=kernels.lowrank_rest(FFj, Frj),
                                      em=solver == "em", em_tol=em_tol,
                                      em_max_iter=em_max_iter, U=U1, W=W, y=Y[:, j]))
    return nulls


def _chunk_task(piece, analysed, U, F, model):
    from .blas import single_threaded

    with single_threaded():
        return lowrank.chunk_sums(piece, analysed, U, F, model)


def _block_task(total, shared, **kw):
    from .blas import single_threaded

    with single_threaded():
        return lowrank.lowrank_block(total, **shared, **kw)


def lowrank_scan_blocks(dosage, samples: np.ndarray, s: np.ndarray, U1, W: np.ndarray,
                        Y: np.ndarray, nulls: list[NullModel], *, model: str = "additive",
                        solver: str = "exact", em_start: str = "classic", tests=("lrt",),
                        maf: float = 0.01, max_missing: float = 0.05, em_tol: float = 1e-5,
                        em_max_iter: int = 100, sample_chunk: int | None = None):
    """The low-rank scan, one task per (block, chunk of samples) and a tree per block.

    Parameters
    ----------
    dosage : (variants, N) Dask array on all samples (e.g.
        :func:`dlmm.kinship.dosage_blocks`); its variant chunks are the blocks.
    samples : (N,) bool, the analysed samples (n).
    s, U1 : eigenvalues (r,) and the (n, r) Dask array chunked over samples.
    W : (n, c) covariates; Y : (n, t) traits; nulls : their null models
        (:func:`lowrank_nulls`).
    model, solver, em_start, tests, maf, max_missing, em_tol, em_max_iter : as in
        :func:`dlmm.scan`.
    sample_chunk : rows per chunk of samples (default: U1's chunks).

    Returns
    -------
    Lazy (variants, t, len(kernels.result_columns(model, tests))) float64, one
    chunk per block: the columns of :func:`dlmm.kernels.scan_block`.
    """
    import dask
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    samples = np.asarray(samples, dtype=bool)
    n, c, t = int(samples.sum()), W.shape[1], Y.shape[1]
    if sample_chunk is not None:
        chunks = sample_chunks(n, U1.shape[1], sample_chunk)
        U1 = U1 if chunks == U1.chunks[0] else U1.rechunk({0: chunks})
    # the store's columns of each chunk of analysed samples (the unanalysed ones ride along)
    pos = np.flatnonzero(samples)
    first = np.cumsum((0,) + U1.chunks[0])[1:-1]
    cuts = np.concatenate([[0], pos[first], [dosage.shape[1]]]).astype(int)
    dos = dosage.rechunk({1: tuple(int(v) for v in np.diff(cuts))})
    F = np.column_stack([W, Y]).astype(np.float64)
    Fd = rows_to_workers(F, U1.chunks[0])
    shared = dask.delayed(dict(
        s=np.asarray(s, dtype=np.float64), c=c, n=n, FF=F.T @ F,
        Fr=np.column_stack([nulls[0].Wr] + [x.yr for x in nulls]),
        **null_figures(nulls, solver, em_start)), pure=True)
    cols = kernels.result_columns(model, kernels._check_tests(tests))
    token = tokenize(dos.name, U1.name, Fd.name, shared.key, model, solver, tests, maf,
                     max_missing, em_tol, em_max_iter)
    part_name, add_name, name = (f"lowrank-{k}-{token}" for k in ("sums", "add", "scan"))
    part = functools.partial(_chunk_task, model=model)
    block = functools.partial(_block_task, model=model, solver=solver, tests=tests, maf=maf,
                              max_missing=max_missing, em_tol=em_tol, em_max_iter=em_max_iter)
    dsk = {}
    for b in range(dos.numblocks[0]):
        keys = []
        for j in range(dos.numblocks[1]):
            keys.append((part_name, b, j))
            dsk[keys[-1]] = (part, (dos.name, b, j), samples[cuts[j]:cuts[j + 1]],
                             (U1.name, j, 0), (Fd.name, j, 0))
        level = 0
        while len(keys) > 1:  # a tree: each task adds SPLIT_EVERY sums
            groups = [keys[i:i + SPLIT_EVERY] for i in range(0, len(keys), SPLIT_EVERY)]
            keys = []
            for i, g in enumerate(groups):
                keys.append((add_name, b, level, i) if len(g) > 1 else g[0])
                if len(g) > 1:
                    dsk[keys[-1]] = (sums.combine, g)
            level += 1
        dsk[(name, b, 0, 0)] = (block, keys[0], shared.key)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[dos, U1, Fd, shared])
    return da.Array(graph, name, chunks=(dos.chunks[0], (t,), (len(cols),)), dtype=np.float64)
