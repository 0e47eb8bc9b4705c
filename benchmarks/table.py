"""The TSV table's text: ``dlmm.export.format_table`` against Python's ``%`` and pandas.

A GEMMA ``-lmm 2`` table of ``--rows`` simulated variants (``chr rs ps n_miss allele1
allele0 af logl_H1 l_mle p_lrt beta se sigma_sq_a sigma_sq_e iterations``; p-values
spanning 1e-30..1), formatted three ways, alternated ``--reps`` times; medians and the
ratios against dlmm are printed, and whether the three texts are the same bytes:

* dlmm: ``format_table`` (numbers by compiled code, :mod:`dlmm.table`, one slice of
  rows per core);
* Python: one ``"\\t".join`` of ``%d`` / ``%.3f`` / ``%.10g`` fields per row;
* pandas: ``df.to_csv(sep="\\t", index=False, float_format="%.10g")`` with ``af``
  preformatted as ``%.3f``.

    python benchmarks/table.py [--rows 300000] [--reps 5]

Hold the machine's lock while it runs: ``flock /tmp/dlmm-heavy.lock python
benchmarks/table.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd


def simulated_table(m: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "chr": rng.integers(1, 20, m).astype(str), "rs": [f"rs{i}" for i in range(m)],
        "ps": rng.integers(1, 2**28, m), "n_miss": rng.integers(0, 20, m),
        "allele1": rng.choice(["A", "C", "G", "T"], m),
        "allele0": rng.choice(["A", "C", "G", "T"], m), "af": rng.uniform(0.01, 0.5, m),
        "logl_H1": rng.normal(-1500, 50, m), "l_mle": np.exp(rng.normal(0, 2, m)),
        "p_lrt": 10.0 ** -rng.uniform(0, 30, m), "beta": rng.normal(0, 0.1, m),
        "se": rng.uniform(0.01, 0.1, m), "sigma_sq_a": rng.uniform(0.1, 2, m),
        "sigma_sq_e": rng.uniform(0.1, 2, m), "iterations": rng.integers(0, 8, m)})


def python_text(df: pd.DataFrame) -> str:
    cols = [(df[c].to_numpy().tolist(), "%.3f" if c == "af" else "%.10g"
             if df[c].dtype.kind == "f" else "%d" if df[c].dtype.kind == "i" else "%s")
            for c in df.columns]
    lines = ["\t".join(df.columns) + "\n"]
    for r in range(len(df)):
        lines.append("\t".join(f % col[r] for col, f in cols) + "\n")
    return "".join(lines)


def pandas_text(df: pd.DataFrame) -> str:
    return df.assign(af=df["af"].map("%.3f".__mod__)).to_csv(sep="\t", index=False,
                                                            float_format="%.10g")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    from dask.system import CPU_COUNT

    from dlmm.export import format_table

    df = simulated_table(a.rows)
    ways = {"dlmm": format_table, "python": python_text, "pandas": pandas_text}
    format_table(df.head(1000))  # compiled code loaded
    times: dict[str, list[float]] = {k: [] for k in ways}
    texts = {}
    order = list(ways)
    for rep in range(a.reps):
        for k in (order if rep % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            texts[k] = ways[k](df)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(t) for k, t in times.items()}
    print(f"{a.rows:,} rows x {df.shape[1]} columns, {CPU_COUNT} cores, {a.reps} reps (medians)")
    for k in ways:
        print(f"  {k:7s} {med[k]:.3f} s  ratio {k} / dlmm {med[k] / med['dlmm']:.2f}  "
              f"(runs {', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"  same bytes: dlmm == python {texts['dlmm'] == texts['python']}, "
          f"dlmm == pandas {texts['dlmm'] == texts['pandas']}", flush=True)


if __name__ == "__main__":
    main()
