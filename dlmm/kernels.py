"""Numerical kernels: pure numpy functions of in-memory blocks.

Nothing here imports dask. Every per-variant function works on a whole block
of variants at once, with no Python loop over variants.

Conventions
-----------
All data are *variant-major*: a block of ``m`` variants observed on ``n``
samples is an array of shape ``(m, n)`` (the layout of ``call_dosage`` in a
VCF Zarr store).  The kinship is ``A = U diag(s) U^T``; "rotated" data are
``U^T x``, which for a row-vector block ``G`` of shape ``(m, n)`` is
``G @ U``.  Covariates are ``W`` of shape ``(n, c)``, the phenotype ``y`` of
shape ``(n,)``.  In rotated coordinates the covariance of ``y`` is
``diag(sa2 * s + se2) = se2 * diag(lam * s + 1)`` with ``lam = sa2 / se2``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
from scipy import special

from . import schema, sums

__all__ = [
    "EIGEN_TOL",
    "center_kinship",
    "LOG_LAMBDA_BOUNDS",
    "eigh_kinship",
    "NotPositiveSemiDefinite",
    "eigen_from_svd",
    "add_lower",
    "lowrank_rest",
    "grm_genotypes",
    "rotate",
    "dominance",
    "block_stats",
    "impute_mean",
    "take",
    "variant_design",
    "Fit",
    "fit_exact",
    "fit_em",
    "lrt",
    "ols_test",
    "ols_gram",
    "scan_block",
    "trait_args",
    "block_out",
    "lmm_columns",
    "ols_columns",
    "put_columns",
    "null_reml_lambda",
    "grm_block",
    "grm_accumulator",
    "grm_total",
    "wald_test",
    "score_test",
    "TESTS",
]

#: Eigenvalues below this value are set to 0, as GEMMA 0.98.5 does
#: (``EigenDecomp_Zeroed``).  A relative cut such as 1e-5 x the largest would
#: also zero real eigenvalues: on mouse_hs1940 it zeroes six (4e-5 .. 2.7e-4)
#: and moves the null pve off GEMMA's in the 5th digit.
EIGEN_TOL = 1e-10
#: Search interval of the exact solver, in log(lambda), lambda = sa2 / se2.
LOG_LAMBDA_BOUNDS = (np.log(1e-5), np.log(1e5))
_LOG_2PI = np.log(2.0 * np.pi)


# --------------------------------------------------------------------------
# kinship, rotation, genotype preparation
# --------------------------------------------------------------------------
def center_kinship(kinship: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Double-centre a kinship, ``P K P`` with ``P = I - 11'/n`` (GEMMA's ``CenterMatrix``);
    ``overwrite``: in place (a float64 ``kinship`` is changed; no n x n copy)."""
    K = np.asarray(kinship, dtype=np.float64)
    if not overwrite or not K.flags.writeable or K is not kinship:
        K = K.copy()
    K -= K.mean(axis=0, keepdims=True)
    K -= K.mean(axis=1, keepdims=True)
    return K


class NotPositiveSemiDefinite(ValueError):
    """A kinship's eigenvalue is clearly negative (see :func:`eigh_kinship`'s ``psd_tol``)."""


