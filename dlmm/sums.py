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

__all__ = ["class_counts", "variant_sums", "combine", "filters", "has_dominance", "impute_values"]

#: Uncentred r2 of a variant on the covariates above which it is not tested (GEMMA's).
R2_MAX = 0.9999


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _class_counts_rows(dosage, rows):  # pragma: no cover (compiled)
    """Per row of ``dosage[rows]`` (rows: int64 indices), without a copy: counts of
    dosage 0, 1, 2 and missing (rows, 4), and the sum of the observed dosages (rows,).
    Branch-free, so it vectorises (the sum re-associated: 0.52 -> 0.13 us a variant at
    n = 400); NaN checks kept (no ``nnan``)."""
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


@numba.njit(nogil=True, cache=True)
def _from_counts(counts, total, k):  # pragma: no cover (compiled)
    """``xs``, ``xx``, ``lo``, ``hi`` of rows of 0/1/2 calls, from their counts (het:
    x = d = 1; hom: d = 0); other rows are overwritten by :func:`_other_rows`."""
    m = counts.shape[0]
    xs, xx = np.empty((m, k)), np.empty((m, k, k))
    lo, hi = np.full(m, np.inf), np.full(m, -np.inf)
    for a in range(m):
        c0, c1, c2 = counts[a, 0], counts[a, 1], counts[a, 2]
        xs[a, 0], xx[a, 0, 0] = total[a], c1 + 4.0 * c2
        if k == 2:
            xs[a, 1] = xx[a, 0, 1] = xx[a, 1, 0] = xx[a, 1, 1] = c1
        lo[a] = 0.0 if c0 else 1.0 if c1 else 2.0 if c2 else np.inf
        hi[a] = 2.0 if c2 else 1.0 if c1 else 0.0 if c0 else -np.inf
    return xs, xx, lo, hi


@numba.njit(nogil=True, cache=True)
def _other_rows(dosage, rows, k, xs, xx, lo, hi):  # pragma: no cover (compiled)
    """For rows with a dosage other than 0, 1, 2: ``xs``, ``xx``, ``lo``, ``hi`` in place
    (their rows ``a`` of ``dosage[rows[a]]``)."""
    for a in range(rows.size):
        j = rows[a]
        s0 = s1 = q00 = q01 = q11 = 0.0
        low, high = np.inf, -np.inf
        for b in range(dosage.shape[1]):
            v = np.float64(dosage[j, b])
            if v != v:
                continue
            d = 1.0 - abs(v - 1.0)
            s0 += v
            s1 += d
            q00 += v * v
            q01 += v * d
            q11 += d * d
            low, high = min(low, v), max(high, v)
        xs[a, 0], xx[a, 0, 0], lo[a], hi[a] = s0, q00, low, high
        if k == 2:
            xs[a, 1], xx[a, 0, 1], xx[a, 1, 0], xx[a, 1, 1] = s1, q01, q01, q11


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _cross(dosage, rows, FT, k):  # pragma: no cover (compiled)
    """``F'x0`` (and ``F'd0``) (rows, k, f) and ``F'miss`` (rows, f) of ``dosage[rows]``,
    with ``FT`` (f, n) = F'.  Branch-free over the samples, so it vectorises."""
    f, n = FT.shape
    xf = np.zeros((rows.size, k, f))
    mf = np.zeros((rows.size, f))
    for a in range(rows.size):
        j = rows[a]
        for q in range(f):
            sx = sd = sm = 0.0
            for b in range(n):
                v = np.float64(dosage[j, b])
                ok = v == v
                w = FT[q, b]
                sx += v * w if ok else 0.0
                sd += (1.0 - abs(v - 1.0)) * w if ok else 0.0
                sm += 0.0 if ok else w
            xf[a, 0, q], mf[a, q] = sx, sm
            if k == 2:
                xf[a, 1, q] = sd
    return xf, mf


@numba.njit(nogil=True, cache=True)
def _design(dosage, k):  # pragma: no cover (compiled)
    """The columns ``[x0, d0]`` (m, k, n) float64, missing calls at 0."""
    m, n = dosage.shape
    X = np.empty((m, k, n))
    for j in range(m):
        for b in range(n):
            v = np.float64(dosage[j, b])
            ok = v == v
            X[j, 0, b] = v if ok else 0.0
            if k == 2:
                X[j, 1, b] = 1.0 - abs(v - 1.0) if ok else 0.0
    return X


