"""dlmm.memory's figures against measured peak memory (VmHWM).

Three parts (``--parts``, default all):

* ``task``: what one task really holds. In a fresh process, with its inputs made
  (U, the null fit, a GRM sum), the peak RSS is reset (``/proc/self/clear_refs``), a
  block is made as a read makes it (float32) and passed to the kernel
  (``kernels.scan_block``; low rank ``dlmm.lowrank``'s chunk sums and block test;
  ``kernels.grm_block``); the peak above the RSS before is the task's. Two block sizes give the bytes per variant and sample
  and the fixed part, beside ``dlmm.memory.task_bytes``.
* ``chunk``: the scan kernel's time per variant by block size (one thread), at
  n = 2,000 and 10,000: where it stops improving is what the default task budget
  (``dlmm.memory.TASK_BUDGET``) must allow.
* ``runs``: whole full-rank scans (``dlmm scan`` as its own process, the client, on a
  local cluster of one worker process with two threads) at n = 2,000, 5,000 and 10,000
  (20,000 variants, simulated families, ``--chunk-size 10000``): the client's and the
  worker's peak RSS beside ``dlmm.memory.estimate_scan``'s; and the CLI's default
  (one process) beside ``estimate_scan(..., in_process=True)``.

    python benchmarks/memory_estimate.py [--parts task chunk runs] [--samples 2000 5000 10000]

Measured on the shared 2-core, 24 GiB machine (peak RSS, GiB; the estimate with
dlmm.memory's constants, estimate / measured):

    n        client (own process)   worker (1 x 2 threads)   in-process (the CLI)
    2,000    0.29  est 1.19x        1.08  est 1.03x          1.09  est 1.03x
    5,000    0.74  est 1.10x        2.35  est 1.05x          2.37  est 1.04x
    10,000   2.42  est 1.03x        4.78  est 1.05x          4.80  est 1.05x

(20,000 variants, --chunk-size 10000: the worker's peak is its two tasks; the client's
is the kinship centred, ~2.9 n x n.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import write_families  # noqa: E402

GIB, MIB = 2**30, 2**20


def _status(field: str, pid="self") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(v.split()[1]) * 1024 for v in f if v.startswith(field))


def _reset_peak() -> int:
    """Reset this process's VmHWM to its RSS; returns that RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS:")


def _block(m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)  # int8 first: 5 bytes per call at most, as a read
    return rng.integers(0, 3, (m, n), dtype=np.int8).astype(np.float32)


def task_child(kind: str, n: int, m: int, r: int) -> dict:
    """One task's peak above the RSS before it (bytes) and its time."""
    from dlmm import kernels, lowrank
    from dlmm.blas import single_threaded

    rng = np.random.default_rng(1)
    if kind == "convert":  # a real conversion of a PLINK set, one chunk at a time
        import shutil
        import tempfile

        import dask

        from dlmm import read_plink
        from dlmm.store import convert

        prefix = write_families(Path(tempfile.gettempdir()) / "dlmm-scale-cache"
                                / f"fam_{n}x20000", n, 20_000)
        out = Path(tempfile.mkdtemp()) / "c.zarr"
        ds = read_plink(prefix, chunk_size=m).isel(variants=slice(0, 4 * m))
        before = _reset_peak()
        t0 = time.perf_counter()
        with dask.config.set(scheduler="sync"):
            convert(ds, out, chunk_size=m)
        res = {"peak": _status("VmHWM:") - before, "time": time.perf_counter() - t0}
        shutil.rmtree(out.parent)
        return res
    if kind == "grm":
        acc = kernels.grm_accumulator(n)
        acc[:] = 1.0  # resident (zeros are not, until written)
        use = np.ones(m, dtype=bool)
        kernels.grm_block(_block(50, n), np.ones(50, dtype=bool), acc=kernels.grm_accumulator(n))

        def run(x):
            with single_threaded():
                kernels.grm_block(x, use, acc=acc)
    else:
        U = np.linalg.qr(rng.standard_normal((n, r)))[0] if r < n else \
            rng.standard_normal((n, n)) / np.sqrt(n)
        s = np.sort(rng.uniform(0.1, 2.0, r))
        W = np.ones((n, 1))
        y = rng.standard_normal(n)
        kw = dict(samples=np.ones(n, dtype=bool), U=U, s=s, W=W, Wr=U.T @ W, yr=U.T @ y,
                  logl_null=-1000.0, lam_null=1.0)

        def task(x):  # low rank: one chunk of samples' sums, then the block's tests
            if r == n:
                return kernels.scan_block(x, **kw)
            F = np.column_stack([W, y])
            total = lowrank.chunk_sums(x, kw["samples"], U, F)
            return lowrank.lowrank_block(total, s=s, Fr=U.T @ F, FF=F.T @ F, c=1, n=n,
                                         logl_null=-1000.0, lam_null=1.0)

        task(_block(20, n))  # compiled, warm

        def run(x):
            with single_threaded():
                task(x)
    before = _reset_peak()
    t0 = time.perf_counter()
    run(_block(m, n, seed=2))  # the block as a read makes it, inside the task
    return {"peak": _status("VmHWM:") - before, "time": time.perf_counter() - t0}


