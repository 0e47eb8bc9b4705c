"""The low-rank scan sharded over samples (``dlmm.sharded``).

* On real ``dask worker`` processes whose memory limit is below the size of U1
  (U1 is on disk, each task reads its rows; no task sees U1 whole): equal to dlmm's
  full-rank path given the same rank-r kinship (numpy, U whole in memory, every
  sample of a block at once), to 1e-8, with missing calls,
  both models, the exact solver with the four tests (LRT, Wald, score, least squares)
  and the EM solver with both starts.
* The same results whatever the chunking over samples and over variants.
"""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest
from _cluster import dask_cluster

import dlmm
from dlmm import kernels, schema, sharded, store
from dlmm.io import open_store
from dlmm.kinship import dosage_blocks, factor_rows
from dlmm.simulate import simulate_population

N, M = 2400, 600
#: below U1's size (about 2387 x 300 float64, 5.7 MB).  A task's inputs must fit (Dask
#: refuses it otherwise): a chunk of the factor or U1 (0.96 MB), two chunks' sums.
MEMORY_LIMIT = 3_000_000
SAMPLE_CHUNK = 400  # six chunks of samples
CASES = [("additive", "exact", "all,ols", "classic"), ("genotypic", "exact", "all,ols", "classic"),
         ("additive", "em", "lrt", "null"), ("genotypic", "em", "lrt", "classic")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A Zarr store (2400 samples x 600 variants in chunks of 100, 1% missing calls, a
    variant with 4%), two traits missing on 13 samples, two covariates, and the low-rank
    kinship of every second variant as an n x n matrix (numpy, for the reference)."""
    ds, y = simulate_population(N, M, chunk_size=200, n_causal=30, seed=11)
    ds = ds.compute()
    rng = np.random.default_rng(12)
    x = ds["call_dosage"].values.copy()
    x[rng.random(x.shape) < 0.01] = np.nan
    x[5, rng.random(N) < 0.04] = np.nan
    ds["call_dosage"] = (("variants", "samples"), x)
    path = tmp_path_factory.mktemp("sharded") / "g.zarr"
    with dask.config.set(scheduler="threads"):
        store.convert(ds, path, chunk_size=100)
    Y = np.column_stack([y, 0.5 * y + rng.normal(size=N)])
    Y[rng.choice(N, 13, replace=False)] = np.nan
    W = np.column_stack([np.ones(N), rng.normal(size=N)])
    samples = ~np.isnan(Y[:, 0])
    kin = np.arange(0, M, 2)
    with dask.config.set(scheduler="threads"):
        Z = dlmm.grm_factor(open_store(path), kin, samples, W[samples])["grm_factor"].values
    Z = Z - Z.mean(axis=0)
    K = np.zeros((N, N))
    K[np.ix_(samples, samples)] = Z @ Z.T
    return {"path": path, "Y": Y, "W": W, "samples": samples, "kin": kin, "K": K,
            "scratch": tmp_path_factory.mktemp("scratch")}


def _sharded(d, model, solver, test, em_start="classic", sample_chunk=None,
             variant_chunk=None):
    """The low-rank scan through dlmm.sharded's entry points (the current Dask
    scheduler): ``(results (M, 2, columns), nulls, U1)``."""
    ds = open_store(d["path"])
    if variant_chunk is not None:
        ds = ds.assign(call_dosage=ds["call_dosage"].chunk({"variants": variant_chunk}))
    s, W, Y = d["samples"], d["W"][d["samples"]], d["Y"][d["samples"]]
    _, rows, used = factor_rows(ds, d["kin"], s, W, center=True)
    ev, U1, _ = sharded.lowrank_eigen(rows, used, scratch=d["scratch"],
                                      sample_chunk=sample_chunk)
    nulls = sharded.lowrank_nulls(ev, U1, W, Y, solver=solver)
    out = sharded.lowrank_scan_blocks(
        dosage_blocks(ds), s, ev, U1, W, Y, nulls, model=model, solver=solver,
        em_start=em_start, tests=schema.parse_tests(test))
    return out.compute(), nulls, U1


def _full_rank(d, model, solver, test, em_start="classic"):
    """dlmm's full-rank path (numpy eigendecomposition, U whole) on the same kinship."""
    with dask.config.set(scheduler="threads"):
        res = dlmm.scan(open_store(d["path"]), d["Y"], kinship=d["K"], covariates=d["W"],
                        model=model, solver=solver, tests=test, em_start=em_start)
        nulls = {key: res[spec[0]].values for key, spec in schema.NULL_VARIABLES.items()
                 if spec[0] in res}
        return res.encoding["dlmm_blocks"].array.compute(), nulls


