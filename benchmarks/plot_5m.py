"""Benchmark: the report of a 5,000,000-variant scan.

Simulates a result Dataset (uniform p-values plus a few peaks, see
:func:`dlmm.simulate.simulate_results`), then times the HTML report
(goal: < 10 MB) and the PNG, and, as the peer measured in the same run, a
plain matplotlib scatter of every variant (what one would do without
Datashader).

    PYTHONPATH=. python benchmarks/plot_5m.py [--variants 5000000] [--no-peer]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", type=int, default=5_000_000)
    ap.add_argument("--no-peer", action="store_true", help="skip the matplotlib scatter")
    args = ap.parse_args()

    from dlmm import plot, report
    from dlmm.simulate import simulate_results

    t = time.perf_counter()
    res = simulate_results(args.variants, n_contigs=22, n_hits=10, seed=1)
    print(f"simulated {args.variants:,} variants ({int(res['variant_lmm_tested'].sum()):,} "
          f"tested) in {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory() as d:
        # warm-up on a small scan: Numba compiles Datashader's kernels once per process
        t = time.perf_counter()
        report.write_report(simulate_results(1000, seed=2), Path(d) / "warm.html")
        print(f"warm-up (Numba compilation, imports): {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        html = report.write_report(res, Path(d) / "report.html")
        t_html = time.perf_counter() - t
        size = html.stat().st_size
        print(f"HTML report: {t_html:.1f} s, {size / 1e6:.2f} MB "
              f"({'within' if size < 10e6 else 'OVER'} the 10 MB goal)")

        t = time.perf_counter()
        png = report.write_png(res, Path(d) / "report.png")
        t_png = time.perf_counter() - t
        print(f"PNG: {t_png:.1f} s, {png.stat().st_size / 1e3:.0f} kB")

        t = time.perf_counter()
        plot.manhattan(res)
        print(f"  of which manhattan(): {time.perf_counter() - t:.1f} s")

        if not args.no_peer:
            import matplotlib

            matplotlib.use("agg")
            import matplotlib.pyplot as plt

            frame, _ = plot.manhattan_frame(res)
            t = time.perf_counter()
            fig, ax = plt.subplots(figsize=(10, 3.2))
            ax.scatter(frame["x"], frame["nlp"], s=1, c=frame["colour"], cmap="coolwarm",
                       rasterized=True)
            fig.savefig(Path(d) / "peer.png", dpi=100)
            plt.close(fig)
            t_peer = time.perf_counter() - t
            print(f"peer: matplotlib scatter of every variant to PNG: {t_peer:.1f} s "
                  f"(report PNG / peer = {t_png / t_peer:.2f})")


if __name__ == "__main__":
    main()
