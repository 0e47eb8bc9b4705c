"""Zarr genotype stores, chunk/worker invariance, resume after SIGKILL, a real
``dask scheduler`` + ``dask worker`` cluster on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import dlmm
from dlmm import export, io, results
from _cluster import blocks_done, dask_cluster, dlmm_cli as cli, shared_state_stories


def test_convert_roundtrip(plink, tmp_path):
    r = cli("convert", plink["prefix"], tmp_path / "g.zarr", "--chunk-size", 700)
    assert r.returncode == 0, r.stderr
    ds = io.open_store(tmp_path / "g.zarr")
    ref = io.read_plink(plink["prefix"])
    assert ds["call_genotype"].dtype == np.int8 and ds["call_genotype"].shape == (3000, 300, 2)
    assert ds["call_genotype"].data.chunks[0][0] == 700
    a, b = ds["call_dosage"].values, ref["call_dosage"].values
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
    for v in ("variant_id", "variant_position", "variant_contig", "sample_id"):
        np.testing.assert_array_equal(ds[v].values.astype(object).astype(str),
                                      ref[v].values.astype(object).astype(str))
    assert (tmp_path / "g.zarr").is_dir() and not (tmp_path / "g.zarr.partial").exists()


def test_foreign_store_is_a_clear_error(tmp_path):
    xr.Dataset({"x": ("a", np.arange(3))}).to_zarr(tmp_path / "f.zarr", zarr_format=2)
    with pytest.raises(dlmm.InputError, match="no call_genotype or call_dosage"):
        io.open_store(tmp_path / "f.zarr")


def _scan(prefix, chunk, K, y):
    ds = io.read_plink(prefix, chunk_size=chunk)
    return dlmm.scan(ds, y, kinship=K)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_do_not_depend_on_chunks_or_workers(plink, workers):
    from distributed import Client, LocalCluster

    prefix = plink["prefix"]
    y = io.read_fam_phenotype(prefix)
    K = dlmm.grm(io.read_plink(prefix), ~np.isnan(y)).values
    base = _scan(prefix, 3000, K, y).compute(scheduler="sync")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        for chunk in (256, 1000):
            got = _scan(prefix, chunk, K, y).compute()
            assert got["variant_lmm_p_value"].chunks is None
            # BLAS rounds a (256, n) @ (n, n) product differently from a (3000, n) one:
            # lnL, the LRT statistic and beta agree to 1e-10 (seen: 5e-12).  p-values
            # near 1 move more (chi2(1)'s density is unbounded at 0), so they are
            # compared relatively at 1e-8.
            for v in ("variant_lmm_logl", "variant_lmm_lrt_statistic", "variant_lmm_beta",
                      "variant_lmm_beta_se", "variant_lmm_p_value"):
                a, b = base[v].values, got[v].values
                np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
                if v == "variant_lmm_p_value":
                    np.testing.assert_allclose(a, b, rtol=1e-8, atol=0)
                else:
                    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
            np.testing.assert_array_equal(base["variant_lmm_tested"], got["variant_lmm_tested"])


def test_resume_after_sigkill(plink, tmp_path):
    """SIGKILL the scan midway; --resume finishes it without redoing finished blocks."""
    args = [plink["prefix"], "--solver", "em", "--chunk-size", 100]
    r = cli("scan", *args, "--out", tmp_path / "full")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "cut"
    p = subprocess.Popen([sys.executable, "-m", "dlmm.cli", "scan", *map(str, args), "--out",
                          str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while blocks_done(f"{out}.zarr") < 5 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    import zarr

    before = zarr.open_group(f"{out}.zarr.partial", mode="r")
    done_before = before["blocks/done"][:].copy()
    assert 5 <= done_before.sum() < done_before.size, done_before.sum()
    assert not Path(f"{out}.assoc.tsv").exists() and not Path(f"{out}.zarr").exists()
    assert not results.is_complete(f"{out}.zarr.partial")
    r = cli("scan", *args, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    after = zarr.open_group(f"{out}.zarr", mode="r")
    assert after["blocks/done"][:].all() and results.is_complete(f"{out}.zarr")
    assert not Path(f"{out}.zarr.partial").exists()
    runs = after["blocks/run"][:]
    np.testing.assert_array_equal(runs[done_before], 0)   # not recomputed
    np.testing.assert_array_equal(runs[~done_before], 1)  # computed by the resume
    full = pd.read_csv(tmp_path / "full.assoc.tsv", sep="\t")
    cut = pd.read_csv(f"{out}.assoc.tsv", sep="\t")
    pd.testing.assert_frame_equal(full, cut)


def test_real_dask_cluster_on_loopback(plink, tmp_path):
    """`dask scheduler` + two `dask worker` processes; scan through --scheduler."""
    with dask_cluster(tmp_path) as cluster:
        r = cli("scan", plink["prefix"], "--scheduler", cluster.address, "--chunk-size", 500,
                "--out", tmp_path / "dist")
        assert r.returncode == 0, r.stderr
        r = cli("scan", plink["prefix"], "--out", tmp_path / "local")
        assert r.returncode == 0, r.stderr
        a = pd.read_csv(tmp_path / "dist.assoc.tsv", sep="\t")
        b = pd.read_csv(tmp_path / "local.assoc.tsv", sep="\t")
        assert len(a) > 2900
        pd.testing.assert_frame_equal(a.drop(columns="iterations"),
                                      b.drop(columns="iterations"), rtol=1e-8)
        # the workers' own logs: both ran blocks, and U (with the null fit) entered
        # each worker's memory exactly once, whatever the number of blocks it ran
        stories = shared_state_stories(cluster.address)
        assert len(stories) == 2
        assert max(n for n, _ in stories.values()) >= 2  # 6 blocks on 2 workers
        for worker, (n_blocks, arrivals) in stories.items():
            assert n_blocks >= 1, worker
            assert arrivals == ["put-in-memory"], (worker, arrivals)


def test_store_paths_as_fsspec_urls(tmp_path):
    """file:// and memory:// URLs open the same store (s3://, gs:// go the same way)."""
    import uuid

    from dlmm.demo import write_demo_plink

    write_demo_plink(tmp_path / "p", seed=5, n_families=20, n_variants=200)
    assert cli("convert", tmp_path / "p", tmp_path / "g.zarr", "--chunk-size", 50).returncode == 0
    local = io.open_store(tmp_path / "g.zarr")
    url = (tmp_path / "g.zarr").as_uri()
    assert url.startswith("file:///") and io.is_zarr_store(url)
    import fsspec

    root = f"/dlmm-{uuid.uuid4().hex}"
    fsspec.filesystem("memory").put(str(tmp_path / "g.zarr"), f"{root}/g.zarr", recursive=True)
    mem = f"memory://{root}/g.zarr"
    assert not io.is_zarr_store(f"memory://dlmm-{uuid.uuid4().hex}/none.zarr")
    y = io.read_fam_phenotype(tmp_path / "p")
    base = dlmm.scan(local, y).compute(scheduler="sync")
    for where in (url, mem):
        ds = io.open_store(where)
        np.testing.assert_array_equal(ds["call_dosage"].values, local["call_dosage"].values)
        got = dlmm.scan(ds, y).compute(scheduler="sync")
        # the same genotypes; each scan eigendecomposes its GRM anew, and threaded
        # LAPACK is not bit-reproducible: equal to rounding
        np.testing.assert_allclose(got["variant_lmm_p_value"], base["variant_lmm_p_value"],
                                   rtol=1e-8)
    # the command line takes the URL where it takes the store's path
    r = cli("scan", url, "--out", tmp_path / "u")
    assert r.returncode == 0, r.stderr
    r = cli("scan", tmp_path / "g.zarr", "--out", tmp_path / "l")
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "u.assoc.tsv", sep="\t"),
                                  pd.read_csv(tmp_path / "l.assoc.tsv", sep="\t"), rtol=1e-8)
    assert results.open_results(tmp_path / "u.zarr").attrs["source"] == url


