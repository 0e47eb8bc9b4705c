"""Peak memory of a scan out of core: workers and client, at two numbers of variants.

Writes a simulated VCF Zarr store (2,000 samples; 50,000 and 200,000 variants by
default; streamed chunk by chunk), starts a local cluster of worker processes,
and runs ``dlmm scan STORE --scheduler ADDRESS`` as its own process (the client).
The client computes the GRM (one pass over the store), eigendecomposes it, fits
the null model, scatters U to the workers and collects the result blocks.

Printed per data set: wall time, the client's peak RSS (its VmHWM), each
worker's peak RSS (their own VmHWM), and the workers' RSS sampled
during the scan (first half vs second half: flat if memory does not grow with
the number of blocks). Goal (issue 3): the peaks do not grow with the number of
variants and stay under 1.5 GiB per worker.

    python benchmarks/memory.py [--samples 2000] [--variants 50000 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_store(d: Path, n: int, m: int, chunk: int, seed: int) -> tuple[Path, Path]:
    import dask

    from dlmm.simulate import simulate_population
    from dlmm.store import convert

    store, pheno = d / f"sim_{n}x{m}.zarr", d / f"sim_{n}x{m}.pheno.txt"
    if not store.exists():
        ds, y = simulate_population(n, m, chunk_size=chunk, seed=seed)
        with dask.config.set(scheduler="threads"):
            convert(ds, store, chunk_size=chunk)
        np.savetxt(pheno, y)
    return store, pheno


def _own_peak() -> int:
    """This process's peak RSS (VmHWM), in bytes: its own, whatever its parent's was
    (``ru_maxrss`` of a forked child starts at the parent's RSS)."""
    with open("/proc/self/status") as f:
        return next(int(v.split()[1]) * 1024 for v in f if v.startswith("VmHWM"))


def measure(store: Path, pheno: Path, out: Path, workers: int, chunk: int,
            extra: tuple[str, ...] = (), threads: int = 1) -> dict:
    """Run ``dlmm scan`` (plus ``extra`` options) as its own process on a fresh local
    cluster of ``workers`` processes x ``threads``; wall time and peak memories."""
    import psutil
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                      memory_limit=0, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        pids = list(c.run(os.getpid).values())
        samples: list[tuple[float, list[int]]] = []
        stop = threading.Event()

        client_trace: list[tuple[float, int]] = []
        client_hwm = [0]

        def poll(client_pid):
            procs = [psutil.Process(p) for p in pids]
            client = psutil.Process(client_pid)
            while not stop.is_set():
                now = time.perf_counter()
                samples.append((now, [p.memory_info().rss for p in procs]))
                try:
                    client_trace.append((now - t0, client.memory_info().rss))
                    with open(f"/proc/{client_pid}/status") as f:
                        hwm = next(int(v.split()[1]) * 1024 for v in f if v.startswith("VmHWM"))
                    client_hwm[0] = max(client_hwm[0], hwm)
                except (psutil.Error, OSError, StopIteration):  # the client has exited
                    pass
                time.sleep(0.25)

        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "dlmm.cli", "scan", str(store), "--pheno",
                              str(pheno), "--scheduler", cluster.scheduler_address,
                              "--chunk-size", str(chunk), "--out", str(out), "--overwrite",
                              *extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t = threading.Thread(target=poll, args=(p.pid,), daemon=True)
        t.start()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        t.join()
        if status != 0:
            raise SystemExit(f"scan failed:\n{p.stderr.read()}")
        peaks = c.run(_own_peak)
    rss = np.array([s for _, s in samples], dtype=float)
    half = len(rss) // 2
    # the client's peak: its own high-water mark (VmHWM), last read before it exited.
    # Not wait4's ru_maxrss: Linux starts a child's ru_maxrss at the parent's RSS
    # when it forks, so it reported the memory of this process after writing a store.
    return {"wall": wall, "client_peak": client_hwm[0], "client_trace": client_trace,
            "worker_peaks": list(peaks.values()),
            "worker_first_half": rss[:half].max(axis=0) if half else rss.max(axis=0),
            "worker_second_half": rss[half:].max(axis=0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--variants", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, help="where to keep the stores (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    gib = 2**30
    with tempfile.TemporaryDirectory() as tmp:
        d = a.dir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        for m in a.variants:
            t0 = time.perf_counter()
            store, pheno = write_store(d, a.samples, m, a.chunk_size, a.seed)
            t_write = time.perf_counter() - t0
            r = measure(store, pheno, d / f"res_{m}", a.workers, a.chunk_size)
            rows.append((m, r))
            print(f"{a.samples} samples x {m} variants (chunks of {a.chunk_size}): store written "
                  f"in {t_write:.0f} s, scan {r['wall']:.0f} s")
            print(f"  client peak RSS {r['client_peak'] / gib:.2f} GiB; worker peak RSS "
                  + ", ".join(f"{x / gib:.2f}" for x in r["worker_peaks"]) + " GiB")
            print("  worker RSS, max over 1st / 2nd half of the scan: "
                  + ", ".join(f"{x / gib:.2f}/{y / gib:.2f}" for x, y in
                              zip(r["worker_first_half"], r["worker_second_half"])) + " GiB",
                  flush=True)
        if len(rows) > 1:
            (m0, r0), (m1, r1) = rows[0], rows[-1]
            w = max(r1["worker_peaks"]) / max(r0["worker_peaks"])
            c = r1["client_peak"] / r0["client_peak"]
            ok = max(r1["worker_peaks"]) < 1.5 * gib and w < 1.2
            print(f"peak ratio {m1} / {m0} variants: workers {w:.2f}, client {c:.2f}; "
                  f"worker peak < 1.5 GiB and not growing: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
