"""`dlmm grm`: the GRM over small variant chunks against GEMMA's -gk 1 and -gk 2, and the
kinship formats `scan --kinship` reads (GEMMA text, .npy, Zarr)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from dlmm import io, samples
from dlmm.demo import write_demo_plink

from _cluster import dask_cluster, tasks_run


def _kinship(path, ids=None) -> np.ndarray:
    """A kinship file's matrix, in the genotypes' sample order when ``ids`` are given."""
    kin = io.read_kinship(path)
    if ids is None:
        return kin.values
    pos, _ = samples.join_kinship(kin, ids)
    assert (pos >= 0).all()
    return kin.values[np.ix_(pos, pos)]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("kind", ["centred", "standardised"])
def test_grm_cli_equals_gemma(mouse, mouse_gk2, tmp_path, kind):
    extra, ref, txt = ([], mouse["kinship"], "cXX") if kind == "centred" else \
        (["--standardise"], mouse_gk2, "sXX")
    out = tmp_path / "k"
    # 1,000-variant chunks: 13 Dask tasks for 12,226 variants
    r = cli("grm", mouse["prefix"], "-o", out, "--chunk-size", 1000, "--gemma-text", *extra)
    assert r.returncode == 0, r.stderr
    K_gemma = np.loadtxt(ref)
    ids = io.read_plink(mouse["prefix"])["sample_id"].values
    K_zarr = _kinship(f"{out}.zarr", ids)
    K_text = _kinship(f"{out}.{txt}.txt")
    assert K_zarr.shape == (1940, 1940)
    assert np.abs(K_zarr - K_gemma).max() < 1e-8
    assert np.abs(K_text - K_gemma).max() < 1e-8
    stored = xr.open_zarr(f"{out}.zarr")
    assert stored["grm"].attrs["kind"] == kind
    assert list(stored["sample_id"].values.astype(object)) == list(ids.astype(object))
    # the two kinds really differ (the test can tell them apart)
    other = np.loadtxt(mouse_gk2 if kind == "centred" else mouse["kinship"])
    assert np.abs(K_zarr - other).max() > 0.1


def test_grm_on_real_workers_equals_gemma(mouse, tmp_path):
    """Two `dask worker` processes: each adds its run of the variant blocks into one sum of
    its own (one chain of tasks per worker, not a sum per block), and the two sums make
    GEMMA's -gk 1 matrix."""
    out = tmp_path / "k"
    with dask_cluster(tmp_path) as cluster:
        r = cli("grm", mouse["prefix"], "-o", out, "--chunk-size", 1000,
                "--scheduler", cluster.address)
        assert r.returncode == 0, r.stderr
        ran = tasks_run(cluster.address, "grm-pass-")
    # 13 blocks of 1,000 variants: 6 and 7 consecutive ones per worker
    assert sorted(ran.values()) == [6, 7], ran
    kin = io.read_kinship(f"{out}.zarr")
    assert list(kin.ids) == list(io.read_plink(mouse["prefix"])["sample_id"].values)
    assert np.abs(kin.values - np.loadtxt(mouse["kinship"])).max() < 1e-8


def test_a_dataset_persisted_on_workers_gives_the_same_kinships_and_scans(sim, tmp_path):
    """``ds.persist()`` on real workers (its blocks are futures, which a task of the GRM
    pass cannot read itself): the GRM, the full-rank scan and the low-rank one equal
    those of the Dataset read from the files."""
    import dask
    from distributed import Client

    import dlmm

    ds = dlmm.open_genotypes(sim, chunk_size=400)
    y = np.random.default_rng(3).normal(size=ds.sizes["samples"])

    def run(data):
        return (dlmm.grm(data).values, dlmm.scan(data, y)["variant_lmm_p_value"].values,
                dlmm.scan(data, y, kinship_variants=300)["variant_lmm_p_value"].values)

    with dask.config.set(scheduler="threads"):
        ref = run(ds)
    with dask_cluster(tmp_path) as cluster, Client(cluster.address, timeout=60) as client:
        held = ds.persist()
        assert any(type(v).__name__ == "Future"
                   for v in dict(held["call_dosage"].data.__dask_graph__()).values())
        got = run(held)
        assert any(tasks_run(cluster.address, "grm-pass-").values())  # on the workers
        client.cancel(held)
    assert np.isfinite(ref[1]).sum() > 1000
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10)  # sums in another order


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("grm")
    write_demo_plink(d / "sim", seed=5, n_families=40, n_variants=1500)
    return d / "sim"


def test_scan_reads_every_kinship_format(sim, tmp_path):
    r = cli("grm", sim, "-o", tmp_path / "k", "--chunk-size", 400, "--gemma-text")
    assert r.returncode == 0, r.stderr
    K = _kinship(tmp_path / "k.zarr")
    np.save(tmp_path / "k.npy", K)
    assert np.array_equal(_kinship(tmp_path / "k.npy"), K)
    assert np.abs(_kinship(tmp_path / "k.cXX.txt") - K).max() < 1e-9
    tables = {}
    for name, path in [("default", None), ("zarr", tmp_path / "k.zarr"),
                       ("text", tmp_path / "k.cXX.txt")]:
        extra = [] if path is None else ["--kinship", path]
        r = cli("scan", sim, "--out", tmp_path / name, *extra)
        assert r.returncode == 0, r.stderr
        tables[name] = pd.read_csv(tmp_path / f"{name}.assoc.tsv", sep="\t")
    ref = tables.pop("default")
    assert len(ref) > 1000
    for name, t in tables.items():
        assert list(t["rs"]) == list(ref["rs"]), name
        # the default scan sums the GRM over other chunks (rounding differs in the last
        # bits), so the optimiser may stop a hair apart on flat likelihoods
        d = np.abs(np.log10(t["p_lrt"]) - np.log10(ref["p_lrt"]))
        assert d.max() < 1e-4, (name, d.max())
        assert np.median(d) < 1e-8, (name, np.median(d))


def test_kinship_zarr_is_matched_by_sample_id(sim, tmp_path):
    from dlmm import store
    ds = io.read_plink(sim)
    n = ds.sizes["samples"]
    ids = ds["sample_id"].values
    rng = np.random.default_rng(0)
    A = rng.normal(size=(n, n))
    K = A @ A.T / n
    # stored in reverse order: read back in the genotypes' order
    rev = xr.DataArray(K[::-1, ::-1], dims=("samples", "samples_2"),
                       coords={"sample_id": ("samples", ids[::-1])})
    store.write_kinship_zarr(rev, tmp_path / "rev.zarr")
    np.testing.assert_array_equal(_kinship(tmp_path / "rev.zarr", ids), K)
    # other samples: one clear line, nothing written
    other = rev.assign_coords(sample_id=("samples", np.array([f"x{i}" for i in ids])))
    store.write_kinship_zarr(other, tmp_path / "other.zarr")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("scan", sim, "--kinship", tmp_path / "other.zarr", "--out", out / "res")
    assert r.returncode == 2
    msg = r.stderr.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("dlmm: error: ") and "sample ids" in msg[0]
    assert list(out.iterdir()) == []