def test_tsv_format_matches_pandas_writer():
    """format_table writes what pandas' to_csv wrote before it: NaN as an empty field,
    inf, -0, subnormals, big integers, quoted strings, missing strings."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(200) * 10.0 ** rng.integers(-30, 30, 200)
    x[:8] = [np.nan, np.inf, -np.inf, -0.0, 1e-320, 123456789012.5, 0.5, 2.0]
    df = pd.DataFrame({
        "chr": pd.array(["1", "X", None, 'a"b', "c\td", "e\nf", "g,h", ""] + ["2"] * 192,
                        dtype="string"),
        "ps": rng.integers(0, 2**40, 200),
        "af": rng.random(200),
        "p_lrt": x,
        "beta": np.where(rng.random(200) < 0.1, np.nan, rng.standard_normal(200)),
        "iterations": rng.integers(0, 50, 200),
    })
    ref = df.assign(af=df["af"].map("{:.3f}".format)).to_csv(sep="\t", index=False,
                                                              float_format="%.10g")
    assert export.format_table(df) == ref


def test_plink_reader_decodes_like_bed_reader(tmp_path):
    """The .bed decoder against bed-reader's writer: missing calls, a sample count that
    is not a multiple of 4 (a padded last byte), blocks that start mid-file."""
    from bed_reader import to_bed

    rng = np.random.default_rng(3)
    n, m = 7, 23
    x = rng.integers(0, 3, (n, m)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    to_bed(tmp_path / "r.bed", x, count_A1=True,
           properties={"iid": [f"s{i}" for i in range(n)], "sid": [f"v{j}" for j in range(m)],
                       "allele_1": ["C"] * m, "allele_2": ["T"] * m})
    ds = io.read_plink(tmp_path / "r", chunk_size=5)
    assert ds["call_dosage"].data.numblocks[0] == 5
    np.testing.assert_array_equal(ds["call_dosage"].values, x.T)
    assert (ds["variant_allele"].values[:, 1] == "C").all()  # the dosage counts A1


@pytest.mark.parametrize("traits", [1, 2])
def test_store_takes_each_block_from_one_task_unless_a_variable_was_edited(plink, traits,
                                                                           tmp_path):
    """A scan's result is written one task per block (the scan's, split into the
    variables on the client), the same store as one task per variable and block; a variable edited after
    the scan is written as edited."""
    import dask
    import xarray as xr
    from dask.callbacks import Callback

    prefix = plink["prefix"]
    ds = io.read_plink(prefix, chunk_size=700)
    y = io.read_fam_phenotype(prefix)
    Y = y if traits == 1 else np.column_stack([y, np.roll(y, 7)])
    res = dlmm.scan(ds, Y)
    computed = []

    def count(key, *_, **__):
        computed.append(key)

    with dask.config.set(scheduler="sync"), Callback(pretask=count):
        results.write_results(res, tmp_path / "one.zarr")
    # per block: the .bed read and the scan (and the GRM pass before), nothing else
    n_blocks = ds["call_dosage"].data.numblocks[0]
    scans = [k for k in computed if "block" in str(k) and "read" not in str(k)]
    assert len(scans) == n_blocks and not any("getitem" in str(k) for k in computed), computed

    slow = res.copy()
    slow.encoding = {}  # no record of the scan's one array: a task per variable and block
    results.write_results(slow, tmp_path / "each.zarr")
    a = results.load_results(tmp_path / "one.zarr", index=False)
    b = results.load_results(tmp_path / "each.zarr", index=False)
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert a["variant_lmm_tested"].dtype == bool and a["variant_n_missing"].dtype == np.int64

    edited = res.copy()
    edited["variant_lmm_p_value"] = edited["variant_lmm_p_value"] * 0.5
    results.write_results(edited, tmp_path / "edited.zarr")
    c = results.load_results(tmp_path / "edited.zarr", index=False)
    np.testing.assert_array_equal(c["variant_lmm_p_value"], 0.5 * a["variant_lmm_p_value"])
    np.testing.assert_array_equal(c["variant_lmm_beta"], a["variant_lmm_beta"])
