"""Wald and score tests beside the LRT (GEMMA -lmm 4) with covariates, against real GEMMA
on mouse_hs1940, and the kernels' Wald/score algebra against independent computations."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dlmm import kernels

from conftest import gemma_log


def test_all_tests_with_covariates_match_gemma_lmm4(mouse, mouse_lmm4, tmp_path):
    out = tmp_path / "m4"
    r = subprocess.run([sys.executable, "-m", "dlmm.cli", "scan", str(mouse["prefix"]),
                        "--kinship", str(mouse["kinship"]), "--covar", str(mouse_lmm4["covar"]),
                        "--test", "all", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "no constant column" not in r.stderr  # the intercept is there
    ours = pd.read_csv(f"{out}.assoc.tsv", sep="\t")
    gemma = pd.read_csv(mouse_lmm4["assoc"], sep="\t")
    # GEMMA -lmm 4's columns, in its order, then ours
    assert list(ours.columns[:len(gemma.columns)]) == list(gemma.columns)
    assert list(ours["rs"]) == list(gemma["rs"]) and len(ours) == 10768
    # measured: max 2.1e-7 (LRT, score), median 1.9e-8 (all three); the Wald test's max
    # is 3.1e-5 because GEMMA's REML lambda is converged only to 8e-6 (relative): see
    # test_wald_at_gemmas_lambda_matches_gemma
    for p, top in (("p_wald", 5e-5), ("p_lrt", 5e-7), ("p_score", 5e-7)):
        d = np.abs(np.log10(ours[p]) - np.log10(gemma[p]))
        assert d.max() <= top, (p, d.max())
        assert np.median(d) <= 5e-8, (p, np.median(d))
    # GEMMA prints 7 significant digits
    np.testing.assert_allclose(ours["l_remle"], gemma["l_remle"], rtol=1e-4)
    np.testing.assert_allclose(ours["l_mle"], gemma["l_mle"], rtol=1e-4)
    np.testing.assert_allclose(ours["logl_H1"], gemma["logl_H1"], rtol=1e-6)
    np.testing.assert_allclose(ours["se"], gemma["se"], rtol=1e-5)
    np.testing.assert_allclose(ours["beta"], gemma["beta"], rtol=1e-4, atol=1e-6)
    # the REML null figures (pve and its se) to the digits GEMMA's log prints
    ours_log, glog = gemma_log(f"{out}.log.txt"), gemma_log(mouse_lmm4["log"])
    for key in ("pve estimate in the null model", "se(pve) in the null model",
                "REMLE log-likelihood in the null model", "MLE log-likelihood in the null model",
                "vg estimate in the null model", "ve estimate in the null model",
                "number of covariates", "number of analyzed individuals"):
        assert ours_log[key] == glog[key], (key, ours_log[key], glog[key])
    plain = gemma_log(mouse["log"])  # -lmm 2 without the covariate: the covariate matters
    assert plain["pve estimate in the null model"] != glog["pve estimate in the null model"]


def test_wald_at_gemmas_lambda_matches_gemma(mouse, mouse_lmm4):
    """The Wald statistic apart from the REML optimisation: at GEMMA's own printed
    l_remle it gives GEMMA's p_wald to 5.8e-7 (measured; 3.1e-5 at dlmm's l_remle),
    and dlmm's l_remle is the better optimum (GEMMA's is converged to 8e-6)."""
    import dlmm

    gemma = pd.read_csv(mouse_lmm4["assoc"], sep="\t")
    ds = dlmm.read_plink(mouse["prefix"])
    y = dlmm.read_fam_phenotype(mouse["prefix"], 1)
    W = np.loadtxt(mouse_lmm4["covar"])
    K = np.loadtxt(mouse["kinship"])
    keep = ~np.isnan(y)
    null = dlmm.fit_null_model(y[keep], W[keep], kernels.center_kinship(K[np.ix_(keep, keep)]))
    where = {v: i for i, v in enumerate(ds["variant_id"].values.astype(str))}
    dosage = ds["call_dosage"].values[[where[v] for v in gemma["rs"]]][:, keep]
    x = kernels.take(dosage, fill=np.nan_to_num(kernels.block_stats(dosage)["mean"]))
    Xr = kernels.rotate(null.U, x)[:, None, :]
    lam_g = gemma["l_remle"].to_numpy()
    wa = kernels.wald_test(null.s, null.Wr, null.yr, Xr, lam_g)
    d = np.abs(np.log10(wa["p"]) - np.log10(gemma["p_wald"]))
    assert d.max() <= 1e-6 and np.median(d) <= 5e-8, (d.max(), np.median(d))
    # the REML lnL at dlmm's lambda is at least GEMMA's (measured: up to 1.7e-9 above)
    fit = kernels.fit_exact(null.s, null.Wr, null.yr, Xr, reml=True, start=null.reml_lam)
    F = np.column_stack([null.Wr, null.yr])
    ones = kernels._grams(np.zeros(len(Xr)), null.s, F, Xr)[0]
    at_g = kernels._grams(lam_g, null.s, F, Xr)
    logl_g = kernels._profile(at_g[0], at_g[0], at_g[0], *at_g[1], null.n, True,
                              np.linalg.slogdet(ones[:, :-1, :-1])[1])[0]
    assert (fit.logl - logl_g).min() >= -1e-10
    assert np.abs(fit.lam / lam_g - 1).max() <= 2e-5  # GEMMA prints 7 digits


@pytest.fixture
def small():
    rng = np.random.default_rng(3)
    n, m = 120, 40
    G = rng.normal(size=(n, 30))
    K = G @ G.T / 30
    s, U = kernels.eigh_kinship(K)
    W = np.column_stack([np.ones(n), rng.normal(size=n)])
    X = rng.binomial(2, 0.3, size=(m, n)).astype(float)
    y = W @ [1.0, 0.5] + 1.0 * X[0] + rng.multivariate_normal(np.zeros(n), 0.6 * K + np.eye(n))
    rot = lambda a: kernels.rotate(U, a)  # noqa: E731
    return {"n": n, "s": s, "W": W, "Wr": rot(W.T).T, "yr": rot(y), "y": y, "X": X,
            "Xr": rot(X)[:, None, :], "Xg": kernels.variant_design(X, "genotypic"),
            "U": U}


def test_wald_at_zero_lambda_is_the_ols_f_test(small):
    # lambda = 0: H = I, so the Wald F is the OLS (t-test)^2 with n - c - 1 df
    n, m = small["n"], small["X"].shape[0]
    wa = kernels.wald_test(small["s"], small["Wr"], small["yr"], small["Xr"], np.zeros(m))
    for j in (0, 5, 17):
        A = np.column_stack([small["W"], small["X"][j]])
        b, rss, *_ = np.linalg.lstsq(A, small["y"], rcond=None)
        sigma2 = rss[0] / (n - A.shape[1])
        se = np.sqrt(sigma2 * np.linalg.inv(A.T @ A)[-1, -1])
        assert wa["beta"][j, 0] == pytest.approx(b[-1], rel=1e-10)
        assert wa["se"][j, 0] == pytest.approx(se, rel=1e-10)
        assert wa["p"][j] == pytest.approx(stats.f.sf((b[-1] / se) ** 2, 1, n - 3), rel=1e-8)


def test_wald_and_score_equal_dense_gls(small):
    # 2-df (genotypic) tests against dense GLS algebra with V = lam K + I
    n, s, U = small["n"], small["s"], small["U"]
    Xg = small["Xg"][:6]
    Xr = kernels.rotate(U, Xg.reshape(-1, n)).reshape(Xg.shape)
    lam = np.linspace(0.3, 2.0, 6)
    wa = kernels.wald_test(s, small["Wr"], small["yr"], Xr, lam)
    sc = kernels.score_test(s, small["Wr"], small["yr"], Xr, 0.8)
    K = U @ np.diag(s) @ U.T
    W, y = small["W"], small["y"]

    def gls(Vi, A):
        cov = np.linalg.inv(A.T @ Vi @ A)
        b = cov @ A.T @ Vi @ y
        r = y - A @ b
        return b, cov, r @ Vi @ r

    for j in range(6):
        A = np.column_stack([W, Xg[j].T])
        Vi = np.linalg.inv(lam[j] * K + np.eye(n))
        b, cov, rss = gls(Vi, A)
        se2 = rss / (n - 4)
        bx, Vx = b[2:], cov[2:, 2:] * se2
        F = bx @ np.linalg.solve(Vx, bx) / 2
        np.testing.assert_allclose(wa["beta"][j], bx, rtol=1e-8)
        np.testing.assert_allclose(wa["se"][j], np.sqrt(np.diag(Vx)), rtol=1e-8)
        assert wa["stat"][j] == pytest.approx(F, rel=1e-8)
        # score: n (rss0 - rss1) / rss0 / k at the null lambda
        Vi0 = np.linalg.inv(0.8 * K + np.eye(n))
        rss1 = gls(Vi0, A)[2]
        rss0 = gls(Vi0, W)[2]
        assert sc["stat"][j] == pytest.approx(n * (rss0 - rss1) / rss0 / 2, rel=1e-8)
        assert sc["p"][j] == pytest.approx(stats.f.sf(sc["stat"][j], 2, n - 4), rel=1e-8)


def test_wald_se_is_the_reml_fit_se(small):
    # two routes to GEMMA's se: the REML fit's own covariance and the Wald kernel
    fit = kernels.fit_exact(small["s"], small["Wr"], small["yr"], small["Xr"], reml=True)
    wa = kernels.wald_test(small["s"], small["Wr"], small["yr"], small["Xr"], fit.lam)
    np.testing.assert_allclose(wa["beta"][:, 0], fit.beta[:, 2], rtol=1e-8)
    np.testing.assert_allclose(wa["se"][:, 0], fit.se[:, 2], rtol=1e-8)
    assert wa["p"][0] < 1e-3  # the simulated effect is found


def test_default_is_lrt_and_bad_test_is_a_clear_error(tmp_path):
    from dlmm.errors import OptionError
    from dlmm.options import ScanOptions
    from dlmm.schema import parse_tests

    assert parse_tests("lrt") == ("lrt",)
    assert parse_tests("all") == ("lrt", "wald", "score")
    assert parse_tests("score,wald") == ("wald", "score")
    assert parse_tests("ols,all") == ("lrt", "wald", "score", "ols")
    assert ScanOptions().tests == ("lrt",)
    assert kernels.result_columns("additive") == kernels.result_columns("additive", ("lrt",))
    with pytest.raises(OptionError, match="unknown test 'wlad'") as e:
        ScanOptions(tests="wlad")
    assert e.value.as_flag().startswith("--test: ")
