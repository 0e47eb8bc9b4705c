"""The compiled TSV writer (dlmm.table) against Python's ``%`` formatting."""

from __future__ import annotations

import numpy as np
import pytest

from dlmm import table


def _values(n: int, seed: int) -> np.ndarray:
    """Doubles of every kind: random bit patterns (every exponent, subnormals), numbers
    in the ranges a scan writes, decimal ties at the 10th digit and near the switch
    between fixed and scientific notation, rounding up to a power of ten."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**63 - 1, n, dtype=np.int64).view(np.float64)
    bits = bits[np.isfinite(bits)]
    usual = rng.standard_normal(n) * 10.0 ** rng.integers(-40, 12, n)
    pvals = 10.0 ** -rng.uniform(0, 300, n)
    d = rng.integers(10**9, 10**10, n)
    ties = (d + 0.5) * 10.0 ** rng.integers(-25, 5, n).astype(float) / 1e9
    edges = np.array([0.0, -0.0, 1.0, -1.0, 1e-5, 1e-4, 9.9999999995e-05, 0.0001, 1e10,
                      9999999999.5, 9999999999.4, 99999.999995, 1e16, 5e-324, 2.5e-308,
                      1.7976931348623157e308, 0.5, 123456789012.5, 2**53, 1e-300, 1e300])
    return np.concatenate([bits, usual, pvals, ties, edges, np.nextafter(edges, 0.0)])


def _render(kind, col, fmt):
    calls = []

    def python_row(r):
        calls.append(r)
        return fmt(col[r]) + "\n"

    return table.render([kind], [col], len(col), python_row), calls


@pytest.mark.parametrize("seed", [0, 1])
def test_g10_is_python_percent(seed):
    x = _values(200_000, seed)
    got, calls = _render(table.G10, x, lambda v: "%.10g" % v)
    assert got == "".join("%.10g\n" % v for v in x.tolist())
    # the compiled path wrote nearly all the values that are no decimal tie
    y = np.random.default_rng(seed).standard_normal(100_000) * 10.0 ** np.arange(
        -50, 50).repeat(1000)
    got, calls = _render(table.G10, y, lambda v: "%.10g" % v)
    assert got == "".join("%.10g\n" % v for v in y.tolist())
    assert len(calls) < 1e-3 * len(y), len(calls)


def test_f3_is_python_percent():
    rng = np.random.default_rng(3)
    k = rng.integers(0, 10**6, 100_000)
    x = np.concatenate([rng.random(100_000), (k + 0.5) / 1000, -rng.random(1000) * 1e-3,
                        rng.standard_normal(1000) * 1e8, [0.0, -0.0, 1e9, 5e15, np.inf,
                                                          -np.inf, np.nan, 0.0005, 0.9995]])
    got, calls = _render(table.F3, x, lambda v: "%.3f" % v)
    assert got == "".join("%.3f\n" % v for v in x.tolist())
    # only %.3f of 1e9 and more goes to Python (ties are decided exactly)
    assert sorted(x[calls].tolist(), key=str) == sorted(
        x[np.abs(x) >= 1e9].tolist(), key=str), x[calls]


def test_rows_mix_kinds_and_fall_back_row_by_row():
    """Text (UTF-8, empty), integers, NaN as an empty %.10g field; a row that Python
    formats sits between compiled ones."""
    s = ["rs1", "", "ß\u00e9", "x" * 40]
    i = np.array([0, -7, 2**62, 12])
    g = np.array([np.nan, 0.1234567895, 1.5, 1234567890.5])  # decimal ties
    f = np.array([0.25, 0.0005, 1e12, 0.9])
    kinds = [table.STR, table.INT, table.G10, table.F3]
    ref = ["\t".join([s[r], "%d" % i[r], "" if np.isnan(g[r]) else "%.10g" % g[r],
                      "%.3f" % f[r]]) + "\n" for r in range(4)]
    calls = []
    got = table.render(kinds, [s, i, g, f], 4, lambda r: calls.append(r) or ref[r])
    assert got == "".join(ref)
    assert calls == [2], calls  # %.3f of 1e12


def test_text_columns_as_numpy_strings():
    """A numpy str column (the TSV writer's): ASCII by array views, non-ASCII and empty
    values by Python's encoder, the same text; one that needs CSV quotes is quoted."""
    import pandas as pd

    from dlmm import export

    ascii_ = np.array(["rs1", "", "chr10:12345_A_G", "x" * 30])
    other = np.array(["\u00df\u00e9", "a", "", "\u4e2d"])
    quoted = np.array(['a"b', "c\td", "e", "f"])
    for col in (ascii_, other):
        got = table.render([table.STR], [col], 4, lambda r: None)
        assert got == "".join(v + "\n" for v in col.tolist())
    cols = {"s": quoted, "t": other, "x": np.array([1.5, np.nan, 2.0, 0.1])}
    assert export._format_columns(cols) == export.format_table(
        pd.DataFrame({k: v.astype(object) for k, v in cols.items()}).astype(
            {"x": np.float64}))
    assert '"a""b"\t' in export._format_columns(cols)
