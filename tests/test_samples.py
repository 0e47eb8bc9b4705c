"""Samples joined by id: every per-sample input, in any order, gives the same results.

Phenotype and covariate files with a PLINK 2 header (``#FID IID ...``), chosen by name;
a kinship with sample ids (``.npz``); a Zarr genotype store whose samples are in another
order than the .fam; pandas and xarray inputs indexed by sample id.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import dlmm
from dlmm import io
from dlmm.demo import write_demo_plink
from dlmm.errors import InputError


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A PLINK set (200 samples, 800 variants), two traits and two covariates with ids."""
    d = tmp_path_factory.mktemp("samples")
    write_demo_plink(d / "p", seed=31, n_families=40, n_variants=800)
    ds = io.read_plink(d / "p")
    ids = ds["sample_id"].values.astype(str)
    fid = ds["sample_family_id"].values.astype(str)
    n = ids.size
    rng = np.random.default_rng(2)
    y = io.read_fam_phenotype(d / "p")
    pheno = pd.DataFrame({"#FID": fid, "IID": ids, "height": y,
                          "bmi": 0.5 * y + rng.normal(size=n)})
    pheno.loc[rng.choice(n, 9, replace=False), "bmi"] = np.nan
    covar = pd.DataFrame({"#FID": fid, "IID": ids, "age": rng.normal(50, 10, n).round(1),
                          "batch": rng.integers(0, 3, n), "unused": rng.normal(size=n)})
    K = dlmm.grm(ds).compute()
    return {"dir": d, "prefix": d / "p", "ids": ids, "pheno": pheno, "covar": covar,
            "K": K.values, "ds": ds}


def _write(data, d, perm_g, perm_y, perm_c, perm_k):
    """The inputs with each one's samples in its own order: a Zarr store, tab- and
    space-separated tables with headers, an .npz kinship."""
    ds = data["ds"].isel(samples=perm_g)
    dlmm.convert(ds, d / "g.zarr", chunk_size=300)
    data["pheno"].iloc[perm_y].to_csv(d / "pheno.tsv", sep="\t", index=False, na_rep="NA")
    data["covar"].iloc[perm_c].to_csv(d / "covar.txt", sep=" ", index=False)
    ids = data["ids"][perm_k]
    np.savez(d / "K.npz", kinship=data["K"][np.ix_(perm_k, perm_k)], sample_id=ids)


def _run(d, out):
    r = cli("scan", d / "g.zarr", "--pheno", d / "pheno.tsv", "--pheno-name", "height,bmi",
            "--covar", d / "covar.txt", "--covar-name", "age,batch", "--kinship", d / "K.npz",
            "--test", "all", "--no-plot", "--no-dashboard", "--out", out)
    assert r.returncode == 0, r.stderr
    return dlmm.load_results(f"{out}.zarr")


def test_every_input_permuted_gives_the_same_results(data, tmp_path):
    n = data["ids"].size
    ident = np.arange(n)
    ref_dir, perm_dir = tmp_path / "ref", tmp_path / "perm"
    ref_dir.mkdir()
    perm_dir.mkdir()
    _write(data, ref_dir, ident, ident, ident, ident)
    rng = np.random.default_rng(9)
    _write(data, perm_dir, *(rng.permutation(n) for _ in range(4)))
    ref, got = _run(ref_dir, ref_dir / "r"), _run(perm_dir, perm_dir / "r")
    assert list(got["trait_id"].values) == ["height", "bmi"]
    assert (got["trait_n_analysed"].values == [200, 191]).all()
    assert (got["trait_n_covariates"].values == 3).all()  # the intercept added
    tested = ref["variant_lmm_tested"].values
    assert tested.sum() > 1500
    np.testing.assert_array_equal(tested, got["variant_lmm_tested"].values)
    # the permuted kinship's eigendecomposition rounds differently: lnL, the LRT
    # statistic and -log10 p to 1e-10 (p where the statistic is above 0.01: near p = 1
    # chi2's density is unbounded, and 1e-11 in the statistic moves p by 1e-8); the
    # optimum's lambda and beta to the solver's tolerance (a last Newton step < 1e-4)
    away = (ref["variant_lmm_lrt_statistic"].values > 1e-2) & tested
    for v in ("variant_lmm_logl", "variant_lmm_lrt_statistic", "variant_lmm_p_value",
              "variant_lmm_p_value_wald", "variant_lmm_p_value_score"):
        rows = away if "p_value" in v else tested
        a, b = ref[v].values[rows], got[v].values[rows]
        if "p_value" in v:
            a, b = -np.log10(a), -np.log10(b)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10, err_msg=v)
    for v, tol in [("variant_lmm_beta", 1e-7), ("variant_lmm_lambda", 1e-7),
                   ("variant_allele_frequency", 0)]:
        np.testing.assert_allclose(got[v].values[tested], ref[v].values[tested], rtol=tol,
                                   atol=0, err_msg=v)
    for v in ("null_mle_logl", "null_pve", "null_vg", "null_ve"):
        np.testing.assert_allclose(got[v].values, ref[v].values, rtol=1e-10, err_msg=v)
    # the log says how each input was joined, and the TSVs carry the traits' names
    log = (perm_dir / "r.bmi.log.txt").read_text()
    assert "pheno.tsv: joined by sample id, 200 of 200 genotype samples found" in log
    assert "K.npz: joined by sample id" in log
    null = [line for line in log.splitlines() if "in the null model" in line]
    assert len(null) == 10
    assert null == [line for line in (ref_dir / "r.bmi.log.txt").read_text().splitlines()
                    if "in the null model" in line]


