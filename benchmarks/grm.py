"""The GRM pass alone: wall time and peak memory, at a few numbers of samples.

Each measurement runs in a fresh process (the client): ``dlmm.grm(ds, samples,
subset=True).values`` on simulated families (``families.py``, cached in ``--cache``) on

* ``local``: the CLI's default cluster, one worker in the process with a thread per core;
* ``workers``: a local cluster of ``--workers`` worker processes (one thread per core
  shared between them), the client in its own process.

With ``--loco``, ``dlmm.kinship.grm_loco`` (one GRM per contig, ten contigs) instead.

Printed: the wall time of the pass, the peak RSS (VmHWM) of the client and of each
worker, and the peak above the process's RSS before the pass in units of one n x n
float64 matrix. ``--pythonpath DIR`` runs another checkout's ``dlmm`` (e.g. the commit
before a change, from ``git archive``) for an A/B comparison in the same run.

    python benchmarks/grm.py [--samples 6000 10000] [--variants 20000] [--mode local workers]
        [--pythonpath OLD_CHECKOUT] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import write_families  # noqa: E402

GIB = 2**30


def _status(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(v.split()[1]) * 1024 for v in f if v.startswith(field))


def _peak() -> int:
    return _status("VmHWM:")


def child(prefix: str, mode: str, workers: int, chunk: int, loco: bool = False) -> dict:
    """The pass in this process; returns its figures."""
    import numpy as np
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    import dlmm
    from dlmm.kinship import grm, grm_loco

    ds = dlmm.read_plink(prefix, chunk_size=chunk)
    samples = ~np.isnan(dlmm.read_fam_phenotype(prefix))
    if mode == "local":
        kw = dict(n_workers=1, threads_per_worker=CPU_COUNT, processes=False)
    else:
        kw = dict(n_workers=workers, threads_per_worker=max(1, CPU_COUNT // workers),
                  processes=True)
    with LocalCluster(dashboard_address=None, memory_limit=0, **kw) as cluster, \
            Client(cluster) as client:
        before = _status("VmRSS:")
        t0 = time.perf_counter()
        K = grm_loco(ds, samples).values[0] if loco else grm(ds, samples, subset=True).values
        wall = time.perf_counter() - t0
        worker_peaks = [] if mode == "local" else list(client.run(_peak).values())
    return {"wall": wall, "client_peak": _peak(), "client_before": before,
            "worker_peaks": worker_peaks, "n": int(K.shape[0]),
            "checksum": float(np.abs(K).sum())}


def measure(prefix: Path, mode: str, workers: int, chunk: int, pythonpath: str | None,
            loco: bool) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, __file__, "--child", str(prefix), "--mode", mode,
                        "--workers", str(workers), "--chunk-size", str(chunk)]
                       + (["--loco"] if loco else []),
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[6000, 10000])
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--mode", nargs="+", default=["local"], choices=["local", "workers"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pythonpath", help="another checkout's dlmm, measured first (A/B)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dlmm-scale-cache"))
    ap.add_argument("--loco", action="store_true", help="grm_loco (one GRM per contig)")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.mode[0], a.workers, a.chunk_size, a.loco)))
        return
    a.cache.mkdir(parents=True, exist_ok=True)
    versions = ([("before", a.pythonpath)] if a.pythonpath else []) + [("this", None)]
    for n in a.samples:
        prefix = write_families(a.cache / f"fam_{n}x{a.variants}", n, a.variants)
        for mode in a.mode:
            for name, path in versions:
                r = measure(prefix, mode, a.workers, a.chunk_size, path, a.loco)
                nn = 8 * r["n"] ** 2
                extra = (r["client_peak"] - r["client_before"]) / nn
                workers = ("; worker peaks " + ", ".join(f"{w / GIB:.2f}" for w in
                                                         r["worker_peaks"]) + " GiB"
                           if r["worker_peaks"] else "")
                print(f"n = {n:>6} {mode:>7} {name:>6}: {'LOCO ' if a.loco else ''}GRM pass {r['wall']:6.1f} s; client "
                      f"peak {r['client_peak'] / GIB:.2f} GiB ({extra:.2f} n x n above its "
                      f"RSS before the pass){workers}; sum |K| {r['checksum']:.6g}",
                      flush=True)


if __name__ == "__main__":
    main()
