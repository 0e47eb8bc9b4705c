"""Low-rank mode (FaST-LMM) against the full-rank path at the same n, in the same run.

Writes a simulated VCF Zarr store (default 20,000 samples x 20,000 variants,
streamed chunk by chunk; kept in ``--dir`` for reruns), starts a local cluster
(``--workers`` processes x ``--threads``) for each scan, and runs ``dlmm scan``
as its own process (the client), twice:

* low rank: ``--kinship-variants K`` (default 2,000 variants spread evenly):
  the GRM factor Z (n x K) and U (n x r) on disk, from the K x K Gram Z'Z; each
  variant's rotation costs O(n r);
* full rank: the GRM of every variant (n x n, one pass), its eigendecomposition
  (O(n^3)), U (n x n); each variant's rotation costs O(n^2).

Printed per mode: wall time, client peak RSS, worker peak RSS; then the ratios
full / low rank, and how far apart their p-values are (the two kinships differ,
so they are not expected to agree; this is for orientation).

    python benchmarks/lowrank.py [--samples 20000] [--variants 20000] [--rank 2000]
        [--dir DIR] [--skip-full]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure, write_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--rank", type=int, default=2_000, help="kinship variants (K)")
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, help="where to keep the store (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-full", action="store_true", help="time the low-rank scan only")
    a = ap.parse_args()
    gib = 2**30
    with tempfile.TemporaryDirectory() as tmp:
        d = a.dir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        store, pheno = write_store(d, a.samples, a.variants, a.chunk_size, a.seed)
        print(f"{a.samples} samples x {a.variants} variants: store ready in "
              f"{time.perf_counter() - t0:.0f} s; {a.workers} worker(s) x {a.threads} "
              f"thread(s), chunks of {a.chunk_size}", flush=True)
        modes = [("low rank", ("--kinship-variants", str(a.rank)))]
        if not a.skip_full:
            modes.append(("full rank", ()))
        res = {}
        for name, extra in modes:
            out = d / f"res_{name.replace(' ', '_')}"
            r = measure(store, pheno, out, a.workers, a.chunk_size,
                        extra=("--no-plot", *extra), threads=a.threads)
            res[name] = (r, out)
            print(f"{name:>9}: {r['wall']:.1f} s; client peak {r['client_peak'] / gib:.2f} GiB; "
                  "worker peak " + ", ".join(f"{x / gib:.2f}" for x in r["worker_peaks"])
                  + " GiB", flush=True)
            tr = r["client_trace"]
            if tr:
                at, peak = max(tr, key=lambda x: x[1])
                print(f"           client RSS sampled: peak {peak / gib:.2f} GiB at {at:.0f} s")
            log = Path(f"{out}.log.txt").read_text().splitlines()
            print("           " + "; ".join(v.strip("# ") for v in log
                                            if "low-rank" in v or "pve estimate" in v))
        if len(res) == 2:
            (lo, lo_out), (fu, fu_out) = res["low rank"], res["full rank"]
            print(f"full / low rank: time {fu['wall'] / lo['wall']:.1f}x, client peak "
                  f"{fu['client_peak'] / lo['client_peak']:.1f}x, worker peak "
                  f"{max(fu['worker_peaks']) / max(lo['worker_peaks']):.1f}x")
            import xarray as xr

            p = [xr.open_zarr(f"{o}.zarr")["variant_lmm_p_value"].values for o in (lo_out, fu_out)]
            lp = -np.log10(p[0]), -np.log10(p[1])
            ok = np.isfinite(lp[0]) & np.isfinite(lp[1])
            print(f"-log10 p, low vs full rank kinship: correlation "
                  f"{np.corrcoef(lp[0][ok], lp[1][ok])[0, 1]:.4f}, max |difference| "
                  f"{np.abs(lp[0][ok] - lp[1][ok]).max():.3f}")


if __name__ == "__main__":
    main()
