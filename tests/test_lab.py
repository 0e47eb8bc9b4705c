"""The course lab's files and exercise through the command line, against R.

``dlmm scan X.txt --pheno Y.txt --kinship A.txt --solver em`` on the lab's own text format
uses the kinship as given (the lab's EM does not centre it) and reproduces the lab's R EM
with no extra flag; ``--test ols`` is the lab's exercise, the fixed-effect F-test, equal to
R's ``lm`` (additive: 1 df; genotypic, the lab's Xa and Xd: 2 df).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import need_peer

_LM = r"""
X <- as.matrix(read.table(file.path(commandArgs(TRUE)[1], "X.txt")))
Y <- as.matrix(read.table(file.path(commandArgs(TRUE)[1], "Y.txt")))[, 1]
out <- t(apply(X, 2, function(xa) {
  xd <- 1 - 2 * abs(xa)
  add <- anova(lm(Y ~ 1), lm(Y ~ xa))
  gen <- anova(lm(Y ~ 1), lm(Y ~ xa + xd))
  c(add[2, "Pr(>F)"], gen[2, "Pr(>F)"], gen[2, "Df"])
}))
write.table(out, commandArgs(TRUE)[2], sep = "\t", row.names = FALSE,
            col.names = c("add", "gen", "gen_df"))
"""


def _scan(em_reference, out, *extra):
    d = em_reference["dir"]
    r = subprocess.run([sys.executable, "-m", "dlmm.cli", "scan", str(d / "X.txt"), "--pheno",
                        str(d / "Y.txt"), "--kinship", str(d / "A.txt"), "--no-plot",
                        "--no-dashboard", "--out", str(out), *map(str, extra)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return pd.read_csv(f"{out}.assoc.tsv", sep="\t")


@pytest.mark.parametrize("model", ["additive", "genotypic"])
def test_lab_files_reproduce_the_lab_em_with_no_extra_flag(em_reference, tmp_path, model):
    got = _scan(em_reference, tmp_path / "lab", "--solver", "em", "--model", model)
    ref = em_reference["ref"]
    col = "add" if model == "additive" else "gen"
    ref = ref.set_index("snp" + ref["variant"].astype(str))
    # a 2-df fit needs all three genotype classes: the others are not tested
    assert set(got["rs"]) <= set(ref.index) and len(got) >= 0.8 * len(ref)
    np.testing.assert_allclose(-np.log10(got["p_lrt"]),
                               -np.log10(ref.loc[got["rs"], f"{col}_p"]), rtol=0, atol=1e-8)
    log = (tmp_path / "lab.log.txt").read_text()
    assert "used as given (not centred, as the course lab's EM)" in log
    # GEMMA's convention on request: another kinship, other p-values
    centred = _scan(em_reference, tmp_path / "c", "--solver", "em", "--model", model,
                    "--center-kinship")
    assert np.abs(np.log10(centred["p_lrt"])
                  - np.log10(ref.loc[centred["rs"], f"{col}_p"].to_numpy())).max() > 1e-5


def test_ols_baseline_equals_r_lm(em_reference, tmp_path):
    need_peer("R (r-base-core)", shutil.which("Rscript") is not None)
    script = tmp_path / "lm.R"
    script.write_text(_LM)
    subprocess.run(["Rscript", str(script), str(em_reference["dir"]), str(tmp_path / "lm.tsv")],
                   check=True, capture_output=True)
    r = pd.read_csv(tmp_path / "lm.tsv", sep="\t")
    add = _scan(em_reference, tmp_path / "a", "--test", "lrt,ols")
    np.testing.assert_allclose(-np.log10(add["p_ols"]), -np.log10(r["add"]), rtol=0,
                               atol=1e-8)
    gen = _scan(em_reference, tmp_path / "g", "--test", "ols", "--model", "genotypic")
    full = (r["gen_df"] == 2).to_numpy()  # lm drops Xd where it is a function of Xa
    assert full.sum() > 0.8 * len(r)
    rows = gen["rs"].str[3:].astype(int).to_numpy() - 1
    assert set(rows) == set(np.flatnonzero(full))
    np.testing.assert_allclose(-np.log10(gen["p_ols"]), -np.log10(r["gen"].to_numpy()[rows]),
                               rtol=0, atol=1e-8)
    # the lab's own calculator (MASS::ginv) gave the same, in the committed R table
    ref = em_reference["ref"]["ols_p"].to_numpy()[rows]
    np.testing.assert_allclose(-np.log10(gen["p_ols"]), -np.log10(ref), rtol=0, atol=1e-8)
    # the report puts the least-squares QQ and lambda_GC beside the mixed model's
    import dlmm
    from dlmm import plot, report

    res = dlmm.load_results(tmp_path / "a.zarr")
    s = report.summary(res)
    assert s["lambda_gc_ols"] == pytest.approx(plot.lambda_gc(add["p_ols"]), rel=1e-9)
    assert s["lambda_gc"] == pytest.approx(plot.lambda_gc(add["p_lrt"]), rel=1e-9)
    q = plot.qq(res)
    assert {e.group for e in q.traverse(lambda e: e, ["Scatter"])} == {"QQ", "OLS"}
    assert f"{s['lambda_gc_ols']:.3f} (OLS)" in q.label
