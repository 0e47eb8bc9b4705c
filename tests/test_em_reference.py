"""The `em` solver against the lab's classic EM, run in R (MASS::ginv, dense algebra).

The reference table was made by ``tests/data/em_reference/classic_em.R`` on the
data of ``make_data.py`` (n = 300 in 60 nuclear families, pedigree kinship A,
60 variants).  The lab's lnL omits the ``-n/2 log(2 pi)`` term; ours has it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dlmm import kernels


def _rotated(em_reference):
    A, Y = em_reference["A"], em_reference["Y"]
    n = Y.size
    s, U = kernels.eigh_kinship(A)
    W = np.ones((n, 1))
    return s, U, kernels.rotate(U, W.T).T, kernels.rotate(U, Y)


def _lab_constant(n):
    return 0.5 * n * np.log(2 * np.pi)


@pytest.mark.parametrize("model", ["additive", "genotypic"])
def test_em_matches_classic_r(em_reference, model):
    ref = em_reference["ref"]
    s, U, Wr, yr = _rotated(em_reference)
    n = s.size
    dosage = em_reference["X"].T + 1.0          # lab coding -1/0/1 -> 0/1/2
    X = kernels.variant_design(dosage, model)
    m, k, _ = X.shape
    Xr = kernels.rotate(U, X.reshape(m * k, n)).reshape(m, k, n)
    null = kernels.fit_em(s, Wr, yr, np.zeros((1, 0, n)))
    fit = kernels.fit_em(s, Wr, yr, Xr)
    c = _lab_constant(n)
    assert abs(null.logl[0] + c - ref["null_logl"][0]) < 1e-8
    assert null.iterations[0] == ref["null_iterations"][0]
    col = "add" if model == "additive" else "gen"
    np.testing.assert_allclose(fit.logl + c, ref[f"{col}_logl"], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(fit.iterations, ref[f"{col}_iterations"])
    _, p = kernels.lrt(fit.logl, null.logl[0], k)
    np.testing.assert_allclose(-np.log10(p), -np.log10(ref[f"{col}_p"]), rtol=0, atol=1e-8)
    if model == "additive":
        np.testing.assert_allclose(fit.beta[:, 1], ref["add_beta"], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(fit.sigma_sq_a, ref["add_sigma_sq_a"], rtol=1e-8)
        np.testing.assert_allclose(fit.sigma_sq_e, ref["add_sigma_sq_e"], rtol=1e-8)


def test_reference_is_informative(em_reference):
    """The table exercises the stopping rule: counts vary and stay below the cap."""
    ref = em_reference["ref"]
    its = ref["add_iterations"]
    assert its.nunique() > 3 and its.max() < 98
    assert ref["add_p"].min() < 1e-6  # the causal variants are found


def test_ols_f_test_matches_lab(em_reference):
    dosage = em_reference["X"].T + 1.0
    y = em_reference["Y"]
    X = kernels.variant_design(dosage, "genotypic")  # the lab's Xa and Xd
    p = kernels.ols_test(np.ones((y.size, 1)), y, X)["p"]
    np.testing.assert_allclose(-np.log10(p), -np.log10(em_reference["ref"]["ols_p"]),
                               rtol=0, atol=1e-8)


@pytest.mark.parametrize("chunk", [7, 1000])
def test_cli_text_input_em(em_reference, tmp_path, chunk):
    """The lab's text format through `dlmm scan` (the scan path) gives R's p-values."""
    d = em_reference["dir"]
    out = tmp_path / "lab"
    cmd = [sys.executable, "-m", "dlmm.cli", "scan", str(d / "X.txt"), "--pheno",
           str(d / "Y.txt"), "--kinship", str(d / "A.txt"), "--solver", "em",
           "--no-center-kinship", "--chunk-size", str(chunk), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    got = pd.read_csv(f"{out}.assoc.tsv", sep="\t")
    ref = em_reference["ref"]
    assert list(got["rs"]) == [f"snp{j}" for j in ref["variant"]]
    assert (got["chr"] == 0).all() and list(got["ps"]) == list(ref["variant"])
    np.testing.assert_allclose(-np.log10(got["p_lrt"]), -np.log10(ref["add_p"]), rtol=0,
                               atol=1e-8)
    np.testing.assert_array_equal(got["iterations"], ref["add_iterations"])


def test_reference_table_is_r_output(em_reference, tmp_path):
    """R, run here, reproduces the committed table's first variants."""
    import shutil

    from conftest import need_peer

    need_peer("R with MASS (r-base-core, r-cran-mass)", shutil.which("Rscript") is not None)
    out = tmp_path / "ref.tsv"
    subprocess.run(["Rscript", str(em_reference["dir"] / "classic_em.R"),
                    str(em_reference["dir"]), str(out), "2"], check=True, capture_output=True)
    got = pd.read_csv(out, sep="\t")
    ref = em_reference["ref"].iloc[:2]
    assert list(got.columns) == list(ref.columns)
    np.testing.assert_allclose(got.to_numpy(float), ref.to_numpy(float), rtol=1e-12, atol=0)
