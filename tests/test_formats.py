"""PLINK 2 .pgen and BGEN readers (and VCF through vcf2zarr) against plink2's own
conversion of mouse_hs1940: the dosages equal the .bed reader's allele by allele, and the
scans' p-values equal the .bed scan's."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import dlmm
from dlmm import io
from dlmm.bgen import read_bgen
from dlmm.errors import InputError
from dlmm.pgen import read_pgen

from conftest import need_peer

#: BGEN 8-bit: plink2 stores each dosage to the nearest 1/255 (measured max |error|
#: 1/510 on fractional dosages); hardcalls (probabilities 0 and 1) are exact
BGEN8_BOUND = 0.5 / 255 + 1e-6
#: .pgen dosages are multiples of 1/16384, so within 2^-15 of the value imported
PGEN_BOUND = 2.0 ** -15


def _plink2(cwd, *args):
    subprocess.run(["plink2", *map(str, args)], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def converted(mouse):
    """mouse_hs1940 converted by plink2: ``pgen`` (prefix), ``bgen`` (8-bit, with
    ``sample``).  plink2 drops the 1,926 variants whose .bim position is negative."""
    need_peer("plink2", shutil.which("plink2") is not None)
    d = mouse["dir"] / "plink2"
    d.mkdir(exist_ok=True)
    bfile = mouse["prefix"]
    _plink2(d, "--bfile", bfile, "--make-pgen", "--out", "m")
    _plink2(d, "--bfile", bfile, "--export", "bgen-1.2", "bits=8", "--out", "m")
    return {"dir": d, "pgen": d / "m", "bgen": d / "m.bgen", "sample": d / "m.sample"}


def _matched(bed, other) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``other``'s variants' index in ``bed`` (by id), and the .bed's dosage
    re-counted for ``other``'s ``variant_allele[:, 1]``, allele by allele: the same
    where ``other`` keeps the .bed's order, ``2 - x`` where it swaps the two alleles.
    Variants whose two alleles are the same letter cannot be told apart that way:
    they are given as NaN rows."""
    idx = pd.Index(bed["variant_id"].values).get_indexer(other["variant_id"].values)
    assert (idx >= 0).all()
    a, b = bed["variant_allele"].values[idx], other["variant_allele"].values
    same = (a[:, 0] == b[:, 0]) & (a[:, 1] == b[:, 1]) & (a[:, 0] != a[:, 1])
    swap = (a[:, 0] == b[:, 1]) & (a[:, 1] == b[:, 0]) & (a[:, 0] != a[:, 1])
    assert (same | swap | (a[:, 0] == a[:, 1])).all(), "alleles other than the .bed's"
    x = bed["call_dosage"].values[idx]
    return idx, np.where(same[:, None], x, np.where(swap[:, None], 2 - x, np.nan))


def _check_dosages(bed, other, bound: float = 0.0):
    idx, want = _matched(bed, other)
    got = other["call_dosage"].values
    told = ~np.isnan(want).all(axis=1)
    assert told.sum() > 0.8 * len(told)
    np.testing.assert_array_equal(np.isnan(got[told]), np.isnan(want[told]))
    assert np.nanmax(np.abs(got[told] - want[told])) <= bound
    # a variant with one letter twice: either orientation, but one of them
    x = bed["call_dosage"].values[idx][~told]
    d = np.nanmax(np.minimum(np.abs(got[~told] - x), np.abs(got[~told] - (2 - x))), axis=1)
    assert (d <= bound).all()


def test_pgen_dosages_ids_and_phenotype_equal_the_bed(mouse, converted):
    bed = io.read_plink(mouse["prefix"])
    ds = read_pgen(converted["pgen"], chunk_size=3000)
    assert ds["call_dosage"].data.chunks[1] == (ds.sizes["samples"],)
    assert ds["call_dosage"].dtype == np.float32
    keep = bed["variant_position"].values >= 0
    assert ds.sizes["variants"] == keep.sum()
    _check_dosages(bed, ds)
    np.testing.assert_array_equal(ds["sample_id"].values, bed["sample_id"].values)
    np.testing.assert_array_equal(ds["sample_family_id"].values,
                                  bed["sample_family_id"].values)
    contigs = ds["contig_id"].values[ds["variant_contig"].values]
    np.testing.assert_array_equal(contigs, bed["contig_id"].values[
        bed["variant_contig"].values][keep])
    # .psam PHENO1 is the .fam's column 6, written by plink2 to 6 significant digits
    assert list(ds["phenotype_name"].values) == ["PHENO1"]
    y = io.read_fam_phenotype(mouse["prefix"], 1)
    p = ds["sample_phenotype"].values[:, 0]
    np.testing.assert_array_equal(np.isnan(p), np.isnan(y))
    np.testing.assert_allclose(p, y, rtol=5e-6, atol=1e-6)


