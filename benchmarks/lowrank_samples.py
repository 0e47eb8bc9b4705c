"""Low-rank scan sharded over samples: peak memory per worker as the samples grow.

For each n in ``--samples`` (default 20,000 and 50,000), writes (or reuses in
``--dir``) a simulated VCF Zarr store of ``--variants`` variants, starts a local
cluster of ``--workers`` processes x ``--threads``, and runs ``dlmm scan
--kinship-variants K`` as its own process (the client); prints the wall time,
the client's and each worker's peak RSS (VmHWM), and the ratio of the workers'
peak at the largest n to that at the smallest (goal: at most 1.5).

A block is read on all samples at once (the readers return whole rows), so its
variants are sized by bytes: ``--block-bytes / (4 n)`` variants (float32), unless
``--chunk-size`` is given.  The rest of a task's memory is bounded by the
sharding: a chunk of U1's rows (128 MiB, read from disk by the task) and the block's
sums over it.

``--baseline DIR`` (a copy of another dlmm, e.g. ``git worktree add DIR COMMIT``
or ``git archive COMMIT dlmm | tar -x -C DIR``) runs the same scans with that
code too (``PYTHONPATH=DIR``, client and workers), in the same run, and prints
the ratios.

    python benchmarks/lowrank_samples.py [--samples 20000 50000] [--variants 20000]
        [--rank 2000] [--workers 2] [--threads 1] [--dir DIR] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure, write_store  # noqa: E402

GIB = 2**30


def _run(a, n: int, d: Path) -> dict:
    chunk = a.chunk_size or max(100, a.block_bytes // (4 * n))
    t0 = time.perf_counter()
    (d / f"blocks{chunk}").mkdir(parents=True, exist_ok=True)
    store, pheno = write_store(d / f"blocks{chunk}", n, a.variants, chunk, a.seed)
    t_store = time.perf_counter() - t0
    out = d / f"res_{n}_{os.getpid()}"  # the baseline runs in another process
    r = measure(store, pheno, out, a.workers, chunk,
                extra=("--no-plot", "--no-dashboard", "--kinship-variants", str(a.rank)),
                threads=a.threads)
    log = Path(f"{out}.log.txt").read_text().splitlines()
    return {"n": n, "chunk": chunk, "store_s": t_store, "wall": r["wall"],
            "client_peak": r["client_peak"], "worker_peaks": r["worker_peaks"],
            "log": [v.strip("# ") for v in log if "low-rank" in v or "pve estimate" in v]}


def _show(tag: str, r: dict) -> None:
    print(f"{tag:>8} n = {r['n']:,} (blocks of {r['chunk']} variants): {r['wall']:.0f} s; "
          f"client peak {r['client_peak'] / GIB:.2f} GiB; worker peaks "
          + ", ".join(f"{x / GIB:.2f}" for x in r["worker_peaks"]) + " GiB; "
          + "; ".join(r["log"]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--rank", type=int, default=2_000, help="kinship variants")
    ap.add_argument("--block-bytes", type=int, default=200_000_000,
                    help="float32 bytes of a block read on all samples")
    ap.add_argument("--chunk-size", type=int, help="variants per block (overrides)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", type=Path, help="where to keep the stores (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--baseline", type=Path, help="another dlmm's folder to compare with")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = (a.dir or Path(tmp)).resolve()
        d.mkdir(parents=True, exist_ok=True)
        os.chdir(d)  # `python -m dlmm.cli` imports dlmm from the current folder first
        rows = []
        for n in a.samples:
            r = _run(a, n, d)
            rows.append(r)
            if a.json:
                print(json.dumps(r), flush=True)
                continue
            _show("this", r)
            if a.baseline:
                args = [sys.executable, str(Path(__file__).resolve()), "--json", "--samples", str(n), "--dir", str(d)]
                for k in ("variants", "rank", "block_bytes", "chunk_size", "workers",
                          "threads", "seed"):
                    if getattr(a, k) is not None:
                        args += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
                env = dict(os.environ, PYTHONPATH=str(a.baseline.resolve()))
                p = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
                b = json.loads(p.stdout.strip().splitlines()[-1])
                _show("baseline", b)
                print(f"{'':>8} this / baseline: time {r['wall'] / b['wall']:.2f}, worker peak "
                      f"{max(r['worker_peaks']) / max(b['worker_peaks']):.2f}, client peak "
                      f"{r['client_peak'] / b['client_peak']:.2f}", flush=True)
        if len(rows) > 1 and not a.json:
            lo, hi = rows[0], rows[-1]
            w = max(hi["worker_peaks"]) / max(lo["worker_peaks"])
            print(f"worker peak n = {hi['n']:,} / n = {lo['n']:,}: {w:.2f} "
                  f"(goal <= 1.5: {'yes' if w <= 1.5 else 'NO'}); client "
                  f"{hi['client_peak'] / lo['client_peak']:.2f}")


if __name__ == "__main__":
    main()