@numba.njit(nogil=True, cache=True)
def _miss_sums(dosage, rows, A):  # pragma: no cover (compiled)
    """(rows, q): for each row j, the sum of ``A[b]`` over the samples b where
    ``dosage[j, b]`` is missing."""
    out = np.zeros((rows.size, A.shape[1]))
    for a in range(rows.size):
        j = rows[a]
        for b in range(dosage.shape[1]):
            v = dosage[j, b]
            if v != v:
                for q in range(A.shape[1]):
                    out[a, q] += A[b, q]
    return out


def class_counts(dosage: np.ndarray, rows: np.ndarray | None = None):
    """Counts of dosage 0, 1, 2 and missing (m, 4) int64, and the sum of the observed
    dosages (m,), of ``dosage[rows]`` (int indices; default all), without a copy."""
    dosage = _floats(dosage)
    rows = np.arange(dosage.shape[0]) if rows is None else np.asarray(rows)
    return _class_counts_rows(dosage, rows.astype(np.int64))


def _floats(dosage):
    dosage = np.asarray(dosage)
    return dosage if dosage.dtype in (np.float32, np.float64) else dosage.astype(np.float64)


def variant_sums(dosage: np.ndarray, *, F: np.ndarray | None = None,
                 U: np.ndarray | None = None, model: str = "additive") -> dict[str, np.ndarray]:
    """The sums of one block of variants on one chunk of samples (see the module).

    Parameters
    ----------
    dosage : (m, n_c) dosages (0..2), NaN for missing calls, on the chunk's samples.
    F : (n_c, f) sample columns (covariates, traits) on those samples, or None.
    U : (n_c, r) eigenvectors' rows of those samples, or None.
    model : ``"genotypic"`` adds the dominance column (k = 2).

    Returns
    -------
    dict of the sums named in the module docstring.
    """
    dosage = _floats(dosage)
    m, n = dosage.shape
    k = 2 if model == "genotypic" else 1
    counts, total = class_counts(dosage)
    xs, xx, lo, hi = _from_counts(counts, total, k)
    other = np.flatnonzero(counts.sum(axis=1) != n)
    if other.size:
        parts = (np.empty((other.size, k)), np.empty((other.size, k, k)),
                 np.empty(other.size), np.empty(other.size))
        _other_rows(dosage, other, k, *parts)
        xs[other], xx[other], lo[other], hi[other] = parts
    out = {"counts": counts, "xs": xs, "xx": xx, "lo": lo, "hi": hi}
    rows = np.arange(m, dtype=np.int64)
    if F is not None:
        out["xf"], out["mf"] = _cross(dosage, rows, np.ascontiguousarray(
            np.asarray(F, dtype=np.float64).T), k)
    if U is not None:
        U = np.ascontiguousarray(U, dtype=np.float64)
        out["xu"] = (_design(dosage, k).reshape(m * k, n) @ U).reshape(m, k, U.shape[1])
        miss = np.flatnonzero(counts[:, 3])
        out["miss_rows"], out["mu"] = miss, _miss_sums(dosage, miss, U)
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
            maf: float = 0.01, max_missing: float = 0.05, r2_max: float = R2_MAX,
            model: str = "additive") -> dict[str, np.ndarray]:
    """GEMMA's default variant filters from the sums over all n analysed samples.

    A variant is tested when it has observed calls, a missing rate at most
    ``max_missing``, an allele frequency in ``[maf, 1 - maf]``, is polymorphic
    (0/1/2 calls: at least two genotype classes and not all heterozygous;
    other dosages: not all equal), and, with ``WtW`` (c, c) for c > 1
    covariates (the first c columns of the sums' ``F``), is not explained by
    them (uncentred r2 above ``r2_max``, with missing calls at the mean); for
    the genotypic model (sums with the dominance column) also
    :func:`has_dominance`.

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
    if model == "genotypic":
        tested &= has_dominance(sums, mean, n)
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