def test_bgen_dosages_ids_and_phenotype_equal_the_bed(mouse, converted):
    bed = io.read_plink(mouse["prefix"])
    ds = read_bgen(converted["bgen"], converted["sample"], chunk_size=3000)
    assert ds["call_dosage"].data.chunks[0] == (2575,) * 4
    _check_dosages(bed, ds)  # hardcalls: exact in 8 bits
    np.testing.assert_array_equal(ds["sample_id"].values, bed["sample_id"].values)
    np.testing.assert_array_equal(ds["sample_family_id"].values,
                                  bed["sample_family_id"].values)
    assert list(ds["phenotype_name"].values) == ["PHENO1"]
    # without a .sample: the ids plink2 stored in the .bgen (FID_IID)
    bare = converted["dir"] / "bare.bgen"
    shutil.copy(converted["bgen"], bare)
    fam = bed["sample_family_id"].values + "_" + bed["sample_id"].values
    np.testing.assert_array_equal(read_bgen(bare)["sample_id"].values, fam)


def test_missing_calls_are_nan_in_pgen_and_bgen(plink, tmp_path):
    """The simulated set has 1% missing calls."""
    need_peer("plink2", shutil.which("plink2") is not None)
    _plink2(tmp_path, "--bfile", plink["prefix"], "--make-pgen", "--out", "s")
    _plink2(tmp_path, "--bfile", plink["prefix"], "--export", "bgen-1.2", "bits=8",
            "--out", "s")
    bed = io.read_plink(plink["prefix"])
    assert np.isnan(bed["call_dosage"].values).mean() > 0.005
    _check_dosages(bed, read_pgen(tmp_path / "s.pgen"))
    _check_dosages(bed, read_bgen(tmp_path / "s.bgen"))  # X.sample found beside X.bgen


def test_pgen_with_headerless_pvar_and_psam(plink, tmp_path):
    """A .pgen with a .bim and a .fam as its .pvar and .psam (plink2 --make-bpgen), as
    plink2 itself accepts them."""
    need_peer("plink2", shutil.which("plink2") is not None)
    _plink2(tmp_path, "--bfile", plink["prefix"], "--make-bpgen", "--out", "b")
    shutil.move(tmp_path / "b.bim", tmp_path / "b.pvar")
    shutil.move(tmp_path / "b.fam", tmp_path / "b.psam")
    bed, ds = io.read_plink(plink["prefix"]), read_pgen(tmp_path / "b.pvar")
    _check_dosages(bed, ds)
    for v in ("variant_position", "variant_id", "sample_id", "sample_family_id"):
        np.testing.assert_array_equal(ds[v].values, bed[v].values)
    np.testing.assert_allclose(ds["sample_phenotype"].values[:, 0],
                               io.read_fam_phenotype(plink["prefix"]), rtol=5e-6, atol=1e-6)


