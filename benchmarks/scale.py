"""Biobank scale, measured: dlmm's full-rank and low-rank paths as n grows, beside BOLT-LMM
and GEMMA on the same files, in the same run.

Data: simulated families (``families.py``: nuclear families from four populations,
20,000 unlinked variants on ten chromosomes, 10 strong causal variants and 1,000 small
ones), written once per size as PLINK files into ``--cache``.

dlmm: ``dlmm scan PREFIX --no-plot --scheduler ADDRESS`` (default chunking) as its own
process (the client), on a local cluster of ``--workers`` worker processes x
``--threads`` threads started by this script: full rank at ``--full`` sizes (and with
``--rotation-dtype float32`` too, ``--full-float32``), low rank
(``--kinship-variants 2000``) at ``--lowrank`` sizes. Per run: the wall time by phase,
from the scheduler's task stream (start-up; the GRM pass or the low-rank factor; the
eigendecomposition and null fit on the client, up to the first scan task; the scan;
the end: the TSV and the log), the peak RSS (VmHWM) of the client and of each worker,
and lambda_GC of the null (non-causal) variants' LRT p-values.

Peers: BOLT-LMM ``--lmmInfOnly`` (infinitesimal model, leave-one-chromosome-out;
``--numThreads`` = the cluster's threads) at ``--bolt`` sizes, GEMMA ``-gk 1`` then
``-lmm 2`` at ``--gemma`` sizes (wall time of the two processes together, peak RSS of
the larger). Printed for each dlmm run with a peer at the same n: the wall-time and
peak-memory ratios (peer / dlmm; dlmm's memory is the client's and the workers' peaks
added) and lambda_GC beside BOLT's, and against GEMMA the max |d(-log10 p)|.

    python benchmarks/scale.py [--full 10000 20000] [--lowrank 20000 50000 100000 200000]
        [--bolt 10000 50000] [--gemma 10000] [--variants 20000] [--cache DIR]
        [--full-float32]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import causal_variants, write_families  # noqa: E402

GIB = 2**30
# task keys of each phase (substrings), in order
PHASES = [("grm", ("grm-pass-", "grm-merge-", "_grm_finish")),
          # low rank: the factor's rows to disk, its Gram, U1 to disk, the null's sums
          ("factor", ("factor-rows-", "store-map", "gram-", "from-zarr", "matmul")),
          ("scan", ("_block-", "lowrank-sums", "lowrank-scan"))]


def _hwm(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(v.split()[1]) * 1024 for v in f if v.startswith("VmHWM"))


def _own_peak() -> int:
    return _hwm("self")


def run_watched(cmd: list[str], **kw) -> tuple[float, int, str]:
    """Run ``cmd``; its wall time, its peak RSS (VmHWM, polled) and its stderr."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)
    peak = 0
    while p.poll() is None:
        try:
            peak = max(peak, _hwm(p.pid))
        except (OSError, StopIteration):
            pass
        time.sleep(0.2)
    err = p.stderr.read()
    if p.returncode:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - t0, peak, err


def lambda_gc(p: np.ndarray) -> float:
    """Median chi2(1) statistic of the p-values over its null median."""
    from scipy.stats import chi2

    p = p[np.isfinite(p)]
    return float(np.median(chi2.isf(p, 1)) / chi2.ppf(0.5, 1))


def _phases(stream: list[dict], t0: float, t_end: float) -> dict[str, float]:
    """Seconds per phase from the task stream (compute start/stop of each task)."""
    spans = {}
    for name, parts in PHASES:
        times = [(ss["start"], ss["stop"]) for t in stream for ss in t.get("startstops", ())
                 if ss.get("action") == "compute" and any(x in str(t["key"]) for x in parts)]
        if times:
            spans[name] = (min(a for a, _ in times), max(b for _, b in times))
    out, last = {}, t0
    for name in ("grm", "factor"):
        if name in spans:
            out["start-up"] = spans[name][0] - t0
            out[name] = spans[name][1] - spans[name][0]
            last = spans[name][1]
    if "scan" in spans:
        out["eigen+null" if "grm" in spans else "set-up"] = spans["scan"][0] - last
        out["scan"] = spans["scan"][1] - spans["scan"][0]
        out["end"] = t_end - spans["scan"][1]
    return out


def run_dlmm(prefix: Path, out: Path, extra: list[str], workers: int, threads: int) -> dict:
    from distributed import Client, LocalCluster, get_task_stream

    cmd = [sys.executable, "-m", "dlmm.cli", "scan", str(prefix), "--out", str(out),
           "--overwrite", "--no-plot", "--no-dashboard", *extra]
    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                      memory_limit=0, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        with get_task_stream(c) as ts:
            t0 = time.time()
            wall, client_peak, _ = run_watched(cmd + ["--scheduler", cluster.scheduler_address])
            t_end = time.time()
        worker_peaks = list(c.run(_own_peak).values())
    res = pd.read_csv(f"{out}.assoc.tsv", sep="\t", usecols=["rs", "p_lrt"])
    return {"wall": wall, "client": client_peak, "workers": worker_peaks,
            "phases": _phases(ts.data, t0, t_end), "assoc": res}


def run_gemma(prefix: Path, d: Path) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    w1, m1, _ = run_watched(["gemma", "-bfile", str(prefix), "-gk", "1", "-o", "g"], cwd=d)
    w2, m2, _ = run_watched(["gemma", "-bfile", str(prefix), "-k", "output/g.cXX.txt",
                             "-lmm", "2", "-o", "l"], cwd=d)
    res = pd.read_csv(d / "output" / "l.assoc.txt", sep="\t", usecols=["rs", "p_lrt"])
    log = (d / "output" / "l.log.txt").read_text()
    eig = re.search(r"time on eigen-decomposition = ([0-9.eE+-]+)", log)
    return {"wall": w1 + w2, "peak": max(m1, m2), "grm": w1, "assoc": res,
            "eigen": 60 * float(eig.group(1)) if eig else float("nan")}


