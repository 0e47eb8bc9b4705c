"""The HTML report in a real headless Chromium: served over http on 127.0.0.1,
the Bokeh plots render, no console errors, canvases exist and show the plots."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import need_peer
from dlmm import plot, results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

# every canvas of the page, inside Bokeh's shadow roots too, with its size and
# whether it has any non-blank pixel
_CANVASES = """
function all(root, out) {
  for (const e of root.querySelectorAll('*')) {
    if (e.tagName === 'CANVAS') out.push(e);
    if (e.shadowRoot) all(e.shadowRoot, out);
  }
  return out;
}
return all(document, []).map(c => {
  let drawn = null;
  try {
    const ctx = c.getContext('2d');
    if (ctx && c.width > 0 && c.height > 0) {
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      drawn = false;
      for (let i = 3; i < d.length; i += 4) { if (d[i] !== 0) { drawn = true; break; } }
    }
  } catch (err) { drawn = null; }
  return {w: c.width, h: c.height, drawn: drawn};
});
"""

# Bokeh finished: the document exists and every plot view has painted
_READY = """
if (!(window.Bokeh && Bokeh.documents && Bokeh.documents.length > 0)) return null;
const views = [...Bokeh.index.all_views()];
const plots = views.filter(v => v.model && (v.model.type === 'Figure' || v.model.type === 'Plot'));
if (plots.length === 0) return null;
return plots.every(v => v.is_idle) ? plots.length : null;
"""

# viewport position of the top hit (smallest p) in the Manhattan plot, and its fields
_TOP_HIT = """
const views = [...Bokeh.index.all_views()];
const fig = views.find(v => v.model.type === 'Figure' && v.model.title
                            && v.model.title.text.startsWith('Manhattan'));
const r = fig.model.renderers.find(r => r.data_source && r.data_source.data
                                        && r.data_source.data.id);
const d = r.data_source.data;
let i = 0;
for (let k = 1; k < d.p.length; k++) if (d.p[k] < d.p[i]) i = k;
const rect = fig.canvas_view.el.getBoundingClientRect();
return {x: rect.left + fig.frame.x_scale.compute(d.x[i]),
        y: rect.top + fig.frame.y_scale.compute(d.nlp[i]), id: d.id[i], p: d.p[i]};
"""

# the text of every tooltip element, inside shadow roots too
_TOOLTIPS = """
function all(root, out) {
  for (const e of root.querySelectorAll('*')) {
    if (e.shadowRoot) all(e.shadowRoot, out);
    if (e.classList && [...e.classList].some(c => c.toLowerCase().includes('tooltip')))
      out.push(e.innerText || e.textContent || '');
  }
  return out;
}
return all(document, []).join(' ');
"""


@pytest.fixture(scope="module")
def served_report(tmp_path_factory):
    """A real demo scan's report, served by http.server on 127.0.0.1."""
    d = tmp_path_factory.mktemp("served")
    r = subprocess.run([sys.executable, "-m", "dlmm.cli", "demo", "--out", str(d), "--families",
                        "60", "--variants", "1500"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    handler = functools.partial(_QuietHandler, directory=str(d))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/demo.report.html", "dir": d}
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, fmt, *args):
        _QuietHandler.requests.append(fmt % args)


@pytest.fixture
def browser(tmp_path):
    need_peer("chromium + chromium-driver", bool(CHROMIUM and CHROMEDRIVER))
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1200",
              f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_in_chromium(served_report, browser, tmp_path):
    browser.get(served_report["url"])
    deadline = time.monotonic() + 60
    n_plots = None
    while n_plots is None and time.monotonic() < deadline:
        n_plots = browser.execute_script(_READY)
        if n_plots is None:
            time.sleep(0.25)
    assert n_plots == 2, "the Manhattan and the QQ plot did not render within 60 s"
    logs = browser.get_log("browser")
    errors = [e for e in logs if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    canvases = browser.execute_script(_CANVASES)
    big = [c for c in canvases if c["w"] >= 300 and c["h"] >= 300]
    assert len(big) >= 2, canvases
    assert any(c["drawn"] for c in big), canvases
    # nothing but the page itself was fetched: all resources are inline
    assert all("demo.report.html" in r for r in _QuietHandler.requests), _QuietHandler.requests
    # the screenshot shows the plots: top hits and significance line in red, points in blue
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (np.abs(img - [0xD6, 0x27, 0x28]).sum(axis=2) < 40).sum()
    blue = (np.abs(img - [0x08, 0x30, 0x6B]).sum(axis=2) < 60).sum()
    assert red > 30 and blue > 30, (red, blue)
    print(f"screenshot: {shot}")

    # hovering the top hit shows its id and p-value
    hit = browser.execute_script(_TOP_HIT)
    res = results.open_results(served_report["dir"] / "demo.zarr")
    top = plot.top_hits(res, 1)
    assert hit["id"] == top["id"].iloc[0] and hit["p"] == top["p"].iloc[0]
    browser.execute_cdp_cmd("Input.dispatchMouseEvent",
                            {"type": "mouseMoved", "x": hit["x"], "y": hit["y"]})
    deadline = time.monotonic() + 10
    text = ""
    while hit["id"] not in text and time.monotonic() < deadline:
        time.sleep(0.2)
        text = browser.execute_script(_TOOLTIPS)
    assert hit["id"] in text and "p:" in text and "beta:" in text, text
