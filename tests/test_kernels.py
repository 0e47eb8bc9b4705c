"""Solver properties on seeded simulations (independent checks, no stored numbers)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from dlmm import kernels
from dlmm.simulate import simulate_families


def _setup(K, y, dosage, center=False, model="additive"):
    if center:
        K = kernels.center_kinship(K)
    s, U = kernels.eigh_kinship(K)
    n = y.size
    W = np.ones((n, 1))
    X = kernels.variant_design(dosage, model)
    m, k, _ = X.shape
    Xr = kernels.rotate(U, X.reshape(m * k, n)).reshape(m, k, n)
    return s, kernels.rotate(U, W.T).T, kernels.rotate(U, y), Xr


def _grm(dosage):
    x = dosage - dosage.mean(axis=1, keepdims=True)
    return x.T @ x / x.shape[0]


def _sim(seed=3, m=40):
    return simulate_families(n_families=40, n_children=3, n_variants=m, n_causal=3, effect=0.8,
                             sigma_sq_a=1.5, sigma_sq_e=1.0, mean=0.0, seed=seed)


def _profile_logl(t, s, W, y, x):
    """Independent ML profile: dense GLS at lambda = exp(t) (no shared code)."""
    lam = np.exp(t)
    h = lam * s + 1.0
    X = np.column_stack([W, x]) if x is not None else W
    Xw = X / h[:, None]
    b = np.linalg.solve(X.T @ Xw, Xw.T @ y)
    r = y - X @ b
    n = y.size
    se2 = (r * r / h).sum() / n
    return -0.5 * (n * np.log(2 * np.pi * se2) + np.log(h).sum() + n)


@pytest.mark.parametrize("kin", ["pedigree", "centred_grm"])
@pytest.mark.parametrize("model", ["additive", "genotypic"])
def test_exact_is_the_ml_optimum(kin, model):
    sim = _sim()
    K = sim["kinship"] if kin == "pedigree" else _grm(sim["dosage"])
    dosage = sim["dosage"]
    if model == "genotypic":  # a 2-df fit needs all three genotype classes
        dosage = dosage[[len(np.unique(r)) == 3 for r in dosage]]
    s, Wr, yr, Xr = _setup(K, sim["phenotype"], dosage, center=kin != "pedigree",
                           model=model)
    fit = kernels.fit_exact(s, Wr, yr, Xr)
    lo, hi = kernels.LOG_LAMBDA_BOUNDS
    for j in range(0, Xr.shape[0], 7):
        x = Xr[j].T
        grid = np.linspace(lo, hi, 401)
        vals = [_profile_logl(t, s, Wr, yr, x) for t in grid]
        t0 = grid[int(np.argmax(vals))]
        res = optimize.minimize_scalar(lambda t: -_profile_logl(t, s, Wr, yr, x),
                                       bounds=(max(lo, t0 - 0.1), min(hi, t0 + 0.1)),
                                       method="bounded", options={"xatol": 1e-9})
        assert fit.logl[j] >= -res.fun - 1e-9
        assert fit.logl[j] == pytest.approx(-res.fun, abs=1e-7)
        assert fit.logl[j] == pytest.approx(_profile_logl(np.log(fit.lam[j]), s, Wr, yr, x),
                                            abs=1e-9)


@pytest.mark.parametrize("kin", ["pedigree", "centred_grm"])
def test_em_from_null_agrees_with_exact(kin):
    """EM started at the null fit, run to a tight tolerance, reaches the exact LRT."""
    sim = _sim(seed=5)
    K = sim["kinship"] if kin == "pedigree" else _grm(sim["dosage"])
    s, Wr, yr, Xr = _setup(K, sim["phenotype"], sim["dosage"], center=kin != "pedigree")
    if kin == "centred_grm":
        assert (s == 0).sum() >= 1  # singular kinship
    n = s.size
    null_x = np.zeros((1, 0, n))
    null = kernels.fit_exact(s, Wr, yr, null_x)
    ex = kernels.fit_exact(s, Wr, yr, Xr)
    start = (np.append(null.beta[0], 0.0), null.sigma_sq_a[0], null.sigma_sq_e[0])
    em = kernels.fit_em(s, Wr, yr, Xr, start=start, tol=1e-12, max_iter=200_000)
    em_null = kernels.fit_em(s, Wr, yr, null_x, start=(null.beta[0], null.sigma_sq_a[0],
                                                      null.sigma_sq_e[0]),
                             tol=1e-12, max_iter=200_000)
    stat_ex, _ = kernels.lrt(ex.logl, null.logl[0], 1)
    stat_em, _ = kernels.lrt(em.logl, em_null.logl[0], 1)
    assert np.abs(stat_em - stat_ex).max() < 1e-4
    assert np.all(em.logl <= ex.logl + 1e-9)


def test_eigen_zeroing_and_rotation():
    sim = _sim()
    K = kernels.center_kinship(_grm(sim["dosage"]))
    s, U = kernels.eigh_kinship(K)
    # a GRM of 40 variants on 200 samples has rank 40: the rest are exactly 0
    assert (s > 0).sum() == np.linalg.matrix_rank(K) == sim["dosage"].shape[0]
    np.testing.assert_allclose(U @ np.diag(s) @ U.T, K, atol=1e-10)
    y = sim["phenotype"]
    np.testing.assert_allclose(kernels.rotate(U, y), U.T @ y)


@pytest.mark.parametrize("model", ["additive", "genotypic"])
def test_float32_rotation_close_to_float64(model):
    """A float32 U rotates the block in single precision: the results move (the path is
    taken) but by little; scan_block refuses a thin U (the low-rank mode is dlmm.lowrank)."""
    sim = _sim(m=60)
    K = kernels.center_kinship(_grm(sim["dosage"]))
    s, U = kernels.eigh_kinship(K)
    n = U.shape[0]
    W = np.ones((n, 1))
    y = sim["phenotype"]
    yr, Wr = kernels.rotate(U, y), kernels.rotate(U, W.T).T
    null = kernels.fit_exact(s, Wr, yr, np.zeros((1, 0, n)))
    kw = dict(samples=np.ones(n, dtype=bool), s=s, W=W, Wr=Wr, yr=yr,
              logl_null=float(null.logl[0]), model=model, tests=("lrt", "wald", "score"),
              lam_null=float(null.lam[0]))
    x = sim["dosage"].astype(np.float32)
    ref = kernels.scan_block(x, U=U, **kw)
    got = kernels.scan_block(x, U=U.astype(np.float32), **kw)
    cols = kernels.result_columns(model, ("lrt", "wald", "score"))
    tested = ref[:, cols.index("tested")] == 1
    assert tested.sum() > 40
    for c in ("p_lrt", "p_wald", "p_score"):
        p0, p1 = ref[tested, cols.index(c)], got[tested, cols.index(c)]
        d = np.abs(np.log10(p0) - np.log10(p1))
        assert 0 < d.max() < 1e-4, (c, d.max())
    np.testing.assert_allclose(got[tested, cols.index("logl_H1")],
                               ref[tested, cols.index("logl_H1")], rtol=1e-7)
    with pytest.raises(ValueError, match="full eigenbasis"):
        kernels.scan_block(x, U=U[:, -30:].astype(np.float32), **dict(kw, s=s[-30:],
                           Wr=Wr[-30:], yr=yr[-30:]))


def test_block_stats_filters_like_gemma():
    x = np.array([
        [0, 1, 2, 1, 0, 0, 1, 2, 1, 0],        # fine
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],        # all heterozygous: dropped
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],        # monomorphic: dropped
        [0, 1, np.nan, 1, 0, 0, 1, 2, 1, 0],   # 10% missing: dropped
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1],        # af 0.05: kept
    ], dtype=float)
    st = kernels.block_stats(x, maf=0.01, max_missing=0.05)
    np.testing.assert_array_equal(st["tested"], [True, False, False, False, True])
    np.testing.assert_array_equal(st["n_miss"], [0, 0, 0, 1, 0])
    assert st["af"][4] == pytest.approx(0.05)
    assert not kernels.block_stats(x, maf=0.1)["tested"][4]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_take_selects_converts_and_fills(dtype):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, (40, 30)).astype(dtype)
    x[rng.random(x.shape) < 0.1] = np.nan
    rows, cols = rng.random(40) < 0.7, rng.random(30) < 0.6
    fill = rng.normal(size=40)
    got = kernels.take(x, rows=rows, cols=cols, fill=fill)
    ref = x.astype(np.float64)[rows][:, cols]
    ref = np.where(np.isnan(ref), fill[rows][:, None], ref)
    assert got.dtype == np.float64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref)
    kept = kernels.take(x, cols=np.flatnonzero(cols))  # indices, NaN kept
    np.testing.assert_array_equal(kept, x.astype(np.float64)[:, cols])


@pytest.mark.parametrize("standardise", [False, True])
@pytest.mark.parametrize("missing", [0.1, 0.0])
def test_grm_block_with_missing_calls_and_unused_variants(standardise, missing):
    """Each used variant is centred at its own mean, a missing call at that mean (0 once
    centred), whichever variants before it are not used; the chosen samples' entries.
    Without missing calls (centred GRM: exact float32 products, centred after)."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (300, 40)).astype(np.float32)
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
        x[7] = np.nan  # all missing: centred to 0
    use = rng.random(300) < 0.6
    cols = rng.random(40) < 0.7
    xs = x[use].astype(np.float64)
    mean = np.nan_to_num(np.nanmean(np.where(np.isnan(xs).all(1)[:, None], 0, xs), axis=1))
    xc = np.where(np.isnan(xs), 0.0, xs - mean[:, None])
    if standardise:
        var = (xc * xc).sum(axis=1) / 40
        xc = xc / np.sqrt(np.where(var > 0, var, 1.0))[:, None]
    for c in (None, cols):
        want = xc.T @ xc if c is None else xc[:, c].T @ xc[:, c]
        k = want.shape[0]
        got, q = kernels.grm_total(kernels.grm_block(x, use, standardise, cols=c), k)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
        assert q == use.sum() and np.array_equal(got, got.T)
        # the same sum from two blocks added into one accumulator (one with a missing
        # call, one without: the float64 and the float32 paths mixed)
        acc = kernels.grm_accumulator(k)
        for part in (slice(0, 150), slice(150, 300)):
            kernels.grm_block(x[part], use[part], standardise, cols=c, acc=acc)
        got2, q2 = kernels.grm_total(acc, k)
        np.testing.assert_allclose(got2, want, rtol=1e-12, atol=1e-10)
        assert q2 == use.sum() and np.array_equal(got2, got2.T)


def test_grm_block_sums_in_slabs(monkeypatch):
    """Column slabs narrower than the matrix (as at biobank n), on one thread or shared
    among three, give the same sum, exactly symmetric (the float32 products of 0/1/2
    calls are exact)."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, (200, 301)).astype(np.float32)
    use = np.ones(200, dtype=bool)
    xc = x.astype(np.float64) - x.mean(axis=1, keepdims=True, dtype=np.float64)
    monkeypatch.setattr(kernels, "_SLAB_ELEMENTS", 301 * 7)  # slabs of 64 columns
    for threads in (1, 3):  # the slabs shared among threads
        got, _ = kernels.grm_total(kernels.grm_block(x, use, threads=threads), 301)
        np.testing.assert_allclose(got, xc.T @ xc, rtol=1e-12, atol=1e-9)
        assert np.array_equal(got, got.T)
