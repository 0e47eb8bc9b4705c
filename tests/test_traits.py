"""Many phenotypes in one scan: a `traits` dimension, one TSV per phenotype, and results
identical to separate scans (traits missing on the same samples share the eigenbasis)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import dlmm
from dlmm import inputs, io
from dlmm.demo import write_demo_plink

from conftest import log_body


def cli(*args):
    return subprocess.run([sys.executable, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("traits")
    sim = write_demo_plink(d / "sim", seed=21, n_families=50, n_variants=1200)
    ds = io.read_plink(d / "sim")
    n = ds.sizes["samples"]
    rng = np.random.default_rng(4)
    y1 = io.read_fam_phenotype(d / "sim", 1)
    y2 = y1 + rng.normal(size=n)            # same samples as y1
    y3 = rng.normal(size=n) * 2 + 0.5       # other samples: some missing
    y3[rng.choice(n, 25, replace=False)] = np.nan
    Y = np.column_stack([y1, y2, y3])
    np.savetxt(d / "pheno.txt", Y, fmt="%.8g")
    with open(d / "covar.txt", "w") as fh:
        for v in rng.normal(size=n):
            fh.write(f"1 {v:.6f}\n")
    return {"prefix": d / "sim", "pheno": d / "pheno.txt", "covar": d / "covar.txt",
            "Y": np.loadtxt(d / "pheno.txt"), "sim": sim}


def test_trait_groups(data):
    ds = io.read_plink(data["prefix"])
    groups = inputs.trait_groups(inputs.prepare_inputs(ds, data["Y"]))
    assert [list(g) for g in groups] == [[0, 1], [2]]


def test_many_phenotypes_equal_separate_scans(data, tmp_path):
    common = [data["prefix"], "--pheno", data["pheno"], "--covar", data["covar"],
              "--test", "all", "--chunk-size", 500]
    r = cli("scan", *common, "--pheno-col", "1,2,3", "--out", tmp_path / "all")
    assert r.returncode == 0, r.stderr
    res = xr.open_zarr(tmp_path / "all.zarr")
    assert res["variant_lmm_p_value_wald"].dims == ("variants", "traits")
    assert list(res["trait_id"].values) == ["pheno1", "pheno2", "pheno3"]
    for j in (1, 2, 3):
        r = cli("scan", *common, "--pheno-col", j, "--out", tmp_path / f"one{j}")
        assert r.returncode == 0, r.stderr
        together = pd.read_csv(tmp_path / f"all.pheno{j}.assoc.tsv", sep="\t")
        alone = pd.read_csv(tmp_path / f"one{j}.assoc.tsv", sep="\t")
        assert len(alone) > 1000
        # each run eigendecomposes the kinship anew, and LAPACK with threads is not
        # bit-reproducible: equal to 1e-8, not bit for bit
        pd.testing.assert_frame_equal(together, alone, check_exact=False, rtol=1e-8)
        log_t = log_body(tmp_path / f"all.pheno{j}.log.txt")
        log_a = log_body(tmp_path / f"one{j}.log.txt")
        assert log_t == log_a  # the null fits too
    # the traits really differ (a mix-up would show)
    t1 = pd.read_csv(tmp_path / "all.pheno1.assoc.tsv", sep="\t")
    t3 = pd.read_csv(tmp_path / "all.pheno3.assoc.tsv", sep="\t")
    assert not np.allclose(t1["p_wald"][:100], t3["p_wald"][:100])


def test_python_api_traits_dimension(data):
    ds = io.read_plink(data["prefix"], chunk_size=400)
    table = pd.DataFrame(data["Y"][:, :2], columns=["a", "b"],
                         index=pd.Index(ds["sample_id"].values.astype(str), name="IID"))
    res = dlmm.scan(ds, table).compute()
    assert res["variant_lmm_p_value"].dims == ("variants", "traits")
    assert list(res["trait_id"].values) == ["a", "b"]
    one = dlmm.scan(ds, data["Y"][:, 1]).compute()
    np.testing.assert_allclose(res["variant_lmm_p_value"].isel(traits=1),
                               one["variant_lmm_p_value"].isel(traits=0), rtol=1e-8)
    assert res["null_pve"].dims == ("traits",) and res.sizes["traits"] == 2
    # the columns chosen by name, in the order asked
    b = dlmm.scan(ds, table, traits="b").compute()
    assert list(b["trait_id"].values) == ["b"]
    np.testing.assert_allclose(b["null_pve"].values, res["null_pve"].values[1:], rtol=1e-8)


def test_bad_pheno_col_list(data, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    r = cli("scan", data["prefix"], "--pheno", data["pheno"], "--pheno-col", "1,7",
            "--out", out / "x")
    assert r.returncode == 2 and "pheno-col 7: no such column" in r.stderr, r.stderr
    assert list(out.iterdir()) == []


def test_covariates_without_intercept_warn(data, tmp_path):
    covar = tmp_path / "no_intercept.txt"
    cols = np.loadtxt(data["covar"])
    np.savetxt(covar, cols[:, 1:], fmt="%.6f")
    r = cli("scan", data["prefix"], "--covar", covar, "--out", tmp_path / "w")
    assert r.returncode == 0, r.stderr
    assert "no constant column" in r.stderr and "intercept" in r.stderr
    r = cli("scan", data["prefix"], "--covar", data["covar"], "--out", tmp_path / "w2")
    assert r.returncode == 0 and "no constant column" not in r.stderr
