"""Three phenotypes in one scan against three separate scans, in the same run.

mouse_hs1940 (Debian's gemma-doc): phenotype 1 and two seeded traits on the same
1,410 samples (phenotype 1 + noise, and pure noise), the centred GRM computed once
(``dlmm.grm``) and given to every scan, ``--test`` as chosen.  "separate" runs
``dlmm.scan`` three times (three eigendecompositions, three reads and rotations of every
genotype block); "together" runs it once on the (samples, 3) phenotype (one
eigendecomposition, one read and rotation of each block serving the three traits).  Both
on the local threaded Dask scheduler, alternately (A/B, B/A, ...) ``--reps`` times; medians
and the ratio together / separate are printed, with the largest difference between their
p-values (0 or ~1e-10: each separate scan redoes the eigendecomposition).

    python benchmarks/traits.py [--reps 3] [--test lrt] [--chunk-size 2000]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dlmm  # noqa: E402
from dlmm import io  # noqa: E402

EXAMPLE = Path("/usr/share/doc/gemma/example")
VARS = ("variant_lmm_p_value", "variant_lmm_p_value_wald", "variant_lmm_p_value_score")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--test", default="lrt")
    ap.add_argument("--chunk-size", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for ext in ("bed", "bim", "fam"):
            with gzip.open(EXAMPLE / f"mouse_hs1940.{ext}.gz") as src, \
                    open(d / f"mouse.{ext}", "wb") as dst:
                shutil.copyfileobj(src, dst)
        ds = io.read_plink(d / "mouse", chunk_size=args.chunk_size)
        y1 = io.read_fam_phenotype(d / "mouse", 1)
        rng = np.random.default_rng(1)
        y2 = y1 + rng.normal(size=y1.size)
        y3 = np.where(np.isnan(y1), np.nan, rng.normal(size=y1.size))
        Y = np.column_stack([y1, y2, y3])
        K = dlmm.grm(ds, ~np.isnan(y1)).values

        def separate():
            return [dlmm.scan(ds, Y[:, j], kinship=K, tests=args.test).compute()
                    for j in range(3)]

        def together():
            return dlmm.scan(ds, Y, kinship=K, tests=args.test).compute()

        times = {"separate": [], "together": []}
        runs = [("separate", separate), ("together", together)]
        out = {}
        for rep in range(args.reps):
            for name, fn in runs if rep % 2 == 0 else runs[::-1]:
                t0 = time.perf_counter()
                out[name] = fn()
                times[name].append(time.perf_counter() - t0)
        worst = 0.0
        for j, one in enumerate(out["separate"]):
            for v in VARS:
                if v in one:
                    a = out["together"][v].isel(traits=j).values
                    b = one[v].isel(traits=0).values
                    ok = ~np.isnan(b)
                    assert (np.isnan(a) == ~ok).all()
                    worst = max(worst, float(np.abs(a[ok] - b[ok]).max()))
        sep, tog = (statistics.median(times[k]) for k in ("separate", "together"))
        print(f"mouse_hs1940: {ds.sizes['samples']} samples x {ds.sizes['variants']} variants, "
              f"3 traits on the same 1410 samples, --test {args.test}, "
              f"chunk {args.chunk_size}, {args.reps} reps (median)")
        print(f"three separate scans: {sep:.2f} s   ({', '.join(f'{t:.2f}' for t in times['separate'])})")
        print(f"one scan of 3 traits: {tog:.2f} s   ({', '.join(f'{t:.2f}' for t in times['together'])})")
        print(f"ratio together / separate = {tog / sep:.3f}")
        print(f"max |p(together) - p(separate)| = {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
