"""dlmm against GEMMA 0.98.5, end to end, on the same inputs in the same run.

GEMMA: ``gemma -gk 1`` then ``gemma -lmm 2`` (two processes, timed together).
dlmm: ``dlmm scan PREFIX --out OUT`` with its default outputs (one process: read PLINK,
GRM, eigendecomposition, null fit, scan on a local Dask cluster with its dashboard,
write Zarr, TSV, log and the HTML report), as a user runs it (issue 17).  The two are run
alternately (A/B, B/A, ...) ``--reps`` times; medians of wall time, the ratio GEMMA /
dlmm, the same of CPU time (user + system, steadier on a shared machine) and the
agreement of the p-values (max and median |d(-log10 p)|) are printed.

Data sets: mouse_hs1940 phenotype 1 (Debian's gemma-doc), and a simulated
set with few samples and many variants (default 400 x 300,000), where
GEMMA's per-variant optimisation dominates.

    python benchmarks/vs_gemma.py [--reps 3] [--sim-samples 400] [--sim-variants 300000]
        [--only mouse|sim] [--dlmm-args '--no-plot --no-dashboard']
"""

from __future__ import annotations

import argparse
import gzip
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

EXAMPLE = Path("/usr/share/doc/gemma/example")


def mouse(d: Path) -> Path:
    for ext in ("bed", "bim", "fam"):
        with gzip.open(EXAMPLE / f"mouse_hs1940.{ext}.gz") as src, \
                open(d / f"mouse.{ext}", "wb") as dst:
            shutil.copyfileobj(src, dst)
    return d / "mouse"


def simulated(d: Path, n: int, m: int, seed: int = 3) -> Path:
    """A PLINK fileset of ``n`` samples x ``m`` variants (structured population)."""
    from bed_reader import to_bed

    from dlmm.simulate import simulate_population

    ds, y = simulate_population(n, m, chunk_size=50_000, seed=seed)
    prefix = d / f"sim{n}x{m}"
    props = {"fid": ds["sample_id"].values, "iid": ds["sample_id"].values,
             "pheno": [f"{v:.6f}" for v in y],
             "chromosome": (ds["variant_contig"].values + 1).astype(str),
             "sid": ds["variant_id"].values, "bp_position": ds["variant_position"].values,
             "allele_1": ["G"] * m, "allele_2": ["A"] * m}
    to_bed(f"{prefix}.bed", ds["call_dosage"].values.T.astype(np.float32), properties=props,
           count_A1=True)
    return prefix


def timed(*commands: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``commands`` one after another: (wall seconds, CPU seconds: user + system of
    the processes and their children, which on a shared machine is steadier)."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    for cmd in commands:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_gemma(prefix: Path, d: Path) -> tuple[float, float]:
    return timed(["gemma", "-bfile", str(prefix), "-gk", "1", "-o", "g"],
                 ["gemma", "-bfile", str(prefix), "-k", "output/g.cXX.txt", "-lmm", "2",
                  "-n", "1", "-o", "g_lmm"], cwd=d)


def run_dlmm(prefix: Path, d: Path, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    # the default command (HTML report and dashboard on) unless --dlmm-args;
    # --overwrite for the repeats
    return timed([sys.executable, "-m", "dlmm.cli", "scan", str(prefix), "--out",
                  str(d / "dlmm"), "--overwrite", *extra], cwd=d)


def agreement(d: Path) -> tuple[float, float, int]:
    g = pd.read_csv(d / "output/g_lmm.assoc.txt", sep="\t")
    o = pd.read_csv(d / "dlmm.assoc.tsv", sep="\t")
    both = g.merge(o, on="rs", suffixes=("_g", "_d"))
    diff = np.abs(np.log10(both["p_lrt_g"]) - np.log10(both["p_lrt_d"]))
    return float(diff.max()), float(diff.median()), len(both)


def compare(name: str, prefix: Path, d: Path, reps: int, extra: tuple[str, ...]) -> None:
    times: dict[str, list[tuple[float, float]]] = {"gemma": [], "dlmm": []}
    for rep in range(reps):
        order = ("gemma", "dlmm") if rep % 2 == 0 else ("dlmm", "gemma")
        for tool in order:
            times[tool].append(run_gemma(prefix, d) if tool == "gemma"
                               else run_dlmm(prefix, d, extra))
    med = {k: statistics.median(t for t, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    mx, md, k = agreement(d)
    what = " ".join(extra) or "(report included)"
    print(f"{name}: GEMMA -gk 1 + -lmm 2 median {med['gemma']:.2f} s; dlmm scan {what} "
          f"median {med['dlmm']:.2f} s; ratio GEMMA/dlmm {med['gemma'] / med['dlmm']:.2f}")
    print("  runs (s): GEMMA " + " ".join(f"{t:.2f}" for t, _ in times["gemma"])
          + "; dlmm " + " ".join(f"{t:.2f}" for t, _ in times["dlmm"]))
    print(f"  CPU time (user + sys) medians: GEMMA {cpu['gemma']:.2f} s, dlmm "
          f"{cpu['dlmm']:.2f} s; ratio {cpu['gemma'] / cpu['dlmm']:.2f}")
    print(f"  {k} variants in both: |d(-log10 p)| max {mx:.2e}, median {md:.2e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sim-samples", type=int, default=400)
    ap.add_argument("--sim-variants", type=int, default=300_000)
    ap.add_argument("--only", choices=("mouse", "sim"))
    ap.add_argument("--dlmm-args", default="",
                    help="extra dlmm scan flags, e.g. '--no-plot --no-dashboard'")
    a = ap.parse_args()
    if shutil.which("gemma") is None:
        raise SystemExit("gemma is not installed (apt-get install gemma gemma-doc)")
    extra = tuple(a.dlmm_args.split())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.only in (None, "mouse"):
            (tmp / "mouse").mkdir()
            compare("mouse_hs1940 (1410 analysed samples x 10,768 variants), phenotype 1",
                    mouse(tmp / "mouse"), tmp / "mouse", a.reps, extra)
        if a.only in (None, "sim"):
            (tmp / "sim").mkdir()
            prefix = simulated(tmp / "sim", a.sim_samples, a.sim_variants)
            compare(f"simulated ({a.sim_samples} samples x {a.sim_variants:,} variants)",
                    prefix, tmp / "sim", a.reps, extra)


if __name__ == "__main__":
    main()