def run_bolt(prefix: Path, d: Path, threads: int) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    stats = d / "bolt.stats"
    wall, peak, _ = run_watched(["bolt", f"--bfile={prefix}", "--phenoUseFam", "--lmmInfOnly",
                                 f"--numThreads={threads}", f"--statsFile={stats}"], cwd=d)
    res = pd.read_csv(stats, sep="\t", usecols=["SNP", "P_BOLT_LMM_INF"])
    return {"wall": wall, "peak": peak,
            "assoc": res.rename(columns={"SNP": "rs", "P_BOLT_LMM_INF": "p"})}


def _null_lambda(assoc: pd.DataFrame, col: str, causal: set[str]) -> float:
    return lambda_gc(assoc.loc[~assoc["rs"].isin(causal), col].to_numpy(dtype=float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", type=int, nargs="*", default=[10_000, 20_000])
    ap.add_argument("--lowrank", type=int, nargs="*", default=[20_000, 50_000, 100_000, 200_000])
    ap.add_argument("--bolt", type=int, nargs="*", default=[10_000, 50_000])
    ap.add_argument("--gemma", type=int, nargs="*", default=[10_000])
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--kinship-variants", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads per worker (and BOLT's)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dlmm-scale-cache"))
    ap.add_argument("--full-float32", action="store_true",
                    help="also the full-rank runs with --rotation-dtype float32")
    a = ap.parse_args()
    a.cache.mkdir(parents=True, exist_ok=True)
    runs = [("full rank", n, []) for n in a.full] + \
           [("full rank float32", n, ["--rotation-dtype", "float32"])
            for n in (a.full if a.full_float32 else [])] + \
           [(f"low rank {a.kinship_variants}", n, ["--kinship-variants", str(a.kinship_variants)])
            for n in a.lowrank]
    sizes = sorted({n for _, n, _ in runs} | set(a.bolt) | set(a.gemma))
    print(f"{a.variants} variants; dlmm on {a.workers} worker process(es) x {a.threads} "
          f"thread(s), default chunking; peaks are VmHWM", flush=True)
    peers: dict[tuple[str, int], dict] = {}
    for n in sizes:
        t0 = time.perf_counter()
        prefix = write_families(a.cache / f"fam_{n}x{a.variants}", n, a.variants)
        causal = causal_variants(prefix)
        if time.perf_counter() - t0 > 1:
            print(f"n = {n}: PLINK set written in {time.perf_counter() - t0:.0f} s", flush=True)
        if n in a.bolt:
            b = peers["bolt", n] = run_bolt(prefix, a.cache / f"bolt_{n}", a.workers * a.threads)
            b["lambda"] = _null_lambda(b["assoc"], "p", causal)
            print(f"n = {n:>7} BOLT-LMM --lmmInfOnly: {b['wall']:7.1f} s, peak "
                  f"{b['peak'] / GIB:.2f} GiB, lambda_GC (null variants) {b['lambda']:.3f}",
                  flush=True)
        if n in a.gemma:
            g = peers["gemma", n] = run_gemma(prefix, a.cache / f"gemma_{n}")
            print(f"n = {n:>7} GEMMA -gk 1 + -lmm 2: {g['wall']:7.1f} s (GRM {g['grm']:.0f} s, "
                  f"eigendecomposition {g['eigen']:.0f} s), peak {g['peak'] / GIB:.2f} GiB, "
                  f"lambda_GC {_null_lambda(g['assoc'], 'p_lrt', causal):.3f}", flush=True)
        for name, m, extra in runs:
            if m != n:
                continue
            r = run_dlmm(prefix, a.cache / f"dlmm_{name.replace(' ', '_')}_{n}", extra,
                         a.workers, a.threads)
            lam = _null_lambda(r["assoc"], "p_lrt", causal)
            mem = r["client"] + sum(r["workers"])
            print(f"n = {n:>7} dlmm {name}: {r['wall']:7.1f} s ("
                  + ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
                  + f"); peak client {r['client'] / GIB:.2f} GiB, workers "
                  + ", ".join(f"{w / GIB:.2f}" for w in r["workers"])
                  + f" GiB; lambda_GC (null variants) {lam:.3f}", flush=True)
            if ("bolt", n) in peers:
                b = peers["bolt", n]
                print(f"{'':>10} vs BOLT-LMM: time BOLT / dlmm {b['wall'] / r['wall']:.2f}, peak "
                      f"memory BOLT / dlmm {b['peak'] / mem:.3f}; lambda_GC dlmm {lam:.3f}, "
                      f"BOLT {b['lambda']:.3f}", flush=True)
            if ("gemma", n) in peers and name.startswith("full rank"):
                g = peers["gemma", n]
                both = r["assoc"].merge(g["assoc"], on="rs", suffixes=("", "_g"))
                d = np.abs(np.log10(both["p_lrt"]) - np.log10(both["p_lrt_g"]))
                print(f"{'':>10} vs GEMMA: time GEMMA / dlmm {g['wall'] / r['wall']:.2f}, peak "
                      f"memory GEMMA / dlmm {g['peak'] / mem:.2f}; max |d(-log10 p)| "
                      f"{np.nanmax(d):.2e} over {len(both)} variants", flush=True)


if __name__ == "__main__":
    main()
