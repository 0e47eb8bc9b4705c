"""--loco: each chromosome's variants tested with the GRM of the other chromosomes, against
GEMMA run chromosome by chromosome with a kinship it built from the other chromosomes
(plink1.9 --not-chr, gemma -gk 1, gemma -lmm 2 -snps)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dlmm import io
from dlmm.demo import write_demo_plink
from dlmm.kinship import grm, grm_loco

from conftest import need_peer


@pytest.fixture(scope="module")
def gemma_loco(tmp_path_factory):
    """GEMMA's LOCO reference on a simulated set (5 chromosomes x 240 variants)."""
    need_peer("GEMMA", shutil.which("gemma") is not None)
    need_peer("plink1.9", shutil.which("plink1.9") is not None)
    d = tmp_path_factory.mktemp("loco")
    write_demo_plink(d / "sim", seed=21, n_families=50, n_variants=1200)
    bim = pd.read_csv(d / "sim.bim", sep="\t", header=None, dtype=str)
    run = dict(cwd=d, check=True, capture_output=True)
    kin, tables = {}, []
    for c in bim[0].unique():
        subprocess.run(["plink1.9", "--bfile", "sim", "--not-chr", c, "--keep-allele-order",
                        "--make-bed", "--out", f"no{c}"], **run)
        subprocess.run(["gemma", "-bfile", f"no{c}", "-gk", "1", "-o", f"k{c}"], **run)
        bim.loc[bim[0] == c, 1].to_csv(d / f"snps{c}.txt", index=False, header=False)
        subprocess.run(["gemma", "-bfile", "sim", "-k", f"output/k{c}.cXX.txt", "-lmm", "2",
                        "-snps", f"snps{c}.txt", "-o", f"l{c}"], **run)
        kin[c] = np.loadtxt(d / f"output/k{c}.cXX.txt")
        tables.append(pd.read_csv(d / f"output/l{c}.assoc.txt", sep="\t"))
    return {"dir": d, "prefix": d / "sim", "kinship": kin,
            "assoc": pd.concat(tables, ignore_index=True)}


def test_grm_loco_is_gemma_on_the_other_chromosomes(gemma_loco):
    ds = io.read_plink(gemma_loco["prefix"], chunk_size=100)  # chunks cross no contig here
    y = io.read_fam_phenotype(gemma_loco["prefix"])
    K = grm_loco(ds, ~np.isnan(y)).values
    names = ds["contig_id"].values.astype(object).astype(str)
    for c, name in enumerate(names):
        assert np.abs(K[c] - gemma_loco["kinship"][name]).max() < 1e-8, name
    # and the same as a GRM accumulated over the other chromosomes' variants only
    keep = ds["variant_contig"].values != 2
    K2 = grm(ds.isel(variants=keep), ~np.isnan(y)).values
    np.testing.assert_allclose(K[2], K2, rtol=0, atol=1e-12)


def test_loco_scan_equals_gemma_chromosome_by_chromosome(gemma_loco, tmp_path):
    out = tmp_path / "loco"
    # chunks of 170 variants straddle chromosome boundaries: they are split there
    r = subprocess.run([sys.executable, "-m", "dlmm.cli", "scan", str(gemma_loco["prefix"]),
                        "--loco", "--chunk-size", "170", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ours = pd.read_csv(f"{out}.assoc.tsv", sep="\t")
    ref = gemma_loco["assoc"]
    assert list(ours["rs"]) == list(ref["rs"]) and len(ours) > 1000
    d = np.abs(np.log10(ours["p_lrt"]) - np.log10(ref["p_lrt"]))
    assert d.max() <= 5e-7, d.max()  # measured 2.0e-7
    assert np.median(d) <= 5e-8, np.median(d)  # measured 2.0e-8
    np.testing.assert_allclose(ours["logl_H1"], ref["logl_H1"], rtol=1e-6)
    np.testing.assert_allclose(ours["l_mle"], ref["l_mle"], rtol=1e-4)
    log = (tmp_path / "loco.log.txt").read_text()
    assert log.count("## LOCO: chromosome") == 5


def test_loco_with_kinship_is_a_clear_error(gemma_loco, tmp_path):
    K = tmp_path / "k.npy"
    np.save(K, np.eye(io.read_plink(gemma_loco["prefix"]).sizes["samples"]))
    (tmp_path / "o").mkdir()
    r = subprocess.run([sys.executable, "-m", "dlmm.cli", "scan", str(gemma_loco["prefix"]),
                        "--loco", "--kinship", str(K), "--out", str(tmp_path / "o" / "x")],
                       capture_output=True, text=True)
    msg = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(msg) == 1 and "--loco" in msg[0], r.stderr
    assert list((tmp_path / "o").iterdir()) == []
