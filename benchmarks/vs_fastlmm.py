"""dlmm against FaST-LMM's ``single_snp``, with GEMMA's kinship given to both.

Inputs: mouse_hs1940 (Debian's gemma-doc), phenotype 1 (.fam column 6; NA and
-9 missing, those samples dropped by both tools) and GEMMA's centred kinship
``gemma -bfile mouse -gk 1`` (computed here, 1940 x 1940 in .fam order).

* dlmm: ``python -m dlmm.cli scan mouse --kinship output/k.cXX.txt --no-plot
  --no-dashboard``
  (whole process: imports, local Dask cluster, read, eigendecomposition, null
  fit, exact per-variant refit of the variance ratio, Zarr + TSV written);
  ``--no-plot --no-dashboard`` because FaST-LMM writes no report and serves no
  dashboard (the local Dask cluster still starts).
* FaST-LMM: ``single_snp(test_snps=Bed(...), pheno=..., K0=KernelData(iid, K),
  leave_out_one_chrom=False)`` in a fresh ``python`` process (imports, reading
  the kinship text, the scan, the table written as TSV).  A ``KernelData`` is
  a full-rank kernel: it is eigendecomposed in full, never low-rank
  approximated, and its only standardisation is ``DiagKtoN`` (K scaled by
  n / trace K on the analysed samples), which changes no p-value.
  ``leave_out_one_chrom=False`` because a precomputed kernel cannot be
  rebuilt per chromosome.  FaST-LMM keeps the variance ratio at its null
  value for every variant.

Both are also timed in process, imports excluded (dlmm:
``read_plink`` / ``read_kinship`` / ``scan(...).compute()`` on Dask's threaded
scheduler; FaST-LMM: reading the kinship text + ``single_snp``).  Each timing
alternates A/B, B/A, ... over ``--reps``; medians and the ratio FaST-LMM / dlmm
are printed.  Then the p-values: dlmm's ``p_lrt`` vs FaST-LMM's ``PValue``, and
both against ``gemma -lmm 2`` with the same kinship (the exact refit), overall
and at the 20 strongest hits; and a phase profile of dlmm's CLI path in a fresh
process (imports, cluster start, reading, kinship, eigendecomposition, null fit,
scan, writing).

    pip install "dlmm[bench]"        # fastlmm
    python benchmarks/vs_fastlmm.py [--reps 3] [--no-profile] [--blas-threads 1]

On a loaded machine multi-threaded OpenBLAS (eigendecomposition, Cholesky,
FaST-LMM's rotations) slows down many-fold when its threads wait on busy cores;
``--blas-threads 1`` times both tools with single-threaded BLAS.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path("/usr/share/doc/gemma/example")
KINSHIP = "output/k.cXX.txt"
TOP = 20


# ----------------------------------------------------------------- the two scans

def fastlmm_scan(prefix: Path, kinship: Path, kinship_values=None):
    """FaST-LMM ``single_snp`` of phenotype 1 with the given kinship -> DataFrame.

    ``kinship_values`` replaces the file's matrix (same sample order), for the
    untimed check with the kinship centred on the analysed samples.
    """
    import numpy as np
    import pandas as pd
    from fastlmm.association import single_snp
    from pysnptools.kernelreader import KernelData
    from pysnptools.snpreader import Bed, SnpData

    fam = pd.read_csv(f"{prefix}.fam", sep=r"\s+", header=None, dtype=str)
    iid = fam.iloc[:, :2].to_numpy().astype(str)
    y = np.array([np.nan if v in ("NA", "-9") else float(v) for v in fam[5]])
    pheno = SnpData(iid=iid, sid=["pheno1"], val=y[:, None])  # NaN rows are dropped
    K = np.loadtxt(kinship) if kinship_values is None else kinship_values
    K0 = KernelData(iid=iid, val=K)
    return single_snp(test_snps=Bed(f"{prefix}.bed", count_A1=True), pheno=pheno, K0=K0,
                      leave_out_one_chrom=False, count_A1=True)


def dlmm_scan(prefix: Path, kinship: Path):
    """dlmm's exact scan in process (threaded scheduler) -> computed Dataset."""
    import dlmm
    from dlmm.io import read_kinship

    ds = dlmm.read_plink(prefix)
    y = dlmm.read_fam_phenotype(prefix)
    K = read_kinship(kinship, ds.sizes["samples"])
    return dlmm.scan(ds, y, kinship=K).compute()


