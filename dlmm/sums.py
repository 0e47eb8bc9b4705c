"""Per-variant sums over samples, and GEMMA's variant filters from them.

Everything a scan needs to know about a variant's calls before its fit is a sum
over samples, so it can be computed on any split of the samples and added up
(:func:`combine`): with ``x0`` the dosage with missing calls at 0 and ``miss``
the missing-call indicator, the mean-imputed dosage is ``x = x0 + mu miss``
(``mu`` the variant's mean, known only once every chunk is summed), so
``A'x = A'x0 + mu A'miss`` for any sample-indexed ``A`` and
``x'x = x0'x0 + mu^2 n_miss`` (the cross term is 0).  The dominance coding
``d = 1 - |x - 1|`` is likewise ``d0 + (1 - |mu - 1|) miss`` with ``d0`` the
observed calls' coding (0 where missing): exact, with no second pass.

Sums of one chunk, :func:`variant_sums` (``k`` = 1 column, or 2 with the
dominance column; ``f`` sample-indexed columns of ``F``, ``r`` of ``U``):

``counts`` (m, 4) int64
    calls equal to 0, 1, 2, and missing calls.
``xs`` (m, k), ``xx`` (m, k, k)
    ``sum x0`` (and ``sum d0``) and their cross products over observed calls.
``lo``, ``hi`` (m,)
    smallest and largest observed dosage (+inf / -inf with none).
``xf`` (m, k, f), ``mf`` (m, f)
    ``F'x0`` (``F'd0``) and ``F'miss``, with ``F`` given.
``xu`` (m, k, r), ``miss_rows`` (q,), ``mu`` (q, r)
    ``U'x0`` (``U'd0``), and ``U'miss`` for the q variants with a missing
    call in the chunk (sparse: most variants have none), with ``U`` given.

No dask here.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["variant_sums", "combine", "filters", "has_dominance", "impute_values"]

#: Uncentred r2 of a variant on the covariates above which it is not tested (GEMMA's).
R2_MAX = 0.9999


@numba.njit(nogil=True, cache=True)
def _piece(dosage, cols, k, want_x):  # pragma: no cover (compiled)
    """One pass over ``dosage[:, cols]``: the columns ``[x0, d0]`` (m, k, n_c) float64
    (empty unless ``want_x``), class counts, sums, cross products, min and max."""
    m, nc = dosage.shape[0], cols.size
    X = np.empty((m, k, nc if want_x else 0))
    counts = np.zeros((m, 4), dtype=np.int64)
    xs = np.zeros((m, k))
    xx = np.zeros((m, k, k))
    lo = np.full(m, np.inf)
    hi = np.full(m, -np.inf)
    for j in range(m):
        c0 = c1 = c2 = cm = 0
        s0 = s1 = q00 = q01 = q11 = 0.0
        low, high = np.inf, -np.inf
        for b in range(nc):
            v = np.float64(dosage[j, cols[b]])
            if v != v:
                cm += 1
                if want_x:
                    for a in range(k):
                        X[j, a, b] = 0.0
                continue
            c0 += v == 0.0
            c1 += v == 1.0
            c2 += v == 2.0
            s0 += v
            q00 += v * v
            low = min(low, v)
            high = max(high, v)
            if want_x:
                X[j, 0, b] = v
            if k == 2:
                d = 1.0 - abs(v - 1.0)
                s1 += d
                q01 += v * d
                q11 += d * d
                if want_x:
                    X[j, 1, b] = d
        counts[j, 0], counts[j, 1], counts[j, 2], counts[j, 3] = c0, c1, c2, cm
        xs[j, 0], xx[j, 0, 0], lo[j], hi[j] = s0, q00, low, high
        if k == 2:
            xs[j, 1], xx[j, 0, 1], xx[j, 1, 0], xx[j, 1, 1] = s1, q01, q01, q11
    return X, counts, xs, xx, lo, hi


@numba.njit(nogil=True, cache=True)
def _miss_sums(dosage, rows, cols, A):  # pragma: no cover (compiled)
    """(rows, q): for each row j, the sum of ``A[b]`` over the samples b where
    ``dosage[j, cols[b]]`` is missing."""
    out = np.zeros((rows.size, A.shape[1]))
    for a in range(rows.size):
        j = rows[a]
        for b in range(cols.size):
            v = dosage[j, cols[b]]
            if v != v:
                for q in range(A.shape[1]):
                    out[a, q] += A[b, q]
    return out


def variant_sums(dosage: np.ndarray, *, cols: np.ndarray | None = None,
                 F: np.ndarray | None = None, U: np.ndarray | None = None,
                 model: str = "additive") -> dict[str, np.ndarray]:
    """The sums of one block of variants on one chunk of samples (see the module).

    Parameters
    ----------
    dosage : (m, N) dosages (0..2), NaN for missing calls.
    cols : (N,) bool mask or indices of the samples to sum over (default all).
    F : (n_c, f) sample columns (covariates, traits) on those samples, or None.
    U : (n_c, r) eigenvectors' rows of those samples, or None.
    model : ``"genotypic"`` adds the dominance column (k = 2).

    Returns
    -------
    dict of the sums named in the module docstring.
    """
    dosage = np.asarray(dosage)
    if dosage.dtype not in (np.float32, np.float64):
        dosage = dosage.astype(np.float64)
    m, N = dosage.shape
    cols = (np.arange(N) if cols is None else np.flatnonzero(cols)
            if np.asarray(cols).dtype == bool else np.asarray(cols)).astype(np.int64)
    k = 2 if model == "genotypic" else 1
    X, counts, xs, xx, lo, hi = _piece(dosage, cols, k, F is not None or U is not None)
    out = {"counts": counts, "xs": xs, "xx": xx, "lo": lo, "hi": hi}
    miss = np.flatnonzero(counts[:, 3])
    X2 = X.reshape(m * k, X.shape[2])
    if F is not None:
        F = np.ascontiguousarray(F, dtype=np.float64)
        out["xf"] = (X2 @ F).reshape(m, k, F.shape[1])
        out["mf"] = np.zeros((m, F.shape[1]))
        out["mf"][miss] = _miss_sums(dosage, miss, cols, F)
    if U is not None:
        U = np.ascontiguousarray(U, dtype=np.float64)
        out["xu"] = (X2 @ U).reshape(m, k, U.shape[1])
        out["miss_rows"], out["mu"] = miss, _miss_sums(dosage, miss, cols, U)
    return out


def combine(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The sums of the union of disjoint sample chunks (each part :func:`variant_sums`
    of the same variants); new arrays, the parts are not modified."""
    first = parts[0]
    out = {}
    for key in first:
        if key == "lo":
            out[key] = np.minimum.reduce([p[key] for p in parts])
        elif key == "hi":
            out[key] = np.maximum.reduce([p[key] for p in parts])
        elif key == "miss_rows":
            rows = np.unique(np.concatenate([p[key] for p in parts]))
            mu = np.zeros((rows.size, first["mu"].shape[1]))
            for p in parts:
                mu[np.searchsorted(rows, p[key])] += p["mu"]
            out[key], out["mu"] = rows, mu
        elif key != "mu":
            total = first[key] + parts[1][key] if len(parts) > 1 else first[key].copy()
            for p in parts[2:]:
                total += p[key]
            out[key] = total
    return out