def _child(*args) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *map(str, args)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def part_task() -> None:
    from dlmm.memory import task_bytes

    print("per task: peak RSS above the RSS before it (a block made inside, as a read does)")
    cases = [("scan", 2000, 2000), ("scan", 5000, 5000), ("scan", 10000, 10000),
             ("scan", 20000, 500), ("scan", 50000, 1000), ("grm", 5000, 5000),
             ("grm", 10000, 10000), ("convert", 5000, 0), ("convert", 10000, 0)]
    for kind, n, r in cases:
        ms = (500, 2000)
        got = [_child("task", kind, n, m, r)["peak"] for m in ms]
        per = (got[1] - got[0]) / (ms[1] - ms[0]) / n
        fixed = got[0] - per * ms[0] * n
        est = [task_bytes(n, m, task=kind) for m in ms]
        print(f"  {kind:>4} n = {n:>6} rank {r:>6}: {got[0] / MIB:7.1f} / {got[1] / MIB:7.1f} MiB "
              f"for {ms[0]} / {ms[1]} variants = {per:5.1f} bytes per variant and sample + "
              f"{fixed / MIB:5.1f} MiB; dlmm.memory.task_bytes {est[0] / MIB:7.1f} / "
              f"{est[1] / MIB:7.1f} MiB", flush=True)


def part_chunk() -> None:
    from dlmm.memory import task_bytes

    print("scan kernel, one thread: time per 1,000 variants by variants per task")
    for n, ms in [(2000, (100, 250, 500, 1000, 2000, 5000, 10000)),
                  (10000, (50, 100, 250, 500, 1000, 2000))]:
        rows = []
        for m in ms:
            best = min(_child("task", "scan", n, m, n)["time"] for _ in range(2))
            rows.append((m, 1000 * best / m))
        top = min(t for _, t in rows)
        for m, t in rows:
            print(f"  n = {n:>6}: {m:>6} variants ({task_bytes(n, m) / MIB:6.0f} MiB): "
                  f"{t:6.3f} s per 1,000 ({t / top:4.2f} x the best)", flush=True)


def _own_peak() -> int:
    return _status("VmHWM:")


def run_scan(prefix: Path, out: Path, chunk: int, workers: int, threads: int) -> dict:
    """``dlmm scan`` as its own process: on a local cluster of ``workers`` processes
    (``--scheduler``), or, with ``workers == 0``, on the CLI's own in-process cluster."""
    cmd = [sys.executable, "-m", "dlmm.cli", "scan", str(prefix), "--out", str(out),
           "--overwrite", "--no-plot", "--no-dashboard", "--chunk-size", str(chunk)]

    def wait(p):
        peak = 0
        while p.poll() is None:
            try:
                peak = max(peak, _status("VmHWM:", p.pid))
            except (OSError, StopIteration):
                pass
            time.sleep(0.2)
        if p.returncode:
            raise SystemExit(p.stderr.read())
        return peak

    t0 = time.perf_counter()
    if workers == 0:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = wait(p)
        return {"wall": time.perf_counter() - t0, "client": peak, "workers": []}
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                      memory_limit=0, dashboard_address=None) as cluster, Client(cluster) as c:
        p = subprocess.Popen(cmd + ["--scheduler", cluster.scheduler_address],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        client = wait(p)
        peaks = list(c.run(_own_peak).values())
    return {"wall": time.perf_counter() - t0, "client": client, "workers": peaks}


def part_runs(samples: list[int], variants: int, cache: Path, threads: int) -> None:
    from dlmm.memory import estimate_scan

    chunk = 10_000
    print(f"full-rank scans, {variants} variants, --chunk-size {chunk}: measured peak RSS "
          "against dlmm.memory.estimate_scan")
    for n in samples:
        prefix = write_families(cache / f"fam_{n}x{variants}", n, variants)
        out = cache / f"memest_{n}"
        r = run_scan(prefix, out, chunk, 1, threads)
        e = estimate_scan("full", n, variants, chunk=chunk, threads_per_worker=threads)
        print(f"  n = {n:>6}, 1 worker process x {threads} threads ({r['wall']:.0f} s): client "
              f"{r['client'] / GIB:.2f} GiB measured, {e.client_peak / GIB:.2f} estimated "
              f"({e.client_peak / r['client']:.2f}x, at {e.client_phase}); worker "
              f"{max(r['workers']) / GIB:.2f} measured, {e.worker_peak / GIB:.2f} estimated "
              f"({e.worker_peak / max(r['workers']):.2f}x, at {e.worker_phase})", flush=True)
        r = run_scan(prefix, out, chunk, 0, threads)
        e = estimate_scan("full", n, variants, chunk=chunk, threads_per_worker=threads,
                          in_process=True)
        print(f"  n = {n:>6}, the CLI's in-process cluster ({r['wall']:.0f} s): "
              f"{r['client'] / GIB:.2f} GiB measured, {e.client_peak / GIB:.2f} estimated "
              f"({e.client_peak / r['client']:.2f}x, at {e.client_phase})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["task", "chunk", "runs"],
                    choices=["task", "chunk", "runs"])
    ap.add_argument("--samples", type=int, nargs="+", default=[2000, 5000, 10000])
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dlmm-scale-cache"))
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        kind, n, m, r = a.child[1], *map(int, a.child[2:])
        print(json.dumps(task_child(kind, n, m, r)))
        return
    a.cache.mkdir(parents=True, exist_ok=True)
    if "task" in a.parts:
        part_task()
    if "chunk" in a.parts:
        part_chunk()
    if "runs" in a.parts:
        part_runs(a.samples, a.variants, a.cache, a.threads)


if __name__ == "__main__":
    main()
