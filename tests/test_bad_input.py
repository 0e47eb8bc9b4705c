"""Bad input that is not one command's one-line error: ids joined in any order, skipped
variants reported, the readers' own errors, a bad kinship checked once.  (The table of
bad inputs, one line and exit 2 each, is tests/test_hostile.py's "bad-input" cases.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import write_lab_files
from dlmm import io, results
from dlmm.demo import write_demo_plink


def dlmm(*args, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    write_lab_files(d)
    write_demo_plink(d / "p", seed=3, n_families=12, n_variants=40)
    return d


def _fam_ids(d):
    return pd.read_csv(d / "p.fam", sep=r"\s+", header=None)[1].astype(str).to_numpy()


def _not_psd(a):
    s, U = np.linalg.eigh(a)
    s[0] = -0.5 * s.max()
    return (U * s) @ U.T


def test_kinship_with_ids_in_another_order(base, tmp_path):
    """An .npz kinship is matched to the genotypes by sample_id, in any order."""
    d = tmp_path
    ids = _fam_ids(base)
    n = len(ids)
    x = np.random.default_rng(5).normal(size=(n, 2 * n))
    K = x @ x.T / x.shape[1]
    perm = np.random.default_rng(6).permutation(n)
    np.savez(d / "K.npz", kinship=K[np.ix_(perm, perm)], sample_id=ids[perm].astype(str))
    np.savetxt(d / "K.txt", K)
    for kin in ("K.npz", "K.txt"):
        r = dlmm("scan", base / "p", "--kinship", d / kin, "--out", d / kin.replace(".", "_"))
        assert r.returncode == 0, r.stderr
    a = pd.read_csv(d / "K_npz.assoc.tsv", sep="\t")
    b = pd.read_csv(d / "K_txt.assoc.tsv", sep="\t")
    pd.testing.assert_frame_equal(a.drop(columns="iterations"), b.drop(columns="iterations"),
                                  rtol=1e-8)


def test_all_missing_and_monomorphic_variants_are_skipped_and_reported(base, tmp_path):
    x = np.loadtxt(base / "X.txt")
    x[:, 2] = 1          # monomorphic (all coded 1 = homozygous)
    x = x.astype(object)
    x[:, 5] = "NA"       # all missing
    np.savetxt(tmp_path / "X.txt", x, fmt="%s")
    r = dlmm("scan", tmp_path / "X.txt", "--pheno", base / "Y.txt", "--kinship", base / "A.txt",
             "--out", tmp_path / "res")
    assert r.returncode == 0, r.stderr
    line = "## number of skipped SNPs/var = 2 (1 all missing, 1 monomorphic)"
    assert line in r.stdout, r.stdout
    assert line in (tmp_path / "res.log.txt").read_text()
    table = pd.read_csv(tmp_path / "res.assoc.tsv", sep="\t")
    assert len(table) == 18 and not {"snp3", "snp6"} & set(table["rs"])
    assert "RuntimeWarning" not in r.stderr, r.stderr


def test_ragged_bim_is_a_clear_error(plink, tmp_path):
    from pathlib import Path

    from dlmm.errors import InputError

    src = Path(plink["prefix"])
    for ext in ("bed", "fam"):
        shutil.copy(src.with_name(f"{src.name}.{ext}"), tmp_path / f"rag.{ext}")
    lines = src.with_name(f"{src.name}.bim").read_text().splitlines()
    lines[1] += " extra"
    (tmp_path / "rag.bim").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"rag\.bim: the PLINK \.bim file's rows differ in "
                       r"length \(Expected 6 fields in line 2, saw 7\)"):
        io.read_plink(tmp_path / "rag")


@pytest.mark.parametrize("rank", [None, 40])
def test_scan_refuses_an_indefinite_kinship_checking_it_once(plink, rank, monkeypatch):
    """``dlmm.scan`` (no CLI) refuses a kinship with a clearly negative eigenvalue.

    With every eigenpair computed it reads that off the eigendecomposition it needs
    anyway: no Cholesky factorisation on top (a 30 s one at n = 20,000).  With
    ``kinship_rank`` only the largest eigenpairs are computed, so one Cholesky checks it.
    """
    import dlmm
    from dlmm.errors import InputError

    ds = io.read_plink(plink["prefix"])
    y = plink["sim"]["phenotype"]
    K = plink["sim"]["kinship"]
    calls = []
    cholesky = np.linalg.cholesky
    monkeypatch.setattr(np.linalg, "cholesky", lambda a: calls.append(a.shape) or cholesky(a))
    kw = {} if rank is None else {"kinship_rank": rank}
    from dlmm.samples import Kinship

    with pytest.raises(InputError, match="my_K.txt: kinship is not positive semi-definite"):
        dlmm.scan(ds, y, kinship=Kinship(_not_psd(K), None, "my_K.txt"), **kw)
    assert len(calls) == (0 if rank is None else 1), calls
    calls.clear()
    res = dlmm.scan(ds, y, kinship=K, **kw)
    assert res["variant_lmm_p_value"].shape == (ds.sizes["variants"], 1)
    assert len(calls) == (0 if rank is None else 1), calls


def test_cli_checks_a_given_kinship_without_a_cholesky(base, tmp_path, monkeypatch):
    """``dlmm scan --kinship`` (one trait, full rank) reads a bad kinship off the
    eigenvalues: no Cholesky factorisation at all, and the same results as the API's
    scan."""
    from dlmm import cli

    calls = []
    cholesky = np.linalg.cholesky
    monkeypatch.setattr(np.linalg, "cholesky", lambda a: calls.append(a.shape) or cholesky(a))
    assert cli.main(["scan", str(base / "p"), "--kinship", str(base / "A.txt"), "--out",
                     str(tmp_path / "r"), "--no-plot", "--no-dashboard"]) == 0
    assert calls == []
    import dlmm

    ds = io.read_plink(base / "p")
    K = io.read_kinship(base / "A.txt")
    ref = dlmm.scan(ds, io.read_fam_phenotype(base / "p"), kinship=K).compute()
    got = results.load_results(tmp_path / "r.zarr")
    np.testing.assert_allclose(got["variant_lmm_p_value"], ref["variant_lmm_p_value"],
                               rtol=1e-10)
    assert calls == []


def test_kinship_text_in_any_whitespace(tmp_path):
    """GEMMA's tab-separated text (the fast path), spaces, trailing tabs, a line in
    other whitespace: the same matrix; a NaN or a word still a clear error."""
    A = np.random.default_rng(2).normal(size=(5, 5))
    K = A @ A.T
    rows = [[repr(v) for v in r] for r in K.tolist()]
    texts = {
        "tabs": "\n".join("\t".join(r) for r in rows) + "\n",
        "spaces": "\n".join("  ".join(r) for r in rows),
        "trailing-tabs": "".join("\t".join(r) + "\t\n" for r in rows),
        "mixed": "\n".join(("\t" if i != 3 else " \t ").join(r) for i, r in enumerate(rows)),
    }
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        np.testing.assert_array_equal(io.read_kinship(tmp_path / name).values, K, err_msg=name)
    from dlmm.errors import InputError

    for bad, problem in (("NA", "NaN or Inf"), ("x", "not a numeric matrix")):
        rows[2][3] = bad
        (tmp_path / "bad").write_text("\n".join("\t".join(r) for r in rows))
        with pytest.raises(InputError, match=problem):
            io.read_kinship(tmp_path / "bad")