def test_fractional_dosages_pgen_exact_bgen_within_8_bits(tmp_path):
    """Dosages written as a VCF's DS field, imported by plink2 into a .pgen, exported
    by plink2 as 8-bit BGEN: read back within their stated quantisation."""
    need_peer("plink2", shutil.which("plink2") is not None)
    rng = np.random.default_rng(3)
    m, n = 40, 30
    ds_true = np.round(rng.uniform(0, 2, (m, n)), 3)
    ds_true[rng.random((m, n)) < 0.05] = np.nan
    head = ["##fileformat=VCFv4.2", "##contig=<ID=1>",
            '##FORMAT=<ID=DS,Number=1,Type=Float,Description="dosage">',
            "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                       "FORMAT"] + [f"s{i}" for i in range(n)])]
    rows = ["\t".join(["1", str(100 + j), f"v{j}", "A", "C", ".", ".", ".", "DS"] +
                      ["." if np.isnan(v) else f"{v:.3f}" for v in ds_true[j]])
            for j in range(m)]
    (tmp_path / "d.vcf").write_text("\n".join(head + rows) + "\n")
    _plink2(tmp_path, "--vcf", "d.vcf", "dosage=DS", "--make-pgen", "--out", "d")
    _plink2(tmp_path, "--pfile", "d", "--export", "bgen-1.2", "bits=8", "--out", "d")
    pg = read_pgen(tmp_path / "d")
    assert (pg["variant_allele"].values == ["A", "C"]).all()  # [REF, ALT]: ALT counted
    x = pg["call_dosage"].values
    np.testing.assert_array_equal(np.isnan(x), np.isnan(ds_true))
    assert np.nanmax(np.abs(x - ds_true)) <= PGEN_BOUND
    assert np.nanmax(np.abs(x - ds_true)) > 0  # really fractional, really rounded
    bg = read_bgen(tmp_path / "d.bgen", tmp_path / "d.sample")
    assert (bg["variant_allele"].values == ["C", "A"]).all()  # plink2 writes ALT first
    g = bg["call_dosage"].values
    np.testing.assert_array_equal(np.isnan(g), np.isnan(ds_true))
    assert np.nanmax(np.abs(g - (2 - x))) <= BGEN8_BOUND


@pytest.fixture(scope="module")
def bed_scan(mouse):
    """The .bed scan of phenotype 1 with GEMMA's kinship: (kinship, phenotype, results)."""
    K = io.read_kinship(mouse["kinship"])
    y = io.read_fam_phenotype(mouse["prefix"], 1)
    return K, y, dlmm.scan(io.read_plink(mouse["prefix"]), y, kinship=K).compute()


def _assert_same_scan(ds, bed_scan):
    """``ds``'s scan has the .bed scan's p-values, variant by variant (by id)."""
    K, y, ref = bed_scan
    res = dlmm.scan(ds, y, kinship=K).compute()
    ids = res["variant_id"].values
    got, want = _neglog10(res, ids), _neglog10(ref, ids)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isfinite(got).sum() > 9000
    assert np.nanmax(np.abs(got - want)) <= 1e-6


def _neglog10(res, ids) -> np.ndarray:
    p = pd.Series(res["variant_lmm_p_value"].values[:, 0], index=res["variant_id"].values)
    return -np.log10(p.loc[ids].to_numpy())


def test_scans_of_pgen_and_bgen_equal_the_bed_scan(converted, bed_scan):
    """p-values with the same kinship (GEMMA's), variant by variant: the LRT does not
    depend on which allele is counted.  BGEN 8-bit holds hardcalls exactly, so its
    bound is the .pgen's."""
    _assert_same_scan(read_pgen(converted["pgen"]), bed_scan)
    _assert_same_scan(read_bgen(converted["bgen"], converted["sample"]), bed_scan)


# --------------------------------------------------------------------------
# bad input: one clear line each
# --------------------------------------------------------------------------
def _copy(src_prefix, dst_prefix, exts):
    for e in exts:
        shutil.copy(f"{src_prefix}{e}", f"{dst_prefix}{e}")


def test_pgen_bad_input(converted, tmp_path):
    t = tmp_path / "t"
    _copy(converted["pgen"], t, (".pgen", ".pvar"))
    with pytest.raises(InputError, match=r"t\.psam: PLINK 2 \.psam file not found"):
        read_pgen(t)
    lines = open(f"{converted['pgen']}.psam").readlines()
    open(f"{t}.psam", "w").writelines(lines[:-1])
    with pytest.raises(InputError, match="has 1939 samples but the .pgen has 1940"):
        read_pgen(f"{t}.pgen")
    shutil.copy(f"{converted['pgen']}.psam", f"{t}.psam")
    lines = open(f"{converted['pgen']}.pvar").readlines()
    open(f"{t}.pvar", "w").writelines(lines[:-5])
    with pytest.raises(InputError, match="has 10295 variants but the .pgen has 10300"):
        read_pgen(t)
    shutil.copy(f"{converted['pgen']}.psam", f"{t}.pgen")
    with pytest.raises(InputError, match=r"not a PLINK 2 \.pgen"):
        read_pgen(t)


def test_bgen_bad_input(converted, tmp_path):
    with pytest.raises(InputError, match="BGEN file not found"):
        read_bgen(tmp_path / "none.bgen")
    with pytest.raises(InputError, match=r"\.sample file not found"):
        read_bgen(converted["bgen"], tmp_path / "none.sample")
    lines = open(converted["sample"]).readlines()
    (tmp_path / "short.sample").write_text("".join(lines[:-1]))
    with pytest.raises(InputError, match="has 1939 samples but the .bgen has 1940"):
        read_bgen(converted["bgen"], tmp_path / "short.sample")
    (tmp_path / "fake.bgen").write_bytes(open(f"{converted['pgen']}.pgen", "rb").read(4096))
    with pytest.raises(InputError, match="not a BGEN file"):
        read_bgen(tmp_path / "fake.bgen")


def test_vcf_is_refused_with_the_vcf2zarr_line(tmp_path):
    from dlmm.vcf import read_vcf

    with pytest.raises(InputError, match=r"g\.vcf\.gz: VCF/BCF is read through a VCF Zarr "
                       r"store\. Fix: convert it once: vcf2zarr convert \S+g\.vcf\.gz "
                       r"\S+g\.vcz .* then give \S+g\.vcz$"):
        read_vcf(tmp_path / "g.vcf.gz")


def test_vcf_through_vcf2zarr_scans_like_the_bed(mouse, converted, bed_scan):
    """The way the refusal points: plink2's VCF, sorted and indexed (tabix), converted
    by vcf2zarr; its store's dosages and p-values equal the .bed's."""
    need_peer("tabix", shutil.which("tabix") is not None)
    pytest.importorskip("bio2zarr")
    pytest.importorskip("cyvcf2")
    d = converted["dir"]
    _plink2(d, "--pfile", "m", "--sort-vars", "--make-pgen", "--out", "sorted")
    _plink2(d, "--pfile", "sorted", "--export", "vcf", "bgz", "--out", "m")
    subprocess.run(["tabix", "-p", "vcf", "m.vcf.gz"], cwd=d, check=True)
    subprocess.run([sys.executable, "-m", "bio2zarr", "vcf2zarr", "convert", "-p", "0",
                    "m.vcf.gz", "m.vcz"], cwd=d, check=True, capture_output=True)
    ds = io.open_store(d / "m.vcz")
    _check_dosages(io.read_plink(mouse["prefix"]), ds)
    _assert_same_scan(ds, bed_scan)
