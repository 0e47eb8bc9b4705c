"""Lost workers and clusters across hosts: a worker SIGKILLed mid-scan, and a
scheduler and workers in separate network namespaces (three "hosts").

Both compare the statistics with a scan on this machine's local cluster.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from dlmm import results
from _cluster import (PY, blocks_done, dask_cluster, dlmm_cli, network_namespaces,
                      worker_task_counts)

STATS = ("variant_lmm_logl", "variant_lmm_lrt_statistic", "variant_lmm_beta",
         "variant_lmm_beta_se", "variant_lmm_lambda", "variant_lmm_p_value")
ARGS = ["--solver", "em", "--chunk-size", 100]  # 30 blocks of ~0.3 s each


@pytest.fixture(scope="module")
def local(plink, tmp_path_factory):
    """The reference: the same scan on the default local cluster."""
    out = tmp_path_factory.mktemp("local") / "local"
    r = dlmm_cli("scan", plink["prefix"], *ARGS, "--out", out)
    assert r.returncode == 0, r.stderr
    return results.open_results(f"{out}.zarr").load()


def _same(a, b):
    np.testing.assert_array_equal(a["variant_lmm_tested"], b["variant_lmm_tested"])
    assert a["variant_lmm_tested"].values.sum() > 2900
    for v in STATS:
        x, y = a[v].values, b[v].values
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        if v == "variant_lmm_p_value":
            # dp/d(statistic) of chi2(1) is ~1/sqrt(2 pi stat): at p ~ 0.999 (stat ~ 1e-6)
            # a few ulps of lnL (~-400; numpy's sums round with the arrays' alignment)
            # move p by ~1e-10.  The statistic itself is compared to 1e-10 above.
            away = a["variant_lmm_lrt_statistic"].values > 1e-3
            x, y = x[away], y[away]
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-10, err_msg=v)


def test_worker_sigkill_mid_scan(plink, local, tmp_path):
    """SIGKILL one of two workers once some blocks are written: the scan completes
    (the scheduler reruns the lost tasks on the other worker) with the same results."""
    import subprocess

    out = tmp_path / "dist"
    with dask_cluster(tmp_path) as cluster:
        scan = subprocess.Popen([PY, "-m", "dlmm.cli", "scan", str(plink["prefix"]),
                                 *map(str, ARGS), "--scheduler", cluster.address,
                                 "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while blocks_done(f"{out}.zarr") < 3 and time.time() < deadline and scan.poll() is None:
            time.sleep(0.02)
        assert not (tmp_path / "dist.assoc.tsv").exists()  # only renamed into place at the end
        victim = cluster.workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        at_kill = blocks_done(f"{out}.zarr")
        stdout, stderr = scan.communicate(timeout=600)
        assert scan.returncode == 0, stderr
        assert 3 <= at_kill < 30, at_kill  # killed mid-scan, not before or after
        alive = worker_task_counts(cluster.address)
        assert len(alive) == 1 and list(alive.values())[0] > 0, alive
    assert sorted(p.name for p in tmp_path.glob("dist*")) == [
        "dist.assoc.tsv", "dist.log.txt", "dist.report.html", "dist.zarr"]  # no temporary left
    import zarr

    res = results.open_results(f"{out}.zarr").load()
    blocks = zarr.open_group(f"{out}.zarr", mode="r")["blocks"]
    assert blocks["done"][:].all() and (blocks["run"][:] == 0).all()
    _same(res, local)


def test_scan_across_network_namespaces(plink, local, tmp_path):
    """Scheduler on 10.231.17.1, workers on .2 and .3, each in its own network
    namespace (veth pairs on a bridge); the client runs in the first worker's."""
    with network_namespaces(3) as hosts:
        (ns_s, ip_s), (ns_a, ip_a), (ns_b, ip_b) = hosts
        wrap = {ns: ["ip", "netns", "exec", ns] for ns, _ in hosts}
        with dask_cluster(tmp_path, scheduler_host=ip_s, worker_hosts=(ip_a, ip_b),
                          scheduler_prefix=wrap[ns_s],
                          worker_prefixes=[wrap[ns_a], wrap[ns_b]],
                          client_prefix=wrap[ns_a]) as cluster:
            assert cluster.address.startswith(f"tcp://{ip_s}:"), cluster.address
            r = dlmm_cli("scan", plink["prefix"], *ARGS, "--scheduler", cluster.address,
                         "--out", tmp_path / "ns", prefix=wrap[ns_a])
            assert r.returncode == 0, r.stderr
            counts = worker_task_counts(cluster.address, prefix=wrap[ns_b])
        hosts_seen = sorted(a.split("://")[1].rsplit(":", 1)[0] for a in counts)
        assert hosts_seen == sorted([ip_a, ip_b]) and all(c > 0 for c in counts.values()), counts
    _same(results.open_results(tmp_path / "ns.zarr").load(), local)
