"""`dlmm convert` against bio2zarr's `plink2zarr convert` on the same .bed: store size and time.

mouse_hs1940 (Debian's gemma-doc), gunzipped to a temporary folder.  Both run as whole
processes (imports included), alternately (A/B, B/A, ...) ``--reps`` times; medians, the
size ratio dlmm / bio2zarr (must be <= 1.0) and the time ratio are printed.  dlmm's store
also carries the .fam's phenotypes (``sample_phenotype``), which bio2zarr's does not, so
the size without them is printed too; and both stores must give the same dosages.

    python benchmarks/convert.py [--reps 3] [--chunk-size 10000]

Needs bio2zarr (``pip install -e ".[bench]"``).  Hold the machine's lock while it runs:
``flock /tmp/dlmm-heavy.lock python benchmarks/convert.py``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlmm import io  # noqa: E402

EXAMPLE = Path("/usr/share/doc/gemma/example")


def store_bytes(path: Path, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the files in a store (``skip``: top-level variables left out)."""
    return sum(f.stat().st_size for f in path.rglob("*")
               if f.is_file() and f.relative_to(path).parts[0] not in skip)


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=10_000)
    args = ap.parse_args()
    plink2zarr = shutil.which("plink2zarr")
    dlmm_exe = shutil.which("dlmm")
    if plink2zarr is None or dlmm_exe is None:
        print("needs the dlmm and plink2zarr executables: pip install -e '.[bench]'")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for ext in ("bed", "bim", "fam"):
            with gzip.open(EXAMPLE / f"mouse_hs1940.{ext}.gz") as src, \
                    open(d / f"mouse.{ext}", "wb") as dst:
                shutil.copyfileobj(src, dst)
        ours, theirs = d / "dlmm.zarr", d / "bio2zarr.zarr"
        runs = {
            "dlmm": [dlmm_exe, "convert", str(d / "mouse"), str(ours), "--overwrite",
                     "--chunk-size", str(args.chunk_size)],
            "bio2zarr": [plink2zarr, "convert", str(d / "mouse"), str(theirs)],
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        for rep in range(args.reps):
            for name in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
                shutil.rmtree(theirs, ignore_errors=True)  # plink2zarr does not overwrite
                times[name].append(timed(runs[name]))
        # bio2zarr 0.2's stores are not consolidated: xarray warns as it falls back
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")
        same = np.array_equal(io.open_store(ours)["call_dosage"].values,
                              io.open_store(theirs)["call_dosage"].values, equal_nan=True)
        size = {"dlmm": store_bytes(ours), "bio2zarr": store_bytes(theirs)}
        bare = store_bytes(ours, skip=("sample_phenotype",))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"mouse_hs1940 (1940 samples x 12226 variants), {args.reps} runs each, medians; "
          f"{os.cpu_count()} cores")
    for name in runs:
        print(f"  {name:9s} store {size[name]:>10,d} bytes  convert {med[name]:6.2f} s  "
              f"(runs {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"  dlmm store without sample_phenotype: {bare:,d} bytes "
          f"(ratio {bare / size['bio2zarr']:.3f})")
    print(f"size ratio dlmm / bio2zarr: {size['dlmm'] / size['bio2zarr']:.3f} (must be <= 1.0)")
    print(f"time ratio dlmm / bio2zarr: {med['dlmm'] / med['bio2zarr']:.2f}")
    print(f"same dosages in both stores: {same}")
    return 0 if size["dlmm"] <= size["bio2zarr"] and same else 1


if __name__ == "__main__":
    sys.exit(main())