def _assert_same(a, b, cols, rtol, atol):
    assert a.shape == b.shape
    for i, c in enumerate(cols):
        if "iterations" in c:
            continue  # the same optimum, possibly a step more or fewer
        np.testing.assert_allclose(a[:, :, i], b[:, :, i], rtol=rtol, atol=atol, err_msg=c)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two ``dask worker`` processes with ``--memory-limit`` below
    U1's size; only the managed-memory spill acts (pausing and restarting on the
    process's RSS, which the interpreter alone exceeds, are off)."""
    from distributed import Client

    env = {"DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
           "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False",
           "DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE": "False"}
    with dask_cluster(tmp_path_factory.mktemp("workers"), worker_env=env,
                      worker_args=["--memory-limit", MEMORY_LIMIT]) as c, \
            Client(c.address, timeout=60, set_as_default=False) as client:
        yield client


@pytest.mark.parametrize("model,solver,test,em_start", CASES)
def test_on_workers_below_u1_size_equals_the_full_rank_path(data, cluster, model, solver,
                                                            test, em_start):
    ref, attrs = _full_rank(data, model, solver, test, em_start)
    with cluster.as_current(), dask.config.set(scheduler=cluster.get):
        got, nulls, U1 = _sharded(data, model, solver, test, em_start,
                                  sample_chunk=SAMPLE_CHUNK)
    assert len(U1.chunks[0]) == 6 and U1.nbytes > MEMORY_LIMIT
    assert set(cluster.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
               .values()) == {MEMORY_LIMIT}
    # U1 is on disk (each task reads its rows): no key of it on the workers
    assert isinstance(U1, sharded.DiskRows)
    keys = cluster.run(lambda dask_worker: [str(k) for k in dask_worker.data])
    assert not any("from-zarr" in k or "U1" in k for ks in keys.values() for k in ks), keys
    cols = kernels.result_columns(model, schema.parse_tests(test))
    tested = ref[:, 0, cols.index("tested")] == 1
    assert 400 < tested.sum() < M and (got[:, :, cols.index("tested")] == ref[
        :, :, cols.index("tested")]).all()
    assert got[5, 0, cols.index("n_miss")] > 0.03 * N
    _assert_same(got, ref, cols, rtol=1e-8, atol=1e-8)
    assert nulls[0].rank == len(data["kin"])  # all pass the filters, and q < n
    for j, x in enumerate(nulls):
        for key, value in x.summary().items():
            if key != "kinship_rank":
                np.testing.assert_allclose(value, attrs[key][j], rtol=1e-9, err_msg=key)


@pytest.mark.parametrize("variant_chunk", [None, 77])
@pytest.mark.parametrize("sample_chunk", [None, 400, 97])
def test_results_do_not_depend_on_the_chunking(data, sample_chunk, variant_chunk):
    """One chunk of samples (U1 whole in a task) and 100-variant blocks is the reference;
    other chunkings only add the same sums in another order."""
    with dask.config.set(scheduler="threads"):
        ref, *_ = _sharded(data, "genotypic", "exact", "all,ols")
        got, _, U1 = _sharded(data, "genotypic", "exact", "all,ols",
                              sample_chunk=sample_chunk, variant_chunk=variant_chunk)
    assert len(U1.chunks[0]) == (1 if sample_chunk is None else -(-2387 // sample_chunk))
    cols = kernels.result_columns("genotypic", kernels.TESTS)
    assert (ref[:, 0, cols.index("tested")] == 1).sum() > 400
    _assert_same(got, ref, cols, rtol=1e-9, atol=1e-10)


def test_eigenvectors_on_disk_are_removed_with_them(data):
    """U1 is a Zarr array in a scratch folder of its own, removed when U1 goes."""
    import gc

    with dask.config.set(scheduler="threads"):
        _, U1 = _sharded(data, "additive", "exact", "lrt", sample_chunk=500)[1:]
    folder = Path(U1.path).parent
    assert folder.parent == data["scratch"] and U1.read(1).shape == (500, U1.shape[1])
    assert sorted(p.name for p in folder.iterdir()) == ["U1"]  # the factor was removed
    del U1, _
    gc.collect()
    assert not folder.exists()
