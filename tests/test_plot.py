"""Manhattan/QQ plots check the plotted data; the report and the PNG are written
from a real scan; ``dlmm plot`` rejects bad input with one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from dlmm import plot, report, results
from dlmm.simulate import simulate_results

hv = pytest.importorskip("holoviews")


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def sim():
    return simulate_results(30_000, n_contigs=7, n_hits=4, seed=5)


def _elements(obj, kind, group=None):
    return [e for e in obj.traverse(lambda e: e, [kind]) if group is None or e.group == group]


def _counts(img) -> np.ndarray:
    return np.asarray(img.data[img.vdims[0].name].values)


def test_manhattan_plots_every_tested_variant(sim):
    m = plot.manhattan(sim, n_top=25)
    imgs = _elements(m, hv.Image, "Manhattan")
    assert [i.label for i in imgs] == ["Even", "Odd"]
    tested = int(sim["variant_lmm_tested"].sum())
    assert tested < sim.sizes["variants"]  # some untested: they must not be drawn
    assert sum(int(_counts(i).sum()) for i in imgs) == tested
    # chromosomes alternate: contigs 1, 3, 5, 7 in one raster, 2, 4, 6 in the other
    frame, contigs = plot.manhattan_frame(sim)
    even = frame[frame["colour"] == 0]
    assert sorted(even["chrom"].unique().astype(str)) == ["1", "3", "5", "7"]
    assert int(_counts(imgs[0]).sum()) == len(even)
    # ticks: one per chromosome at its middle, chromosomes in order, not overlapping
    assert list(contigs["chrom"]) == [str(c) for c in range(1, 8)]
    assert (contigs["start"].to_numpy()[1:] > contigs["end"].to_numpy()[:-1]).all()
    for c, g in frame.groupby("chrom", observed=True):
        row = contigs.set_index("chrom").loc[c]
        assert row["start"] <= g["x"].min() and g["x"].max() <= row["end"]
    # the raster's x extent holds the whole genome
    x0, _, x1, _ = imgs[0].bounds.lbrt()
    assert x0 <= frame["x"].min() and frame["x"].max() <= x1


def test_significance_line_and_top_hits(sim):
    m = plot.manhattan(sim, n_top=25)
    (line,) = _elements(m, hv.HLine, "Significance")
    assert line.data == pytest.approx(-np.log10(5e-8))
    (hits,) = _elements(m, hv.Points, "TopHits")
    p = sim["variant_lmm_p_value"].values
    smallest = np.sort(p[np.isfinite(p)])[:25]
    assert np.array_equal(np.sort(hits.dimension_values("p")), smallest)
    assert np.allclose(hits.dimension_values("nlp"), -np.log10(hits.dimension_values("p")))
    # hover fields are real: each id is the variant with that p and position
    ids = list(sim["variant_id"].values)
    for vid, pv, pos in zip(hits.dimension_values("id"), hits.dimension_values("p"),
                            hits.dimension_values("pos")):
        j = ids.index(vid)
        assert p[j] == pv and sim["variant_position"].values[j] == pos
    n = int(sim["variant_lmm_tested"].sum())
    b = plot.manhattan(sim, significance="bonferroni")
    (line,) = _elements(b, hv.HLine, "Significance")
    assert line.data == pytest.approx(-np.log10(0.05 / n))
    with pytest.raises(ValueError):
        plot.manhattan(sim, significance="holm")


def test_dynamic_manhattan_renders_with_bokeh(sim):
    m = plot.manhattan(sim, dynamic=True)
    assert isinstance(m, hv.DynamicMap)
    fig = hv.renderer("bokeh").get_plot(m).state
    glyphs = [type(getattr(r, "glyph", None)).__name__ for r in fig.renderers]
    assert glyphs.count("Image") == 2 and "Scatter" in glyphs
    assert any(type(t).__name__ == "HoverTool" for t in fig.tools)


def test_contig_names_in_the_genotypes_order(sim):
    names = np.asarray(sim["variant_contig_name"].values)
    s = sim.assign(variant_contig_name=("variants", np.array(["chr" + c for c in names],
                                                             dtype=object)))
    frame, contigs = plot.manhattan_frame(s)
    ref, _ = plot.manhattan_frame(sim)
    assert list(contigs["chrom"]) == [f"chr{c}" for c in range(1, 8)]
    assert np.array_equal(frame["x"].to_numpy(), ref["x"].to_numpy())


def test_qq_lambda_and_band():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    q = plot.qq_frame(p, keep=1000, thin=500)
    assert q.n == p.size and 1000 < q.expected.size < 1600
    assert q.lambda_gc == pytest.approx(1.0, abs=0.02)
    # under the null most points are inside the 95% band
    inside = (q.lower <= q.observed) & (q.observed <= q.upper)
    assert inside.mean() > 0.8
    assert (q.lower <= q.expected).all() and (q.expected <= q.upper).all()
    # inflated statistics: chi2 scaled by 1.2 -> lambda 1.2
    chi = stats.chi2.rvs(1, size=200_000, random_state=1) * 1.2
    assert plot.lambda_gc(stats.chi2.sf(chi, 1)) == pytest.approx(1.2, rel=0.02)
    # the 2-df test of the genotypic model: lambda on the chi2(2) scale
    p2 = stats.chi2.sf(stats.chi2.rvs(2, size=200_000, random_state=2) * 1.2, 2)
    assert plot.lambda_gc(p2, df=2) == pytest.approx(1.2, rel=0.02)
    assert plot.lambda_gc(p2, df=1) > 1.25


def test_qq_plot_of_the_scan(sim):
    q = plot.qq(sim)
    (pts,) = _elements(q, hv.Scatter, "QQ")
    p = sim["variant_lmm_p_value"].values
    p = np.sort(p[np.isfinite(p)])
    obs = pts.dimension_values(1)
    assert obs.max() == pytest.approx(-np.log10(p[0]))
    lam = plot.lambda_gc(p)
    assert f"lambda_GC = {lam:.3f}" in q.label
    (band,) = _elements(q, hv.Area, "Band")
    assert len(band) == len(pts)


def test_traits_one_panel_each(tmp_path):
    ds = simulate_results(5_000, n_traits=3, seed=2)
    m = plot.manhattan(ds, n_top=10)
    assert isinstance(m, hv.Layout) and len(m) == 3
    tested = int(ds["variant_lmm_tested"].isel(traits=0).sum())
    for t, panel in enumerate(m):
        assert panel.label.endswith(f"trait{t + 1}")
        imgs = _elements(panel, hv.Image, "Manhattan")
        assert sum(int(_counts(i).sum()) for i in imgs) == tested
        (hits,) = _elements(panel, hv.Points, "TopHits")
        p = ds["variant_lmm_p_value"].values[:, t]
        assert np.array_equal(np.sort(hits.dimension_values("p")),
                              np.sort(p[np.isfinite(p)])[:10])
    q = plot.qq(ds)
    assert isinstance(q, hv.Layout) and len(q) == 3
    s = report.summary(plot.select_trait(ds, 2))
    assert s["pve"] == pytest.approx(0.5 * 1.2)
    page = report.write_report(ds, tmp_path / "r.html").read_text()
    for t in range(3):
        assert f"Manhattan: trait{t + 1}" in page and f"QQ: trait{t + 1}" in page
    rasters = [a for a in _bokeh_arrays(page) if a.ndim == 2]
    assert len(rasters) == 6 and sum(np.nansum(a) for a in rasters) == 3 * tested


def test_report_and_png_of_a_real_scan(tmp_path):
    r = cli("demo", "--out", tmp_path / "d", "--families", 60, "--variants", 1500)
    assert r.returncode == 0, r.stderr
    html_path = tmp_path / "d" / "demo.report.html"
    assert f"report: {html_path}" in r.stdout
    res = results.load_results(tmp_path / "d" / "demo.zarr")
    page = html_path.read_text()
    assert "cdn.bokeh.org" not in page and "<script src=" not in page  # all inline
    assert len(page) < 10_000_000
    # the table: the scan's figures
    top = plot.top_hits(res, 10)
    assert top["id"].iloc[0] in page and f"{top['p'].iloc[0]:.3e}" in page
    assert f"{report.summary(res)['lambda_gc']:.4f}" in page
    assert f"{res['null_pve'].values.item():.4g}" in page
    # the Bokeh document carries the raster counts and the top hits
    arrays = _bokeh_arrays(page)
    rasters = [a for a in arrays if a.ndim == 2]
    assert len(rasters) == 2
    assert sum(np.nansum(a) for a in rasters) == int(res["variant_lmm_tested"].sum())
    p = res["variant_lmm_p_value"].values
    top100 = np.sort(p[np.isfinite(p)])[:100]
    assert any(a.shape == (100,) and np.array_equal(np.sort(a), top100) for a in arrays)
    # --no-plot: no report; dlmm plot writes it and the PNG
    r = cli("plot", tmp_path / "d" / "demo.zarr", "-o", tmp_path / "r.html",
            "--png", tmp_path / "r.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.html").stat().st_size > 100_000
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "r.png").convert("RGB")).astype(int)
    red = (np.abs(img - [0xD6, 0x27, 0x28]).sum(axis=2) < 40).sum()
    assert red > 20  # the top hits and the significance line are drawn


def _bokeh_arrays(page: str) -> list[np.ndarray]:
    """Every ndarray of the Bokeh document embedded in a standalone HTML page."""
    import base64
    import gzip

    (doc,) = re.findall(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>',
                        page, re.S)
    out = []

    def walk(o):
        if isinstance(o, dict):
            if o.get("type") == "ndarray" and isinstance(o.get("array"), dict):
                raw = base64.b64decode(o["array"]["data"])
                if raw[:2] == b"\x1f\x8b":
                    raw = gzip.decompress(raw)
                out.append(np.frombuffer(raw, dtype=o["dtype"]).reshape(o["shape"]))
            else:
                for v in o.values():
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(json.loads(doc))
    return out


def test_scan_no_plot(tmp_path):
    from dlmm.demo import write_demo_plink

    write_demo_plink(tmp_path / "g", seed=3, n_families=30, n_variants=300)
    r = cli("scan", tmp_path / "g", "--out", tmp_path / "o", "--no-plot")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o.assoc.tsv").exists() and not (tmp_path / "o.report.html").exists()
    assert "report:" not in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["nothing.zarr"], "not a complete result store"),
    (["{store}", "--significance", "0"], "--significance"),
    (["{store}", "--significance", "holm"], "--significance"),
    (["{store}", "--top", "-1"], "--top"),
    (["{store}", "-o", "{tmp}/no/such/dir/r.html"], "output folder does not exist"),
])
def test_plot_bad_input(tmp_path, sim, args, needle):
    zs = tmp_path / "s.zarr"
    sim.assign_attrs(complete=True).to_zarr(zs, zarr_format=results.ZARR_FORMAT,
                                            consolidated=True)
    args = [a.format(store=zs, tmp=tmp_path) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "r.html")]
    r = cli("plot", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("dlmm: error:") and needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
