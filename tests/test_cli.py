"""The command line: the demo, and bad input -> one clear line, exit 2, nothing written."""

from __future__ import annotations

import shutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlmm.simulate import simulate_families


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
    assert (tmp_path / "d" / "demo.log.txt").exists()
    # not a terminal: progress as lines; the cluster's size and dashboard are shown
    assert re.search(r"^progress: (\d+)/\1 blocks 100%", r.stderr, re.M), r.stderr
    assert "local Dask cluster: 1 worker" in r.stderr and "dask dashboard: http" in r.stderr


@pytest.fixture
def lab(tmp_path):
    """A small text data set in the lab's format."""
    sim = simulate_families(n_families=15, n_children=2, n_variants=20, seed=7)
    d = tmp_path / "in"
    d.mkdir()
    np.savetxt(d / "X.txt", (sim["dosage"] - 1).T, fmt="%d")
    np.savetxt(d / "Y.txt", sim["phenotype"])
    np.savetxt(d / "A.txt", sim["kinship"])
    return d


def _bad(tmp_path, args, *needles):
    out = tmp_path / "out" / "res"
    out.parent.mkdir(exist_ok=True)
    r = dlmm("scan", *args, "--out", out)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    msg = r.stderr.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("dlmm: error: "), r.stderr
    assert "Traceback" not in r.stderr and "Fix:" in msg[0]
    for needle in needles:
        assert needle in msg[0], (needle, msg[0])
    assert list(out.parent.iterdir()) == []  # nothing written
    return msg[0]


def test_good_text_input(lab, tmp_path):
    r = dlmm("scan", lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt",
             "--out", tmp_path / "ok")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "ok.assoc.tsv", sep="\t")) == 20


def test_missing_genotypes(tmp_path, lab):
    _bad(tmp_path, [tmp_path / "nothing"], "nothing", "no PLINK fileset")


def test_missing_phenotype_file(tmp_path, lab):
    _bad(tmp_path, [lab / "X.txt", "--pheno", tmp_path / "nope.txt", "--kinship", lab / "A.txt"],
         "nope.txt", "not found")


def test_text_needs_pheno_and_kinship(tmp_path, lab):
    _bad(tmp_path, [lab / "X.txt", "--pheno", lab / "Y.txt"], "X.txt", "--kinship")


def test_genotype_outside_coding(tmp_path, lab):
    x = np.loadtxt(lab / "X.txt")
    x[3, 4] = 5
    np.savetxt(lab / "X.txt", x, fmt="%d")
    _bad(tmp_path, [lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt"],
         "X.txt", "line 4, column 5", "outside the coding")


def test_pheno_col_out_of_range(tmp_path, lab):
    _bad(tmp_path, [lab / "X.txt", "--pheno", lab / "Y.txt", "--pheno-col", 3,
                    "--kinship", lab / "A.txt"], "Y.txt", "--pheno-col 3")


def test_non_numeric_phenotype(tmp_path, lab):
    lines = (lab / "Y.txt").read_text().splitlines()
    lines[2] = "tall"
    (lab / "Y.txt").write_text("\n".join(lines) + "\n")
    _bad(tmp_path, [lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt"],
         "Y.txt", "'tall'", "line 3")


def test_constant_phenotype(tmp_path, lab):
    n = len((lab / "Y.txt").read_text().splitlines())
    np.savetxt(lab / "Y.txt", np.full(n, 2.0))
    _bad(tmp_path, [lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt"],
         "Y.txt", "constant")


def test_kinship_wrong_size(tmp_path, lab):
    A = np.loadtxt(lab / "A.txt")
    np.savetxt(lab / "A.txt", A[:-1, :-1])
    _bad(tmp_path, [lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt"],
         "A.txt", "59 x 59", "60 samples")


def test_kinship_not_symmetric(tmp_path, lab):
    A = np.loadtxt(lab / "A.txt")
    A[0, 5] += 0.3
    np.savetxt(lab / "A.txt", A)
    _bad(tmp_path, [lab / "X.txt", "--pheno", lab / "Y.txt", "--kinship", lab / "A.txt"],
         "A.txt", "not symmetric")


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
