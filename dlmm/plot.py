"""Manhattan and QQ plots of a result Dataset (HoloViews + Datashader).

The whole scan is drawn as Datashader rasters (one per colour of the
alternating chromosomes, counts of variants per pixel), so millions of
variants cost a fixed-size image; the top hits are drawn on top as real
points with hover.  Plots are HoloViews objects: display them in a notebook
(``hv.extension("bokeh")``), or write them with :mod:`dlmm.report`.

HoloViews, Datashader and Bokeh are imported here, never by ``import dlmm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from . import schema

__all__ = ["manhattan", "qq", "manhattan_frame", "top_hits", "lambda_gc", "qq_frame",
           "significance_level", "trait_names", "select_trait", "GENOME_WIDE"]

#: The conventional genome-wide significance level.
GENOME_WIDE = 5e-8

#: Alternating chromosome colours (light to dark: few to many variants per pixel).
_CMAPS = (["#2b7bba", "#08306b"], ["#7f7f7f", "#1a1a1a"])
_TOP_COLOUR = "#d62728"
_P_FLOOR = 1e-300  # p = 0 (underflow) is drawn at -log10(1e-300) = 300


def _str(a) -> np.ndarray:
    return np.asarray(a, dtype=object).astype(str)


def trait_names(results: xr.Dataset) -> list[str] | None:
    """Names of the traits of a result of several traits (``trait_id``), or None for one."""
    if "traits" not in results.dims or results.sizes["traits"] == 1:
        return None
    return list(_str(results["trait_id"].values))


def select_trait(results: xr.Dataset, trait: int | str) -> xr.Dataset:
    """The result of one trait (by index or name): :func:`dlmm.export.select_trait`."""
    from .export import select_trait as select

    return select(results, trait)


def _one(results: xr.Dataset) -> xr.Dataset:
    """A result of one trait without its ``traits`` dimension."""
    return select_trait(results, 0) if "traits" in results.dims else results


def _p(results: xr.Dataset) -> np.ndarray:
    return np.asarray(results[schema.primary_p_value(results.data_vars)].values,
                      dtype=np.float64)


def _contigs(results: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(names, code per variant): contig names in the genotypes' order, codes into them."""
    code = np.asarray(results["variant_contig"].values, dtype=np.int64)
    names = _str(results["variant_contig_name"].values)
    present, first = np.unique(code, return_index=True)
    out = np.array([str(c) for c in range(int(code.max(initial=-1)) + 1)], dtype=object)
    out[present] = names[first]
    return out.astype(str), code