def eigh_kinship(kinship: np.ndarray, tol: float | None = None,
                 rank: int | None = None, overwrite: bool = False,
                 psd_tol: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecompose a kinship matrix once.

    LAPACK's ``dsyevr`` (MRRR) through scipy, on every core (BLAS threads), the
    kinship passed in Fortran order so that with ``overwrite`` LAPACK uses it as
    its workspace: beyond it only U (1.01 n x n measured).  Measured at
    n = 10,000 on two cores (``benchmarks/eigh.py``): ``dsyevr`` 89-95 s,
    ``dsyevd`` 86-95 s (the same within the spread, with one n x n workspace
    more), numpy's ``eigh`` 92 s with 4 n x n, ``dsyevx`` and ``dsyev`` 8-9x
    slower (at n = 5,000); GEMMA's ``dsyevr`` took 184 s on the same matrix.

    Parameters
    ----------
    kinship : (n, n) float array, symmetric.
    tol : eigenvalues below ``tol`` (default :data:`EIGEN_TOL`) become exactly
        0, so a singular (e.g. centred) GRM has no random effect along them.
    rank : keep only the ``rank`` largest eigenpairs (the low-rank mode:
        ``kinship ~ U diag(s) U^T`` with U (n, rank); LAPACK computes only
        those); default all.
    overwrite : let LAPACK use ``kinship`` (float64) as its workspace,
        destroying it: one n x n matrix less.
    psd_tol : raise :class:`NotPositiveSemiDefinite` if an eigenvalue is below
        ``-psd_tol`` times the mean absolute diagonal (all eigenvalues only:
        ignored with ``rank``).  The check is free: no Cholesky factorisation.

    Returns
    -------
    s : (r,) eigenvalues, ascending, >= 0: r = n, or with ``rank`` the
        non-zero ones among the ``rank`` largest.
    U : (n, r) orthonormal eigenvectors, ``kinship = U diag(s) U^T`` (for r = n).
    """
    from scipy.linalg import eigh

    tol = EIGEN_TOL if tol is None else tol
    K = np.asarray(kinship, dtype=np.float64)
    n = K.shape[0]
    low = rank is not None and rank < n
    scale = max(float(np.abs(np.diag(K)).mean()), 1e-300) if n else 1.0  # before LAPACK
    # LAPACK works in Fortran order; a C-ordered K is passed as its transpose (the same
    # symmetric matrix), which it may then overwrite without a copy
    A = K.T if K.flags.c_contiguous and not K.flags.f_contiguous else K
    s, U = eigh(A, driver="evr", subset_by_index=[n - rank, n - 1] if low else None,
                overwrite_a=overwrite, check_finite=False)
    if low:
        keep = s >= tol  # a zero eigenvalue's vector is part of the rest
        return s[keep], np.ascontiguousarray(U[:, keep])
    if psd_tol is not None and n and s[0] < -psd_tol * scale:
        raise NotPositiveSemiDefinite(f"eigenvalue {s[0]:.3g} below -{psd_tol:g} x the "
                                      f"mean diagonal {scale:.3g}")
    s[s < tol] = 0.0
    return s, U


def eigen_from_svd(sv: np.ndarray, tol: float | None = None,
                   rank: int | None = None) -> tuple[np.ndarray, int]:
    """Eigenvalues of ``K = Z Z^T`` from the singular values of a factor ``Z``.

    The low-rank kinship of FaST-LMM: with ``Z = [x_1 .. x_q] / sqrt(q)`` the
    centred genotypes of q variants, K is their GRM, of rank <= q, and its
    eigenpairs come from the thin SVD ``Z = U diag(sv) V^T`` of the (n, q)
    factor in O(n q^2), with no n x n matrix: ``K = U diag(sv^2) U^T``.

    Parameters
    ----------
    sv : (q',) singular values, descending (as an SVD returns them).
    tol : as in :func:`eigh_kinship` (on the eigenvalues ``sv**2``).
    rank : keep only the ``rank`` largest; default all.

    Returns
    -------
    s : (r,) the non-zero eigenvalues (of the ``rank`` largest), descending;
    r : they belong to the first r left singular vectors, ``U[:, :r]``.
    """
    tol = EIGEN_TOL if tol is None else tol
    sv = np.asarray(sv, dtype=np.float64)
    if np.any(np.diff(sv) > 0):
        raise ValueError("singular values must be in descending order")
    s = sv[:rank] ** 2
    r = int(np.count_nonzero(s >= tol))  # a zero one is part of the rest
    return s[:r], r


def rotate(U: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rotate sample vectors by ``U^T``.

    Parameters
    ----------
    U : (n, n) eigenvectors.
    rows : (..., n) vectors over samples (a variant block ``(m, n)``, a
        phenotype ``(n,)``, covariates transposed ``(c, n)``).

    Returns
    -------
    (..., n) array ``rows @ U``, i.e. ``U^T x`` for every row ``x``.
    """
    return rows @ U


def dominance(dosage: np.ndarray) -> np.ndarray:
    """Dominance coding ``1 - |x - 1|`` of an additive 0/1/2 dosage."""
    return 1.0 - np.abs(dosage - 1.0)


def block_stats(dosage: np.ndarray, covariates: np.ndarray | None = None, *,
                maf: float = 0.01, max_missing: float = 0.05,
                r2_max: float = sums.R2_MAX) -> dict[str, np.ndarray]:
    """Per-variant summary and GEMMA's default filters on analysed samples.

    Parameters
    ----------
    dosage : (m, n) additive dosages (0..2) with NaN for missing calls.
    covariates : (n, c) covariates; when ``c > 1`` a variant explained by them
        (uncentred r2 > ``r2_max``, as GEMMA) is not tested.
    maf, max_missing : drop variants with allele frequency outside
        ``[maf, 1 - maf]`` or a missing rate above ``max_missing``.

    Returns
    -------
    dict with ``n_miss`` (m,) int, ``af`` (m,) frequency of the counted allele,
    ``mean`` (m,) mean dosage, ``tested`` (m,) bool (:func:`dlmm.sums.filters`).
    """
    W = covariates if covariates is not None and covariates.shape[1] > 1 else None
    st = sums.variant_sums(dosage, F=W)
    return sums.filters(st, np.shape(dosage)[1], WtW=None if W is None else W.T @ W,
                        maf=maf, max_missing=max_missing, r2_max=r2_max)


@numba.njit(nogil=True, cache=True)
def _gather(dosage, rows, cols, fill, centre):  # pragma: no cover (compiled)
    out = np.empty((rows.size, cols.size))
    for a in range(rows.size):
        j = rows[a]
        f = fill[j]
        c = f if centre else 0.0
        for b in range(cols.size):
            v = dosage[j, cols[b]]
            out[a, b] = (f if np.isnan(v) else v) - c
    return out


#: Most variants a GRM block may take in float32: 4 x rows < 2^24 keeps X'X exact.
_F32_EXACT_ROWS = 1 << 22


@numba.njit(nogil=True, cache=True)
def _gather_f32(dosage, rows, cols, mean):  # pragma: no cover (compiled)
    """``dosage[rows][:, cols]`` as float32 (no missing calls), and ``a = X' mean``
    (cols,) float64."""
    out = np.empty((rows.size, cols.size), dtype=np.float32)
    a = np.zeros(cols.size)
    for r in range(rows.size):
        j = rows[r]
        mu = mean[r]
        for b in range(cols.size):
            v = dosage[j, cols[b]]
            out[r, b] = v
            a[b] += mu * v
    return out, a


def take(dosage: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None,
         fill: np.ndarray | None = None, centre: bool = False) -> np.ndarray:
    """``dosage[rows][:, cols]`` as float64 in one pass, NaN replaced by ``fill[row]``.

    rows, cols : bool masks or indices (default all); fill : (m,) per-variant
    value for missing calls (default: keep NaN); centre : also subtract
    ``fill[row]`` (missing calls become exactly 0).  Returns a new C-contiguous
    (rows, cols) float64 array, whatever the input's float dtype.
    """
    dosage = np.asarray(dosage)
    m, n = dosage.shape
    rows = np.arange(m) if rows is None else np.flatnonzero(rows) if \
        np.asarray(rows).dtype == bool else np.asarray(rows)
    cols = np.arange(n) if cols is None else np.flatnonzero(cols) if \
        np.asarray(cols).dtype == bool else np.asarray(cols)
    fill = np.full(m, np.nan) if fill is None else np.asarray(fill, dtype=np.float64)
    if dosage.dtype not in (np.float32, np.float64):
        dosage = dosage.astype(np.float64)
    return _gather(dosage, rows.astype(np.int64), cols.astype(np.int64), fill, centre)


def analysed(dosage: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """The analysed samples' columns of a (m, N) block, in its dtype: the block itself
    (no copy) when every sample is analysed.  samples : (N,) bool."""
    return dosage if np.all(samples) else np.take(dosage, np.flatnonzero(samples), axis=1)


def impute_mean(dosage: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Replace missing (NaN) dosages by the variant's mean, ``(m, n) -> (m, n)``."""
    return take(dosage, fill=np.nan_to_num(mean))


def variant_design(dosage: np.ndarray, model: str) -> np.ndarray:
    """Per-variant fixed-effect columns, ``(m, n) -> (m, k, n)``.

    ``model="additive"`` gives k = 1 (the dosage), ``"genotypic"`` k = 2 (the
    dosage and its dominance coding ``1 - |x - 1|``, the lab's b = [mu, a, d]).
    """
    if model == "additive":
        return dosage[:, None, :]
    if model == "genotypic":
        return np.stack([dosage, dominance(dosage)], axis=1)
    raise ValueError(f"model must be 'additive' or 'genotypic', not {model!r}")


def grm_accumulator(k: int) -> np.ndarray:
    """An empty GRM sum over ``k`` samples for :func:`grm_block` to add blocks into.

    Returns (k*k + k + 2,) float64 zeros: ``S`` (k, k) (its lower triangle),
    ``a`` (k,), ``c`` and the number of variants, with
    ``sum_j x_c x_c^T = S - a 1^T - 1 a^T + c`` (see :func:`grm_total`).
    """
    return np.zeros(k * k + k + 2)


def grm_block(dosage: np.ndarray, use: np.ndarray, standardise: bool = False,
              cols: np.ndarray | None = None, acc: np.ndarray | None = None,
              threads: int = 1) -> np.ndarray:
    """Add one block's contribution to a GRM (GEMMA ``-gk 1`` / ``-gk 2``) into a sum.

    Parameters
    ----------
    dosage : (m, n) dosages with NaN for missing, on all samples.
    use : (m,) bool, the variants that enter the GRM.
    standardise : False for the centred GRM, True for the standardised one.
    cols : (n,) bool, the samples whose rows and columns to sum (centring
        and scaling still use all n); default all.
    acc : the sum to add into, from :func:`grm_accumulator` (k = n or the
        ``cols`` count); default a new one.
    threads : Python threads sharing the product (run it with one BLAS thread
        each, :func:`dlmm.blas.single_threaded`).

    Returns
    -------
    ``acc``, with the block's used variants added; :func:`grm_total` gives the
    (k, k) sum of ``x_c x_c^T`` and the number of variants.  Only the lower
    triangle is summed, in column slabs: beyond ``acc`` the peak memory is the
    block's gathered genotypes and a slab's product (``_SLAB_ELEMENTS``), no
    k x k temporary.
    """
    dosage, rows, counts, mean = _grm_stats(dosage, use)
    n = dosage.shape[1]
    at = np.flatnonzero(cols) if cols is not None and not np.all(cols) else np.arange(n)
    k = at.size
    acc = grm_accumulator(k) if acc is None else acc
    S, a = acc[:k * k].reshape(k, k), acc[k * k:k * k + k]
    if (not standardise and rows.size < _F32_EXACT_ROWS
            and (counts[:, :3].sum(axis=1) == n).all()):
        # only 0/1/2 calls, none missing: the sums of their products are integers below
        # 2^24, exact in float32, so X'X by sgemm (twice dgemm's rate); the centring is
        # linear, sum_j (x_j - mu_j)(x_j - mu_j)' = X'X - a1' - 1a' + mu'mu with a = X'mu,
        # so a and mu'mu are summed too and applied once, in grm_total
        x32, a_block = _gather_f32(dosage, rows, at, mean[rows])
        add_lower(S, x32, threads)
        a += a_block
        acc[-2] += mean[rows] @ mean[rows]
    elif rows.size:
        add_lower(S, _grm_centred(dosage, rows, mean, standardise, cols), threads)
    acc[-1] += rows.size
    return acc


#: Elements of one column slab's product in :func:`grm_block` (16 MiB in float32).
_SLAB_ELEMENTS = 1 << 22


def add_lower(S: np.ndarray, x: np.ndarray, threads: int = 1) -> None:
    """``S += x^T x`` on (at least) the lower triangle, by column slabs: each slab's
    product is (k - j, slab), so the flops are syrk's (half of gemm's); the slabs are
    shared among ``threads`` Python threads (BLAS releases the GIL; the slabs write
    disjoint columns of S)."""
    k = S.shape[0]
    step = max(64, _SLAB_ELEMENTS // max(k, 1))

    def slab(j):
        S[j:, j:j + step] += x[:, j:].T @ x[:, j:j + step]

    starts = range(0, k, step)
    if threads > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(slab, starts))  # the widest slabs first: balanced
    else:
        for j in starts:
            slab(j)


def grm_total(acc: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Finish a GRM sum of :func:`grm_block`, in place.

    Returns ``(G, q)``: G (k, k), symmetric, a view of ``acc``'s memory, the sum
    over the q variants added of ``x_c x_c^T`` (divide by q for the GRM).
    """
    S, a, c = acc[:k * k].reshape(k, k), acc[k * k:k * k + k], acc[-2]
    step = max(1, _SLAB_ELEMENTS // max(k, 1))
    for j in range(0, k, step):  # the strict lower triangle mirrored: exactly symmetric
        S[:j, j:j + step] = S[j:j + step, :j].T
        d = S[j:j + step, j:j + step]
        upper = np.triu_indices(d.shape[0], 1)
        d[upper] = d.T[upper]
    if a.any() or c:
        for i in range(0, k, step):  # a_i + a_j: the same sum either way, G stays symmetric
            S[i:i + step] -= a[i:i + step, None] + a[None, :]
        S += c
    return S, float(acc[-1])


def grm_genotypes(dosage: np.ndarray, use: np.ndarray, standardise: bool = False,
                  cols: np.ndarray | None = None) -> np.ndarray:
    """The GRM's genotype factor of one block: the block adds ``x_c^T x_c`` to the sum
    of :func:`grm_block`.

    Parameters are those of :func:`grm_block`.  Returns the (used, n) (or
    (used, cols)) float64 centred (standardised) dosages of the used variants,
    missing calls at the mean.
    """
    dosage, rows, _, mean = _grm_stats(dosage, use)
    return _grm_centred(dosage, rows, mean, standardise, cols)


def _grm_stats(dosage, use):
    """``(dosage as float, used rows, their class counts, (m,) means (0 if unused))``."""
    dosage = np.asarray(dosage)
    if dosage.dtype not in (np.float32, np.float64):
        dosage = dosage.astype(np.float64)
    m, n = dosage.shape
    rows = np.flatnonzero(use)
    counts, total = sums.class_counts(dosage, rows)
    mean = np.zeros(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean[rows] = np.nan_to_num(total / (n - counts[:, 3]))
    return dosage, rows, counts, mean


def _grm_centred(dosage, rows, mean, standardise, cols):
    """The used rows, centred, missing calls at the mean (0 once centred), scaled with
    ``standardise``, on the ``cols`` samples: one gather."""
    n = dosage.shape[1]
    # with standardise every sample enters the variance, so the chosen samples come after it
    pick = cols is not None and not standardise and not np.all(cols)
    xc = take(dosage, rows=rows, cols=cols if pick else None, fill=mean, centre=True)
    if standardise:
        # GEMMA's variance: imputed values count as the mean, over all n.
        var = np.einsum("ij,ij->i", xc, xc) / n
        scale = np.where(var > 0, 1.0 / np.sqrt(np.where(var > 0, var, 1.0)), 1.0)
        xc *= scale[:, None]
        if cols is not None and not np.all(cols):
            xc = take(xc, cols=cols)
    return xc


# --------------------------------------------------------------------------
# weighted Gram matrices of Z_j = [W, X_j, y]
# --------------------------------------------------------------------------
def _assemble(FF, FX, XX, c0):
    """Build Z'DZ with column order [W (c0), X (k), y] from its blocks.

    FF : (..., f, f) block of F = [W, y] (f = c0 + 1); FX : (..., k, f);
    XX : (..., k, k).  Returns (..., p, p), p = c0 + k + 1.
    """
    k = XX.shape[-1]
    p = c0 + k + 1
    M = np.empty(FF.shape[:-2] + (p, p))
    iW, iX, iy = slice(0, c0), slice(c0, c0 + k), p - 1
    M[..., iW, iW] = FF[..., :c0, :c0]
    M[..., iW, iy] = FF[..., :c0, c0]
    M[..., iy, iW] = FF[..., c0, :c0]
    M[..., iy, iy] = FF[..., c0, c0]
    M[..., iX, iX] = XX
    M[..., iX, iW] = FX[..., :, :c0]
    M[..., iW, iX] = np.swapaxes(FX[..., :, :c0], -1, -2)
    M[..., iX, iy] = FX[..., :, c0]
    M[..., iy, iX] = FX[..., :, c0]
    return M


def _moments(ET, EFT, X):
    """Weighted sums of ``Z_j = [W, X_j, y]`` for weights shared by every variant.

    ET : (w, n) weight vectors; EFT : (f w, n) their products with the columns of
    F = [W, y] (F's column major, :func:`_weighted_columns`); X : (m, k, n).
    Returns ``BX`` (f + k, w, m, k): ``BX[b, v, j, a] = sum_i E[i, v] X_j[a, i] G_j[b, i]``
    with ``G_j = [W, y, X_j]``, for every variant j and weight v, by matrix products
    (BLAS; the variants as their long side, written in place), no loop over
    variants or weights.
    """
    nw, n = ET.shape
    f = EFT.shape[0] // nw
    m, k, _ = X.shape
    BX = np.empty((f + k, nw, m, k))
    np.matmul(EFT, X.reshape(m * k, n).T, out=BX[:f].reshape(f * nw, m * k))
    for a in range(k):
        for b in range(a, k):
            BX[f + b, :, :, a] = ET @ (X[:, a, :] * X[:, b, :]).T
            BX[f + a, :, :, b] = BX[f + b, :, :, a]
    return BX


def _weighted_columns(E, F):
    """``(ET (w, n), EFT (f w, n), BF (f, f, w))`` for :func:`_moments`: the weights,
    their products with F's columns, and F's own weighted sums."""
    n, nw = E.shape
    f = F.shape[1]
    EFT = (F.T[:, None, :] * E.T[None, :, :]).reshape(f * nw, n)
    BF = ((F.T[:, None, :] * F.T[None, :, :]).reshape(f * f, n) @ E).reshape(f, f, nw)
    return np.ascontiguousarray(E.T), EFT, BF


@numba.njit(nogil=True, cache=True, inline="always")
def _combine(j, q0, nq, cf, n_out, BX, BF, M):  # pragma: no cover (compiled)
    """``M[o] = sum_q cf[o, q] G_(q0 + q)`` for o < n_out: variant j's Gram matrices
    (p, p) as combinations of those of the shared weights (:func:`_moments`)."""
    f = BF.shape[0]
    k = BX.shape[3]
    c0 = f - 1
    p = f + k
    for o in range(n_out):
        for a in range(k):
            for b in range(f + k):  # BX's order [W, y, X]; M's [W, X, y]
                mb = b if b < c0 else (p - 1 if b == c0 else b - 1)
                acc = 0.0
                for q in range(nq):
                    acc += cf[o, q] * BX[b, q0 + q, j, a]
                M[o, c0 + a, mb] = acc
                M[o, mb, c0 + a] = acc
        for a in range(f):
            ia = a if a < c0 else p - 1
            for b in range(a, f):
                ib = b if b < c0 else p - 1
                acc = 0.0
                for q in range(nq):
                    acc += cf[o, q] * BF[a, b, q0 + q]
                M[o, ia, ib] = acc
                M[o, ib, ia] = acc


@numba.njit(nogil=True, fastmath=True, cache=True, error_model="numpy")
def _gram_exact(lam, s, FT, Xj, n_weights, with_logdet, M, ld, w0, w1, w2):  # pragma: no cover
    """One variant's Gram matrices at ``lam``, by one fused pass over the samples.

    FT : (f, n) = [W, y]'; Xj : (k, n).  Writes ``M[:n_weights]`` (p, p) for the
    weights d, dd/dlam, d2d/dlam2 and ``ld`` (3,): log|H| (0 unless
    ``with_logdet``) and its two lam-derivatives (0 unless ``n_weights`` is 3);
    w0..w2 (n,) are workspace.
    """
    k, n = Xj.shape
    c0 = FT.shape[0] - 1
    p = c0 + k + 1
    l1 = 0.0
    l2 = 0.0
    if n_weights == 3:
        for i in range(n):
            d = 1.0 / (lam * s[i] + 1.0)
            sd = s[i] * d
            w0[i] = d
            w1[i] = -sd * d
            w2[i] = 2.0 * sd * sd * d
            l1 += sd
            l2 -= sd * sd
    else:
        for i in range(n):
            w0[i] = 1.0 / (lam * s[i] + 1.0)
    l0 = 0.0
    if with_logdet:
        # log of running products (each factor >= 1), flushed before they could
        # overflow: a log per ~10 samples, not one per sample
        prod = 1.0
        for i in range(n):
            if prod > 1e150:
                l0 += np.log(prod)
                prod = 1.0
            prod *= lam * s[i] + 1.0
        l0 += np.log(prod)
    ld[0] = l0
    ld[1] = l1
    ld[2] = l2
    for a in range(p):
        za = FT[a] if a < c0 else (Xj[a - c0] if a < c0 + k else FT[c0])
        for b in range(a, p):
            zb = FT[b] if b < c0 else (Xj[b - c0] if b < c0 + k else FT[c0])
            acc0 = 0.0
            acc1 = 0.0
            acc2 = 0.0
            if n_weights == 3:
                for i in range(n):
                    t = za[i] * zb[i]
                    acc0 += w0[i] * t
                    acc1 += w1[i] * t
                    acc2 += w2[i] * t
                M[1, a, b] = M[1, b, a] = acc1
                M[2, a, b] = M[2, b, a] = acc2
            else:
                for i in range(n):
                    acc0 += w0[i] * za[i] * zb[i]
            M[0, a, b] = M[0, b, a] = acc0


@numba.njit(nogil=True, cache=True)
def _grams_kernel(lam, s, FT, X, n_weights, with_logdet):  # pragma: no cover (compiled)
    m, k, n = X.shape
    p = FT.shape[0] + k
    out = np.empty((n_weights, m, p, p))
    logdet = np.zeros((3, m))
    M = np.empty((3, p, p))
    ld = np.empty(3)
    w0, w1, w2 = np.empty(n), np.empty(n), np.empty(n)
    for j in range(m):
        _gram_exact(lam[j], s, FT, X[j], n_weights, with_logdet, M, ld, w0, w1, w2)
        out[:, j] = M[:n_weights]
        logdet[:, j] = ld
    return out, logdet


def _grams(lam, s, F, X, derivatives=False, with_logdet=True, rest=None):
    """Gram matrices of ``Z = [W, X_j, y]`` weighted by ``d = 1/(lam_j s + 1)``.

    lam : (m,) per-variant lambda (0 gives unit weights); s : (n,);
    F : (n, f) = [W, y]; X : (m, k, n).
    rest : (m, p, p) Gram of the part of each ``Z_j`` outside the eigenvectors'
        span (low-rank mode, :func:`lowrank_rest`): there every eigenvalue is
        0, so it enters with weight 1 and adds nothing to log|H| or to the
        derivatives.  None for a full eigenbasis.

    Returns ``(M, logdet)``: M (m, p, p), p = f + k, in the order covariates,
    variant columns, phenotype, or with ``derivatives`` (3, m, p, p): the Gram
    matrices for d, dd/dlam and d2d/dlam2; logdet (3, m): log|H| and its first
    two lam-derivatives, H = diag(lam s + 1) (log|H| is 0 unless ``with_logdet``:
    Newton steps need only its derivatives; they are 0 without ``derivatives``).

    One fused pass over the samples per variant (compiled with numba): no
    (m, n) weight or product temporaries, and each variant's sums do not
    depend on which block it is in.
    """
    out, logdet = _grams_kernel(np.ascontiguousarray(lam, dtype=np.float64),
                                np.ascontiguousarray(s, dtype=np.float64),
                                np.ascontiguousarray(F.T, dtype=np.float64),
                                np.ascontiguousarray(X, dtype=np.float64),
                                3 if derivatives else 1, with_logdet)
    if rest is not None:
        out[0] += rest
    return (out if derivatives else out[0]), logdet


def lowrank_rest(FF: np.ndarray, Fr: np.ndarray, FX: np.ndarray | None = None,
                 Xr: np.ndarray | None = None, XX: np.ndarray | None = None) -> np.ndarray:
    """Gram of ``Z_j = [W, X_j, y]`` outside the span of thin eigenvectors U (n, r).

    With ``K = U diag(s) U^T`` of rank r < n (FaST-LMM's low-rank form), the
    covariance has eigenvalue ``se2 (lam s_i + 1)`` along U's columns and
    ``se2`` on the (n - r)-dimensional rest.  The rest enters every likelihood
    term only through ``Z'(I - U U^T)Z = Z'Z - (U^T Z)'(U^T Z)``: from the Gram
    ``Z'Z`` (sums over samples, O(n) per variant) and the rotated columns,
    with no n x n matrix.

    Parameters
    ----------
    FF : (f, f) ``F'F`` of F = [W, y] (f = c + 1); Fr : (r, f) = U^T F.
    FX : (m, k, f) ``X_j'F``; Xr : (m, k, r) = U^T X; XX : (m, k, k) ``X_j'X_j``
        (default: no variant, k = 0).

    Returns
    -------
    (m, p, p) in the column order of :func:`_grams` (m = 1 without X).
    """
    c0 = FF.shape[0] - 1
    FF = FF - Fr.T @ Fr
    if FX is None:
        FX, Xr, XX = np.zeros((1, 0, FF.shape[0])), np.zeros((1, 0, Fr.shape[0])), \
            np.zeros((1, 0, 0))
    FX = FX - Xr @ Fr
    XX = XX - Xr @ np.swapaxes(Xr, -1, -2)
    return _assemble(np.broadcast_to(FF, (FX.shape[0],) + FF.shape), FX, XX, c0)


# --------------------------------------------------------------------------
# exact maximum likelihood over lambda
# --------------------------------------------------------------------------
@dataclass
class Fit:
    """Per-variant fits of one block (arrays over the block's variants).

    Attributes
    ----------
    logl : (m,) log-likelihood at the estimate (with the -n/2 log(2 pi) term).
    lam : (m,) sa2 / se2.
    beta : (m, c) fixed effects, covariates first, then the variant columns.
    se : (m, c) standard errors of ``beta`` (ML covariance at the estimate).
    sigma_sq_a, sigma_sq_e : (m,) variance components.
    iterations : (m,) solver iterations.
    """

    logl: np.ndarray
    lam: np.ndarray
    beta: np.ndarray
    se: np.ndarray
    sigma_sq_a: np.ndarray
    sigma_sq_e: np.ndarray
    iterations: np.ndarray


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _cholesky(A, c, L):  # pragma: no cover (compiled)
    """Lower Cholesky factor of ``A[:c, :c]`` into ``L``; False if A is not positive
    definite (to rounding)."""
    for i in range(c):
        for j in range(i + 1):
            acc = A[i, j]
            for t in range(j):
                acc -= L[i, t] * L[j, t]
            if i == j:
                if not acc > 0.0:
                    return False
                L[i, i] = np.sqrt(acc)
            else:
                L[i, j] = acc / L[j, j]
    return True


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _profile_one(M, ldh, dldh, d2ldh, n, reml, ldxtx, derivs, b, inv, L, A1,
                 v):  # pragma: no cover (compiled)
    """:func:`_profile` of one Gram matrix ``M[0]`` (p, p) of [X, y] (and its
    lam-derivatives ``M[1]``, ``M[2]`` when ``derivs``).  Writes ``b`` (c,) and
    ``inv`` (c, c) = ``MXX^-1``; L, A1 (c, c) and v (p,) are workspace.  Returns
    (logl, d1, d2, Q): all NaN if MXX is not positive definite.
    """
    p = M.shape[1]
    c = p - 1
    nan = np.nan
    if not _cholesky(M[0], c, L):
        b[:] = nan
        inv[:, :] = nan
        return nan, nan, nan, nan
    # inv = L^-T L^-1, with L^-1 (lower) in A1
    for j in range(c):
        A1[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, c):
            acc = 0.0
            for t in range(j, i):
                acc -= L[i, t] * A1[t, j]
            A1[i, j] = acc / L[i, i]
        for i in range(j):
            A1[i, j] = 0.0
    for i in range(c):
        for j in range(i + 1):
            acc = 0.0
            for t in range(i, c):
                acc += A1[t, i] * A1[t, j]
            inv[i, j] = inv[j, i] = acc
    Q = M[0, c, c]
    for i in range(c):
        acc = 0.0
        for j in range(c):
            acc += inv[i, j] * M[0, j, c]
        b[i] = acc
        Q -= M[0, i, c] * acc
    df = n - c if reml else n
    logl = 0.5 * df * (np.log(df) - _LOG_2PI - 1.0) - 0.5 * ldh - 0.5 * df * np.log(Q)
    if reml:
        ld = 0.0
        for i in range(c):
            ld += 2.0 * np.log(L[i, i])
        logl -= 0.5 * (ld - ldxtx)
    if not derivs:
        return logl, nan, nan, Q
    # Q1 = r'M1 r, Q2 = r'M2 r - 2 u' MXX^-1 u with r = [-b, 1], u = (M1 r)[:c]
    Q1 = 0.0
    Q2 = 0.0
    for i in range(p):
        acc1 = M[1, i, c]
        acc2 = M[2, i, c]
        for j in range(c):
            acc1 -= M[1, i, j] * b[j]
            acc2 -= M[2, i, j] * b[j]
        v[i] = acc1
        ri = 1.0 if i == c else -b[i]
        Q1 += ri * acc1
        Q2 += ri * acc2
    for i in range(c):
        for j in range(c):
            Q2 -= 2.0 * v[i] * inv[i, j] * v[j]
    d1 = -0.5 * dldh - 0.5 * df * Q1 / Q
    d2 = -0.5 * d2ldh - 0.5 * df * (Q2 / Q - (Q1 / Q) ** 2)
    if reml:
        # d log|MXX| = tr(MXX^-1 M1), d2 = tr(MXX^-1 M2) - tr(A1 A1), A1 = MXX^-1 M1
        dld = 0.0
        d2ld = 0.0
        for i in range(c):
            for j in range(c):
                acc = 0.0
                for t in range(c):
                    acc += inv[i, t] * M[1, t, j]
                A1[i, j] = acc
                d2ld += inv[i, j] * M[2, j, i]
            dld += A1[i, i]
        for i in range(c):
            for j in range(c):
                d2ld -= A1[i, j] * A1[j, i]
        d1 -= 0.5 * dld
        d2 -= 0.5 * d2ld
    return logl, d1, d2, Q


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _grid_value(M, ldh, df, reml, L):  # pragma: no cover (compiled)
    """The profile log-likelihood of one Gram matrix ``M`` (p, p) of [X, y], up to its
    constant and to log|X'X| (enough to rank the grid): y'Py and log|MXX| from the
    LDL' factors of M (``L`` (p, p) workspace, D on its diagonal)."""
    p = M.shape[0]
    det = 1.0
    for i in range(p):
        for j in range(i + 1):
            acc = M[i, j]
            for t in range(j):
                acc -= L[i, t] * L[j, t] * L[t, t]
            if i == j:
                L[i, i] = acc
            else:
                L[i, j] = acc / L[j, j]
        if i < p - 1:
            det *= L[i, i]
    if not (det > 0.0 and L[p - 1, p - 1] > 0.0):
        return np.nan
    val = -0.5 * ldh - 0.5 * df * np.log(L[p - 1, p - 1])
    if reml:
        val -= 0.5 * np.log(det)
    return val


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _profile_kernel(M, M1, M2, ldh, dldh, d2ldh, n, reml, ldxtx):  # pragma: no cover
    m, p, _ = M.shape
    c = p - 1
    out = np.empty((4, m))
    b = np.empty((m, c))
    inv = np.empty((m, c, c))
    L, A1, v = np.empty((c, c)), np.empty((c, c)), np.empty(p)
    M3 = np.empty((3, p, p))
    for j in range(m):
        M3[0], M3[1], M3[2] = M[j], M1[j], M2[j]
        logl, d1, d2, Q = _profile_one(M3, ldh[j], dldh[j], d2ldh[j], n, reml, ldxtx[j],
                                       True, b[j], inv[j], L, A1, v)
        out[0, j], out[1, j], out[2, j], out[3, j] = logl, d1, d2, Q
    return out, b, inv


def _profile(M, M1, M2, logdet_h, dlogdet_h, d2logdet_h, n, reml, logdet_xtx):
    """Profile log-likelihood in lambda and its first two lambda-derivatives.

    M, M1, M2 : (..., p, p) Gram matrices of Z = [X, y] with weights
    d = 1 / (lam s + 1), dd/dlam and d2d/dlam2; logdet_h (and its
    derivatives) log|H|, (...); logdet_xtx log|X'X| for REML.  Returns (logl,
    d1, d2, b, Q, MXX_inv, df) where Q = y' P y and b the GLS estimate.
    """
    shape = M.shape[:-2]
    p = M.shape[-1]

    def flat(a, tail=()):
        return np.ascontiguousarray(np.broadcast_to(a, shape + tail), dtype=np.float64) \
            .reshape((-1,) + tail)

    out, b, inv = _profile_kernel(flat(M, (p, p)), flat(M1, (p, p)), flat(M2, (p, p)),
                                  flat(logdet_h), flat(dlogdet_h), flat(d2logdet_h),
                                  float(n), bool(reml), flat(logdet_xtx))
    logl, d1, d2, Q = (o.reshape(shape) for o in out)
    c = p - 1
    return (logl, d1, d2, b.reshape(shape + (c,)), Q, inv.reshape(shape + (c, c)),
            n - c if reml else n)


#: Terms of the series of the Gram matrices in lambda about the block's start
#: (see :func:`fit_exact`).
_SERIES_TERMS = 16


@functools.lru_cache(maxsize=None)
def _series_radius(terms: int) -> float:
    """Largest ``rho`` with ``rho^terms / (1 - rho) <= 2^-53``: within it the truncated
    series errs by less than the rounding of a sum of the same terms."""
    rho = 0.0
    for _ in range(20):
        rho = (2.0 ** -53 * (1.0 - rho)) ** (1.0 / terms)
    return rho


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _at_lambda(j, lam, n_out, with_logdet, BX, BF, q0, nq, lam0, amax, rho_max, T, L0,
               s, FT, X, rest, M, ld, cf, w0, w1, w2):  # pragma: no cover (compiled)
    """Variant j's Gram matrices ``M[:n_out]`` at ``lam`` (value, d/dlam, d2/dlam2) and
    ``ld`` = log|H| and its derivatives: from the series about ``lam0`` (the shared
    weights ``q0 .. q0 + nq - 1``) when ``|lam - lam0| max(s d0) <= rho_max``, else
    by a pass over the samples.  cf (3, nq) is workspace."""
    delta = lam - lam0
    rho = abs(delta) * amax
    if nq > 0 and rho <= rho_max:
        # the terms past the first whose remainder is below rounding: rho^q / (1 - rho)
        # for the value, q^2 rho^(q-2) / (1 - rho)^3 for the second derivative
        used = 3
        power = rho ** 3 if n_out == 1 else rho  # rho^used, or rho^(used - 2)
        bound = 2.0 ** -53 * (1.0 - rho) ** (1 if n_out == 1 else 3)
        while used < nq and (power if n_out == 1 else used * used * power) > bound:
            used += 1
            power *= rho
        nq = used
        # d = sum_q x^q s^q d0^(q+1), x = -delta: M, M1, M2 term by term
        x = -delta
        pq = 1.0  # x^q
        pq1 = 0.0  # x^(q-1)
        pq2 = 0.0  # x^(q-2)
        l0 = L0
        l1 = 0.0
        l2 = 0.0
        for q in range(nq):
            cf[0, q] = pq
            cf[1, q] = -q * pq1
            cf[2, q] = q * (q - 1) * pq2
            # log|H| = L0 + sum_i log(1 + delta s_i d0_i); T[q] = sum_i (s_i d0_i)^q
            l0 -= pq * x * T[q + 1] / (q + 1)
            l1 += pq * T[q + 1]
            l2 -= (q + 1) * pq * T[q + 2]
            pq2, pq1, pq = pq1, pq, pq * x
        _combine(j, q0, nq, cf, n_out, BX, BF, M)
        ld[0] = l0
        ld[1] = l1
        ld[2] = l2
    else:
        _gram_exact(lam, s, FT, X[j], n_out, with_logdet, M, ld, w0, w1, w2)
    if rest.shape[1] > 0:
        _add_rest(M, rest, j)


@numba.njit(nogil=True, cache=True, inline="always")
def _add_rest(M, rest, j):  # pragma: no cover (compiled)
    p = M.shape[1]
    for a in range(p):
        for b in range(p):
            M[0, a, b] += rest[j, a, b]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _fit_kernel(BX, BF, ld_grid, grid, i_ones, q0, lam0, nq, amax, rho_max, T, L0,
                s, FT, X, rest, starts, n, reml, xtol, newton_tol, max_iter,
                logl, lam_out, beta, se, sigma_e, iterations):  # pragma: no cover
    """:func:`fit_exact`'s grid and Newton steps, variant by variant."""
    m, k, r = X.shape
    p = FT.shape[0] + k
    c = p - 1
    G = grid.shape[0]
    lo_b, hi_b = grid[0], grid[G - 1]
    M = np.zeros((3, p, p))
    ld = np.zeros(3)
    one = np.ones((1, 1))
    cf = np.zeros((3, max(nq, 1)))
    w0, w1, w2 = np.empty(r), np.empty(r), np.empty(r)
    b, inv = np.empty(c), np.empty((c, c))
    L, A1, v = np.empty((c, c)), np.empty((c, c)), np.empty(p)
    Lp = np.empty((p, p))
    has_rest = rest.shape[1] > 0
    for j in range(m):
        ldxtx = 0.0
        if reml:  # log|X'X| (unit weights)
            _combine(j, i_ones, 1, one, 1, BX, BF, M)
            if has_rest:
                _add_rest(M, rest, j)
            if _cholesky(M[0], c, L):
                for i in range(c):
                    ldxtx += 2.0 * np.log(L[i, i])
            else:
                ldxtx = np.nan
        # the grid, with argmax's rule: the first NaN, else the first largest
        best = 0
        top = -np.inf
        for g in range(G):
            _combine(j, g, 1, one, 1, BX, BF, M)
            if has_rest:
                _add_rest(M, rest, j)
            val = _grid_value(M[0], ld_grid[g], n - c if reml else n, reml, Lp)
            if val != val:
                best = g
                break
            if val > top:
                best, top = g, val
        t = grid[best]
        lo = grid[max(best - 1, 0)]
        hi = grid[min(best + 1, G - 1)]
        # the grid chose the bracket; inside it, start where the optimum likely is
        if starts[j] > lo and starts[j] < hi:
            t = starts[j]
        it = 0
        for _ in range(max_iter):
            lam = np.exp(t)
            _at_lambda(j, lam, 3, False, BX, BF, q0, nq, lam0, amax, rho_max, T, L0,
                       s, FT, X, rest, M, ld, cf, w0, w1, w2)
            _, g1, g2, _ = _profile_one(M, ld[0], ld[1], ld[2], n, reml, ldxtx, True, b,
                                        inv, L, A1, v)
            f1 = lam * g1                    # d logl / dt
            f2 = lam * lam * g2 + lam * g1   # d2 logl / dt2
            la = t if f1 > 0 else lo
            ha = t if f1 <= 0 else hi
            # a maximum on the search boundary: the slope points out of the interval
            at_bound = (t <= lo_b and f1 <= 0) or (t >= hi_b and f1 >= 0)
            newton = t - f1 / f2
            # A Newton step shorter than newton_tol is taken and ends the search: the
            # error after it is O(step^2) (quadratic convergence), so t is then within
            # ~1e-8 of the maximum and logl within ~1e-14 (measured on mouse_hs1940:
            # 1e-11 in log lambda and 1e-12 in lnL against 1e-10, one Newton
            # evaluation fewer).  Such a step has converged even if rounding puts it a
            # hair outside the bracket (falling back to bisection there would only cost
            # ~20 halvings and make the count depend on the last bits)
            converged = f2 < 0 and abs(newton - t) < newton_tol
            ok = f2 < 0 and newton > la and newton < ha
            tn = newton if ok or converged else 0.5 * (la + ha)
            if at_bound:
                tn = t
            elif tn < lo_b:
                tn = lo_b
            elif tn > hi_b:
                tn = hi_b
            step = abs(tn - t)
            lo, hi, t = la, ha, tn
            it += 1
            if at_bound or converged or step < xtol or ha - la < xtol:
                break
        lam = np.exp(t)
        _at_lambda(j, lam, 1, True, BX, BF, q0, nq, lam0, amax, rho_max, T, L0,
                   s, FT, X, rest, M, ld, cf, w0, w1, w2)
        val, _, _, Q = _profile_one(M, ld[0], 0.0, 0.0, n, reml, ldxtx, False, b, inv, L,
                                    A1, v)
        se2 = Q / (n - c if reml else n)
        logl[j] = val
        lam_out[j] = lam
        sigma_e[j] = se2
        for i in range(c):
            beta[j, i] = b[i]
            se[j, i] = np.sqrt(inv[i, i] * se2)
        iterations[j] = it


def fit_exact(s: np.ndarray, W: np.ndarray, y: np.ndarray, X: np.ndarray, *,
              reml: bool = False, n_grid: int = 11, xtol: float = 1e-10,
              newton_tol: float = 1e-4, max_iter: int = 100,
              start: float | np.ndarray | None = None, n: int | None = None,
              rest: np.ndarray | None = None) -> Fit:
    """Exact (RE)ML fit of ``y = W b_w + X_j b_x + a + e`` for each variant j.

    For fixed ``lam = sa2/se2`` the fixed effects and se2 have closed forms, so
    the log-likelihood is profiled to a 1-D function of ``t = log(lam)`` on
    ``LOG_LAMBDA_BOUNDS``.  It is evaluated on a grid of ``n_grid`` points
    (GEMMA's 10 regions), then maximised by safeguarded Newton steps (with
    bisection inside the bracket of the best grid point's neighbours).

    Every likelihood term is a sum over samples of ``z_a z_b`` weighted by
    ``1 / (lam s_i + 1)`` (or its lam-derivatives).  The grid's weights are
    shared by every variant, and so are those of the series
    ``1 / (lam s + 1) = sum_q (lam0 - lam)^q s^q / (lam0 s + 1)^(q+1)`` about
    ``lam0``, the median ``start``: their sums over a block are matrix products
    (:func:`_moments`, BLAS).  Each Newton step and the final evaluation then
    costs O(terms p^2) per variant where ``rho = |lam - lam0| max_i s_i /
    (lam0 s_i + 1)`` lies within :func:`_series_radius` (the truncated series errs
    by less than rounding), and a pass over the samples elsewhere.

    Parameters
    ----------
    s : (n,) kinship eigenvalues.
    W : (n, c0) rotated covariates (``U^T W``).
    y : (n,) rotated phenotype.
    X : (m, k, n) rotated variant columns; ``k = 0`` fits the null model.
    reml : maximise the restricted likelihood instead (used for the null pve).
    xtol : stop when the bracket (or a bisection step) is shorter, in log(lam).
    newton_tol : stop after a Newton step shorter than this (see the code).
    start : lambda to start the Newton steps from (scalar or (m,)), e.g. the
        null model's: used when it lies in the bracket the grid found around
        its best point, which keeps the grid's global search.
    n, rest : low-rank mode (``s`` and the rotated data have r < n entries):
        the number of samples and the (m, p, p) Gram outside the eigenvectors'
        span (:func:`lowrank_rest`).  Default: a full eigenbasis, n = len(s).

    Returns
    -------
    Fit over the m variants; ``iterations`` counts Newton/bisection steps.
    """
    s = np.asarray(s, dtype=np.float64)
    n = s.shape[0] if n is None else n
    X = np.ascontiguousarray(X, dtype=np.float64)
    m, k, r = X.shape
    c = W.shape[1] + k
    F = np.column_stack([W, y])
    lo_b, hi_b = LOG_LAMBDA_BOUNDS
    grid = np.linspace(lo_b, hi_b, n_grid)
    h = np.exp(grid)[:, None] * s + 1.0
    # shared weights: the grid's, unit ones (REML's log|X'X|), the series' terms
    weights = [1.0 / h] + ([np.ones((1, r))] if reml else [])
    q0 = len(weights[0]) + bool(reml)
    starts = np.full(m, np.nan)
    # no series without a start: lam0, terms, max(s d0), radii, T, L0 (see _series)
    series = (1.0, 0, 0.0, np.zeros(1), np.zeros(2), 0.0)
    if start is not None and m:
        lam_s = np.clip(np.broadcast_to(np.asarray(start, dtype=np.float64), (m,)),
                        np.exp(lo_b), np.exp(hi_b))
        starts = np.log(lam_s)
        e, series = _series(s, float(np.median(lam_s)), _SERIES_TERMS)
        weights.append(e)
    ET, EFT, BF = _weighted_columns(np.concatenate(weights).T, F)
    FT, ld_grid = np.ascontiguousarray(F.T), np.log(h).sum(-1)
    rest = np.zeros((m, 0, 0)) if rest is None else np.ascontiguousarray(rest,
                                                                          dtype=np.float64)
    out = [np.empty(m), np.empty(m), np.empty((m, c)), np.empty((m, c)), np.empty(m),
           np.zeros(m, dtype=np.int64)]
    lam0, terms, amax, radii, T, L0 = series
    f = F.shape[1]
    # a few hundred variants at a time: the products' temporaries stay in cache; the
    # first few with every series term, to learn how many the variants need
    step = max(8, _FIT_ELEMENTS // r)
    bounds = sorted({0, m, *range(min(m, max(8, step // 8)), m, step)})
    for i, j in zip(bounds[:-1], bounds[1:]):
        part = slice(i, j)
        nw = q0 + terms
        BX = _moments(ET[:nw], np.ascontiguousarray(
            EFT.reshape(f, -1, EFT.shape[1])[:, :nw]).reshape(f * nw, -1), X[part])
        _fit_kernel(BX, BF, ld_grid, grid, q0 - 1, q0, lam0, terms, amax, radii[terms], T,
                    L0, s, FT, X[part], rest[part], starts[part], float(n), bool(reml), xtol,
                    newton_tol, max_iter, *(o[part] for o in out))
        if terms:  # as many terms as the variants so far needed (the rest: exact sums)
            terms = _series_terms(np.abs(out[1][:j] - lam0) * amax, radii)
    logl, lam, beta, se, se2, iterations = out
    return Fit(logl=logl, lam=lam, beta=beta, se=se, sigma_sq_a=lam * se2, sigma_sq_e=se2,
               iterations=iterations)


def _series_terms(rho, radii, least=6):
    """The fewest terms (>= ``least``) whose radius covers 99% of ``rho`` (those within
    the largest radius); ``radii[q]``: :func:`_series_radius` of q terms."""
    rho = rho[rho <= radii[-1]]
    if rho.size == 0:
        return len(radii) - 1
    need = np.quantile(rho, 0.99)
    return next(q for q in range(least, len(radii)) if radii[q] >= need or
                q == len(radii) - 1)


def _series(s, lam0, terms):
    """The shared weights of the series of ``1 / (lam s + 1)`` about ``lam0``,
    ``e_q = s^q d0^(q+1)`` with ``d0 = 1 / (lam0 s + 1)``, (terms, n), and the
    kernel's ``(lam0, terms, max(s d0), radii, T, L0)``: ``radii[q]`` the radius of q
    terms, ``T[q] = sum (s d0)^q`` (q <= terms + 1) and ``L0 = log|H(lam0)|`` give
    log|H| and its derivatives."""
    d0 = 1.0 / (lam0 * s + 1.0)
    a = s * d0
    powers = np.empty((terms + 2, s.shape[0]))
    powers[0] = 1.0
    for q in range(1, terms + 2):
        powers[q] = powers[q - 1] * a
    amax = float(a.max()) if a.size else 0.0
    radii = np.array([0.0] + [_series_radius(q) for q in range(1, terms + 1)])
    return powers[:terms] * d0, (lam0, terms, amax, radii, powers.sum(axis=1),
                                 float(np.log1p(lam0 * s).sum()))


def profile_curvature(s: np.ndarray, W: np.ndarray, y: np.ndarray, lam: float,
                      reml: bool = True, n: int | None = None,
                      rest: np.ndarray | None = None) -> float:
    """Second derivative in ``lam`` of the profile (RE)ML null log-likelihood.

    Used for the standard error of the null pve, as GEMMA computes it.
    ``n``, ``rest``: low-rank mode, as in :func:`fit_exact`.
    """
    s = np.asarray(s, dtype=np.float64)
    F = np.column_stack([W, y])
    X = np.zeros((1, 0, s.shape[0]))
    lam_a = np.array([[lam]])
    (M, M1, M2), (ldh, dldh, d2ldh) = _grams(lam_a[:, 0], s, F, X, derivatives=True,
                                             rest=rest)
    WtW = _grams(np.zeros(1), s, F, X, rest=rest)[0][0, :-1, :-1]
    logdet_xtx = np.linalg.slogdet(WtW)[1]
    n = s.shape[0] if n is None else n
    return float(_profile(M, M1, M2, ldh, dldh, d2ldh, n, reml, logdet_xtx)[2][0])


# --------------------------------------------------------------------------
# the classic EM
# --------------------------------------------------------------------------
def fit_em(s: np.ndarray, W: np.ndarray, y: np.ndarray, X: np.ndarray, *,
           start: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
           tol: float = 1e-5, max_iter: int = 100, n: int | None = None,
           rest: np.ndarray | None = None) -> Fit:
    """The classic EM of the course lab, vectorised over a block of variants.

    In rotated coordinates the lab's dense algebra becomes diagonal:
    E-step ``w = s / (s + se2/sa2)`` (0 where s = 0), ``a = w (y - X b)``,
    ``V = se2 w``; M-step ``b = (X'X)^-1 X'(y - a)``,
    ``sa2 = (sum a^2/s + sum V/s) / r`` over s > 0, r = #(s > 0) (the
    lab's n when A is non-singular),
    ``se2 = (|y - X b - a|^2 + sum V) / n``.

    The stopping rule and return values are the lab's: the loop counter starts
    at 2 and runs while it is below ``max_iter`` (so at most ``max_iter - 2``
    updates); it stops when lnL gains less than ``tol`` (a loss stops it too);
    ``logl`` is the value one update before the stop, while ``beta`` and the
    variances are those of the last update.

    Parameters
    ----------
    s, W, y, X : as in :func:`fit_exact`.
    start : ``(beta (m, c), sa2 (m,), se2 (m,))`` to start from (e.g. the null
        fit); the default is the lab's ``beta = 0, sa2 = 70, se2 = 10``.
    n, rest : low-rank mode, as in :func:`fit_exact`.  Outside the
        eigenvectors' span every eigenvalue is 0, so there ``w = 0``, ``a = 0``
        and ``V = 0``: that part adds ``r' rest r`` (``r = [-b, 1]``) to the
        residual sum of squares and to ``X'(y - a)`` its Gram, nothing else.

    Returns
    -------
    Fit; ``logl`` includes the ``-n/2 log(2 pi)`` term the lab omits;
    ``iterations`` is the number of EM updates; ``se`` is NaN (EM gives none).
    """
    s = np.asarray(s, dtype=np.float64)
    r_eig = s.shape[0]
    n = r_eig if n is None else n
    m, k, _ = X.shape
    c0 = W.shape[1]
    c = c0 + k
    F = np.column_stack([W, y])
    XtX = _grams(np.zeros(m), s, F, X, rest=rest)[0][:, :-1, :-1]
    XtX_inv = np.linalg.pinv(XtX)
    pos = s > 0
    s_safe = np.where(pos, s, 1.0)
    # a ~ N(0, sa2 A) lives in the span of A: E[a' A^+ a] = sa2 rank(A).  The
    # lab divides by n, which is rank(A) for its non-singular A; with a
    # singular (centred) GRM dividing by n would not reach the ML estimate.
    rank = int(pos.sum())
    if start is None:
        beta = np.zeros((m, c))
        sa2 = np.full(m, 70.0)
        se2 = np.full(m, 10.0)
    else:
        beta, sa2, se2 = (np.array(v, dtype=np.float64) for v in start)
        beta = np.broadcast_to(beta, (m, c)).copy()
        sa2 = np.broadcast_to(sa2, (m,)).copy()
        se2 = np.broadcast_to(se2, (m,)).copy()

    def fitted(idx, b):
        return b[:, :c0] @ W.T + np.einsum("mk,mkn->mn", b[:, c0:], X[idx])

    def rss_rest(idx, b):  # |y - X b|^2 outside the eigenvectors' span
        if rest is None:
            return 0.0
        u = np.concatenate([-b, np.ones((b.shape[0], 1))], axis=1)
        return np.einsum("ma,mab,mb->m", u, rest[idx], u)

    def loglik(idx, b, va, ve):
        C = va[:, None] * s + ve[:, None]
        r = y - fitted(idx, b)
        return (-0.5 * np.log(C).sum(-1) - 0.5 * (r * r / C).sum(-1)
                - 0.5 * (n - r_eig) * np.log(ve) - 0.5 * rss_rest(idx, b) / ve)

    every = np.arange(m)
    logl_prev = loglik(every, beta, sa2, se2)
    logl_out = logl_prev.copy()
    iterations = np.zeros(m, dtype=np.int64)
    active = every
    counter = 2
    while counter < max_iter and active.size:
        b, va, ve = beta[active], sa2[active], se2[active]
        w = np.where(pos, s / (s + (ve / va)[:, None]), 0.0)
        a = w * (y - fitted(active, b))
        V = ve[:, None] * w
        ya = y - a
        Xty = np.concatenate([ya @ W, np.einsum("mkn,mn->mk", X[active], ya)], axis=1)
        if rest is not None:
            Xty += rest[active, :-1, -1]
        b = np.einsum("mab,mb->ma", XtX_inv[active], Xty)
        va = (np.where(pos, (a * a + V) / s_safe, 0.0)).sum(-1) / rank
        res = y - fitted(active, b) - a
        ve = ((res * res).sum(-1) + rss_rest(active, b) + V.sum(-1)) / n
        beta[active], sa2[active], se2[active] = b, va, ve
        iterations[active] += 1
        logl_new = loglik(active, b, va, ve)
        stop = logl_new - logl_prev[active] < tol
        logl_out[active[stop]] = logl_prev[active[stop]]
        logl_prev[active] = logl_new
        active = active[~stop]
        counter += 1
    logl_out[active] = logl_prev[active]
    return Fit(logl=logl_out - 0.5 * n * _LOG_2PI, lam=sa2 / se2, beta=beta,
               se=np.full((m, c), np.nan), sigma_sq_a=sa2, sigma_sq_e=se2,
               iterations=iterations)


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------
def chi2_sf(x, df):
    """``scipy.stats.chi2.sf(x, df)``, the same values, without importing
    ``scipy.stats`` (about a second at start-up) or its per-call overhead: x <= 0
    gives 1, NaN stays NaN.  For 1 and 2 df by their closed forms, ``erfc(sqrt(x/2))``
    and ``exp(-x/2)`` (17 and 9 ns a value against 880 and 60 for ``chdtrc``; they
    agree to 2e-13 relative up to x = 1400, where p is 1e-300)."""
    x = np.maximum(x, 0.0)
    if np.ndim(df) == 0 and df == 1:
        return special.erfc(np.sqrt(0.5 * x))
    if np.ndim(df) == 0 and df == 2:
        return np.exp(-0.5 * x)
    return special.chdtrc(df, x)


def f_sf(x, dfn, dfd):
    """``scipy.stats.f.sf(x, dfn, dfd)``, the same values (see :func:`chi2_sf`)."""
    return special.fdtrc(dfn, dfd, np.maximum(x, 0.0))


def lrt(logl_alt: np.ndarray, logl_null: float | np.ndarray, df: int) -> tuple[np.ndarray, np.ndarray]:
    """Likelihood-ratio test ``2 (lnL1 - lnL0) ~ chi2(df)``.

    Returns ``(statistic, p_value)``; a negative statistic (a non-converged
    fit below the null) gives p = 1.
    """
    stat = 2.0 * (np.asarray(logl_alt) - logl_null)
    return stat, chi2_sf(stat, df)


def ols_test(W: np.ndarray, y: np.ndarray, X: np.ndarray) -> dict[str, np.ndarray]:
    """Ordinary least squares F-test of the variant columns (no kinship): the lab's
    fixed-effect baseline (with ``W`` the intercept and ``X`` additive + dominance, the
    lab's ``pval_calculator_lab7``), for any covariates and 1 or 2 variant columns.

    Parameters
    ----------
    W : (n, c0) covariates; y : (n,) phenotype; X : (m, k, n) variant columns.

    Returns
    -------
    :func:`ols_gram` of their Gram.
    """
    n, c0 = W.shape
    m, k, _ = X.shape
    F = np.column_stack([W, y])
    FX = (X.reshape(m * k, n) @ F).reshape(m, k, c0 + 1)
    return ols_gram(F.T @ F, FX, np.einsum("man,mbn->mab", X, X), n)


def ols_gram(FF: np.ndarray, FX: np.ndarray, XX: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The least-squares F-test from the Gram of ``[W, X_j, y]`` (sums over the n samples).

    Parameters
    ----------
    FF : (c0 + 1, c0 + 1) ``F'F`` of F = [W, y]; FX : (m, k, c0 + 1) ``X_j'F``;
    XX : (m, k, k) ``X_j'X_j``; n : samples.

    Returns
    -------
    dict with ``beta`` (m, k), ``se`` (m, k), ``stat`` (m,): ``F = (RSS0 - RSS1) / k /
    (RSS1 / (n - c0 - k))``, and ``p`` (m,) on ``(k, n - c0 - k)`` df.
    """
    c0 = FF.shape[0] - 1
    m, k = XX.shape[:2]
    M = _assemble(np.broadcast_to(FF, (m, c0 + 1, c0 + 1)), FX, XX, c0)
    beta, se, stat, _, df = _f_tests(*_residual_gram(M, c0), n, c0)
    return {"beta": beta, "se": se, "stat": stat, "p": f_sf(stat, k, df)}


def _residual_gram(M: np.ndarray, c0: int):
    """Gram of [X, y] after projecting out W: ``P_xx (..., k, k)``, ``P_xy (..., k)``,
    ``P_yy (...)`` from a Gram ``M (..., p, p)`` of ``[W (c0), X (k), y]``."""
    A, B = M[..., :c0, :c0], M[..., :c0, c0:]
    S = M[..., c0:, c0:] - np.swapaxes(B, -1, -2) @ np.linalg.solve(A, B)
    return S[..., :-1, :-1], S[..., :-1, -1], S[..., -1, -1]


def _f_tests(P_xx, P_xy, P_yy, n, c0):
    """GEMMA's Wald and score statistics from the projected Gram (GEMMA's ``Pab``).

    ``Px_yy = P_yy - P_xy' P_xx^-1 P_xy`` (residual with the variant),
    ``df = n - c0 - k``, ``tau = df / Px_yy``; Wald ``F = (P_yy - Px_yy) tau / k``,
    score ``F = n (P_yy - Px_yy) / P_yy / k``, both on (k, df) df (for k = 1
    exactly GEMMA's ``CalcRLWald`` / ``CalcRLScore``).  Returns
    ``(beta (m, k), se (m, k), wald, score, df)``.
    """
    k = P_xx.shape[-1]
    P_inv = np.linalg.inv(P_xx)
    beta = np.einsum("...ab,...b->...a", P_inv, P_xy)
    explained = (P_xy * beta).sum(-1)
    df = n - c0 - k
    se2 = (P_yy - explained) / df
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.diagonal(P_inv, axis1=-2, axis2=-1) * se2[..., None])
    with np.errstate(divide="ignore", invalid="ignore"):
        wald = explained / se2 / k
        score = n * explained / P_yy / k
    return beta, se, wald, score, df


def wald_test(s: np.ndarray, W: np.ndarray, y: np.ndarray, X: np.ndarray,
              lam: np.ndarray, n: int | None = None,
              rest: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Wald F-test of the variant columns at a per-variant ``lam`` (GEMMA ``-lmm 1``).

    GEMMA evaluates it at each variant's REML estimate of ``lam`` (``l_remle``,
    from ``fit_exact(..., reml=True)``): ``beta`` is the GLS estimate, ``se``
    uses ``se2 = y'Py / (n - c0 - k)``, and ``F = beta' V^-1 beta / k`` on
    ``(k, n - c0 - k)`` degrees of freedom.

    Parameters
    ----------
    s : (n,) eigenvalues; W : (n, c0) rotated covariates; y : (n,) rotated phenotype.
    X : (m, k, n) rotated variant columns.  lam : (m,) sa2/se2 per variant.
    n, rest : low-rank mode, as in :func:`fit_exact`.

    Returns
    -------
    dict with ``beta`` (m, k), ``se`` (m, k), ``stat`` (m,) and ``p`` (m,).
    """
    s = np.asarray(s, dtype=np.float64)
    F = np.column_stack([W, y])
    M = _grams(np.asarray(lam, dtype=np.float64), s, F, X, with_logdet=False, rest=rest)[0]
    n = s.shape[0] if n is None else n
    beta, se, stat, _, df = _f_tests(*_residual_gram(M, W.shape[1]), n, W.shape[1])
    return {"beta": beta, "se": se, "stat": stat, "p": f_sf(stat, X.shape[1], df)}


def score_test(s: np.ndarray, W: np.ndarray, y: np.ndarray, X: np.ndarray,
               lam_null: float, n: int | None = None,
               rest: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Score F-test of the variant columns at the null model's ML ``lam`` (GEMMA ``-lmm 3``).

    Every variant shares the weights ``1 / (lam_null s + 1)``, so no per-variant
    fit is needed: ``F = n P_xy' P_xx^-1 P_xy / (P_yy k)`` on ``(k, n - c0 - k)``
    degrees of freedom, with ``P`` the projection orthogonal to ``W``.
    ``n``, ``rest``: low-rank mode, as in :func:`fit_exact`.

    Returns
    -------
    dict with ``beta`` (m, k), ``se`` (m, k) (as GEMMA's ``-lmm 3`` prints them),
    ``stat`` (m,) and ``p`` (m,).
    """
    s = np.asarray(s, dtype=np.float64)
    F = np.column_stack([W, y])
    M = _grams(np.full(X.shape[0], float(lam_null)), s, F, X, with_logdet=False,
               rest=rest)[0]
    n = s.shape[0] if n is None else n
    beta, se, _, stat, df = _f_tests(*_residual_gram(M, W.shape[1]), n, W.shape[1])
    return {"beta": beta, "se": se, "stat": stat, "p": f_sf(stat, X.shape[1], df)}


# --------------------------------------------------------------------------
# one block of a scan: read values in, per-variant results out
# --------------------------------------------------------------------------
_FIT_ELEMENTS = 1 << 18
#: Elements of a slab of a block that :func:`scan_block` gathers and rotates at once.
_SCAN_SLAB_ELEMENTS = 1 << 20


def _concat_fits(fits: list[Fit]) -> Fit:
    return Fit(*(np.concatenate([getattr(f, name) for f in fits])
                 for name in Fit.__dataclass_fields__))


#: The association tests a scan can run (GEMMA ``-lmm 2``, ``-lmm 1``, ``-lmm 3``, OLS).
TESTS = schema.TESTS


def _check_tests(tests) -> tuple[str, ...]:
    tests = (tests,) if isinstance(tests, str) else tuple(tests)
    bad = [t for t in tests if t not in TESTS]
    if bad or not tests:
        raise ValueError(f"tests must be a non-empty subset of {TESTS}, not {tests!r}")
    return tuple(t for t in TESTS if t in tests)


def result_columns(model: str, tests=("lrt",)) -> list[str]:
    """Keys of the columns :func:`scan_block` returns for ``model`` and ``tests``
    (:func:`dlmm.schema.columns`)."""
    return [v.key for v in schema.columns(model, _check_tests(tests))]


def scan_block(dosage: np.ndarray, *, samples: np.ndarray, U: np.ndarray, s: np.ndarray,
               W: np.ndarray, Wr: np.ndarray, yr: np.ndarray, logl_null,
               null_start=None, model: str = "additive",
               solver: str = "exact", maf: float = 0.01, max_missing: float = 0.05,
               em_tol: float = 1e-5, em_max_iter: int = 100, tests=("lrt",),
               lam_null=None, lam_reml=None, y: np.ndarray | None = None) -> np.ndarray:
    """Filter, impute, rotate, fit and test one block of variants (full rank).

    The block is filtered, imputed and rotated once, then tested against every
    trait of ``yr`` (traits sharing the analysed samples share the rotation).
    The low-rank mode (thin U) is :func:`dlmm.lowrank.lowrank_block`, from sums
    over chunks of samples.

    Parameters
    ----------
    dosage : (m, N) dosages on all samples of the store, NaN for missing.
    samples : (N,) bool, the analysed samples (n of them).
    U, s : eigenvectors (n, n) and eigenvalues (n,) of the analysed kinship.  A
        float32 U rotates the block in single precision (twice the rate; the fit
        stays float64).
    W : (n, c) covariates, Wr = U^T W, yr = U^T y: (n,) one trait, or (n, t).
    y : the unrotated phenotype(s), (n,) or (n, t); needed for ``ols``.
    logl_null : null-model log-likelihood (from the same solver); (t,) for t traits.
    null_start : ``(beta_w (c,), sa2, se2)`` to start EM from, or None for
        the classic start; a list of t of them for t traits.
    model : "additive" (1 df) or "genotypic" (2 df).
    solver : "exact" or "em" (the LRT's fit; Wald and score are exact).
    tests : any of ``"lrt"``, ``"wald"`` (at each variant's REML lambda),
        ``"score"`` (at ``lam_null``, the null model's ML lambda; (t,) for t traits),
        ``"ols"`` (least squares, no kinship: on the unrotated ``y``).
    lam_reml : the null model's REML lambda, where the Wald test's fits start ((t,);
        default: fitted here).

    Returns
    -------
    (m, len(result_columns(model, tests))) float64, or (m, t, ...) when ``yr``
    is (n, t); untested variants are NaN except ``n_miss``, ``af`` and
    ``tested`` (0).
    """
    tests = _check_tests(tests)
    x = analysed(dosage, samples)
    n = x.shape[1]
    if U.shape != (n, n):
        raise ValueError(f"scan_block needs a full eigenbasis (n, n) = ({n}, {n}), not "
                         f"{U.shape}; a thin U: dlmm.lowrank")
    if "ols" in tests and y is None:
        raise ValueError("--test ols needs the unrotated y")
    Wf = W if W.shape[1] > 1 else None
    st = sums.filters(sums.variant_sums(x, F=Wf, model=model), n, model=model,
                      WtW=None if Wf is None else W.T @ W, maf=maf, max_missing=max_missing)
    Y = np.asarray(yr, dtype=np.float64).reshape(n, -1)
    traits = trait_args(Y.shape[1], logl_null, lam_null, null_start, lam_reml, tests)
    if "wald" in tests and traits[0]["lam_reml"] is None:
        for j, tr in enumerate(traits):
            tr["lam_reml"] = null_reml_lambda(s, Wr, Y[:, j], n, None)
    cols = result_columns(model, tests)
    out = block_out(st, Y.shape[1], cols)
    tested = np.flatnonzero(st["tested"])
    if tested.size:
        _test_rows(out, x, tested, np.nan_to_num(st["mean"]), cols, U=U, s=s, W=W, Wr=Wr,
                   Y=Y, y=y, traits=traits, model=model, solver=solver, em_tol=em_tol,
                   em_max_iter=em_max_iter, tests=tests)
    return out if np.ndim(yr) == 2 else out[:, 0]


def trait_args(n_traits: int, logl_null, lam_null, null_start, lam_reml, tests) -> list[dict]:
    """Per trait, the null model's figures a block's tests take: ``logl_null``,
    ``lam_null`` (the score test's, required with it), ``null_start`` (EM's start),
    ``lam_reml`` (scalars, or (t,) / a list of t for t traits; None: not given)."""
    if "score" in tests and lam_null is None:
        raise ValueError("the score test needs lam_null (the null model's ML lambda)")

    def each(v):
        return [None] * n_traits if v is None else [float(a) for a in np.broadcast_to(
            np.asarray(v, dtype=np.float64), (n_traits,))]

    starts = null_start if isinstance(null_start, list) else [null_start] * n_traits
    return [{"logl_null": a, "lam_null": b, "null_start": c, "lam_reml": d} for a, b, c, d
            in zip(each(logl_null), each(lam_null), starts, each(lam_reml))]


def block_out(st: dict, n_traits: int, cols: list[str]) -> np.ndarray:
    """A block's result (m, t, columns): ``n_miss``, ``af``, ``tested`` from the filters
    ``st`` (:func:`dlmm.sums.filters`), NaN elsewhere."""
    out = np.full((st["tested"].shape[0], n_traits, len(cols)), np.nan)
    out[:, :, 0], out[:, :, 1] = st["n_miss"][:, None], st["af"][:, None]
    out[:, :, 2] = st["tested"][:, None]
    return out


def _test_rows(out, x, tested, fill, cols, *, U, s, W, Wr, Y, y, traits, model, solver,
               em_tol, em_max_iter, tests) -> None:
    """Test the variants ``tested`` (rows of ``x``, missing calls at ``fill``) against
    every trait, writing ``out[rows, trait, column]``."""
    n = U.shape[0]
    Y_raw = None if y is None else np.asarray(y, dtype=np.float64).reshape(n, -1)
    lmm = tuple(v for v in tests if v != "ols")
    # a slab of variants at a time: its gathered and rotated copies are reused between
    # slabs (no fresh (m, n) arrays per block), and U is read once per >= 256 variants
    step = max(256, _SCAN_SLAB_ELEMENTS // n)
    for i in range(0, tested.size, step):
        rows = tested[i:i + step]
        X, Xr = _rotated_slab(x, rows, fill, model, U if lmm else None)
        for j, tr in enumerate(traits):
            if "ols" in tests:
                put_columns(out, rows, j, cols, ols_columns(ols_test(W, Y_raw[:, j], X)))
            if lmm:
                put_columns(out, rows, j, cols, lmm_columns(
                    Xr, s=s, Wr=Wr, yr=Y[:, j], solver=solver, em_tol=em_tol,
                    em_max_iter=em_max_iter, tests=lmm, n=n, rest=None, model=model, **tr))


def put_columns(out, rows, j, cols, res) -> None:
    """Write one trait's result columns (by key) into the block's ``rows``."""
    for name, val in res.items():
        out[rows, j, cols.index(name)] = val


def lmm_columns(Xr: np.ndarray, *, model: str, **kw) -> dict[str, np.ndarray]:
    """The mixed-model result columns of one trait on rotated variant columns
    ``Xr`` (m, k, r) (keywords: :func:`_test_block`'s): ``beta``/``se`` the additive
    column's, ``*_dom`` the dominance column's for the genotypic model."""
    res = _test_block(Xr, **kw)
    if model == "genotypic":
        res["beta_dom"], res["se_dom"] = res["beta"][:, 1], res["se"][:, 1]
    res["beta"], res["se"] = res["beta"][:, 0], res["se"][:, 0]
    return res


def ols_columns(r: dict) -> dict:
    """The least-squares columns of one trait from :func:`ols_gram` (the additive
    effect; F and p over all k)."""
    return {"beta_ols": r["beta"][:, 0], "se_ols": r["se"][:, 0], "f_ols": r["stat"],
            "p_ols": r["p"]}


def _rotated_slab(x, rows, fill, model, U):
    """The design (m, k, n) of the variants ``rows`` of ``x`` (missing calls at
    ``fill``) and its rotation (m, k, n), in single precision when U is float32
    (no rotation when U is None)."""
    X = variant_design(take(x, rows=rows, fill=fill), model)
    if U is None:
        return X, None
    m, k, n = X.shape
    flat = X.reshape(m * k, n)
    if U.dtype == np.float32:
        Xr = rotate(U, flat.astype(np.float32)).astype(np.float64)
    else:
        Xr = rotate(U, flat)
    return X, Xr.reshape(m, k, U.shape[1])


def null_reml_lambda(s, Wr, yr, n, rest) -> float:
    """The null model's REML lambda; ``rest`` (1, c0 + 1, c0 + 1) of [W, y], or None."""
    return float(fit_exact(s, Wr, yr, np.zeros((1, 0, s.shape[0])), reml=True, n=n,
                           rest=rest).lam[0])


def _test_block(Xr, *, s, Wr, yr, logl_null, null_start, solver, em_tol, em_max_iter,
                tests, lam_null, n, rest, lam_reml) -> dict[str, np.ndarray]:
    """The tests of one trait on a rotated block ``Xr`` (m, k, r), n samples, ``rest``
    (m, p, p) or None (see :func:`fit_exact`), ``lam_reml`` the null model's REML
    lambda (where the Wald test's fits start): result columns by name (``beta``,
    ``se`` as (m, k))."""
    m, k, r = Xr.shape
    if solver not in ("exact", "em"):
        raise ValueError(f"solver must be 'exact' or 'em', not {solver!r}")
    # The EM solver and the Wald/score kernels work on (rows, n) temporaries: a few
    # hundred rows at a time keeps them in cache (4x faster on mouse_hs1940 than the
    # whole block); fit_exact splits the block itself, sharing its set-up.
    rows = max(8, _FIT_ELEMENTS // r)
    parts = [Xr[i:i + rows] for i in range(0, m, rows)]
    rests = [None if rest is None else rest[i:i + rows] for i in range(0, m, rows)]
    c0 = Wr.shape[1]
    res = {}
    if "score" in tests:
        sc = [score_test(s, Wr, yr, part, lam_null, n=n, rest=rp)
              for part, rp in zip(parts, rests)]
        res["score"] = np.concatenate([r["stat"] for r in sc])
        res["p_score"] = np.concatenate([r["p"] for r in sc])
        beta = np.concatenate([r["beta"] for r in sc])
        se = np.concatenate([r["se"] for r in sc])
    if "lrt" in tests:
        if solver == "exact":  # most variants' lambda is near the null model's
            fit = fit_exact(s, Wr, yr, Xr, start=lam_null, n=n, rest=rest)
        else:
            start = None
            if null_start is not None:
                bw, sa2, se2 = null_start
                start = (np.concatenate([bw, np.zeros(k)]), sa2, se2)
            fit = _concat_fits([fit_em(s, Wr, yr, part, start=start, tol=em_tol,
                                       max_iter=em_max_iter, n=n, rest=rp)
                                for part, rp in zip(parts, rests)])
        stat, p = lrt(fit.logl, logl_null, k)
        res.update({"logl_H1": fit.logl, "l_mle": fit.lam, "lrt": stat, "p_lrt": p,
                    "sigma_sq_a": fit.sigma_sq_a, "sigma_sq_e": fit.sigma_sq_e,
                    "iterations": fit.iterations})
        beta, se = fit.beta[:, c0:], fit.se[:, c0:]
    if "wald" in tests:
        # each variant's REML lambda lies near the null model's REML lambda (its ML one
        # may sit on a bound): start the Newton steps, and the series, there
        fit_r = fit_exact(s, Wr, yr, Xr, reml=True, start=lam_reml, n=n, rest=rest)
        wa = [wald_test(s, Wr, yr, part, fit_r.lam[i:i + rows], n=n, rest=rp)
              for i, part, rp in zip(range(0, m, rows), parts, rests)]
        res.update({"logl_remle": fit_r.logl, "l_remle": fit_r.lam,
                    "wald": np.concatenate([r["stat"] for r in wa]),
                    "p_wald": np.concatenate([r["p"] for r in wa]),
                    "iterations_remle": fit_r.iterations})
        beta = np.concatenate([r["beta"] for r in wa])
        se = np.concatenate([r["se"] for r in wa])
    res["beta"], res["se"] = beta, se
    return res
