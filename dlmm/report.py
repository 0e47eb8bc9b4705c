"""The scan report: one self-contained HTML page (and a PNG) of a result.

The HTML carries Bokeh's JavaScript inline and the Manhattan rasters baked
in, so it opens offline from a file; zoom and hover work, re-rasterising on
zoom does not (that needs a live kernel: see :func:`dlmm.plot.manhattan`).
The PNG is drawn by HoloViews' matplotlib backend, without a browser.
"""

from __future__ import annotations

import html
import os
import threading
from pathlib import Path

import numpy as np
import xarray as xr

from . import outputs, plot, schema

__all__ = ["summary", "write_report", "write_png", "write_plots", "report_path", "warm_up"]


def report_path(prefix: str | os.PathLike) -> Path:
    """Where ``dlmm scan --out PREFIX`` writes its report: ``PREFIX.report.html``."""
    return Path(f"{prefix}.report.html")


def _null(res: xr.Dataset, key: str):
    """A null-model figure of one trait, or None (absent, or differing between LOCO's
    chromosomes: the logs have those)."""
    name = schema.NULL_VARIABLES[key][0]
    if name not in res:
        return None
    v = np.asarray(res[name].values).ravel()
    v = v[~np.isnan(v)] if v.dtype.kind == "f" else v
    if v.size == 0 or (v != v[0]).any():
        return None
    return v[0].item()


def summary(results: xr.Dataset, *, n_top: int = 10) -> dict:
    """The figures of the report's table for one trait.

    Returns
    -------
    dict with ``samples`` (analysed), ``samples_total``, ``variants``,
    ``tested``, ``sa2``/``se2``/``pve``/``pve_se`` (REML null model: GEMMA's
    vg, ve, pve), ``sa2_ml``/``se2_ml`` (ML null model), ``lambda_gc`` (and
    ``lambda_gc_ols`` of the least-squares baseline, when it ran), ``model``,
    ``solver`` and ``top`` (DataFrame of the ``n_top`` smallest p-values, see
    :func:`dlmm.plot.top_hits`).
    """
    results = plot._one(results)
    tested = np.asarray(results["variant_lmm_tested"].values, dtype=bool)
    ols = None
    if "variant_linreg_p_value" in results:
        ols = plot.lambda_gc(np.asarray(results["variant_linreg_p_value"].values)[tested],
                             plot._df(results))
    return {
        "samples": _null(results, "n_analysed"),
        "samples_total": results.attrs.get("n_samples_total"),
        "variants": int(results.sizes["variants"]),
        "tested": int(tested.sum()),
        "sa2": _null(results, "vg_null"),
        "se2": _null(results, "ve_null"),
        "pve": _null(results, "pve_null"),
        "pve_se": _null(results, "pve_se_null"),
        "sa2_ml": _null(results, "mle_sigma_sq_a_null"),
        "se2_ml": _null(results, "mle_sigma_sq_e_null"),
        "lambda_gc": plot.lambda_gc(plot._p(results)[tested], plot._df(results)),
        "lambda_gc_ols": ols,
        "model": results.attrs.get("model"),
        "solver": results.attrs.get("solver"),
        "top": plot.top_hits(results, n_top),
    }


