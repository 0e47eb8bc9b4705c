"""Low-rank mode (FaST-LMM): the kinship from k variants (``--kinship-variants``) or
truncated to k eigenpairs (``--kinship-rank``).

* against real GEMMA: GEMMA's ``-gk 1`` kinship of the chosen variants (PLINK
  ``--extract``), ``gemma -lmm 4`` with covariates on mouse_hs1940;
* against dlmm's full-rank path given that same kinship (rank(K) = k): equal;
* ``kinship_rank`` on a full-rank kinship equals the full-rank scan of the
  truncated kinship ``U_k S_k U_k^T``, for every chunking, both solvers, two traits;
* the GRM factor: ``Z Z^T`` is the GRM of the chosen variants.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import dlmm
from dlmm import kernels
from dlmm.errors import InputError
from dlmm.simulate import simulate_population

from conftest import gemma_log, need_peer


def _dlmm(*args):
    r = subprocess.run([sys.executable, "-m", "dlmm.cli", "scan", *map(str, args), "--no-plot"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def test_kinship_variants_match_gemma_and_the_full_rank_path(mouse, mouse_lmm4, tmp_path):
    need_peer("plink1.9", shutil.which("plink1.9") is not None)
    bim = pd.read_csv(f"{mouse['prefix']}.bim", sep="\t", header=None)
    # every 25th variant (PLINK drops those with a negative position: so do we here)
    ids = bim[1][bim[3] >= 0].to_numpy()[::25]
    (tmp_path / "kv.txt").write_text("\n".join(ids) + "\n")
    run = dict(cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["plink1.9", "--bfile", str(mouse["prefix"]), "--extract", "kv.txt",
                    "--make-bed", "--out", "sub"], **run)
    subprocess.run(["gemma", "-bfile", "sub", "-gk", "1", "-o", "sub"], **run)
    K = tmp_path / "output/sub.cXX.txt"
    subprocess.run(["gemma", "-bfile", str(mouse["prefix"]), "-k", str(K), "-c",
                    str(mouse_lmm4["covar"]), "-lmm", "4", "-n", "1", "-o", "lr"], **run)
    low, full = tmp_path / "low", tmp_path / "full"
    common = [mouse["prefix"], "--covar", mouse_lmm4["covar"], "--test", "all"]
    r = _dlmm(*common, "--kinship-variants", tmp_path / "kv.txt", "--out", low)
    _dlmm(*common, "--kinship", K, "--out", full)
    assert not list(tmp_path.glob(".dlmm-factor-*"))  # U1 on disk beside them, removed

    # the kinship is the GRM of the variants that pass the filters, as GEMMA's
    n_used = int(gemma_log(tmp_path / "output/sub.log.txt")["number of analyzed SNPs/var"])
    ours_log = gemma_log(f"{low}.log.txt")
    assert f"the GRM of {n_used} variants" in r.stdout
    rank = int(r.stdout.split("low-rank kinship: rank ")[1].split(",")[0])
    assert n_used - 2 <= rank <= n_used < 1410  # centring takes one dimension
    # against GEMMA -lmm 4 with that kinship
    ours = pd.read_csv(f"{low}.assoc.tsv", sep="\t")
    gemma = pd.read_csv(tmp_path / "output/lr.assoc.txt", sep="\t")
    assert list(ours["rs"]) == list(gemma["rs"])
    # measured: max 2.1e-7 (LRT), 4.7e-7 (score), 2.0e-5 (Wald: GEMMA's REML lambda is
    # converged only to ~1e-5, see test_wald_score), median 2.1e-8 .. 2.5e-8
    # (p within 1e-5 of 1 is a statistic below the likelihood's rounding, ~1e-9: noise,
    # which GEMMA prints as 1, left out)
    for p, top in (("p_wald", 3e-5), ("p_lrt", 5e-7), ("p_score", 1e-6)):
        sure = (gemma[p] < 1 - 1e-5) & (ours[p] < 1 - 1e-5)
        assert sure.mean() > 0.99
        diff = np.abs(np.log10(ours[p][sure]) - np.log10(gemma[p][sure]))
        assert diff.max() <= top and np.median(diff) <= 5e-8, (p, diff.max(),
                                                               np.median(diff))
    glog = gemma_log(tmp_path / "output/lr.log.txt")
    for key in ("pve estimate in the null model", "se(pve) in the null model",
                "REMLE log-likelihood in the null model", "MLE log-likelihood in the null model"):
        assert ours_log[key] == glog[key], (key, ours_log[key], glog[key])
    # against the full-rank path given GEMMA's kinship (rank(K) = k): equal
    a, b = xr.open_zarr(f"{low}.zarr"), xr.open_zarr(f"{full}.zarr")
    assert a["null_kinship_rank"].values.tolist() == [rank]
    assert b["null_kinship_rank"].values.tolist() == [1410]
    for v in ("variant_lmm_p_value", "variant_lmm_p_value_wald", "variant_lmm_p_value_score",
              "variant_lmm_logl", "variant_lmm_lambda", "variant_lmm_beta",
              "variant_lmm_beta_se", "variant_lmm_lambda_reml"):
        x, y = a[v].values, b[v].values  # GEMMA's text kinship has ~7 digits
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6 * np.nanmax(np.abs(y)), err_msg=v)


@pytest.fixture(scope="module")
def sim():
    ds, y = simulate_population(240, 600, chunk_size=600, n_causal=50, seed=5)
    ds = ds.compute()
    rng = np.random.default_rng(6)
    Y = np.column_stack([y, y[rng.permutation(y.size)]])
    Y[rng.choice(240, 7, replace=False)] = np.nan  # both traits, same samples
    W = np.column_stack([np.ones(240), rng.normal(size=240)])
    with dask.config.set(scheduler="threads"):
        K = dlmm.grm(ds).values
    return ds, Y, W, K


def _scan(ds, Y, chunk, **kw):
    ds = ds.assign(call_dosage=ds["call_dosage"].chunk({"variants": chunk}))
    with dask.config.set(scheduler="threads"):
        return dlmm.scan(ds, Y, **kw).compute()


@pytest.mark.parametrize("chunk", [600, 250, 77])
@pytest.mark.parametrize("solver", ["exact", "em"])
def test_kinship_rank_equals_the_full_scan_of_the_truncated_kinship(sim, chunk, solver):
    ds, Y, W, K = sim
    k = 40
    samples = ~np.isnan(Y[:, 0])
    s, U = kernels.eigh_kinship(kernels.center_kinship(K[np.ix_(samples, samples)]), rank=k)
    assert s.shape == (k,) and (s > 0).all()
    Kk = np.zeros_like(K)
    Kk[np.ix_(samples, samples)] = (U * s) @ U.T  # rank k, centred (U is orthogonal to 1)
    tests = "all" if solver == "exact" else "lrt"
    kw = dict(covariates=W, solver=solver, tests=tests)
    low = _scan(ds, Y, chunk, kinship=K, kinship_rank=k, **kw)
    full = _scan(ds, Y, 600, kinship=Kk, **kw)
    assert low["null_kinship_rank"].values.tolist() == [k, k]
    assert full["null_kinship_rank"].values.tolist() == [233, 233]
    for name in ("null_mle_logl", "null_pve", "null_pve_se"):
        np.testing.assert_allclose(low[name].values, full[name].values, rtol=1e-9)
    tested = low["variant_lmm_tested"].values
    assert tested.sum() > 500 and (tested == full["variant_lmm_tested"].values).all()
    for v in low.data_vars:
        a, b = low[v].values, full[v].values
        if a.dtype.kind not in "fib" or "iterations" in v or v == "null_kinship_rank":
            continue  # ids; the iteration counts (the same optimum, a step more or
            # fewer); the rank (checked above)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12, err_msg=v)
    # and the truncation matters: the full kinship gives other results
    other = _scan(ds, Y, 600, kinship=K, **kw)
    assert np.abs(other["variant_lmm_logl"].values - low["variant_lmm_logl"].values)[
        tested].max() > 1e-3


@pytest.mark.parametrize("chunk", [600, 130])
def test_grm_factor_is_the_grm_of_the_chosen_variants(sim, chunk):
    ds, Y, W, _ = sim
    rng = np.random.default_rng(8)
    ds = ds.copy()
    x = ds["call_dosage"].values.copy()
    x[rng.random(x.shape) < 0.01] = np.nan  # missing calls, imputed at the mean
    ds["call_dosage"] = (("variants", "samples"), x)
    ds = ds.assign(call_dosage=ds["call_dosage"].chunk({"variants": chunk}))
    idx = np.sort(rng.choice(600, 90, replace=False))
    samples = ~np.isnan(Y[:, 0])
    with dask.config.set(scheduler="threads"):
        f = dlmm.grm_factor(ds, idx, samples, W[samples]).compute()
        ref = dlmm.grm(ds.isel(variants=idx), samples, W[samples], subset=True).values
    Z = f["grm_factor"].values
    assert Z.shape == (samples.sum(), 90)
    assert 80 <= f["kinship_variant_used"].sum() <= 90  # a few fail the MAF filter
    assert (f["kinship_variant_index"].values == idx).all()
    np.testing.assert_allclose(Z @ Z.T, ref, rtol=1e-10, atol=1e-12)


def test_kinship_variants_failing_every_filter_is_an_input_error(sim):
    ds, Y, W, _ = sim
    mono = ds.assign(call_dosage=ds["call_dosage"] * 0)  # every variant monomorphic
    with pytest.raises(InputError, match="none of the 5 kinship variants passes the filters"):
        _scan(mono, Y[:, 0], 600, kinship_variants=np.arange(5))
