"""The low-rank mode sharded over samples: the Dask layer.

U1 (n, r), the kinship's eigenvectors, is chunked over samples and never
gathered to the client: from the factor of kinship variants it is computed out
of core into a Zarr array on disk (:func:`lowrank_eigen`), each task reading
the rows it needs; from a given kinship (``--kinship-rank``) it is a Dask array
scattered to the workers.  Each
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
import tempfile

import numpy as np

from . import kernels, lowrank, memory, sums
from .nullmodel import NullModel, fit_null_rotated, null_figures

__all__ = ["DiskRows", "lowrank_eigen", "lowrank_nulls", "lowrank_scan_blocks",
           "rows_to_workers", "sample_chunks"]

#: Bytes of U1 (or the factor) per chunk of samples, and so per task with the block's
#: piece.
SAMPLE_CHUNK_BYTES = memory.SAMPLE_CHUNK_BYTES
#: Chunk sums added per task of the reduction over chunks of samples: pairs, so a task
#: holds three sums at most (a chunk's sums are about the size of its U1 rows).
SPLIT_EVERY = 2


def sample_chunks(n: int, r: int, sample_chunk: int | None = None) -> tuple[int, ...]:
    """Rows of U1 (n, r) per chunk: ``sample_chunk`` (default: as many as fit in
    :data:`SAMPLE_CHUNK_BYTES` of float64, evened out over the chunks), the last one
    what is left (a regular grid, as a Zarr array's chunks)."""
    size = int(sample_chunk or max(1, SAMPLE_CHUNK_BYTES // (8 * max(r, 1))))
    k = max(1, -(-n // size))
    size = size if sample_chunk else -(-n // k)
    return (size,) * (n // size) + ((n % size,) if n % size else ())


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


class DiskRows:
    """An (n, r) float64 array on disk, chunked over rows (samples): a Zarr array in a
    scratch folder of its own, removed with this object (or at exit).

    Tasks read their rows themselves (:meth:`piece`): no worker keeps any of it in
    memory between tasks, so a worker's memory does not grow with n.  Pickled (to a
    worker), it is a reader of the same array that owns nothing.
    """

    def __init__(self, path: str, chunks: tuple[int, ...], r: int, owner=None):
        self.path, self._owner = str(path), owner
        self.chunks = (tuple(chunks), (int(r),))
        self.shape, self.dtype = (int(sum(chunks)), int(r)), np.dtype(np.float64)
        self.nbytes = 8 * self.shape[0] * self.shape[1]
        self._ends = np.cumsum((0,) + tuple(chunks))

    def __reduce__(self):
        return DiskRows, (self.path, self.chunks[0], self.shape[1])

    def __dask_tokenize__(self):
        return ("dlmm-disk-rows", self.path, self.chunks)

    def read(self, j: int) -> np.ndarray:
        """Rows of chunk ``j``."""
        import zarr

        return zarr.open_array(self.path, mode="r")[self._ends[j]:self._ends[j + 1]]

    def piece(self, j: int):
        """A task (tuple) reading chunk ``j`` inside the task that uses it."""
        return (_read_rows, self, j)

    def to_dask(self):
        """The array as a Dask array (one read task per chunk)."""
        import dask.array as da

        return da.from_zarr(self.path, chunks=self.chunks)


def _read_rows(rows: DiskRows, j: int) -> np.ndarray:
    return rows.read(j)


def _as_dask(U1):
    """U1 (:class:`DiskRows` or a Dask array) as a Dask array."""
    return U1.to_dask() if isinstance(U1, DiskRows) else U1


def _scratch(folder) -> tempfile.TemporaryDirectory:
    from .errors import InputError

    try:
        return tempfile.TemporaryDirectory(prefix=".dlmm-factor-", dir=folder)
    except OSError as e:
        raise InputError(str(folder), f"cannot write the low-rank factor here ({e.strerror})",
                         "give a writable folder the workers can reach (scratch=)") from None


def _zarr(path, shape, chunks):
    import zarr

    return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="float64",
                             compressors=None, fill_value=0.0, zarr_format=3)


def lowrank_eigen(rows, used, *, scratch=None, rank: int | None = None,
                  tol: float | None = None, sample_chunk: int | None = None):
    """Eigenpairs of the low-rank kinship ``K = Z Z^T`` (``Z = rows^T / sqrt(q)``, q the
    variants used), out of core: no task holds more than a chunk of samples.

    Three passes over chunks of samples: the factor is written to a Zarr array on disk
    (and ``used`` summed from the same genotype reads); its Gram ``G = Z^T Z`` (q, q)
    is summed into one matrix per worker (:func:`_gram`) and eigendecomposed on the
    client (K's non-zero eigenvalues are G's); then ``U1 = Z V diag(s)^-1/2`` is written
    chunk by chunk, and the factor deleted.

    Parameters
    ----------
    rows : (q, n) lazy float64, the kinship variants' genotype rows
        (:func:`dlmm.kinship.factor_rows`), chunked over variants.
    used : (q,) lazy, 1 for the variants used (their count scales Z).
    scratch : folder for the arrays on disk (workers must reach it); default Dask's
        ``temporary-directory``, else the system's.
    rank, tol : as in :func:`dlmm.kernels.eigen_from_svd`.
    sample_chunk : rows of U1 per chunk (default :func:`sample_chunks`).

    Returns
    -------
    s : (r,) numpy, the non-zero eigenvalues, descending.
    U1 : :class:`DiskRows` (n, r), chunked over samples (None if no variant is used).
    q : the variants used.
    """
    import shutil

    import dask
    import dask.array as da

    q, n = rows.shape
    chunks = sample_chunks(n, q, sample_chunk)
    tmp = _scratch(scratch or dask.config.get("temporary-directory", None) or None)
    rows = rows.rechunk({0: max(rows.chunks[0])})
    z = _zarr(f"{tmp.name}/factor", (n, q), (chunks[0], rows.chunks[0][0]))
    _, q_used = dask.compute(da.store(rows.T, z, lock=False, compute=False), used.sum())
    q_used = round(float(q_used))
    if not q_used:
        return np.zeros(0), None, 0
    Z = DiskRows(f"{tmp.name}/factor", chunks, q)
    lam, V = np.linalg.eigh(_gram(Z) / q_used)
    lam, V = lam[::-1], V[:, ::-1]
    s, r = kernels.eigen_from_svd(np.sqrt(np.clip(lam, 0.0, None)), tol=tol, rank=rank)
    M = V[:, :r] / np.sqrt(q_used * s)  # U1 = rows^T M
    u1 = _zarr(f"{tmp.name}/U1", (n, r), (chunks[0], max(r, 1)))
    da.store(Z.to_dask() @ da.from_array(M, chunks=M.shape), u1, lock=False)
    shutil.rmtree(Z.path)
    return s, DiskRows(f"{tmp.name}/U1", chunks, r, owner=tmp), q_used


def _gram_fold(acc, Z: DiskRows, j: int) -> np.ndarray:
    """``acc + Z_j^T Z_j`` (lower triangle, in place), Z_j chunk j's rows, on every
    thread of the worker (one BLAS thread each)."""
    from .blas import single_threaded
    from .kinship import _task_threads

    x = Z.read(j)
    acc = np.zeros((x.shape[1], x.shape[1])) if acc is None else acc
    with single_threaded():
        kernels.add_lower(acc, x, _task_threads())
    return acc


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a += b
    return a


def _gram(Z: DiskRows) -> np.ndarray:
    """``Z^T Z`` (q, q) of a factor on disk: one sum per worker, chunks of samples added
    in place (:func:`dlmm.kinship.sum_per_worker`, as the GRM pass does)."""
    import dask

    from .kinship import sum_per_worker

    token = dask.base.tokenize(Z)
    S = sum_per_worker(len(Z.chunks[0]), lambda acc, j: dask.delayed(_gram_fold)(
        acc, Z, j, dask_key_name=(f"gram-{token}", j)), _add, f"gram-add-{token}").compute()
    return np.tril(S) + np.tril(S, -1).T


def lowrank_nulls(s: np.ndarray, U1, W: np.ndarray, Y: np.ndarray, *, solver: str = "exact",
                  em_tol: float = 1e-5, em_max_iter: int = 100) -> list[NullModel]:
    """The null model of each trait in the low-rank mode, from sums over samples.

    Parameters
    ----------
    s : (r,) eigenvalues; U1 : (n, r) :class:`DiskRows` or Dask array, chunked over
        samples.
    W : (n, c) covariates; Y : (n, t) traits, on the analysed samples (numpy).
    solver, em_tol, em_max_iter : ``"em"`` also fits the classic EM null.

    Returns
    -------
    One :class:`NullModel` per trait, with ``U`` U1.
    """
    n, c = W.shape
    F = np.column_stack([W, Y]).astype(np.float64)
    Fr = (_as_dask(U1).T @ rows_to_workers(F, U1.chunks[0])).compute()
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
    s, U1 : eigenvalues (r,) and U1 (n, r), :class:`DiskRows` or a Dask array, chunked
        over samples.
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
        if chunks != U1.chunks[0]:
            U1 = _as_dask(U1).rechunk({0: chunks})
    # U1 on disk: each task reads its rows (none stays on a worker); else U1's chunk keys
    u_piece, u_deps = ((U1.piece, []) if isinstance(U1, DiskRows) else
                       (lambda j: (U1.name, j, 0), [U1]))
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
    token = tokenize(dos.name, U1, Fd.name, shared.key, model, solver, tests, maf,
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
                             u_piece(j), (Fd.name, j, 0))
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
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[dos, Fd, shared, *u_deps])
    return da.Array(graph, name, chunks=(dos.chunks[0], (t,), (len(cols),)), dtype=np.float64)
