"""Bad input -> one line naming the file, the problem and the fix; exit status 2;
no traceback; nothing written.  One table, one row per kind of bad input.

Each case gets a fresh copy of three small data sets: the lab's text format
(``X.txt`` genotypes coded -1/0/1, ``Y.txt``, ``A.txt`` kinship), a PLINK
fileset ``p.bed/.bim/.fam`` and a VCF Zarr store ``g.zarr`` converted from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dlmm import io, results, store
from dlmm.demo import write_demo_plink
from dlmm.simulate import simulate_families


def dlmm(*args, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True)


# root reads any file whatever its mode, through CAP_DAC_OVERRIDE: drop it for that case
NO_ROOT_READ = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _as_a_reader_who_respects_modes():
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None or subprocess.run(
            [*NO_ROOT_READ, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here: "
                    "an unreadable file cannot be made")
    return NO_ROOT_READ


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    sim = simulate_families(n_families=15, n_children=2, n_variants=20, seed=7)
    np.savetxt(d / "X.txt", (sim["dosage"] - 1).T, fmt="%d")
    np.savetxt(d / "Y.txt", sim["phenotype"])
    np.savetxt(d / "A.txt", sim["kinship"])
    write_demo_plink(d / "p", seed=3, n_families=12, n_variants=40)
    store.convert(io.read_plink(d / "p"), d / "g.zarr", chunk_size=20)
    return d


@pytest.fixture
def data(base, tmp_path):
    d = tmp_path / "in"
    shutil.copytree(base, d)
    return d


TEXT = ["X.txt", "--pheno", "Y.txt", "--kinship", "A.txt"]


def _edit_text(name, edit, fmt="%.10g"):
    def make(d):
        a = np.loadtxt(d / name, ndmin=2)
        a = edit(a)
        np.savetxt(d / name, a, fmt=fmt)
    return make


def _write(name, text):
    def make(d):
        (d / name).write_text(text(d) if callable(text) else text)
    return make


def _lines(name, i, value):
    def make(d):
        lines = (d / name).read_text().splitlines()
        lines[i] = value
        (d / name).write_text("\n".join(lines) + "\n")
    return make


def _fam_ids(d):
    return pd.read_csv(d / "p.fam", sep=r"\s+", header=None)[1].astype(str).to_numpy()


def _npz_kinship(renamed: int, extra: int = 0):
    """A valid GRM of p.fam's samples saved with ids; ``renamed`` ids replaced."""
    def make(d):
        ids = _fam_ids(d).astype(object)
        n = len(ids)
        x = np.random.default_rng(0).normal(size=(n, 3 * n))
        K = x @ x.T / x.shape[1]
        ids[:renamed] = [f"stranger{i}" for i in range(renamed)]
        np.savez(d / "K.npz", kinship=K, sample_id=ids.astype(str))
    return make


def _not_psd(a):
    s, U = np.linalg.eigh(a)
    s[0] = -0.5 * s.max()
    return (U * s) @ U.T


def _collinear(d):
    n = len((d / "Y.txt").read_text().splitlines())
    z = np.random.default_rng(1).normal(size=n)
    np.savetxt(d / "C.txt", np.column_stack([np.ones(n), z, 2 * z]))


def _too_many_covariates(d):
    n = len((d / "Y.txt").read_text().splitlines())
    y = np.full(n, np.nan)
    y[:5] = [1.0, 2.0, 4.0, 3.0, 5.0]
    np.savetxt(d / "Y.txt", y)
    np.savetxt(d / "C.txt", np.column_stack([np.ones(n), np.random.default_rng(2).normal(
        size=(n, 3))]))


def _corrupt_zarr(d):
    (d / "g.zarr" / ".zmetadata").write_text("{ this is not json")
    (d / "g.zarr" / ".zgroup").write_text("{ nor this")


def _foreign_zarr(d):
    import xarray as xr

    xr.Dataset({"temperature": ("time", np.arange(5.0))}).to_zarr(d / "f.zarr", zarr_format=2)


def _float_genotype_zarr(d):
    import xarray as xr

    g = xr.open_zarr(d / "g.zarr")
    xr.Dataset({"call_genotype": g["call_genotype"].astype(np.float32),
                "sample_id": ("samples", _fam_ids(d)),
                "variant_position": g["variant_position"]}).to_zarr(d / "h.zarr", zarr_format=2)


def _no_read(name):
    def make(d):
        os.chmod(d / name, 0)
    return make


