"""dlmm.memory: chunks by bytes, a scan's peak estimated before the work, the one-line
refusal. (The figures against measured peak RSS: benchmarks/memory_estimate.py.)"""

from __future__ import annotations

import pytest

from dlmm import memory
from dlmm.errors import InputError

GIB = 2**30
SIZES = [100, 1_000, 10_000, 100_000, 1_000_000]
TASKS = [dict(task="scan"), dict(task="grm"),
         dict(task="grm", float64=True), dict(task="convert"), dict(task="convert", ploidy=4)]


@pytest.mark.parametrize("kw", TASKS, ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("budget", [64 * 2**20, memory.TASK_BUDGET, 2 * GIB])
def test_chunk_bounds_the_bytes_per_task_whatever_n(kw, budget):
    chunks = []
    for n in SIZES:
        chunk = memory.auto_chunk_size(n, budget=budget, **kw)
        assert 1 <= chunk <= memory.MAX_CHUNK
        if chunk > 1:  # one variant is the least a task can hold
            assert memory.task_bytes(n, chunk, **kw) <= budget, (n, chunk)
        if chunk < memory.MAX_CHUNK:  # the budget, not the cap, decided: it is nearly used
            assert memory.task_bytes(n, chunk + 1, **kw) > budget, (n, chunk)
        chunks.append(chunk)
    assert chunks == sorted(chunks, reverse=True)  # fewer variants as n grows
    assert chunks[-1] < chunks[0]


def test_chunk_gives_every_thread_tasks():
    # 12,226 variants on 2 threads: at least 4 tasks
    assert memory.auto_chunk_size(2000, n_variants=12_226, n_threads=2) == 3057


def test_task_bytes_grow_with_samples_variants_and_rank():
    b = memory.task_bytes
    assert b(10_000, 2000) > b(10_000, 1000) > b(5_000, 1000)
    assert b(10_000, 1000, task="grm", float64=True) > b(10_000, 1000, task="grm")
    assert b(10_000, 1000, task="convert", ploidy=4) > b(10_000, 1000, task="convert")
    with pytest.raises(ValueError):
        b(10, 10, task="other")


def test_full_rank_estimate_grows_as_n_squared():
    e1, e2 = (memory.estimate_scan("full", n, 20_000) for n in (20_000, 40_000))
    runtime = memory.RUNTIME["client"]
    ratio = (e2.client_peak - runtime) / (e1.client_peak - runtime)
    assert 3.8 < ratio < 4.2  # n x n matrices, and the rest is small
    assert e1.client_phase in ("centre", "eigen")
    assert {"kinship", "eigenvectors", "LAPACK workspace", "runtime"} <= set(
        e1.client_phases["eigen"])
    # each worker holds U and its tasks; more threads, more tasks at once
    scan = e1.worker_phases["scan"]
    assert scan["eigenvectors"] == 8 * 20_000**2 and scan["tasks"] > 0
    assert e1.worker_phases["grm"]["kinship sums"] == 8 * 20_000**2  # one per worker
    more = memory.estimate_scan("full", 20_000, 20_000, threads_per_worker=8)
    assert more.worker_peak > e1.worker_peak
    # U in float32 halves the workers' copy
    f32 = memory.estimate_scan("full", 20_000, 20_000, rotation_dtype="float32")
    assert f32.worker_phases["scan"]["eigenvectors"] == scan["eigenvectors"] // 2
    # two workers: their sums are added on one of them
    two = memory.estimate_scan("full", 20_000, 20_000, n_workers=2)
    assert two.worker_phases["grm"]["kinship sums"] == 2 * 8 * 20_000**2
    # more variants: a little more on the client (the tables), not per worker
    big = memory.estimate_scan("full", 20_000, 2_000_000)
    assert big.worker_peak == e1.worker_peak


def test_low_rank_estimate_stays_flat_as_n_grows():
    """The factor and U1 are on disk: a worker holds chunks of them, whatever n."""
    es = [memory.estimate_scan("lowrank", n, 20_000, n_kinship_variants=2000,
                               threads_per_worker=2) for n in (20_000, 50_000, 200_000)]
    assert max(e.worker_peak for e in es) < 1.2 * min(e.worker_peak for e in es)
    assert max(e.worker_peak for e in es) < 2 * GIB
    full = memory.estimate_scan("full", 50_000, 20_000)
    assert es[1].worker_peak < full.client_peak / 10
    # the client holds the q x q Gram and its eigenvectors, no n-sized array
    assert es[2].client_peak == es[0].client_peak
    assert es[0].client_phases["gram"]["Gram and its eigenvectors"] == 4 * 8 * 2000**2
    assert es[0].worker_phases["gram"]["Gram sums"] == 2 * 8 * 2000**2
    # a lower --kinship-rank: thinner chunks of U1 (when they are below the chunk bytes)
    thin, wide = (memory.estimate_scan("lowrank", 10_000, 20_000, n_kinship_variants=2000,
                                       rank=r) for r in (500, 2000))
    assert thin.worker_phases["scan"]["tasks"] < wide.worker_phases["scan"]["tasks"]
    # kinship variants in a few blocks (a file of neighbours): more rows per block
    few = memory.estimate_scan("lowrank", 200_000, 2_000, n_kinship_variants=2000,
                               threads_per_worker=2)
    assert few.worker_phases["factor"]["tasks"] > es[2].worker_phases["factor"]["tasks"]


def test_loco_and_in_process_estimates():
    full = memory.estimate_scan("full", 10_000, 20_000)
    loco = memory.estimate_scan("loco", 10_000, 20_000, n_contigs=10)
    # the n x n matrices: each contig's kinship and eigenvectors, against one of each
    assert loco.client_peak > 3 * (full.client_peak - memory.RUNTIME["client"])
    assert loco.worker_phases["grm"]["kinship sums"] == 11 * 8 * 10_000**2
    one = memory.estimate_scan("full", 10_000, 20_000, in_process=True, threads_per_worker=2)
    apart = memory.estimate_scan("full", 10_000, 20_000, threads_per_worker=2)
    assert one.worker_peak == 0 and one.worker_phases == {}
    # one process: at least the worker's side, and U once, so less than the two together;
    # its kinship is centred in place (the client of a worker process copies it, twice)
    assert apart.worker_peak <= one.client_peak < apart.client_peak + apart.worker_peak
    assert apart.client_phases["centre"]["centring copies"] == 2 * 8 * 10_000**2
    assert "centring copies" not in one.client_phases["centre"]
    with pytest.raises(ValueError):
        memory.estimate_scan("other", 10, 10)


def test_check_fits_refuses_in_one_line_with_the_figures_and_the_way_out():
    e = memory.estimate_scan("full", 60_000, 20_000)
    with pytest.raises(InputError) as info:
        memory.check_fits(e, 24 * GIB, [24 * GIB])
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("memory: a full-rank scan of 60,000 samples needs about ")
    assert f"{e.client_peak / GIB:.1f} GiB on the client" in msg and "24.0 GiB" in msg
    assert "--kinship-variants" in msg and "--kinship-rank" in msg
    memory.check_fits(e, 2 * e.client_peak, [2 * e.worker_peak] * 3)  # fits: no error
    # a worker short, the client not
    with pytest.raises(InputError, match="per worker") as info:
        memory.check_fits(e, 2 * e.client_peak, [2 * e.worker_peak, e.worker_peak - 1])
    assert "on the client" not in str(info.value)
    low = memory.estimate_scan("lowrank", 200_000, 20_000, n_kinship_variants=2000)
    with pytest.raises(InputError) as info:
        memory.check_fits(low, low.client_peak - 1, [])
    msg = str(info.value)
    assert "low-rank scan of 200,000" in msg and "--kinship-rank" in msg
    assert "workers" in msg and "\n" not in msg


def test_scan_refuses_before_the_work_when_the_cluster_is_too_small(tmp_path):
    """6,000 samples in full rank need ~1 GiB on the client (the kinship, its centring and
    eigendecomposition): a 512 MiB local cluster refuses in one line, before the GRM
    pass, and writes nothing; the same scan with the low-rank kinship is let through
    the check and runs."""
    import subprocess
    import sys

    from dlmm.demo import write_demo_plink

    write_demo_plink(tmp_path / "g", seed=5, n_families=1200, n_variants=40)
    base = [sys.executable, "-m", "dlmm.cli", "scan", str(tmp_path / "g"), "--no-plot",
            "--no-dashboard", "--memory-limit", "512MiB"]
    r = subprocess.run(base + ["--out", str(tmp_path / "full")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("dlmm: error: memory: a full-rank scan of 6,000 samples needs")
    assert "--kinship-variants" in line and "GiB" in line
    assert "GRM" not in r.stdout
    assert not list(tmp_path.glob("full*"))
    # (given 2 GiB: at 512 MiB a whole process's runtime makes the worker pause)
    low = base[:-1] + ["2GiB", "--kinship-variants", "20", "--out", str(tmp_path / "low")]
    r = subprocess.run(low, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # a count of kinship variants is no input file (nor part of the resume's identities)
    log = (tmp_path / "low.log.txt").read_text()
    assert "## low-rank kinship" in log and "## input kinship_variants" not in log


def test_client_and_local_workers_share_the_machine():
    """Worker processes on the client's machine share its memory: their peaks and the
    client's add up, phase by phase (not each against the whole machine)."""
    e = memory.estimate_scan("full", 20_000, 20_000, threads_per_worker=2)
    grm = e.client_phases["grm"], e.worker_phases["grm"]
    assert e.together(1) >= sum(grm[0].values()) + sum(grm[1].values())
    assert e.together(1) < e.client_peak + e.worker_peak + 1  # at most both peaks
    assert e.together(2) > e.together(1)
    room = max(e.client_peak, e.worker_peak) + 1
    memory.check_fits(e, room, [room])  # each fits alone
    with pytest.raises(InputError, match="on this machine for the client and its 1 worker"):
        memory.check_fits(e, room, [room], local_workers=1)