# ----------------------------------------------------------------- timings

def run(cmd: list, **kw) -> None:
    """Run a command quietly; on failure show its stderr and stop."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"vs_fastlmm: {' '.join(map(str, cmd))} failed (exit {p.returncode})")


def fastlmm_process(d: Path) -> float:
    """Wall time of a fresh process running FaST-LMM (this file, ``--fastlmm-process``)."""
    t0 = time.perf_counter()
    run([sys.executable, __file__, "--fastlmm-process", str(d)])
    return time.perf_counter() - t0


def dlmm_process(d: Path) -> float:
    t0 = time.perf_counter()
    run([sys.executable, "-m", "dlmm.cli", "scan", str(d / "mouse"), "--kinship",
         str(d / KINSHIP), "--out", str(d / "dlmm"), "--overwrite", "--no-plot",
         "--no-dashboard"])
    return time.perf_counter() - t0


def in_process(fn, d: Path) -> float:
    t0 = time.perf_counter()
    fn(d / "mouse", d / KINSHIP)
    return time.perf_counter() - t0


def alternate(runs: dict, reps: int) -> dict[str, list[float]]:
    """A/B, B/A, ... ``reps`` times -> the times of each."""
    names = list(runs)
    times: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            times[name].append(runs[name]())
    return times


def show(label: str, times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{label}: FaST-LMM median {med['fastlmm']:.2f} s; dlmm median {med['dlmm']:.2f} s; "
          f"ratio FaST-LMM/dlmm {med['fastlmm'] / med['dlmm']:.2f}")
    print("  runs (s): FaST-LMM " + " ".join(f"{t:.2f}" for t in times["fastlmm"])
          + "; dlmm " + " ".join(f"{t:.2f}" for t in times["dlmm"]), flush=True)


# ----------------------------------------------------------------- p-values

def p_values(d: Path, gemma: bool):
    """rs-aligned -log10 p of dlmm, FaST-LMM (and GEMMA -lmm 2) on the variants all tested."""
    import numpy as np
    import pandas as pd

    o = pd.read_csv(d / "dlmm.assoc.tsv", sep="\t", usecols=["rs", "p_lrt"])
    f = pd.read_csv(d / "fastlmm.tsv", sep="\t", usecols=["SNP", "PValue"])
    t = o.rename(columns={"p_lrt": "dlmm"}).merge(
        f.rename(columns={"SNP": "rs", "PValue": "fastlmm"}), on="rs")
    if gemma:
        g = pd.read_csv(d / "output/lmm.assoc.txt", sep="\t", usecols=["rs", "p_lrt"])
        t = t.merge(g.rename(columns={"p_lrt": "gemma"}), on="rs")
    t = t.dropna()
    cols = [c for c in ("dlmm", "fastlmm", "gemma") if c in t]
    t[cols] = -np.log10(t[cols])
    return t.sort_values("dlmm", ascending=False).reset_index(drop=True)


def diff_line(t, a: str, b: str, names: dict[str, str]) -> str:
    import numpy as np

    dd = np.abs(t[a] - t[b])
    top = dd.iloc[:TOP]
    return (f"  {names[a]} vs {names[b]}: |d(-log10 p)| max {dd.max():.3g}, median "
            f"{dd.median():.3g}; at the {TOP} strongest hits max {top.max():.3g}, median "
            f"{top.median():.3g}")


def agreement(d: Path, gemma: bool, centred) -> None:
    names = {"dlmm": "dlmm p_lrt", "fastlmm": "FaST-LMM PValue", "gemma": "GEMMA -lmm 2 p_lrt",
             "fastlmm_c": "FaST-LMM (centred K)"}
    t = p_values(d, gemma)
    print(f"p-values, {len(t)} variants tested by all (ordered by dlmm's p; hits = the "
          f"{TOP} smallest):")
    print(diff_line(t, "dlmm", "fastlmm", names))
    if gemma:
        print(diff_line(t, "dlmm", "gemma", names))
        print(diff_line(t, "fastlmm", "gemma", names))
    if centred is not None:
        import numpy as np

        c = centred.set_index("SNP")["PValue"]
        t["fastlmm_c"] = -np.log10(t["rs"].map(c).to_numpy())
        print(diff_line(t, "fastlmm_c", "gemma" if gemma else "dlmm", names)
              + " (kinship double-centred on the analysed samples, as GEMMA and dlmm use it)")
        print(diff_line(t, "fastlmm_c", "fastlmm", names))
    top = t.iloc[:5]
    print("  strongest hits, -log10 p: " + "; ".join(
        f"{r.rs} dlmm {r.dlmm:.3f} FaST-LMM {r.fastlmm:.3f}"
        + (f" GEMMA {r.gemma:.3f}" if gemma else "") for r in top.itertuples()))


def fastlmm_centred(d: Path):
    """FaST-LMM given the kinship dlmm and GEMMA actually use: the analysed
    samples' submatrix, double-centred (untimed; separates centring from the
    fixed variance ratio in the p-value differences)."""
    import numpy as np

    from dlmm.io import read_fam_phenotype
    from dlmm.kernels import center_kinship

    K = np.loadtxt(d / KINSHIP)
    keep = ~np.isnan(read_fam_phenotype(d / "mouse"))
    Kc = K.copy()  # rows of dropped samples are dropped by FaST-LMM too
    Kc[np.ix_(keep, keep)] = center_kinship(K[np.ix_(keep, keep)])
    return fastlmm_scan(d / "mouse", d / KINSHIP, kinship_values=Kc)


# ----------------------------------------------------------------- dlmm phases

def profile_dlmm(d: Path) -> None:
    """Phase timings of dlmm's CLI path (the same calls as ``dlmm scan``), run in a
    fresh process so the imports count."""
    t = {}
    t0 = time.perf_counter()
    import numpy as np
    import dask  # noqa: F401
    import distributed  # noqa: F401

    from dlmm import cli, io, kernels, scanner, store
    t["imports (numpy, dask, distributed, dlmm)"] = time.perf_counter() - t0

    def phase(name, fn):
        s = time.perf_counter()
        out = fn()
        t[name] = time.perf_counter() - s
        return out

    prefix = d / "mouse"
    ds = phase("read_plink (lazy: .bim/.fam)", lambda: io.read_plink(prefix))
    y = phase("phenotype (.fam)", lambda: io.read_fam_phenotype(prefix))
    K = phase("read_kinship (1940 x 1940 text)",
              lambda: io.read_kinship(d / KINSHIP, ds.sizes["samples"]))
    y, samples, W, _ = phase("validate_inputs (shapes, symmetry)",
                             lambda: scanner.validate_inputs(ds, y, kinship=K, psd=False))
    n = int(samples.sum())
    phase(f"[extra] eigendecomposition alone ({n} x {n})",
          lambda: kernels.eigh_kinship(kernels.center_kinship(K[np.ix_(samples, samples)])))
    null = phase("prepare (eigendecomposition + PSD check, null fits)",
                 lambda: scanner.prepare(ds, y, kinship=K))
    client_cm = cli._client(None, dashboard=False)
    client, _ = phase("local cluster start", lambda: client_cm.__enter__())
    res = phase("scan graph (lazy, scatter U)",
                lambda: scanner.scan(ds, y, kinship=K, null=null))
    phase("[extra] scan compute alone (in memory)", lambda: res.compute())
    z = d / "profile.zarr"
    phase("scan + write Zarr block by block (as the CLI does)",
          lambda: store.write_results_zarr(res, z, overwrite=True, client=client))
    phase("open Zarr + write TSV",
          lambda: store.write_tsv(store.open_results(z).load(), d / "profile.assoc.tsv"))
    phase("local cluster shutdown", lambda: client_cm.__exit__(None, None, None))
    for name, s in t.items():
        print(f"  {name:<58} {s:6.2f} s")
    print(f"  {'sum of the CLI phases (without [extra])':<58} "
          f"{sum(v for k, v in t.items() if not k.startswith('[extra]')):6.2f} s")


def startup() -> None:
    """Fresh-process start-up of each: the interpreter, then its imports."""
    code = {"python (nothing imported)": "pass",
            "dlmm CLI imports": "import dlmm.cli, dlmm.io, dlmm.scanner, dlmm.store, "
                                "distributed",
            "FaST-LMM imports": "import pandas, fastlmm.association, "
                                "pysnptools.snpreader, pysnptools.kernelreader"}
    for name, c in code.items():
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            run([sys.executable, "-c", c])
            ts.append(time.perf_counter() - t0)
        print(f"  start-up, {name:<50} {statistics.median(ts):6.2f} s (median of 3)")


# ----------------------------------------------------------------- driver

def setup(d: Path) -> None:
    for ext in ("bed", "bim", "fam"):
        with gzip.open(EXAMPLE / f"mouse_hs1940.{ext}.gz") as src, \
                open(d / f"mouse.{ext}", "wb") as dst:
            shutil.copyfileobj(src, dst)
    t0 = time.perf_counter()
    run(["gemma", "-bfile", "mouse", "-gk", "1", "-o", "k"], cwd=d)
    print(f"gemma -gk 1 (the kinship both tools are given): {time.perf_counter() - t0:.2f} s",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-gemma", action="store_true", help="skip the gemma -lmm 2 reference")
    ap.add_argument("--no-profile", action="store_true", help="skip dlmm's phase profile")
    ap.add_argument("--blas-threads", type=int, metavar="N",
                    help="OPENBLAS/OMP/MKL_NUM_THREADS for both tools (default: unset)")
    ap.add_argument("--fastlmm-process", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--profile-dlmm", metavar="DIR", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.blas_threads:  # set before numpy is imported; the subprocesses inherit it
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(a.blas_threads)
    if a.fastlmm_process:  # the timed FaST-LMM process: imports, scan, TSV
        d = Path(a.fastlmm_process)
        fastlmm_scan(d / "mouse", d / KINSHIP).to_csv(d / "fastlmm.tsv", sep="\t", index=False)
        return
    if a.profile_dlmm:
        profile_dlmm(Path(a.profile_dlmm))
        return
    if importlib.util.find_spec("fastlmm") is None:
        print("vs_fastlmm: fastlmm is not installed: pip install 'dlmm[bench]' "
              "(or pip install fastlmm)", file=sys.stderr)
        raise SystemExit(1)
    if shutil.which("gemma") is None:
        print("vs_fastlmm: gemma is not installed (apt-get install gemma gemma-doc); it "
              "computes the kinship", file=sys.stderr)
        raise SystemExit(1)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        setup(d)
        blas = f"BLAS threads {a.blas_threads}" if a.blas_threads else "BLAS threads default"
        print("mouse_hs1940, phenotype 1 (1410 of 1940 samples analysed), GEMMA's -gk 1 "
              f"kinship given to both; {a.reps} alternating reps; {blas}", flush=True)
        show("whole process (imports, read, fit, scan, write)",
             alternate({"dlmm": lambda: dlmm_process(d), "fastlmm": lambda: fastlmm_process(d)},
                       a.reps))
        import dlmm.scanner  # noqa: F401  imports outside the in-process timings
        import fastlmm.association  # noqa: F401

        show("in process (read kinship + scan, imports excluded; dlmm on the threaded "
             "scheduler)",
             alternate({"dlmm": lambda: in_process(dlmm_scan, d),
                        "fastlmm": lambda: in_process(fastlmm_scan, d)}, a.reps))
        gemma = not a.no_gemma
        if gemma:
            t0 = time.perf_counter()
            run(["gemma", "-bfile", "mouse", "-k", KINSHIP, "-lmm", "2", "-n", "1", "-o", "lmm"],
                cwd=d)
            print(f"gemma -lmm 2 with the same kinship (reference, once): "
                  f"{time.perf_counter() - t0:.2f} s")
        agreement(d, gemma, fastlmm_centred(d))
        if not a.no_profile:
            print("dlmm phase profile (one fresh process, the CLI's calls):", flush=True)
            subprocess.run([sys.executable, __file__, "--profile-dlmm", str(d)], check=True)
            startup()


if __name__ == "__main__":
    main()
