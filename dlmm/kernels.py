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

from dataclasses import dataclass

import numba
import numpy as np
from scipy import special

from . import sums

__all__ = [
    "EIGEN_TOL",
    "center_kinship",
    "LOG_LAMBDA_BOUNDS",
    "eigh_kinship",
    "NotPositiveSemiDefinite",
    "eigen_from_svd",
    "lowrank_rest",
    "grm_genotypes",
    "rotate",
    "dominance",
    "block_stats",
    "block_results",
    "impute_mean",
    "take",
    "variant_design",
    "Fit",
    "fit_exact",
    "fit_em",
    "lrt",
    "ols_f_test",
    "grm_block",
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
def center_kinship(kinship: np.ndarray) -> np.ndarray:
    """Double-centre a kinship, ``P K P`` with ``P = I - 11'/n`` (GEMMA's ``CenterMatrix``)."""
    K = np.asarray(kinship, dtype=np.float64)
    K = K - K.mean(axis=0, keepdims=True)
    return K - K.mean(axis=1, keepdims=True)


class NotPositiveSemiDefinite(ValueError):
    """A kinship's eigenvalue is clearly negative (see :func:`eigh_kinship`'s ``psd_tol``)."""


def eigh_kinship(kinship: np.ndarray, tol: float | None = None,
                 rank: int | None = None, overwrite: bool = False,
                 psd_tol: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecompose a kinship matrix once.

    LAPACK's ``dsyevr`` (MRRR) through scipy: measured at n = 4,000, its peak
    beyond the kinship is 1.9 n x n matrices with ``overwrite`` (U and about
    one of workspace), against 3.9 for numpy's ``eigh`` (``dsyevd``: a copy,
    U and 2 n^2 of workspace), and it took 22 s against 27 s.

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
    s, U = eigh(K, driver="evr", subset_by_index=[n - rank, n - 1] if low else None,
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


@numba.njit(nogil=True, cache=True)
def _class_counts_rows(dosage, rows):  # pragma: no cover (compiled)
    """Per row of ``dosage[rows]`` (rows: int64 indices), without a copy: counts of
    dosage 0, 1, 2 and missing (rows, 4), and the sum of the observed dosages (rows,)."""
    n = dosage.shape[1]
    counts = np.zeros((rows.size, 4), dtype=np.int64)
    total = np.zeros(rows.size)
    for a in range(rows.size):
        j = rows[a]
        c0 = c1 = c2 = cm = 0
        t = 0.0
        for i in range(n):
            v = dosage[j, i]
            ok = v == v
            cm += not ok
            t += v if ok else 0.0
            c0 += v == 0.0
            c1 += v == 1.0
            c2 += v == 2.0
        counts[a, 0], counts[a, 1], counts[a, 2], counts[a, 3] = c0, c1, c2, cm
        total[a] = t
    return counts, total


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


def grm_block(dosage: np.ndarray, use: np.ndarray, standardise: bool = False,
              cols: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """One block's contribution to a GRM (GEMMA ``-gk 1`` / ``-gk 2``).

    Parameters
    ----------
    dosage : (m, n) dosages with NaN for missing, on all samples.
    use : (m,) bool, the variants that enter the GRM.
    standardise : False for the centred GRM, True for the standardised one.
    cols : (n,) bool, the samples whose rows and columns to return (centring
        and scaling still use all n); default all.
    out : (n, n) (or (cols, cols)) float64 C-contiguous array to write the
        result into (the GRM pass's task output), or None.

    Returns
    -------
    (n, n) (or (cols, cols)) sum over used variants of ``x_c x_c^T`` (divide by
    their count); ``out`` when given.  Beyond it, the peak memory is the float32
    product (n^2 / 2 float64s) on the fast path, else the product alone.
    """
    dosage, rows, counts, mean = _grm_stats(dosage, use)
    n = dosage.shape[1]
    if (not standardise and rows.size < _F32_EXACT_ROWS
            and (counts[:, :3].sum(axis=1) == n).all()):
        # only 0/1/2 calls, none missing: the sums of their products are integers below
        # 2^24, exact in float32, so X'X by sgemm (twice dgemm's rate), centred after in
        # float64: sum_j (x_j - mu_j)(x_j - mu_j)' = X'X - a1' - 1a' + mu'mu, a = X'mu
        at = np.flatnonzero(cols) if cols is not None and not np.all(cols) else np.arange(n)
        x32, a = _gather_f32(dosage, rows, at, mean[rows])
        k = at.size
        G = np.empty((k, k)) if out is None else out
        G[...] = x32.T @ x32  # widened in place: no float64 copy of the product
        del x32
        step = max(1, _FIT_ELEMENTS // k)
        for i in range(0, k, step):  # in slabs of rows: no (n, n) temporary
            # a_i + a_k: the same sum either way, G stays symmetric
            G[i:i + step] -= a[i:i + step, None] + a[None, :]
        G += mean[rows] @ mean[rows]
        return G
    xc = _grm_centred(dosage, rows, mean, standardise, cols)
    if out is None:
        return xc.T @ xc  # A^T A: numpy calls BLAS syrk
    return np.matmul(xc.T, xc, out=out)


def grm_genotypes(dosage: np.ndarray, use: np.ndarray, standardise: bool = False,
                  cols: np.ndarray | None = None) -> np.ndarray:
    """The GRM's genotype factor of one block: ``grm_block = x_c^T x_c``.

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
    counts, total = _class_counts_rows(dosage, rows)
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


def _gram_shared(w, F, X, rest=None):
    """Gram matrices for weights shared by all variants.

    w : (g, n) weight vectors; F : (n, f); X : (m, k, n); rest : (m, p, p)
    added to every weight's Gram (see :func:`_grams`).
    Returns (m, g, p, p).
    """
    g, n = w.shape
    m, k, _ = X.shape
    f = F.shape[1]
    c0 = f - 1
    wF = w[:, :, None] * F[None, :, :]  # (g, n, f)
    FF = np.swapaxes(wF, 1, 2) @ F  # (g, f, f): batched BLAS, not einsum's 3-operand loop
    wF = wF.transpose(1, 0, 2).reshape(n, g * f)
    FX = (X.reshape(m * k, n) @ wF).reshape(m, k, g, f).transpose(0, 2, 1, 3)
    XX = np.empty((m, g, k, k))
    for a in range(k):
        for b in range(a, k):
            XX[:, :, a, b] = XX[:, :, b, a] = (X[:, a, :] * X[:, b, :]) @ w.T
    M = _assemble(np.broadcast_to(FF, (m, g, f, f)), FX, XX, c0)
    if rest is not None:
        M += rest[:, None]
    return M


@numba.njit(nogil=True, fastmath=True, cache=True)
def _grams_kernel(lam, s, FT, X, n_weights, with_logdet):  # pragma: no cover (compiled)
    m, k, n = X.shape
    c0 = FT.shape[0] - 1
    p = c0 + k + 1
    out = np.empty((n_weights, m, p, p))
    logdet = np.zeros((3, m))
    w0 = np.empty(n)
    w1 = np.empty(n)
    w2 = np.empty(n)
    for j in range(m):
        lj = lam[j]
        l1 = 0.0
        l2 = 0.0
        for i in range(n):
            d = 1.0 / (lj * s[i] + 1.0)
            sd = s[i] * d
            w0[i] = d
            w1[i] = -sd * d
            w2[i] = 2.0 * sd * sd * d
            l1 += sd
            l2 -= sd * sd
        if with_logdet:
            # log of running products (each factor >= 1), flushed before they could
            # overflow: a log per ~10 samples, not one per sample
            l0 = 0.0
            prod = 1.0
            for i in range(n):
                if prod > 1e150:
                    l0 += np.log(prod)
                    prod = 1.0
                prod *= lj * s[i] + 1.0
            logdet[0, j] = l0 + np.log(prod)
        logdet[1, j] = l1
        logdet[2, j] = l2
        for a in range(p):
            za = FT[a] if a < c0 else (X[j, a - c0] if a < c0 + k else FT[c0])
            for b in range(a, p):
                zb = FT[b] if b < c0 else (X[j, b - c0] if b < c0 + k else FT[c0])
                acc0 = 0.0
                acc1 = 0.0
                acc2 = 0.0
                if n_weights == 3:
                    for i in range(n):
                        t = za[i] * zb[i]
                        acc0 += w0[i] * t
                        acc1 += w1[i] * t
                        acc2 += w2[i] * t
                    out[1, j, a, b] = out[1, j, b, a] = acc1
                    out[2, j, a, b] = out[2, j, b, a] = acc2
                else:
                    for i in range(n):
                        acc0 += w0[i] * za[i] * zb[i]
                out[0, j, a, b] = out[0, j, b, a] = acc0
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
    Newton steps need only its derivatives).

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


def _profile(M, M1, M2, logdet_h, dlogdet_h, d2logdet_h, n, reml, logdet_xtx):
    """Profile log-likelihood in lambda and its first two lambda-derivatives.

    M, M1, M2 : (..., p, p) Gram matrices of Z = [X, y] with weights
    d = 1 / (lam s + 1), dd/dlam and d2d/dlam2.  Returns (logl, d1, d2, b, Q,
    MXX_inv) where Q = y' P y and b the GLS estimate.
    """
    MXX = M[..., :-1, :-1]
    MXy = M[..., :-1, -1]
    c = MXX.shape[-1]
    MXX_inv = np.linalg.inv(MXX)
    b = np.einsum("...ab,...b->...a", MXX_inv, MXy)
    Q = M[..., -1, -1] - (MXy * b).sum(-1)
    r = np.concatenate([-b, np.ones(b.shape[:-1] + (1,))], axis=-1)
    M1r = np.einsum("...ab,...b->...a", M1, r)
    Q1 = (r * M1r).sum(-1)
    u = M1r[..., :-1]
    Q2 = np.einsum("...a,...ab,...b->...", r, M2, r) - 2.0 * np.einsum(
        "...a,...ab,...b->...", u, MXX_inv, u)
    if not reml:
        df = n
        const = 0.5 * n * (np.log(n) - _LOG_2PI - 1.0)
        logl = const - 0.5 * logdet_h - 0.5 * n * np.log(Q)
        d1 = -0.5 * dlogdet_h - 0.5 * n * Q1 / Q
        d2 = -0.5 * d2logdet_h - 0.5 * n * (Q2 / Q - (Q1 / Q) ** 2)
    else:
        df = n - c
        const = 0.5 * df * (np.log(df) - _LOG_2PI - 1.0)
        A1 = MXX_inv @ M1[..., :-1, :-1]
        ld = np.linalg.slogdet(MXX)[1]
        dld = np.trace(A1, axis1=-2, axis2=-1)
        d2ld = np.trace(MXX_inv @ M2[..., :-1, :-1], axis1=-2, axis2=-1) - np.einsum(
            "...ab,...ba->...", A1, A1)
        logl = const - 0.5 * logdet_h - 0.5 * (ld - logdet_xtx) - 0.5 * df * np.log(Q)
        d1 = -0.5 * dlogdet_h - 0.5 * dld - 0.5 * df * Q1 / Q
        d2 = -0.5 * d2logdet_h - 0.5 * d2ld - 0.5 * df * (Q2 / Q - (Q1 / Q) ** 2)
    return logl, d1, d2, b, Q, MXX_inv, df


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
    m, k, _ = X.shape
    F = np.column_stack([W, y])
    logdet_xtx = 0.0
    if reml:
        Z0 = _grams(np.zeros(m), s, F, X, rest=rest)[0]
        logdet_xtx = np.linalg.slogdet(Z0[:, :-1, :-1])[1]
    lo_b, hi_b = LOG_LAMBDA_BOUNDS
    grid = np.linspace(lo_b, hi_b, n_grid)
    lam_g = np.exp(grid)[:, None]
    h = lam_g * s + 1.0
    d, ld = 1.0 / h, np.log(h).sum(-1)
    Mg = _gram_shared(d, F, X, rest)  # (m, g, p, p)
    MXX = Mg[..., :-1, :-1]
    b = np.linalg.solve(MXX, Mg[..., :-1, -1:])[..., 0]
    Q = Mg[..., -1, -1] - (Mg[..., :-1, -1] * b).sum(-1)
    if reml:
        df = n - (W.shape[1] + k)
        ldx = np.linalg.slogdet(MXX)[1]
        logl_g = -0.5 * ld - 0.5 * (ldx - np.atleast_1d(logdet_xtx)[:, None]) \
            - 0.5 * df * np.log(Q)
    else:
        logl_g = -0.5 * ld - 0.5 * n * np.log(Q)
    best = np.argmax(logl_g, axis=1)
    t = grid[best]
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, n_grid - 1)]
    if start is not None:
        # the grid chose the bracket; inside it, start where the optimum likely is
        ts = np.log(np.clip(np.broadcast_to(np.asarray(start, dtype=np.float64), (m,)),
                            np.exp(lo_b), np.exp(hi_b)))
        t = np.where((ts > lo) & (ts < hi), ts, t)
    iterations = np.zeros(m, dtype=np.int64)
    active = np.arange(m)
    for _ in range(max_iter):
        if active.size == 0:
            break
        ta = t[active]
        lam = np.exp(ta)[:, None]
        (M, M1, M2), (ldh, dldh, d2ldh) = _grams(
            lam[:, 0], s, F, X[active], derivatives=True, with_logdet=False,
            rest=None if rest is None else rest[active])
        ldxa = logdet_xtx[active] if reml else 0.0
        _, g1, g2, *_ = _profile(M, M1, M2, ldh, dldh, d2ldh, n, reml, ldxa)
        lam1 = lam[:, 0]
        f1 = lam1 * g1                     # d logl / dt
        f2 = lam1 * lam1 * g2 + lam1 * g1  # d2 logl / dt2
        la, ha = lo[active], hi[active]
        la = np.where(f1 > 0, ta, la)
        ha = np.where(f1 <= 0, ta, ha)
        # a maximum on the search boundary: the slope points out of the interval
        at_lo = (ta <= lo_b) & (f1 <= 0)
        at_hi = (ta >= hi_b) & (f1 >= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = ta - f1 / f2
        # A Newton step shorter than newton_tol is taken and ends the search: the
        # error after it is O(step^2) (quadratic convergence), so t is then within
        # ~1e-8 of the maximum and logl within ~1e-14 (measured on mouse_hs1940:
        # 1e-11 in log lambda and 1e-12 in lnL against 1e-10, one Newton
        # evaluation fewer).  Such a step has converged even if rounding puts it a hair
        # outside the bracket (falling back to bisection there would only cost
        # ~20 halvings and make the count depend on the last bits)
        converged = (f2 < 0) & (np.abs(newton - ta) < newton_tol)
        ok = (f2 < 0) & (newton > la) & (newton < ha)
        tn = np.where(ok | converged, newton, 0.5 * (la + ha))
        tn = np.where(at_lo | at_hi, ta, np.clip(tn, lo_b, hi_b))
        step = np.abs(tn - ta)
        lo[active], hi[active], t[active] = la, ha, tn
        iterations[active] += 1
        done = at_lo | at_hi | converged | (step < xtol) | (ha - la < xtol)
        active = active[~done]
    return _final_fit(s, F, X, t, n, reml, logdet_xtx, iterations, rest)


def _final_fit(s, F, X, t, n, reml, logdet_xtx, iterations, rest):
    """Evaluate the fit at ``t = log(lam)`` per variant."""
    lam = np.exp(t)
    M, (ldh, dldh, d2ldh) = _grams(lam, s, F, X, rest=rest)
    logl, _, _, b, Q, MXX_inv, df = _profile(M, M, M, ldh, dldh, d2ldh, n, reml,
                                             logdet_xtx)
    se2 = Q / df
    se = np.sqrt(np.diagonal(MXX_inv, axis1=-2, axis2=-1) * se2[:, None])
    return Fit(logl=logl, lam=lam, beta=b, se=se, sigma_sq_a=lam * se2,
               sigma_sq_e=se2, iterations=iterations)


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
    gives 1, NaN stays NaN."""
    return special.chdtrc(df, np.maximum(x, 0.0))


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


def ols_f_test(y: np.ndarray, dosage: np.ndarray) -> np.ndarray:
    """The lab's fixed-effect baseline: OLS F-test of additive + dominance.

    Parameters
    ----------
    y : (n,) phenotype.
    dosage : (m, n) additive dosages 0..2, no missing values.

    Returns
    -------
    (m,) p-values of ``F = (SSM/2) / (SSE/(n-3))`` on (2, n-3) df, with the
    fit by pseudo-inverse as in the lab.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    X = np.stack([np.ones_like(dosage), dosage, dominance(dosage)], axis=1)  # (m, 3, n)
    XtX = np.einsum("man,mbn->mab", X, X)
    Xty = X @ y
    b = np.einsum("mab,mb->ma", np.linalg.pinv(XtX), Xty)
    yhat = np.einsum("ma,man->mn", b, X)
    ssm = ((yhat - y.mean()) ** 2).sum(-1)
    sse = ((y - yhat) ** 2).sum(-1)
    F = (ssm / 2.0) / (sse / (n - 3))
    return f_sf(F, 2, n - 3)


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


def _concat_fits(fits: list[Fit]) -> Fit:
    return Fit(*(np.concatenate([getattr(f, name) for f in fits])
                 for name in Fit.__dataclass_fields__))


#: The association tests a scan can run (GEMMA ``-lmm 2``, ``-lmm 1``, ``-lmm 3``).
TESTS = ("lrt", "wald", "score")


def _check_tests(tests) -> tuple[str, ...]:
    tests = (tests,) if isinstance(tests, str) else tuple(tests)
    bad = [t for t in tests if t not in TESTS]
    if bad or not tests:
        raise ValueError(f"tests must be a non-empty subset of {TESTS}, not {tests!r}")
    return tuple(t for t in TESTS if t in tests)


def result_columns(model: str, tests=("lrt",)) -> list[str]:
    """Names of the columns :func:`scan_block` returns for ``model`` and ``tests``.

    ``lrt``: ``logl_H1 l_mle lrt p_lrt`` (ML fit) and ``sigma_sq_a sigma_sq_e
    iterations``; ``wald``: ``logl_remle l_remle wald p_wald iterations_remle``
    (REML fit); ``score``: ``score p_score``.  ``beta se`` (and ``beta_dom
    se_dom``) are the Wald test's when it runs, else the ML fit's (``lrt``),
    else the score test's -- as GEMMA's ``-lmm 4/1/2/3`` print them.
    """
    tests = _check_tests(tests)
    cols = ["n_miss", "af", "tested"]
    if "lrt" in tests:
        cols += ["logl_H1", "l_mle", "lrt", "p_lrt"]
    if "wald" in tests:
        cols += ["logl_remle", "l_remle", "wald", "p_wald"]
    if "score" in tests:
        cols += ["score", "p_score"]
    cols += ["beta", "se"]
    if model == "genotypic":
        cols += ["beta_dom", "se_dom"]
    if "lrt" in tests:
        cols += ["sigma_sq_a", "sigma_sq_e", "iterations"]
    if "wald" in tests:
        cols += ["iterations_remle"]
    return cols


def scan_block(dosage: np.ndarray, *, samples: np.ndarray, U: np.ndarray, s: np.ndarray,
               W: np.ndarray, Wr: np.ndarray, yr: np.ndarray, logl_null,
               null_start=None, model: str = "additive",
               solver: str = "exact", maf: float = 0.01, max_missing: float = 0.05,
               em_tol: float = 1e-5, em_max_iter: int = 100, tests=("lrt",),
               lam_null=None) -> np.ndarray:
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
    logl_null : null-model log-likelihood (from the same solver); (t,) for t traits.
    null_start : ``(beta_w (c,), sa2, se2)`` to start EM from, or None for
        the classic start; a list of t of them for t traits.
    model : "additive" (1 df) or "genotypic" (2 df).
    solver : "exact" or "em" (the LRT's fit; Wald and score are exact).
    tests : any of ``"lrt"``, ``"wald"`` (at each variant's REML lambda),
        ``"score"`` (at ``lam_null``, the null model's ML lambda; (t,) for t traits).

    Returns
    -------
    (m, len(result_columns(model, tests))) float64, or (m, t, ...) when ``yr``
    is (n, t); untested variants are NaN except ``n_miss``, ``af`` and
    ``tested`` (0).
    """
    cols = np.flatnonzero(samples)
    n = cols.size
    if U.shape != (n, n):
        raise ValueError(f"scan_block needs a full eigenbasis (n, n) = ({n}, {n}), not "
                         f"{U.shape}; thin U: dlmm.lowrank")
    Wf = W if W.shape[1] > 1 else None
    sm = sums.variant_sums(dosage, cols=cols, F=Wf, model=model)
    st = sums.filters(sm, n, WtW=None if Wf is None else W.T @ W, maf=maf,
                      max_missing=max_missing)
    t = st["tested"]
    if model == "genotypic":
        t &= sums.has_dominance(sm, st["mean"], n)
    del sm
    xt = take(dosage, rows=t, cols=cols, fill=np.nan_to_num(st["mean"]))
    X = variant_design(xt, model)
    del xt
    m, k, _ = X.shape
    if U.dtype == np.float32:
        Xr = rotate(U, X.reshape(m * k, n).astype(np.float32)).astype(np.float64)
    else:
        Xr = rotate(U, X.reshape(m * k, n))
    del X
    out = block_results(st, t, Xr.reshape(m, k, n), s=s, Wr=Wr, yr=yr, logl_null=logl_null,
                        null_start=null_start, model=model, solver=solver, em_tol=em_tol,
                        em_max_iter=em_max_iter, tests=tests, lam_null=lam_null)
    return out if np.ndim(yr) == 2 else out[:, 0]


def block_results(st: dict[str, np.ndarray], tested: np.ndarray, Xr: np.ndarray, *,
                  s: np.ndarray, Wr: np.ndarray, yr: np.ndarray, logl_null,
                  null_start=None, model: str = "additive", solver: str = "exact",
                  em_tol: float = 1e-5, em_max_iter: int = 100, tests=("lrt",),
                  lam_null=None, n: int | None = None, rests=None) -> np.ndarray:
    """The result columns of a block from its filters and its tested variants' rotated
    columns: the tests of every trait.

    Parameters
    ----------
    st : :func:`dlmm.sums.filters` of the block's m variants (``n_miss``, ``af``).
    tested : (m,) bool, the variants to test (the filters', and for the
        genotypic model :func:`dlmm.sums.has_dominance`).
    Xr : (m_t, k, r) rotated columns of the tested variants.
    s, Wr, yr, logl_null, null_start, model, solver, em_tol, em_max_iter, tests,
        lam_null : as in :func:`scan_block` (``yr`` (r,) or (r, t)).
    n, rests : low-rank mode (r < n): the number of samples, and per trait the
        (m_t, p, p) Gram outside the eigenvectors' span (:func:`lowrank_rest`).

    Returns
    -------
    (m, t, len(result_columns(model, tests))) float64; untested variants are NaN
    except ``n_miss``, ``af`` and ``tested`` (0).
    """
    tests = _check_tests(tests)
    if "score" in tests and lam_null is None:
        raise ValueError("the score test needs lam_null (the null model's ML lambda)")
    multi = np.ndim(yr) == 2
    Y = np.asarray(yr, dtype=np.float64).reshape(yr.shape[0], -1)
    n_traits = Y.shape[1]
    logl0 = np.broadcast_to(np.asarray(logl_null, dtype=np.float64), (n_traits,))
    lam0 = None if lam_null is None else np.broadcast_to(
        np.asarray(lam_null, dtype=np.float64), (n_traits,))
    starts = null_start if multi and null_start is not None else [null_start] * n_traits
    cols = result_columns(model, tests)
    out = np.full((tested.shape[0], n_traits, len(cols)), np.nan)
    out[:, :, 0], out[:, :, 1] = st["n_miss"][:, None], st["af"][:, None]
    out[:, :, 2] = tested[:, None]
    if not tested.any():
        return out
    n = Xr.shape[2] if n is None else n
    for j in range(n_traits):
        res = _test_block(Xr, s=s, Wr=Wr, yr=Y[:, j], logl_null=float(logl0[j]),
                          null_start=starts[j], solver=solver, em_tol=em_tol,
                          em_max_iter=em_max_iter, tests=tests,
                          lam_null=None if lam0 is None else float(lam0[j]),
                          n=n, rest=None if rests is None else rests[j])
        if model == "genotypic":
            res["beta_dom"], res["se_dom"] = res["beta"][:, 1], res["se"][:, 1]
        res["beta"], res["se"] = res["beta"][:, 0], res["se"][:, 0]
        for name, val in res.items():
            out[tested, j, cols.index(name)] = val
    return out


def _test_block(Xr, *, s, Wr, yr, logl_null, null_start, solver, em_tol, em_max_iter,
                tests, lam_null, n, rest) -> dict[str, np.ndarray]:
    """The tests of one trait on a rotated block ``Xr`` (m, k, r), n samples, ``rest``
    (m, p, p) or None (see :func:`fit_exact`): result columns by name (``beta``,
    ``se`` as (m, k))."""
    m, k, r = Xr.shape
    if solver == "exact":
        def solve(part, rest):  # most variants' lambda is near the null model's
            return fit_exact(s, Wr, yr, part, start=lam_null, n=n, rest=rest)
    elif solver == "em":
        start = None
        if null_start is not None:
            bw, sa2, se2 = null_start
            start = (np.concatenate([bw, np.zeros(k)]), sa2, se2)

        def solve(part, rest):
            return fit_em(s, Wr, yr, part, start=start, tol=em_tol, max_iter=em_max_iter,
                          n=n, rest=rest)
    else:
        raise ValueError(f"solver must be 'exact' or 'em', not {solver!r}")
    # The solvers work on (rows, n) temporaries: a few hundred rows at a time
    # keeps them in cache (4x faster on mouse_hs1940 than the whole block).
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
        fit = _concat_fits([solve(part, rp) for part, rp in zip(parts, rests)])
        stat, p = lrt(fit.logl, logl_null, k)
        res.update({"logl_H1": fit.logl, "l_mle": fit.lam, "lrt": stat, "p_lrt": p,
                    "sigma_sq_a": fit.sigma_sq_a, "sigma_sq_e": fit.sigma_sq_e,
                    "iterations": fit.iterations})
        beta, se = fit.beta[:, c0:], fit.se[:, c0:]
    if "wald" in tests:
        fits = [fit_exact(s, Wr, yr, part, reml=True, start=lam_null, n=n, rest=rp)
                for part, rp in zip(parts, rests)]
        wa = [wald_test(s, Wr, yr, part, f.lam, n=n, rest=rp)
              for part, f, rp in zip(parts, fits, rests)]
        fit_r = _concat_fits(fits)
        res.update({"logl_remle": fit_r.logl, "l_remle": fit_r.lam,
                    "wald": np.concatenate([r["stat"] for r in wa]),
                    "p_wald": np.concatenate([r["p"] for r in wa]),
                    "iterations_remle": fit_r.iterations})
        beta = np.concatenate([r["beta"] for r in wa])
        se = np.concatenate([r["se"] for r in wa])
    res["beta"], res["se"] = beta, se
    return res