def test_a_reordered_store_with_fam_order_rows_is_refused_not_misread(data, tmp_path):
    """Headerless GEMMA rows follow the genotypes' order: the log says so, and an id-less
    kinship of another size is refused."""
    perm = np.random.default_rng(1).permutation(data["ids"].size)
    dlmm.convert(data["ds"].isel(samples=perm), tmp_path / "g.zarr")
    np.savetxt(tmp_path / "y.txt", data["pheno"]["height"].to_numpy())
    r = cli("scan", tmp_path / "g.zarr", "--pheno", tmp_path / "y.txt", "--no-plot",
            "--no-dashboard", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "o.log.txt").read_text()
    assert "y.txt: rows taken in the genotypes' sample order (no ids)" in log


def test_samples_missing_from_an_input_are_dropped_and_counted(data, tmp_path):
    pheno = data["pheno"].iloc[10:]  # 10 genotype samples without a row
    extra = pd.DataFrame({"#FID": ["x", "y"], "IID": ["new1", "new2"], "height": [1.0, 2.0],
                          "bmi": [1.0, 2.0]})
    pd.concat([pheno, extra]).to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    kin_ids = data["ids"][5:]  # 5 without a kinship row (3 of them also without phenotype)
    np.savez(tmp_path / "K.npz", kinship=data["K"][5:, 5:], sample_id=kin_ids)
    r = cli("scan", data["prefix"], "--pheno", tmp_path / "p.tsv", "--pheno-col", "height",
            "--kinship", tmp_path / "K.npz", "--no-plot", "--no-dashboard",
            "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "o.log.txt").read_text()
    assert "190 of 200 genotype samples found, 10 missing (dropped), 2 not genotyped" in log
    assert "195 of 200 genotype samples found, 5 missing (dropped), 0 not genotyped" in log
    assert "## number of analyzed individuals = 190" in log  # samples 10.. are in both


@pytest.mark.parametrize("where", ["pheno", "kinship", "genotypes"])
def test_a_duplicated_id_is_an_error_naming_it(data, tmp_path, where):
    pheno = data["pheno"].copy()
    if where == "pheno":
        pheno.loc[3, "IID"] = pheno.loc[4, "IID"]
    pheno.to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    args = [data["prefix"], "--pheno", tmp_path / "p.tsv"]
    if where == "kinship":
        ids = data["ids"].copy()
        ids[7] = ids[8]
        np.savez(tmp_path / "K.npz", kinship=data["K"], sample_id=ids)
        args += ["--kinship", tmp_path / "K.npz"]
    if where == "genotypes":
        for ext in ("bed", "bim"):
            (tmp_path / f"g.{ext}").write_bytes(data["prefix"].with_suffix(f".{ext}").read_bytes())
        fam = data["prefix"].with_suffix(".fam").read_text().splitlines()
        fam[1] = fam[1].replace(fam[1].split()[1], fam[2].split()[1], 1)
        (tmp_path / "g.fam").write_text("\n".join(fam) + "\n")
        args[0] = tmp_path / "g"
    (tmp_path / "o").mkdir()
    r = cli("scan", *args, "--no-plot", "--out", tmp_path / "o" / "x")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "duplicated" in lines[0] and "1 duplicated" in lines[0], lines
    assert list((tmp_path / "o").iterdir()) == []


def test_python_inputs_by_sample_id(data):
    """pandas Series/DataFrame and xarray DataArray inputs, in shuffled order, equal the
    arrays in genotype order; a DataFrame without ids is refused, not guessed."""
    ds = data["ds"]
    ids = data["ids"]
    y = data["pheno"]["height"].to_numpy()
    W = data["covar"][["age"]].to_numpy()
    K = data["K"]
    perm = np.random.default_rng(4).permutation(ids.size)
    ref = dlmm.scan(ds, y, covariates=np.column_stack([np.ones(ids.size), W]),
                    kinship=K).compute(scheduler="sync")
    series = pd.Series(y, index=pd.Index(ids, name="IID"), name="height").iloc[perm]
    covar = pd.DataFrame({"age": W[:, 0]}, index=pd.Index(ids, name="IID")).iloc[perm]
    kin = xr.DataArray(K[np.ix_(perm, perm)], dims=("samples", "samples_2"),
                       coords={"sample_id": ("samples", ids[perm])})
    got = dlmm.scan(ds, series, covariates=covar, kinship=kin).compute(scheduler="sync")
    assert list(got["trait_id"].values) == ["height"]
    np.testing.assert_allclose(got["variant_lmm_p_value"].values,
                               ref["variant_lmm_p_value"].values, rtol=1e-9)
    trait = xr.DataArray(y[perm], dims="samples", coords={"sample_id": ("samples", ids[perm])},
                         name="height")
    got2 = dlmm.scan(ds, trait, covariates=covar, kinship=kin).compute(scheduler="sync")
    np.testing.assert_allclose(got2["variant_lmm_p_value"].values,
                               ref["variant_lmm_p_value"].values, rtol=1e-9)
    with pytest.raises(InputError, match="index is not sample ids"):
        dlmm.scan(ds, pd.DataFrame({"height": y}))


def test_gemma_table_of_one_trait_of_many(data, tmp_path):
    table = data["pheno"].set_index("IID")[["height", "bmi"]]
    res = dlmm.scan(data["ds"], table).compute(scheduler="sync")
    bmi = dlmm.to_gemma_table(res, trait="bmi")
    assert len(bmi) > 700 and list(bmi.columns[:3]) == ["chr", "rs", "ps"]
    first = dlmm.to_gemma_table(res, trait=0)
    assert not np.allclose(bmi["p_lrt"], first["p_lrt"])
    with pytest.raises(ValueError, match="choose one with trait="):
        dlmm.to_gemma_table(res)