def manhattan_frame(results: xr.Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tested variants on a cumulative genome axis (computes the arrays).

    Parameters
    ----------
    results : result Dataset of one trait (see :func:`select_trait`).

    Returns
    -------
    variants : DataFrame (tested variants,), indexed by the variant's index
        in ``results``, with ``chrom`` (categorical), ``pos``, ``p``, ``x``
        (cumulative position), ``nlp`` (-log10 p, p floored at 1e-300) and
        ``colour`` (0/1, alternating by chromosome).
    contigs : DataFrame (contigs,) with ``chrom``, ``start`` (offset on the
        cumulative axis), ``end`` and ``mid`` (tick position).
    """
    results = _one(results)
    names, code = _contigs(results)
    pos = np.asarray(results["variant_position"].values, dtype=np.int64)
    # every variant (tested or not) sets the extent of its chromosome
    lo = np.full(len(names), np.iinfo(np.int64).max)
    hi = np.full(len(names), -1, dtype=np.int64)
    np.minimum.at(lo, code, pos)
    np.maximum.at(hi, code, pos)
    present = hi >= 0
    span = np.where(present, hi - np.where(present, lo, 0), 0).astype(np.float64)
    gap = 0.01 * max(span.sum(), 1.0)
    width = np.where(present, span + gap, 0.0)
    start = np.concatenate([[0.0], np.cumsum(width)[:-1]])
    order = np.cumsum(present) - 1  # colour alternates over the chromosomes present
    contigs = pd.DataFrame({"chrom": names, "start": start, "end": start + span,
                            "mid": start + span / 2})[present].reset_index(drop=True)

    p = _p(results)
    tested = np.asarray(results["variant_lmm_tested"].values, dtype=bool) & np.isfinite(p)
    c = code[tested]
    frame = pd.DataFrame({
        "chrom": pd.Categorical.from_codes(c, categories=names),
        "pos": pos[tested],
        "p": p[tested],
        "x": start[c] + (pos[tested] - lo[c]),
        "nlp": -np.log10(np.maximum(p[tested], _P_FLOOR)),
        "colour": (order[c] % 2).astype(np.int8),
    }, index=pd.Index(np.flatnonzero(tested), name="variant"))
    return frame, contigs


def top_hits(results: xr.Dataset, n: int = 10) -> pd.DataFrame:
    """The ``n`` tested variants with the smallest p-values, smallest first.

    Columns ``id chrom pos p beta`` (and ``se``, ``af`` when the result has
    them), indexed by the variant's index in ``results``.
    """
    results = _one(results)
    p = _p(results)
    tested = np.asarray(results["variant_lmm_tested"].values, dtype=bool) & np.isfinite(p)
    idx = np.flatnonzero(tested)
    k = min(n, idx.size)
    if k == 0:
        idx = idx[:0]
    else:
        part = np.argpartition(p[idx], k - 1)[:k] if k < idx.size else np.arange(idx.size)
        idx = idx[part]
        idx = idx[np.lexsort((idx, p[idx]))]  # by p, ties in genome order
    names, code = _contigs(results)
    out = {
        "id": _str(results["variant_id"].values[idx]) if "variant_id" in results
        else idx.astype(str),
        "chrom": names[code[idx]],
        "pos": np.asarray(results["variant_position"].values)[idx],
        "p": p[idx],
    }
    beta = "variant_lmm_beta" if "variant_lmm_beta" in results else "variant_linreg_beta"
    out["beta"] = np.asarray(results[beta].values, dtype=np.float64)[idx]
    if f"{beta}_se" in results:
        out["se"] = np.asarray(results[f"{beta}_se"].values)[idx]
    if "variant_allele_frequency" in results:
        out["af"] = np.asarray(results["variant_allele_frequency"].values)[idx]
    return pd.DataFrame(out, index=pd.Index(idx, name="variant"))


def significance_level(results: xr.Dataset, significance: float | str = GENOME_WIDE,
                       alpha: float = 0.05) -> float:
    """The p-value of the significance line.

    ``significance`` is a p-value (default 5e-8, genome-wide), or
    ``"bonferroni"``: ``alpha`` / the number of tested variants.
    """
    results = _one(results)
    if isinstance(significance, str):
        if significance.lower() != "bonferroni":
            raise ValueError("significance must be a p-value or 'bonferroni', "
                             f"not {significance!r}")
        n = int(np.asarray(results["variant_lmm_tested"].values, dtype=bool).sum())
        return alpha / max(n, 1)
    s = float(significance)
    if not 0 < s < 1:
        raise ValueError(f"significance must be in (0, 1), not {s}")
    return s


def _df(results: xr.Dataset) -> int:
    return 2 if results.attrs.get("model") == "genotypic" else 1


def lambda_gc(p: np.ndarray, df: int = 1) -> float:
    """Genomic inflation: median chi2(df) statistic of the p-values / its expectation."""
    from scipy import stats

    p = np.asarray(p, dtype=np.float64)
    p = p[np.isfinite(p)]
    if p.size == 0:
        return float("nan")
    return float(stats.chi2.isf(np.median(p), df) / stats.chi2.ppf(0.5, df))


@dataclass
class QQ:
    """Thinned QQ points: ``expected``, ``observed`` (-log10 p), the pointwise
    ``lower``/``upper`` bounds of the ``level`` band under the null, and
    ``lambda_gc``."""

    expected: np.ndarray
    observed: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    lambda_gc: float
    n: int
    level: float


def qq_frame(p: np.ndarray, *, df: int = 1, level: float = 0.95, keep: int = 5_000,
             thin: int = 2_000) -> QQ:
    """QQ points of p-values under a uniform null, thinned for plotting.

    The ``keep`` smallest p-values are all kept; the bulk is thinned to
    ``thin`` ranks evenly spaced on the -log10 scale (the curve is monotone,
    so nothing visible is lost).  The band: the k-th smallest of n uniform
    p-values is Beta(k, n - k + 1).
    """
    from scipy import stats

    p = np.sort(np.asarray(p, dtype=np.float64)[np.isfinite(p)])
    n = p.size
    if n == 0:
        e = np.zeros(0)
        return QQ(e, e, e, e, float("nan"), 0, level)
    ranks = np.arange(1, min(n, keep) + 1)
    if n > keep:
        ranks = np.unique(np.concatenate(
            [ranks, np.round(np.geomspace(keep, n, thin)).astype(np.int64)]))
    a = (1 - level) / 2
    return QQ(
        expected=-np.log10((ranks - 0.5) / n),
        observed=-np.log10(np.maximum(p[ranks - 1], _P_FLOOR)),
        lower=-np.log10(stats.beta.isf(a, ranks, n - ranks + 1)),
        upper=-np.log10(stats.beta.ppf(a, ranks, n - ranks + 1)),
        lambda_gc=lambda_gc(p, df), n=n, level=level)


# --------------------------------------------------------------------------
# HoloViews objects
# --------------------------------------------------------------------------
def _backends():
    """Load HoloViews' bokeh backend; ``has_mpl``: whether its matplotlib backend is
    loaded (by :func:`dlmm.report.write_png` or ``hv.extension("matplotlib")``), so the
    matplotlib styles are set too.  The HTML report does not load it (0.8 s of imports)."""
    import sys

    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401

    return hv, "holoviews.plotting.mpl" in sys.modules


def _per_trait(results: xr.Dataset, one, title: str):
    hv, _ = _backends()
    names = trait_names(results)
    if names is None:
        return one(_one(results), title)
    return hv.Layout([one(select_trait(results, i), f"{title}: {t}")
                      for i, t in enumerate(names)]).cols(1)


def manhattan(results: xr.Dataset, *, significance: float | str = GENOME_WIDE,
              n_top: int = 100, width: int = 1000, height: int = 320,
              dynamic: bool = False, title: str = "Manhattan"):
    """Manhattan plot of a scan: -log10 p on a cumulative genome axis.

    Parameters
    ----------
    results : result Dataset over ``variants`` (``variant_lmm_p_value``,
        ``variant_lmm_tested``, ``variant_lmm_beta``, ``variant_contig``,
        ``variant_position``, ``variant_id``); with a ``traits`` dimension,
        one panel per trait.
    significance : p-value of the dashed line (5e-8), or ``"bonferroni"``.
    n_top : the smallest p-values drawn as points with hover (id,
        chromosome, position, p, beta).
    width, height : pixels of the plot and of the raster.
    dynamic : re-rasterise on zoom (needs a live Python kernel or server);
        default a static raster of the whole genome, which works in a
        static HTML file.

    Returns
    -------
    holoviews Overlay (Layout with traits): two ``Image`` rasters of
    variant counts per pixel (group ``Manhattan``, labels ``Even``/``Odd``:
    alternating chromosomes), ``HLine`` at -log10(significance), ``Points``
    (group ``TopHits``).  With ``dynamic``, a DynamicMap of such overlays.
    """
    hv, has_mpl = _backends()

    def one(res, ttl):
        from holoviews.operation.datashader import rasterize

        frame, contigs = manhattan_frame(res)
        line = -np.log10(significance_level(res, significance))
        ymax = max(float(frame["nlp"].max()) if len(frame) else 0.0, line) * 1.08 + 0.5
        xr_ = (0.0, float(contigs["end"].max()) * 1.0001 + 1.0) if len(contigs) else (0.0, 1.0)
        kd = [hv.Dimension("x", label="chromosome"), hv.Dimension("nlp", label="-log10(p)")]
        layers = []
        for colour, label in ((0, "Even"), (1, "Odd")):
            pts = hv.Points(frame[frame["colour"] == colour], kd, [])
            kw = dict(width=width, height=height, x_range=xr_, y_range=(0.0, ymax))
            if not dynamic:
                kw["dynamic"] = False
            img = rasterize(pts, **kw)
            if not dynamic:
                img = img.relabel(group="Manhattan", label=label)
            img = img.opts(cmap=_CMAPS[colour], cnorm="eq_hist", colorbar=False, tools=[],
                           backend="bokeh")
            if has_mpl:
                img = img.opts(cmap=_CMAPS[colour], cnorm="eq_hist", colorbar=False,
                               backend="matplotlib")
            layers.append(img)
        top = top_hits(res, n_top)
        top = top.assign(x=frame.loc[top.index, "x"], nlp=frame.loc[top.index, "nlp"])
        hits = hv.Points(top, kd, ["id", "chrom", "pos", "p", "beta"], group="TopHits")
        sig = hv.HLine(line, group="Significance")
        ov = (layers[0] * layers[1] * sig * hits).relabel(ttl)
        return _style_manhattan(ov, contigs, xr_, width, height, has_mpl)

    return _per_trait(results, one, title)


def _style_qq(ov, width, height, has_mpl):
    ov = ov.opts({
        "Area.Band": dict(color="#d9d9d9", alpha=0.8, line_alpha=0),
        "Curve.Diagonal": dict(color="#636363", line_dash="dashed"),
        "Scatter.QQ": dict(color="#08306b", size=3),
        "Scatter.OLS": dict(color="#d95f02", size=3),
        "Overlay": dict(width=width, height=height, legend_position="top_left"),
    }, backend="bokeh")
    if has_mpl:
        ov = ov.opts({
            "Area.Band": dict(color="#d9d9d9", facecolor="#d9d9d9", alpha=0.8, linewidth=0),
            "Curve.Diagonal": dict(color="#636363", linestyle="--"),
            "Scatter.QQ": dict(color="#08306b", s=4),
            "Scatter.OLS": dict(color="#d95f02", s=4),
            "Overlay": dict(aspect=1, fig_inches=4.5),
        }, backend="matplotlib")
    return ov


def _hover(fields: list[tuple[str, str, str]]):
    """A hover tool showing (label, column, printf format) of the data source."""
    from bokeh.models import HoverTool

    return HoverTool(tooltips=[(label, f"@{{{f}}}{fmt}") for label, f, fmt in fields],
                     formatters={f"@{{{f}}}": "printf" for _, f, fmt in fields if fmt})


def _style_manhattan(ov, contigs, xr_, width, height, has_mpl):
    ticks = list(zip(contigs["mid"].tolist(), contigs["chrom"].tolist()))
    hover = _hover([("id", "id", ""), ("chromosome", "chrom", ""), ("position", "pos", ""),
                    ("p", "p", "{%.3e}"), ("beta", "beta", "{%.4g}")])
    ov = ov.opts({
        "Points.TopHits": dict(color=_TOP_COLOUR, size=6, tools=[hover]),
        "HLine.Significance": dict(color=_TOP_COLOUR, line_dash="dashed", line_width=1),
        "Overlay": dict(width=width, height=height, xticks=ticks, xlim=xr_, show_grid=False),
    }, backend="bokeh")
    if has_mpl:
        ov = ov.opts({
            "Points.TopHits": dict(color=_TOP_COLOUR, s=12),
            "HLine.Significance": dict(color=_TOP_COLOUR, linestyle="--", linewidth=1),
            "Overlay": dict(aspect=width / height, fig_inches=(10, 10 * height / width),
                            xticks=ticks, xlim=xr_),
        }, backend="matplotlib")
    return ov


def qq(results: xr.Dataset, *, level: float = 0.95, width: int = 420, height: int = 420,
       title: str = "QQ"):
    """QQ plot of the p-values against the uniform, with lambda_GC and a band.

    Parameters
    ----------
    results : result Dataset (with a ``traits`` dimension: one panel per trait).
    level : coverage of the pointwise band of the null (Beta order statistics).

    Returns
    -------
    holoviews Overlay (Layout with traits): ``Area`` (group ``Band``), the
    diagonal ``Curve`` and the ``Scatter`` of observed against expected
    -log10 p (thinned, see :func:`qq_frame`); the title gives lambda_GC.
    """
    hv, has_mpl = _backends()

    def one(res, ttl):
        tested = np.asarray(res["variant_lmm_tested"].values, dtype=bool)
        q = qq_frame(_p(res)[tested], df=_df(res), level=level)
        ex = hv.Dimension("expected", label="expected -log10(p)")
        ob = hv.Dimension("observed", label="observed -log10(p)")
        band = hv.Area((q.expected, q.lower, q.upper), ex, [ob, "upper"], group="Band")
        top = float(q.expected.max()) if q.n else 1.0
        diag = hv.Curve(([0, top], [0, top]), ex, ob, group="Diagonal")
        layers = [band, diag]
        label = f"lambda_GC = {q.lambda_gc:.3f}"
        if "variant_linreg_p_value" in res and "variant_lmm_tested" in res and \
                schema.primary_p_value(res.data_vars) != "variant_linreg_p_value":
            o = qq_frame(np.asarray(res["variant_linreg_p_value"].values)[tested],
                         df=_df(res), level=level)  # the lab's baseline: what K corrects
            layers.append(hv.Scatter((o.expected, o.observed), ex, ob, group="OLS",
                                     label="least squares (no kinship)"))
            label = f"lambda_GC = {q.lambda_gc:.3f} (LMM), {o.lambda_gc:.3f} (OLS)"
        layers.append(hv.Scatter((q.expected, q.observed), ex, ob, group="QQ", label="LMM"))
        ov = hv.Overlay(layers).relabel(f"{ttl}: {label} (n = {q.n:,})")
        return _style_qq(ov, width, height, has_mpl)

    return _per_trait(results, one, title)
