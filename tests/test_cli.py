"""The command line: the demo, good input, outputs not overwritten (bad input: test_bad_input.py)."""

from __future__ import annotations

import shutil
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_lab_files


def dlmm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_demo_finds_causal_variants(tmp_path):
    r = dlmm("demo", "--out", tmp_path / "d", "--families", 100, "--variants", 2000)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "d" / "demo.assoc.tsv", sep="\t")
    assert len(table) > 1900  # nearly every variant passes the filters
    assert "top hits" in r.stdout and "pve estimate in the null model" in r.stdout
    top = r.stdout.split("top hits")[1].splitlines()[2:5]
    assert any(line.strip().startswith("*") for line in top), r.stdout
    # the log's lambda_GC is the table's, by R's definition: qchisq(median(p), 1, lower =
    # FALSE) / qchisq(0.5, 1), here with scipy
    from scipy import stats

    log = (tmp_path / "d" / "demo.log.txt").read_text()
    got = float(re.search(r"^## lambda_GC \(LRT\) = (\S+)$", log, re.M).group(1))
    want = stats.chi2.isf(table["p_lrt"].median(), 1) / stats.chi2.ppf(0.5, 1)
    assert got == pytest.approx(want, abs=1e-4) and 0.7 < got < 1.5
    # not a terminal: progress as lines; the cluster's size and dashboard are shown
    assert re.search(r"^progress: (\d+)/\1 blocks 100%", r.stderr, re.M), r.stderr
    assert re.search(r"^dask dashboard: http\S+ \(local cluster: 1 worker, \d+ threads?", r.stderr,
                     re.M), r.stderr


@pytest.fixture
def lab(tmp_path):
    """A small text data set in the lab's format."""
    d = tmp_path / "in"
    d.mkdir()
    return write_lab_files(d)


def test_good_text_input(lab, tmp_path):
    r = dlmm("scan", lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt",
             "--out", tmp_path / "ok")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "ok.assoc.tsv", sep="\t")) == 20


def test_no_dashboard_same_results(lab, tmp_path):
    """--no-dashboard: the local cluster without its Bokeh server, the same table."""
    args = [lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt", "--no-plot"]
    r = dlmm("scan", *args, "--no-dashboard", "--out", tmp_path / "nd")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^dask dashboard: off \(local cluster: 1 worker", r.stderr, re.M), r.stderr
    assert dlmm("scan", *args, "--out", tmp_path / "d").returncode == 0
    assert (tmp_path / "nd.assoc.tsv").read_text() == (tmp_path / "d.assoc.tsv").read_text()


def test_existing_output_not_overwritten(tmp_path, lab):
    args = [lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt"]
    out = tmp_path / "res"
    assert dlmm("scan", *args, "--out", out).returncode == 0
    before = Path(f"{out}.assoc.tsv").read_text()
    r = dlmm("scan", *args, "--model", "genotypic", "--out", out)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert Path(f"{out}.assoc.tsv").read_text() == before
    assert dlmm("scan", *args, "--model", "genotypic", "--out", out,
                "--overwrite").returncode == 0
    assert "beta_dom" in Path(f"{out}.assoc.tsv").read_text().splitlines()[0]


def test_help_is_fast_and_lists_commands():
    r = dlmm("--help")
    assert r.returncode == 0 and "scan" in r.stdout and "demo" in r.stdout
    if shutil.which("dlmm"):
        r = subprocess.run(["dlmm", "scan", "--help"], capture_output=True, text=True)
        assert "--kinship" in r.stdout


def test_progress_bar_on_a_terminal_and_lines_in_a_log():
    import io

    from dlmm.cli import _Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        bar = _Progress(stream)
        for i in range(1, 21):
            bar(i, 20)
    shown = tty.getvalue()
    assert shown.count("\r[") == 20 and shown.endswith(", eta 0 s\n")
    assert shown.rsplit("\r", 1)[1].startswith("[" + "#" * 30 + "] 20/20 blocks 100%")
    assert "[" + "#" * 30 + "]" in shown and "[" + "#" * 15 + " " * 15 + "] 10/20" in shown
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("progress: 20/20 blocks 100%")


def test_executable_freezes_the_collector_and_main_does_not(lab, tmp_path, monkeypatch):
    """``run`` (the ``dlmm`` executable) imports with the cyclic collector off, moves the
    modules out of its reach and turns it back on, and freezes again at exit (Python's
    own last collection over xarray, pandas, numba and zarr took 0.3-0.5 s of every
    run); ``main`` called in a process that goes on leaves the collector alone."""
    import gc

    from dlmm import cli

    args = ["scan", str(lab / "X.txt"), "--pheno", str(lab / "Y.txt"), "--kinship",
            str(lab / "A.txt"), "--no-plot", "--no-dashboard"]
    calls = []  # whether the collector was on at each freeze
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(gc.isenabled()))
    assert cli.main(args + ["--out", str(tmp_path / "m")]) == 0
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["dlmm"] + args + ["--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as stop:
        cli.run()
    assert stop.value.code == 0
    assert calls == [False, True] and gc.isenabled(), calls  # after the imports, at exit
    assert (tmp_path / "r.assoc.tsv").read_text() == (tmp_path / "m.assoc.tsv").read_text()
