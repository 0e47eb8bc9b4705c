"""How U and the null fit reach the workers: scattered vs a key in the graph.

Same scan, same local cluster of worker processes, A/B alternated, the set-up (GRM,
eigendecomposition, null fit) done once and reused: ``dlmm.scanner.SCATTER = True``
(the default: the client scatters the shared state to one worker, the others fetch it
from a peer for their first block) and ``False`` (a ``dask.delayed`` key inside the
graph: the client ships it to the scheduler with the graph, one worker
materialises it, the others fetch it from that worker). The genotypes are
persisted on the workers first, so only the shared state's route differs.
Printed: medians of the wall time from ``dlmm.scan`` to the last block.

    python benchmarks/broadcast.py [--samples 3000] [--variants 20000] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--chunk-size", type=int, default=2_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()

    import dask
    from distributed import Client, LocalCluster

    from dlmm import scanner
    from dlmm.inputs import prepare_inputs
    from dlmm.options import ScanOptions
    from dlmm.simulate import simulate_population

    ds, y = simulate_population(a.samples, a.variants, chunk_size=a.chunk_size, seed=5)
    ds = ds.assign(call_dosage=ds["call_dosage"].persist(scheduler="threads"))
    dims = ("variants", "samples")
    options = ScanOptions()
    inputs = prepare_inputs(ds, y, options=options)
    with dask.config.set(scheduler="threads"):
        # the GRM, its eigendecomposition, the null fit: once, shared by every scan
        strata = scanner.setup(ds, inputs, options)
    times: dict[bool, list[float]] = {True: [], False: []}
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # the genotypes go to the workers once, up front, so only the shared state differs
        ds = ds.assign(call_dosage=(dims, client.persist(ds["call_dosage"].data)))
        # compiled code loaded in every worker process
        scanner.scan_inputs(ds, inputs, options, strata)["variant_lmm_p_value"].data.compute()
        for rep in range(a.reps):
            for broadcast in (True, False) if rep % 2 == 0 else (False, True):
                t0 = time.perf_counter()
                scanner.SCATTER = broadcast
                res = scanner.scan_inputs(ds, inputs, options, strata)
                res["variant_lmm_p_value"].data.compute()
                times[broadcast].append(time.perf_counter() - t0)
                del res
    med = {k: statistics.median(v) for k, v in times.items()}
    u_mib = a.samples**2 * 8 / 2**20
    print(f"n = {a.samples} (U: {u_mib:.0f} MiB), {a.variants} variants in chunks of "
          f"{a.chunk_size}, {a.workers} worker processes, {a.reps} reps")
    print(f"scatter: median {med[True]:.2f} s; key in the graph: median "
          f"{med[False]:.2f} s; ratio graph/scatter {med[False] / med[True]:.2f}")
    print("times: scatter " + " ".join(f"{t:.2f}" for t in times[True]) + "; graph "
          + " ".join(f"{t:.2f}" for t in times[False]))


if __name__ == "__main__":
    main()