def _fmt(v, spec: str = ".4g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    return format(v, spec)


def _table_html(s: dict, heading: str) -> str:
    rows = [
        ("samples analysed / total", f"{_fmt(s['samples'])} / {_fmt(s['samples_total'])}"),
        ("variants tested / total", f"{_fmt(s['tested'])} / {_fmt(s['variants'])}"),
        ("model, solver", f"{s['model'] or 'n/a'}, {s['solver'] or 'n/a'}"),
        ("null sa2 (vg, REML)", _fmt(s["sa2"])),
        ("null se2 (ve, REML)", _fmt(s["se2"])),
        ("null pve (REML) &plusmn; se", f"{_fmt(s['pve'])} &plusmn; {_fmt(s['pve_se'])}"),
        ("null sa2, se2 (ML)", f"{_fmt(s['sa2_ml'])}, {_fmt(s['se2_ml'])}"),
        ("lambda_GC", _fmt(s["lambda_gc"], ".4f")),
    ]
    if s.get("lambda_gc_ols") is not None:
        rows.append(("lambda_GC, least squares (no kinship)", _fmt(s["lambda_gc_ols"], ".4f")))
    out = [f"<h3>{html.escape(heading)}</h3>", '<table class="dlmm-summary">']
    out += [f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows]
    out.append("</table>")
    top = s["top"]
    out.append(f"<h4>Top {len(top)} hits</h4>")
    out.append('<table class="dlmm-top"><tr>'
               + "".join(f"<th>{html.escape(c)}</th>" for c in top.columns) + "</tr>")
    for _, r in top.iterrows():
        cells = []
        for c in top.columns:
            v = r[c]
            cells.append(html.escape(f"{v:.3e}" if c == "p" else
                                     f"{v:.4g}" if isinstance(v, float) else str(v)))
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_CSS = """<style>
.dlmm-summary, .dlmm-top {border-collapse: collapse; font: 13px sans-serif; margin: 4px 0 12px}
.dlmm-summary th, .dlmm-top th {text-align: left; background: #f0f0f0; padding: 2px 8px}
.dlmm-summary td, .dlmm-top td {padding: 2px 8px; border-bottom: 1px solid #e0e0e0}
.dlmm-top td {font-family: monospace}
</style>"""


def _traits(results: xr.Dataset) -> list[tuple[str, xr.Dataset]]:
    names = plot.trait_names(results)
    if names is None:
        return [("", results)]
    return [(t, plot.select_trait(results, i)) for i, t in enumerate(names)]


def warm_up() -> "threading.Thread":
    """Import the plotting stack and render a small report in a background thread (1.5-3 s
    of imports and compilation at first use), to overlap it with a scan: join the thread
    before :func:`write_report`.  What it renders is thrown away."""
    import threading

    def render():
        from .simulate import simulate_results

        try:
            _document(simulate_results(2_000, n_contigs=2, n_hits=1), plot.GENOME_WIDE, 10,
                      "warm-up")
        except Exception:  # the report itself will say what is wrong
            pass

    thread = threading.Thread(target=render, name="dlmm-report-warm-up", daemon=True)
    thread.start()
    return thread


def write_report(results: xr.Dataset, path: str | os.PathLike, *,
                 significance: float | str = plot.GENOME_WIDE, n_top: int = 100,
                 title: str | None = None) -> Path:
    """Write the scan report: a self-contained HTML page (no network needed).

    Per trait: the summary table (samples, variants tested, null-model
    sa2/se2/pve, lambda_GC, top 10 hits), the Manhattan plot (significance
    line, ``n_top`` hits with hover) and the QQ plot.

    Parameters
    ----------
    results : computed or lazy result Dataset (it is loaded).
    path : the ``.html`` file; written to a temporary name, then renamed.
    """
    doc = _document(results.load(), significance, n_top, title)
    return outputs.write_file(Path(path), lambda p: p.write_text(doc, encoding="utf-8"))


def _document(results: xr.Dataset, significance, n_top: int, title: str | None) -> str:
    """The report's HTML text."""
    import holoviews as hv
    from bokeh.layouts import column, row
    from bokeh.models import Div

    renderer = hv.renderer("bokeh")
    source = results.attrs.get("source") or ""
    head = title or "dlmm association scan"
    where = f"<p>genotypes: <code>{html.escape(str(source))}</code></p>" if source else ""
    parts = [Div(text=_CSS + f"<h2>{html.escape(head)}</h2>" + where)]
    for name, res in _traits(results):
        s = summary(res)
        m = plot.manhattan(res, significance=significance, n_top=n_top,
                           title=f"Manhattan{': ' + name if name else ''}")
        q = plot.qq(res, title=f"QQ{': ' + name if name else ''}")
        parts.append(row(Div(text=_table_html(s, name or "Summary"), width=560),
                         renderer.get_plot(q).state))
        parts.append(renderer.get_plot(m).state)
    return _standalone_html(column(*parts), head)


def _standalone_html(layout, title: str) -> str:
    """A page that needs no network: Bokeh's JavaScript inline, nothing linked.

    As ``bokeh.embed.file_html`` with inline resources, except that Bokeh
    also links the external scripts that every *imported* extension model
    declares (e.g. Panel's, which HoloViews imports) even when the document
    does not use them: only the inline JavaScript of the Bokeh components
    and extensions this document uses is kept.
    """
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.embed.elements import html_page_for_render_items
    from bokeh.embed.util import OutputDocumentFor, standalone_docs_json_and_render_items
    from bokeh.resources import INLINE

    with OutputDocumentFor([layout]) as doc:
        docs_json, render_items = standalone_docs_json_and_render_items([layout])
        bundle = bundle_for_objs_and_resources([doc], INLINE)
        bundle.js_files, bundle.css_files = [], []
        page = html_page_for_render_items(bundle, docs_json, render_items, title=title)
    # no favicon request either
    return page.replace("<head>", '<head>\n<link rel="icon" href="data:,">', 1)


def write_png(results: xr.Dataset, path: str | os.PathLike, *,
              significance: float | str = plot.GENOME_WIDE, n_top: int = 100) -> Path:
    """Write the Manhattan and QQ plots as a PNG (matplotlib backend, no browser)."""
    import holoviews as hv
    import holoviews.plotting.mpl  # noqa: F401 (loaded first: the plots get its styles)

    results = results.load()
    path = Path(path)
    m = plot.manhattan(results, significance=significance, n_top=n_top)
    q = plot.qq(results)
    panels = []
    for a, b in zip(_panels(m), _panels(q)):
        panels += [a, b]
    fig = hv.Layout(panels).cols(2).opts(sublabel_format="", fig_size=280, aspect_weight=True,
                                         backend="matplotlib")
    return outputs.write_file(path, lambda p: hv.save(fig, p, fmt="png", backend="matplotlib"),
                              keep_suffix=True)


def _panels(obj) -> list:
    import holoviews as hv

    return list(obj) if isinstance(obj, hv.Layout) else [obj]


def write_plots(results: str | os.PathLike, html_path: str | os.PathLike, *,
                png: str | os.PathLike | None = None,
                significance: float | str = plot.GENOME_WIDE, n_top: int = 100,
                overwrite: bool = False) -> list[Path]:
    """``dlmm plot``: the report (and a PNG) of a complete result store, checked first:
    the significance, ``n_top``, the store, and the outputs (never replacing an
    existing file without ``overwrite``, nor writing onto the store's own files)."""
    from . import results as results_mod
    from .errors import InputError, OptionError
    from .pipeline import plotting_installed

    if not plotting_installed():
        raise OptionError("plot", "the report's plotting packages are not installed",
                          "pip install 'dlmm[plot]'")
    if isinstance(significance, str) and significance.lower() != "bonferroni":
        try:
            significance = float(significance)
        except ValueError:
            significance = -1.0
    if not isinstance(significance, str) and not 0 < significance < 1:
        raise OptionError("significance", f"{significance!r} is not a p-value in (0, 1) or "
                          "'bonferroni'", "give e.g. 5e-8 or bonferroni")
    if n_top < 0:
        raise OptionError("top", f"{n_top} is negative", "give 0 or more top hits")
    res = results_mod.load_results(results)
    paths = [Path(html_path)] + ([Path(png)] if png else [])
    real = [Path(os.path.realpath(p)) for p in paths]  # (Path.resolve fails on loops)
    store = Path(os.path.realpath(results))
    for p, r in zip(paths, real):
        if store in r.parents or r == store:
            raise InputError(p, "is inside the result store", "write the report elsewhere")
    if len(paths) == 2 and real[0] == real[1]:
        raise InputError(paths[1], "is given for the HTML report and the PNG: one file "
                         "written twice", "give --png another name")
    outputs.check_unlocked(paths[0])
    outputs.check_new(paths, overwrite)
    with outputs.lock(paths[0]):
        written = [write_report(res, html_path, significance=significance, n_top=n_top)]
        if png:
            written.append(write_png(res, png, significance=significance, n_top=n_top))
    return written