def impute_values(mean: np.ndarray, model: str = "additive") -> np.ndarray:
    """(m, k): each variant column's value at a missing call: the mean dosage (0 if
    unknown), and its dominance coding ``1 - |mean - 1|`` for the genotypic model."""
    mu = np.nan_to_num(np.asarray(mean, dtype=np.float64))
    if model == "genotypic":
        return np.column_stack([mu, 1.0 - np.abs(mu - 1.0)])
    return mu[:, None]


def filters(sums: dict[str, np.ndarray], n: int, *, WtW: np.ndarray | None = None,
            maf: float = 0.01, max_missing: float = 0.05,
            r2_max: float = R2_MAX) -> dict[str, np.ndarray]:
    """GEMMA's default variant filters from the sums over all n analysed samples.

    A variant is tested when it has observed calls, a missing rate at most
    ``max_missing``, an allele frequency in ``[maf, 1 - maf]``, is polymorphic
    (0/1/2 calls: at least two genotype classes and not all heterozygous;
    other dosages: not all equal), and, with ``WtW`` (c, c) for c > 1
    covariates (the first c columns of the sums' ``F``), is not explained by
    them (uncentred r2 above ``r2_max``, with missing calls at the mean).

    Returns
    -------
    dict with ``n_miss`` (m,) int, ``af`` (m,) frequency of the counted allele,
    ``mean`` (m,) mean observed dosage (NaN with none), ``tested`` (m,) bool.
    """
    n0, n1, n2, n_miss = sums["counts"].T
    n_obs = n - n_miss
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums["xs"][:, 0] / n_obs
    af = mean / 2.0
    tested = (n_obs > 0) & (n_miss / n <= max_missing)
    tested &= (af >= maf) & (af <= 1.0 - maf)
    integer = n0 + n1 + n2 + n_miss == n
    tested &= np.where(integer, (n0 + n1 > 0) & (n1 + n2 > 0) & (n0 + n2 > 0),
                       sums["hi"] > sums["lo"])
    if WtW is not None and WtW.shape[0] > 1:
        c = WtW.shape[0]
        mu = np.nan_to_num(mean)
        Wtx = sums["xf"][:, 0, :c] + mu[:, None] * sums["mf"][:, :c]
        v_w = (Wtx * np.linalg.solve(WtW, Wtx.T).T).sum(axis=1)
        v_x = sums["xx"][:, 0, 0] + mu * mu * n_miss
        with np.errstate(invalid="ignore", divide="ignore"):
            tested &= ~(v_w / v_x > r2_max)
    return {"n_miss": n_miss, "af": af, "mean": mean, "tested": tested}


def has_dominance(sums: dict[str, np.ndarray], mean: np.ndarray, n: int,
                  rtol: float = 1e-8) -> np.ndarray:
    """(m,) bool: with missing calls at the mean, the dominance column is not a linear
    function of the dosage (its residual sum of squares on ``[1, x]`` exceeds ``rtol``
    times its centred sum of squares).  With fewer than three genotype classes
    ``1 - |x - 1|`` is collinear with the intercept and ``x``; such variants cannot
    take a 2-df test.  Needs the sums of the genotypic model (k = 2)."""
    v = impute_values(mean, "genotypic")
    nm = sums["counts"][:, 3]
    s = sums["xs"] + v * nm[:, None]
    q = sums["xx"] + v[:, :, None] * v[:, None, :] * nm[:, None, None]
    sxx = q[:, 0, 0] - s[:, 0] * s[:, 0] / n
    sdd = q[:, 1, 1] - s[:, 1] * s[:, 1] / n
    sxd = q[:, 0, 1] - s[:, 0] * s[:, 1] / n
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = sdd - np.where(sxx > 0, sxd * sxd / sxx, 0.0)
    return resid > rtol * np.maximum(sdd, 1e-300)