# id, set-up (or None), arguments, substrings the one line must contain
CASES = [
    # missing or unreadable files
    ("genotypes-missing", None, ["nothing"], ["nothing", "no genotypes of that name"]),
    ("phenotype-missing", None, ["X.txt", "--pheno", "nope.txt", "--kinship", "A.txt"],
     ["nope.txt", "phenotype file not found"]),
    ("kinship-missing", None, ["X.txt", "--pheno", "Y.txt", "--kinship", "nope.txt"],
     ["nope.txt", "kinship file not found"]),
    ("covariates-missing", None, TEXT + ["--covar", "nope.txt"],
     ["nope.txt", "covariate file not found"]),
    ("bim-missing", lambda d: (d / "p.bim").unlink(), ["p"], ["p.bim", "not found"]),
    ("fam-missing", lambda d: (d / "p.fam").unlink(), ["p"], ["p.fam", "not found"]),
    ("phenotype-is-a-folder", lambda d: (d / "dir").mkdir(),
     ["X.txt", "--pheno", "dir", "--kinship", "A.txt"], ["dir", "is a folder"]),
    ("phenotype-unreadable", _no_read("Y.txt"), TEXT, ["Y.txt", "not readable"]),
    ("text-needs-pheno", None, ["X.txt", "--kinship", "A.txt"],
     ["X.txt", "carry no phenotype", "--pheno"]),
    ("bed-truncated", lambda d: os.truncate(d / "p.bed", 100), ["p"],
     ["p.bed", "size 100 bytes, but 60 samples (.fam) x 40 variants (.bim) need"]),
    # sample ids
    ("kinship-ids-do-not-match", _npz_kinship(60), ["p", "--kinship", "K.npz"],
     ["K.npz", "none of the kinship's sample ids is a genotype sample id", "'stranger0'"]),
    ("kinship-npz-without-ids",
     lambda d: np.savez(d / "K.npz", kinship=np.eye(60)), ["p", "--kinship", "K.npz"],
     ["K.npz", "sample_id"]),
    ("phenotype-rows-do-not-match", _lines("Y.txt", 0, ""), TEXT,
     ["Y.txt", "59 rows but the genotypes have 60 samples"]),
    # kinship
    ("kinship-not-square", _edit_text("A.txt", lambda a: a[:, :-1]), TEXT,
     ["A.txt", "60x59, not square"]),
    ("kinship-wrong-size", _edit_text("A.txt", lambda a: a[:-1, :-1]), TEXT,
     ["A.txt", "59 x 59", "60 samples"]),
    ("kinship-not-symmetric",
     _edit_text("A.txt", lambda a: a + np.eye(len(a), k=5) * 0.3), TEXT,
     ["A.txt", "not symmetric"]),
    ("kinship-nan", _edit_text("A.txt", lambda a: np.where(np.eye(len(a), dtype=bool),
                                                            np.nan, a)), TEXT,
     ["A.txt", "NaN or Inf"]),
    ("kinship-inf", _lines("A.txt", 3, " ".join(["inf"] * 60)), TEXT, ["A.txt", "NaN or Inf"]),
    ("kinship-not-psd", _edit_text("A.txt", _not_psd), TEXT,
     ["A.txt", "not positive semi-definite"]),
    ("kinship-non-numeric", _lines("A.txt", 2, "x " * 60), TEXT,
     ["A.txt", "not a numeric matrix"]),
    # phenotype
    ("phenotype-constant", _edit_text("Y.txt", lambda a: np.full_like(a, 2.0)), TEXT,
     ["Y.txt", "constant"]),
    ("phenotype-all-missing", _write("Y.txt", "NA\n" * 60), TEXT,
     ["Y.txt", "missing for every genotype sample"]),
    ("phenotype-non-numeric", _lines("Y.txt", 2, "tall"), TEXT,
     ["Y.txt", "'tall'", "line 3"]),
    ("pheno-col-out-of-range", None, TEXT + ["--pheno-col", 3],
     ["Y.txt", "pheno-col 3: no such column"]),
    ("pheno-col-out-of-range-fam", None, ["p", "--pheno-col", 2],
     ["p.fam", "pheno-col 2: no such column", "the file has 1"]),
    ("pheno-col-out-of-range-zarr", None, ["g.zarr", "--pheno-col", 0],
     ["g.zarr", "pheno-col 0: no such column"]),
    # covariates
    ("covariates-collinear", _collinear, TEXT + ["--covar", "C.txt"],
     ["C.txt", "collinear", "rank 2 < 3"]),
    ("fewer-samples-than-covariates-plus-2", _too_many_covariates,
     TEXT + ["--covar", "C.txt"], ["Y.txt", "only 5 analysed samples for 4 covariates"]),
    # genotypes
    ("genotype-outside-coding", _lines("X.txt", 3, "0 " * 4 + "5 " + "0 " * 15), TEXT,
     ["X.txt", "line 4, column 5", "outside the coding"]),
    ("zarr-corrupt", _corrupt_zarr, ["g.zarr"], ["g.zarr", "cannot open the Zarr store"]),
    ("zarr-foreign", _foreign_zarr, ["f.zarr", "--pheno", "Y.txt"],
     ["f.zarr", "no call_genotype or call_dosage"]),
    ("zarr-genotypes-not-integer", _float_genotype_zarr, ["h.zarr"],
     ["h.zarr", "call_genotype has dtype float32"]),
    ("store-url-unknown-protocol", None, ["nosuch://bucket/g.zarr"],
     ["nosuch://bucket/g.zarr", "cannot read this URL", "install the fsspec filesystem"]),
    ("store-url-missing", None, ["file:///nonexistent/g.zarr"],
     ["file:///nonexistent/g.zarr", "not a Zarr store"]),
    ("folder-not-a-zarr-store", lambda d: (d / "empty.zarr").mkdir(), ["empty.zarr"],
     ["empty.zarr", "not a Zarr store"]),
    # low-rank options
    ("kinship-variants-unknown-ids", _write("KV.txt", "snp1\nrs404\nsnp3 rs405\n"),
     ["p", "--kinship-variants", "KV.txt"],
     ["KV.txt", "2 of 4 kinship variant ids are not in the genotypes", "'rs404'"]),
    ("kinship-variants-empty-list", _write("KV.txt", "\n"), ["p", "--kinship-variants", "KV.txt"],
     ["KV.txt", "kinship variant list is empty"]),
    ("kinship-variants-list-missing", None, ["p", "--kinship-variants", "KV.txt"],
     ["KV.txt", "kinship variant list file not found"]),
    ("kinship-variants-count-too-large", None, ["p", "--kinship-variants", 41],
     ["--kinship-variants", "41 variants asked of 40"]),
    ("kinship-variants-with-kinship", None, TEXT + ["--kinship-variants", 5],
     ["--kinship-variants", "not with --kinship"]),
    ("kinship-rank-zero", None, ["p", "--kinship-rank", 0],
     ["--kinship-rank", "0 is not a positive whole number"]),
    ("kinship-rank-with-loco", None, ["p", "--loco", "--kinship-rank", 5],
     ["--loco", "full-rank kinship", "--kinship-rank"]),
    ("float32-rotation-with-low-rank", None,
     ["p", "--kinship-variants", 5, "--rotation-dtype", "float32"],
     ["--rotation-dtype", "float32 is for the full-rank scan"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, data, tmp_path, monkeypatch):
    name, make, args, needles = case
    prefix = _as_a_reader_who_respects_modes() if name == "phenotype-unreadable" else []
    if make is not None:
        make(data)
    monkeypatch.chdir(data)
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(p.name for p in data.iterdir())
    r = dlmm("scan", *args, "--out", out / "res", prefix=prefix)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    msg = r.stderr.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("dlmm: error: "), r.stderr
    assert "Traceback" not in r.stderr and ". Fix: " in msg[0], msg[0]
    for needle in needles:
        assert needle in msg[0], (needle, msg[0])
    assert list(out.iterdir()) == []  # nothing written
    assert sorted(p.name for p in data.iterdir()) == before  # nor beside the inputs


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


def test_corrupt_store_chunk(data, tmp_path):
    """Found only when the chunk is read, in a task: still one line and exit 2.

    (The GRM pass reads it first, so nothing is written; with --kinship the
    blocks written before it are kept for --resume.)
    """
    (data / "g.zarr" / "call_genotype" / "1.0.0").write_bytes(b"not a blosc frame")
    out = tmp_path / "out"
    out.mkdir()
    r = dlmm("scan", data / "g.zarr", "--out", out / "res")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("dask dashboard:")]
    assert len(lines) == 1 and lines[0].startswith("dlmm: error: "), r.stderr
    assert "g.zarr: call_genotype[20:40] cannot be read" in lines[0] and ". Fix: " in lines[0]
    assert list(out.iterdir()) == []


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
