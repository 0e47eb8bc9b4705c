"""Full-rank scan throughput against the machine's dgemm, in the same run.

For n samples (default 4,000 and 8,000) and m simulated variants (default
50,000), held in memory so no I/O is timed:

* dgemm: numpy's ``(block, n) @ (n, n)`` float64 rate on this machine, now,
  with every core (BLAS threads);
* rotation: the scan's own rotation of every block (``kernels.rotate``), run
  alone the way the scan runs it (a task per block on the threaded scheduler,
  one BLAS thread per task), as FLOP/s (2 n^2 m flops) and as a share of the
  dgemm rate;
* scan: ``dlmm.scan`` of the same blocks on the threaded scheduler (filters,
  imputation, rotation, the exact ML fit of every variant, LRT); the share of
  its wall time spent outside the rotation;
* the same scan with ``rotation_dtype="float32"``: its speed-up and how far its
  p-values move.

Goals (issue 6): rotation >= 70% of dgemm; time outside the rotation < 25%.

    python benchmarks/rotation.py [--samples 4000 8000] [--variants 50000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[4000, 8000])
    ap.add_argument("--variants", type=int, default=50_000)
    ap.add_argument("--chunk-size", type=int, default=5_000)
    a = ap.parse_args()

    import dask

    from dlmm import kernels, scanner
    from dlmm.blas import single_threaded
    from dlmm.inputs import prepare_inputs
    from dlmm.options import ScanOptions
    from dlmm.simulate import simulate_population

    for n in a.samples:
        ds, y = simulate_population(n, a.variants, chunk_size=a.chunk_size, seed=n)
        with dask.config.set(scheduler="threads"):
            dos = ds["call_dosage"].data.persist()
        ds = ds.assign(call_dosage=(("variants", "samples"), dos))
        rng = np.random.default_rng(n)
        # a kinship of full rank with the eigenvectors of a real one would cost an
        # O(n^3) GRM pass here; any orthogonal U costs the rotation the same
        Z = rng.standard_normal((n, 200))
        K = Z @ Z.T / 200 + 0.5 * np.eye(n)
        options = ScanOptions()
        inputs = prepare_inputs(ds, y, kinship=K, options=options)
        t0 = time.perf_counter()
        strata = scanner.setup(ds, inputs, options)  # eigendecomposition, null fit: once
        t_eigh = time.perf_counter() - t0
        null = strata[0].nulls[0]
        flops = 2.0 * n * n * a.variants

        blk = np.asarray(dos.blocks[0])
        reps = max(1, int(2e11 // (2.0 * n * n * blk.shape[0])))
        np.dot(blk, null.U)
        t0 = time.perf_counter()
        for _ in range(reps):
            np.dot(blk, null.U)
        dgemm = 2.0 * n * n * blk.shape[0] * reps / (time.perf_counter() - t0)

        # the rotation as the scan runs it: one task per block on the threaded
        # scheduler, one BLAS thread per task (dlmm.blas.single_threaded)
        def rotate_block(b, U):
            with single_threaded():
                return kernels.rotate(U, b)[:, :1]

        rot = dos.map_blocks(rotate_block, null.U, chunks=(dos.chunks[0], (1,)))
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads"):
            rot.compute()
        t_rot = time.perf_counter() - t0

        with dask.config.set(scheduler="threads"):  # compiled code loaded
            _ = scanner.scan_inputs(ds.isel(variants=slice(0, a.chunk_size)), inputs,
                                    options, strata)["variant_lmm_p_value"].values
        res = scanner.scan_inputs(ds, inputs, options, strata)
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads"):
            p = res["variant_lmm_p_value"].values[:, 0]
        t_scan = time.perf_counter() - t0
        assert np.isfinite(p).sum() > 0.9 * a.variants
        print(f"n = {n}, {a.variants} variants in chunks of {a.chunk_size} "
              f"(eigendecomposition + null fit {t_eigh:.1f} s)")
        print(f"  dgemm {dgemm / 1e9:.1f} GFLOP/s; rotation {flops / t_rot / 1e9:.1f} GFLOP/s "
              f"= {flops / t_rot / dgemm:.0%} of dgemm")
        print(f"  scan {t_scan:.1f} s ({a.variants / t_scan:,.0f} variants/s), rotation alone "
              f"{t_rot:.1f} s: {max(0.0, 1 - t_rot / t_scan):.0%} of the scan outside the "
              f"rotation", flush=True)

        # the same scan with the rotation in float32 (--rotation-dtype float32)
        res32 = scanner.scan_inputs(ds, inputs, options.replace(rotation_dtype="float32"),
                                    strata)
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads"):
            p32 = res32["variant_lmm_p_value"].values[:, 0]
        t_32 = time.perf_counter() - t0
        ok = np.isfinite(p) & np.isfinite(p32)
        d = np.abs(np.log10(p[ok]) - np.log10(p32[ok]))
        print(f"  scan with --rotation-dtype float32 {t_32:.1f} s: {t_scan / t_32:.2f}x the "
              f"float64 scan; |d(-log10 p)| max {d.max():.2g}, median {np.median(d):.2g}",
              flush=True)


if __name__ == "__main__":
    main()
