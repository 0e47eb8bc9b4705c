"""Shared fixtures: the peers' real data and output (GEMMA on mouse_hs1940)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

GEMMA_EXAMPLE = Path("/usr/share/doc/gemma/example")
DATA = Path(__file__).parent / "data"


def gemma_log(path) -> dict[str, str]:
    """The ``## name = value`` lines of a GEMMA (or dlmm) log, as strings."""
    import re

    vals = {}
    for line in open(path):
        m = re.match(r"## (.+?) = (.+)$", line.strip())
        if m:
            vals[m.group(1).strip()] = m.group(2).strip()
    return vals


def log_body(path) -> list[str]:
    """A dlmm log's lines without those that differ between identical runs: the date,
    the command line and the computation time."""
    skip = ("## date = ", "## command line input = ", "## total computation time = ")
    return [line for line in open(path).read().splitlines() if not line.startswith(skip)]


def write_lab_files(d: Path) -> Path:
    """The course lab's text format in ``d``: X.txt (-1/0/1, samples x variants), Y.txt,
    A.txt, for 30 family members and 20 variants (seeded)."""
    import numpy as np

    from dlmm.simulate import simulate_families

    sim = simulate_families(n_families=15, n_children=2, n_variants=20, seed=7)
    np.savetxt(d / "X.txt", (sim["dosage"] - 1).T, fmt="%d")
    np.savetxt(d / "Y.txt", sim["phenotype"])
    np.savetxt(d / "A.txt", sim["kinship"])
    return d


def need_peer(what: str, ok: bool):
    """Skip when a reference tool is absent, but fail where CI promised it."""
    if ok:
        return
    if os.environ.get("DLMM_REQUIRE_PEERS"):
        pytest.fail(f"{what} is required (DLMM_REQUIRE_PEERS is set) but not installed")
    pytest.skip(f"{what} not installed (apt-get install gemma gemma-doc)")


@pytest.fixture(scope="session")
def mouse(tmp_path_factory):
    """mouse_hs1940 PLINK files from Debian's gemma-doc, with GEMMA's own results.

    Runs ``gemma -gk 1`` and ``gemma -lmm 2 -n 1`` on them; returns a dict of
    paths: ``prefix``, ``kinship`` (cXX.txt), ``assoc``, ``log``, ``dir``.
    """
    need_peer("GEMMA", shutil.which("gemma") is not None
              and (GEMMA_EXAMPLE / "mouse_hs1940.bed.gz").exists())
    d = tmp_path_factory.mktemp("mouse")
    for ext in ("bed", "bim", "fam"):
        with gzip.open(GEMMA_EXAMPLE / f"mouse_hs1940.{ext}.gz") as src, \
                open(d / f"mouse_hs1940.{ext}", "wb") as dst:
            shutil.copyfileobj(src, dst)
    run = dict(cwd=d, check=True, capture_output=True)
    subprocess.run(["gemma", "-bfile", "mouse_hs1940", "-gk", "1", "-o", "mouse"], **run)
    subprocess.run(["gemma", "-bfile", "mouse_hs1940", "-k", "output/mouse.cXX.txt",
                    "-lmm", "2", "-n", "1", "-o", "mouse_lmm2"], **run)
    return {"dir": d, "prefix": d / "mouse_hs1940", "kinship": d / "output/mouse.cXX.txt",
            "assoc": d / "output/mouse_lmm2.assoc.txt", "log": d / "output/mouse_lmm2.log.txt"}


@pytest.fixture(scope="session")
def mouse_gk2(mouse):
    """GEMMA's standardised GRM (``gemma -gk 2``) of mouse_hs1940: the sXX.txt path."""
    subprocess.run(["gemma", "-bfile", "mouse_hs1940", "-gk", "2", "-o", "mouse"],
                   cwd=mouse["dir"], check=True, capture_output=True)
    return mouse["dir"] / "output/mouse.sXX.txt"


@pytest.fixture(scope="session")
def mouse_lmm4(mouse):
    """``gemma -lmm 4`` (Wald, LRT, score) on mouse_hs1940 phenotype 1 with covariates.

    The covariate file is an intercept and the sex column of the .fam (1/2), as
    GEMMA requires the intercept column.  Returns ``covar``, ``assoc``, ``log``.
    """
    d = mouse["dir"]
    with open(d / "mouse_hs1940.fam") as fam, open(d / "covar_sex.txt", "w") as out:
        for line in fam:
            out.write(f"1\t{line.split()[4]}\n")
    subprocess.run(["gemma", "-bfile", "mouse_hs1940", "-k", "output/mouse.cXX.txt",
                    "-c", "covar_sex.txt", "-lmm", "4", "-n", "1", "-o", "mouse_lmm4"],
                   cwd=d, check=True, capture_output=True)
    return {"covar": d / "covar_sex.txt", "assoc": d / "output/mouse_lmm4.assoc.txt",
            "log": d / "output/mouse_lmm4.log.txt"}


@pytest.fixture(scope="session")
def plink(tmp_path_factory):
    """A simulated PLINK fileset: 60 families (300 samples) x 3000 variants."""
    from dlmm.demo import write_demo_plink

    d = tmp_path_factory.mktemp("plink")
    sim = write_demo_plink(d / "sim", seed=11, n_families=60, n_variants=3000)
    return {"prefix": d / "sim", "sim": sim}


@pytest.fixture(scope="session")
def em_reference():
    """The classic-EM reference data set and the R script's table."""
    import numpy as np
    import pandas as pd

    d = DATA / "em_reference"
    return {
        "dir": d,
        "X": np.loadtxt(d / "X.txt"),
        "Y": np.loadtxt(d / "Y.txt"),
        "A": np.loadtxt(d / "A.txt"),
        "ref": pd.read_csv(d / "reference.tsv", sep="\t"),
    }
