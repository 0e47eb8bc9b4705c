"""The hostile suite (issue 15): what a user can do wrong, or the machine to a run, and
what dlmm promises then.

Bad input or a hostile situation gets one line (``dlmm: error: FILE: problem. Fix:
...``) and exit status 2, no traceback; nothing that existed is replaced or removed
without ``--overwrite`` (checked by the sha256 of every file before and after); nothing
half-written is left (no ``*.partial``, ``*.lock``, ``*.old``), except an interrupted
scan's finished blocks (``NAME.zarr.partial``), which ``--resume`` finishes to the same
bytes as an uninterrupted run.  Ctrl-C and SIGTERM print one line.

Each case runs the real command line on a fresh copy of small data sets (``base``):
the lab's text format (X.txt, Y.txt, A.txt), a PLINK fileset ``p`` (60 samples x 40
variants), the same as a VCF Zarr store ``g.zarr``, a complete result store ``res``,
an uninterrupted scan ``full`` and the same scan interrupted after one of its four blocks
``part`` (``part.zarr.partial``).  Commands run as separate processes forked from one
that has imported dlmm once (:class:`ForkServer`: the same code path as
``python -m dlmm.cli``, without paying two seconds of imports per case); cases that need
another process context (fewer privileges, signals) run ``python -m dlmm.cli`` itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import importlib.util
import http.server
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from _cluster import blocks_done
from conftest import write_lab_files
from dlmm import io, store
from dlmm.demo import write_demo_plink

PY = sys.executable
HAVE_PYARROW = importlib.util.find_spec("pyarrow") is not None
ROOT = os.geteuid() == 0
# root writes and reads any file whatever its mode, through CAP_DAC_OVERRIDE: drop it
NO_ROOT = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
# the interrupted scan of ``base`` (and its uninterrupted twin ``full``): 4 blocks
RESUMABLE = ["scan", "p", "--pheno", "ph.txt", "--chunk-size", "10", "--no-plot",
             "--no-dashboard"]
SCAN = ["scan", "p", "--no-plot", "--no-dashboard"]
HALF_WRITTEN = ("*.partial", "*.partial.*", "*.lock", "*.old")


# --------------------------------------------------------------------------
# running the command line
# --------------------------------------------------------------------------
_SERVER = r"""
import json, os, sys
import distributed, dlmm, dlmm.cli, dlmm.report, dlmm.demo, dlmm.store  # imported once
dlmm.run
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the command, as `python -m dlmm.cli ARGS` runs it
        os.chdir(job["cwd"])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.argv = ["dlmm", *job["args"]]
        dlmm.cli.run()
        sys.exit(0)
    print(json.dumps(pid), flush=True)
    print(json.dumps(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])), flush=True)
"""


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        """stderr but the cluster's announcement and the progress lines."""
        return [ln for ln in self.stderr.splitlines()
                if not ln.startswith(("dask dashboard: ", "progress: "))]


class ForkServer:
    """A Python process that has imported dlmm and forks a child per command."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.proc = subprocess.Popen([PY, "-c", _SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, DASK_SCHEDULER_ADDRESS=""))
        self.fd = self.proc.stdout.fileno()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)
        self.buffer = b""
        self.n = 0

    def _read(self, timeout: float):
        """The server's next line (JSON), or None after ``timeout`` seconds."""
        deadline = time.time() + timeout
        while b"\n" not in self.buffer:
            if not self.sel.select(max(0.0, deadline - time.time())):
                return None
            chunk = os.read(self.fd, 4096)
            assert chunk, "the fork server died"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, args, cwd, timeout: float = 300) -> Result:
        self.n += 1
        out, err = self.dir / f"{self.n}.out", self.dir / f"{self.n}.err"
        job = {"args": [str(a) for a in args], "cwd": str(cwd), "stdout": str(out),
               "stderr": str(err)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        pid = self._read(120)
        status = self._read(timeout)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            self._read(30)
            pytest.fail(f"dlmm {' '.join(job['args'])} did not finish in {timeout} s")
        return Result(status, out.read_text(), err.read_text())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ForkServer(tmp_path_factory.mktemp("forked"))
    yield s
    s.close()


def run_process(args, cwd, prefix=(), timeout: float = 300, env=None) -> Result:
    """``python -m dlmm.cli ARGS`` in a process of its own (inside ``prefix``)."""
    r = subprocess.run([*prefix, PY, "-m", "dlmm.cli", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ if env is None else env, DASK_SCHEDULER_ADDRESS=""))
    return Result(r.returncode, r.stdout, r.stderr)


def no_root_prefix() -> list[str]:
    """A prefix running a command without root's power over file modes."""
    if not ROOT:
        return []
    if shutil.which("setpriv") is None or subprocess.run(
            [*NO_ROOT, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
    return NO_ROOT


# --------------------------------------------------------------------------
# what existed, and what is left
# --------------------------------------------------------------------------
def checksums(d: Path) -> dict[str, str]:
    """sha256 of every regular file under ``d`` (symbolic links not followed)."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in files:
            p = Path(root, name)
            if p.is_symlink() or not p.is_file():
                continue
            h = hashlib.sha256()
            try:
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except PermissionError:  # a case's unreadable file (when not run as root)
                h.update(b"unreadable")
            out[str(p.relative_to(d))] = h.hexdigest()
    return out


def entries(d: Path) -> set[str]:
    """Every name under ``d`` (files, folders, links), relative."""
    out = set()
    for root, dirs, files in os.walk(d):
        out |= {str(Path(root, n).relative_to(d)) for n in dirs + files}
    return out


def _matches(rel: str, patterns) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(Path(rel).name, p)
               for p in patterns)


def assert_one_line(r: Result, status: int, n_lines: int, says=()) -> None:
    """Exit ``status``; ``n_lines`` lines on stderr (an error is one ``dlmm: error: ...
    Fix: ...`` line) besides the cluster's and the progress; no traceback, no numpy
    reprs; ``says`` in them."""
    text = "\n".join(r.lines())
    assert r.status == status, (r.status, r.stderr, r.stdout[-2000:])
    assert "Traceback" not in r.stderr and "np.str_(" not in r.stderr + r.stdout \
        and "np.float64(" not in r.stderr, r.stderr
    assert len(r.lines()) == n_lines, r.stderr
    if status == 2:
        assert r.lines()[-1].startswith("dlmm: error: ") and ". Fix: " in r.lines()[-1], \
            r.stderr
    for s in says:
        assert s in text, (s, r.stderr)


def assert_nothing_lost(d: Path, before: dict, names_before: set, changes=(),
                        failed: bool = False):
    """Every file that existed is there with the same bytes (but ``changes``); no new
    half-written file is left, and after a failure no new file at all."""
    after = checksums(d)
    for rel, digest in before.items():
        if _matches(rel, changes):
            continue
        assert after.get(rel) == digest, f"{rel} was {'changed' if rel in after else 'removed'}"
    new = entries(d) - names_before
    left = [n for n in new if failed or _matches(n, HALF_WRITTEN)]
    assert not left, f"{'files written by a failed run' if failed else 'half-written'}: {left}"


# --------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory, server):
    import dlmm

    d = tmp_path_factory.mktemp("hostile-base")
    write_lab_files(d)
    write_demo_plink(d / "p", seed=3, n_families=12, n_variants=40)
    store.convert(io.read_plink(d / "p"), d / "g.zarr", chunk_size=20)
    fam = pd.read_csv(d / "p.fam", sep=r"\s+", header=None, dtype=str)
    (d / "ph.txt").write_text("\n".join(fam[5]) + "\n")
    for args in (RESUMABLE + ["--out", "full"], SCAN + ["--out", "res"]):
        r = server.run(args, d)
        assert r.status == 0, r.stderr

    def stop(n_written, n_todo):  # interrupted once one of the 4 blocks is written
        raise KeyboardInterrupt

    with contextlib.chdir(d), pytest.raises(KeyboardInterrupt):
        dlmm.run("p", "ph.txt", out="part", options=dlmm.ScanOptions(chunk_size=10,
                                                                      plot=False),
                 on_block=stop)
    assert (d / "part.zarr.partial").is_dir() and not (d / "part.lock").exists()
    return d


# --------------------------------------------------------------------------
# set-ups (each takes the case's folder)
# --------------------------------------------------------------------------
def write(name: str, text):
    def make(d):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text(d) if callable(text) else text)
    return make


def write_bytes(name: str, data: bytes):
    return lambda d: (d / name).write_bytes(data)


def mkdir(*names: str):
    def make(d):
        for n in names:
            (d / n).mkdir(parents=True)
    return make


def symlink(target: str, name: str):
    return lambda d: (d / name).symlink_to(target)


def remove(name: str):
    return lambda d: shutil.rmtree(d / name) if (d / name).is_dir() else (d / name).unlink()


def both(*makes):
    def make(d):
        for m in makes:
            m(d)
    return make


def fam_edit(row: int, col: int, value: str):
    def make(d):
        lines = (d / "p.fam").read_text().splitlines()
        fields = lines[row].split()
        fields[col] = value
        lines[row] = " ".join(fields)
        (d / "p.fam").write_text("\n".join(lines) + "\n")
    return make


def fam_column(col: int, values):
    def make(d):
        lines = (d / "p.fam").read_text().splitlines()
        out = []
        for i, line in enumerate(lines):
            fields = line.split()
            fields[col] = values(i, fields[col]) if callable(values) else values
            out.append(" ".join(fields))
        (d / "p.fam").write_text("\n".join(out) + "\n")
    return make


def lines_edit(name: str, i: int, value: str):
    def make(d):
        lines = (d / name).read_text().splitlines()
        lines[i] = value
        (d / name).write_text("\n".join(lines) + "\n")
    return make


def bed_constant(d):
    """Every variant of the .bed one genotype (homozygous A1): none passes the filters."""
    raw = (d / "p.bed").read_bytes()
    (d / "p.bed").write_bytes(raw[:3] + bytes(len(raw) - 3))


def bed_flipped(d):
    """The .bed rewritten in place: same size, other genotypes."""
    raw = bytearray((d / "p.bed").read_bytes())
    for i in range(3, len(raw)):
        raw[i] ^= 0b11111111 if (raw[i] & 0b01010101) == 0 else 0
    (d / "p.bed").write_bytes(bytes(raw))


def npz_kinship(d, ids=None):
    fam = pd.read_csv(d / "p.fam", sep=r"\s+", header=None, dtype=str)
    ids = fam[1].to_numpy() if ids is None else ids
    x = np.random.default_rng(0).normal(size=(len(ids), 3 * len(ids)))
    np.savez(d / "K.npz", kinship=x @ x.T / x.shape[1], sample_id=ids.astype(str))


def fam_duplicate_iid_and_npz(d):
    npz_kinship(d)  # the kinship of the original, distinct ids
    iid = (d / "p.fam").read_text().splitlines()[0].split()[1]
    fam_edit(1, 1, iid)(d)


def zarr_set(name: str, index, value):
    def make(d):
        import zarr

        a = zarr.open_array(str(d / "g.zarr"), path=name, mode="r+")
        a[index] = value
    return make


def ploidy3_store(d):
    import xarray as xr

    g = xr.open_zarr(d / "g.zarr")
    gt = np.concatenate([g["call_genotype"].values, g["call_genotype"].values[..., :1]], -1)
    xr.Dataset({"call_genotype": (("variants", "samples", "ploidy"), gt),
                "sample_id": ("samples", g["sample_id"].values.astype(object)),
                "variant_position": g["variant_position"]}).to_zarr(d / "h.zarr", zarr_format=2)


def covariates(name: str, extra):
    """An intercept and a column ``extra(n)`` as GEMMA's covariate file."""
    def make(d):
        n = len((d / "p.fam").read_text().splitlines())
        rows = [f"1 {v}" for v in extra(n)]
        (d / name).write_text("\n".join(rows) + "\n")
    return make


def pheno_with_ids(name: str, columns: dict):
    def make(d):
        fam = pd.read_csv(d / "p.fam", sep=r"\s+", header=None, dtype=str)
        cols = " ".join(columns)
        rows = [f"{f} {i} " + " ".join(str(fn(k)) for fn in columns.values())
                for k, (f, i) in enumerate(zip(fam[0], fam[1]))]
        (d / name).write_text(f"#FID IID {cols}\n" + "\n".join(rows) + "\n")
    return make


def result_chunk_unreadable(d):
    (d / "res.zarr" / "variant_lmm_p_value" / "0.0").write_bytes(b"not a chunk")


def partial_broken(d):
    (d / "part.zarr.partial" / ".zattrs").write_text("{ broken")


def partial_blocks_missing(d):
    shutil.rmtree(d / "part.zarr.partial" / "blocks")


def long_name(n: int = 300) -> str:
    return "r" * n


def mount_tmpfs(request, where: Path, options: str) -> None:
    if not ROOT:
        pytest.skip("mounting a small file system needs root")
    where.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(where)]))


class HttpServer:
    """An HTTP server on 127.0.0.1 (what a mistyped --scheduler may reach)."""

    def __enter__(self):
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                   http.server.SimpleHTTPRequestHandler)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        return self.srv.server_address[1]

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# bad input: a defect in one input file or option
# --------------------------------------------------------------------------
TEXT = ["X.txt", "--pheno", "Y.txt", "--kinship", "A.txt"]


def _edit_text(name, edit, fmt="%.10g"):
    def make(d):
        a = np.loadtxt(d / name, ndmin=2)
        a = edit(a)
        np.savetxt(d / name, a, fmt=fmt)
    return make


def _fam_ids(d):
    return pd.read_csv(d / "p.fam", sep=r"\s+", header=None)[1].astype(str).to_numpy()


def _npz_kinship_renamed(renamed: int):
    """A valid GRM of p.fam's samples saved with ids; ``renamed`` ids replaced."""
    def make(d):
        ids = _fam_ids(d).astype(object)
        n = len(ids)
        x = np.random.default_rng(0).normal(size=(n, 3 * n))
        K = x @ x.T / x.shape[1]
        ids[:renamed] = [f"stranger{i}" for i in range(renamed)]
        np.savez(d / "K.npz", kinship=K, sample_id=ids.astype(str))
    return make


def _not_psd(a):
    s, U = np.linalg.eigh(a)
    s[0] = -0.5 * s.max()
    return (U * s) @ U.T


def _collinear(d):
    n = len((d / "Y.txt").read_text().splitlines())
    z = np.random.default_rng(1).normal(size=n)
    np.savetxt(d / "C.txt", np.column_stack([np.ones(n), z, 2 * z]))


def _too_many_covariates(d):
    n = len((d / "Y.txt").read_text().splitlines())
    y = np.full(n, np.nan)
    y[:5] = [1.0, 2.0, 4.0, 3.0, 5.0]
    np.savetxt(d / "Y.txt", y)
    np.savetxt(d / "C.txt", np.column_stack([np.ones(n), np.random.default_rng(2).normal(
        size=(n, 3))]))


def _corrupt_zarr(d):
    (d / "g.zarr" / ".zmetadata").write_text("{ this is not json")
    (d / "g.zarr" / ".zgroup").write_text("{ nor this")


def _foreign_zarr(d):
    import xarray as xr

    xr.Dataset({"temperature": ("time", np.arange(5.0))}).to_zarr(d / "f.zarr", zarr_format=2)


def _float_genotype_zarr(d):
    import xarray as xr

    g = xr.open_zarr(d / "g.zarr")
    xr.Dataset({"call_genotype": g["call_genotype"].astype(np.float32),
                "sample_id": ("samples", _fam_ids(d)),
                "variant_position": g["variant_position"]}).to_zarr(d / "h.zarr", zarr_format=2)


def _no_read(name):
    def make(d):
        os.chmod(d / name, 0)
    return make


# bad input (once tests/test_bad_input.py's table): id, set-up (or None), the scan's
# arguments (without --out), substrings the one line must contain
BAD_INPUT = [
    # missing or unreadable files
    ("genotypes-missing", None, ["nothing"], ["nothing", "no genotypes of that name"]),
    ("phenotype-missing", None, ["X.txt", "--pheno", "nope.txt", "--kinship", "A.txt"],
     ["nope.txt", "phenotype file not found"]),
    ("kinship-missing", None, ["X.txt", "--pheno", "Y.txt", "--kinship", "nope.txt"],
     ["nope.txt", "kinship file not found"]),
    ("covariates-missing", None, TEXT + ["--covar", "nope.txt"],
     ["nope.txt", "covariate file not found"]),
    ("bim-missing", lambda d: (d / "p.bim").unlink(), ["p"], ["p.bim", "not found"]),
    ("fam-missing", lambda d: (d / "p.fam").unlink(), ["p"], ["p.fam", "not found"]),
    ("phenotype-is-a-folder", lambda d: (d / "dir").mkdir(),
     ["X.txt", "--pheno", "dir", "--kinship", "A.txt"], ["dir", "is a folder"]),
    ("phenotype-unreadable", _no_read("Y.txt"), TEXT, ["Y.txt", "not readable"]),
    ("text-needs-pheno", None, ["X.txt", "--kinship", "A.txt"],
     ["X.txt", "carry no phenotype", "--pheno"]),
    ("bed-truncated", lambda d: os.truncate(d / "p.bed", 100), ["p"],
     ["p.bed", "size 100 bytes, but 60 samples (.fam) x 40 variants (.bim) need"]),
    # sample ids
    ("kinship-ids-do-not-match", _npz_kinship_renamed(60), ["p", "--kinship", "K.npz"],
     ["K.npz", "none of the kinship's sample ids is a genotype sample id", "'stranger0'"]),
    ("kinship-npz-without-ids",
     lambda d: np.savez(d / "K.npz", kinship=np.eye(60)), ["p", "--kinship", "K.npz"],
     ["K.npz", "sample_id"]),
    ("phenotype-rows-do-not-match", lines_edit("Y.txt", 0, ""), TEXT,
     ["Y.txt", "59 rows but the genotypes have 60 samples"]),
    # kinship
    ("kinship-not-square", _edit_text("A.txt", lambda a: a[:, :-1]), TEXT,
     ["A.txt", "60x59, not square"]),
    ("kinship-wrong-size", _edit_text("A.txt", lambda a: a[:-1, :-1]), TEXT,
     ["A.txt", "59 x 59", "60 samples"]),
    ("kinship-not-symmetric",
     _edit_text("A.txt", lambda a: a + np.eye(len(a), k=5) * 0.3), TEXT,
     ["A.txt", "not symmetric"]),
    ("kinship-nan", _edit_text("A.txt", lambda a: np.where(np.eye(len(a), dtype=bool),
                                                            np.nan, a)), TEXT,
     ["A.txt", "NaN or Inf"]),
    ("kinship-inf", lines_edit("A.txt", 3, " ".join(["inf"] * 60)), TEXT, ["A.txt", "NaN or Inf"]),
    ("kinship-not-psd", _edit_text("A.txt", _not_psd), TEXT,
     ["A.txt", "not positive semi-definite"]),
    ("kinship-non-numeric", lines_edit("A.txt", 2, "x " * 60), TEXT,
     ["A.txt", "not a numeric matrix"]),
    # phenotype
    ("phenotype-constant", _edit_text("Y.txt", lambda a: np.full_like(a, 2.0)), TEXT,
     ["Y.txt", "constant"]),
    ("phenotype-all-missing", write("Y.txt", "NA\n" * 60), TEXT,
     ["Y.txt", "missing for every genotype sample"]),
    ("phenotype-non-numeric", lines_edit("Y.txt", 2, "tall"), TEXT,
     ["Y.txt", "'tall'", "line 3"]),
    ("pheno-col-out-of-range", None, TEXT + ["--pheno-col", 3],
     ["Y.txt", "pheno-col 3: no such column"]),
    ("pheno-col-out-of-range-fam", None, ["p", "--pheno-col", 2],
     ["p.fam", "pheno-col 2: no such column", "the file has 1"]),
    ("pheno-col-out-of-range-zarr", None, ["g.zarr", "--pheno-col", 0],
     ["g.zarr", "pheno-col 0: no such column"]),
    # covariates
    ("covariates-collinear", _collinear, TEXT + ["--covar", "C.txt"],
     ["C.txt", "collinear", "rank 2 < 3"]),
    ("fewer-samples-than-covariates-plus-2", _too_many_covariates,
     TEXT + ["--covar", "C.txt"], ["Y.txt", "only 5 analysed samples for 4 covariates"]),
    # genotypes
    ("genotype-outside-coding", lines_edit("X.txt", 3, "0 " * 4 + "5 " + "0 " * 15), TEXT,
     ["X.txt", "line 4, column 5", "outside the coding"]),
    ("zarr-corrupt", _corrupt_zarr, ["g.zarr"], ["g.zarr", "cannot open the Zarr store"]),
    ("zarr-foreign", _foreign_zarr, ["f.zarr", "--pheno", "Y.txt"],
     ["f.zarr", "no call_genotype or call_dosage"]),
    ("zarr-genotypes-not-integer", _float_genotype_zarr, ["h.zarr"],
     ["h.zarr", "call_genotype has dtype float32"]),
    ("store-url-unknown-protocol", None, ["nosuch://bucket/g.zarr"],
     ["nosuch://bucket/g.zarr", "cannot read this URL", "install the fsspec filesystem"]),
    ("store-url-missing", None, ["file:///nonexistent/g.zarr"],
     ["file:///nonexistent/g.zarr", "not a Zarr store"]),
    ("folder-not-a-zarr-store", lambda d: (d / "empty.zarr").mkdir(), ["empty.zarr"],
     ["empty.zarr", "not a Zarr store"]),
    # low-rank options
    ("kinship-variants-unknown-ids", write("KV.txt", "snp1\nrs404\nsnp3 rs405\n"),
     ["p", "--kinship-variants", "KV.txt"],
     ["KV.txt", "2 of 4 kinship variant ids are not in the genotypes", "'rs404'"]),
    ("kinship-variants-empty-list", write("KV.txt", "\n"), ["p", "--kinship-variants", "KV.txt"],
     ["KV.txt", "kinship variant list is empty"]),
    ("kinship-variants-list-missing", None, ["p", "--kinship-variants", "KV.txt"],
     ["KV.txt", "kinship variant list file not found"]),
    ("kinship-variants-count-too-large", None, ["p", "--kinship-variants", 41],
     ["--kinship-variants", "41 variants asked of 40"]),
    ("kinship-variants-with-kinship", None, TEXT + ["--kinship-variants", 5],
     ["--kinship-variants", "not with --kinship"]),
    ("kinship-rank-zero", None, ["p", "--kinship-rank", 0],
     ["--kinship-rank", "0 is not a positive whole number"]),
    ("kinship-rank-with-loco", None, ["p", "--loco", "--kinship-rank", 5],
     ["--loco", "full-rank kinship", "--kinship-rank"]),
    ("float32-rotation-with-low-rank", None,
     ["p", "--kinship-variants", 5, "--rotation-dtype", "float32"],
     ["--rotation-dtype", "float32 is for the full-rank scan"]),
    # found only when a chunk is read, in a task: still one line, and with a given kinship
    # (no GRM pass) no store is left when no block could be written
    ("zarr-corrupt-chunks-given-kinship",
     both(write_bytes("g.zarr/call_genotype/0.0.0", b"not a blosc frame"),
          write_bytes("g.zarr/call_genotype/1.0.0", b"not a blosc frame")),
     ["g.zarr", "--kinship", "A.txt", "--no-plot"], ["g.zarr: call_genotype[", "cannot be read"]),
    ("zarr-corrupt-chunk", write_bytes("g.zarr/call_genotype/1.0.0", b"not a blosc frame"),
     ["g.zarr", "--no-plot"], ["g.zarr: call_genotype[20:40] cannot be read"]),
]


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------
@dataclass
class Case:
    """One hostile command: ``args`` (``{port}``, ``{http}`` filled in), run in a copy
    of ``base`` after ``setup``; it must exit ``status`` with ``lines`` stderr lines
    containing ``says``; files matching ``changes`` may change."""

    kind: str
    id: str
    args: list
    setup: Callable | None = None
    status: int = 2
    lines: int = 1
    says: tuple = ()
    changes: tuple = ()
    own_process: bool = False  # python -m dlmm.cli in a process of its own
    no_root: bool = False      # ... without root's power over file modes
    mount: str | None = None   # a tmpfs at out/ with these mount options
    hold: str | None = None    # a lock file another process (this test) holds
    then: Callable | None = None  # more checks: then(d, result)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.id}"


def same_bytes(a: str, b: str):
    def check(d, r):
        assert (d / a).read_bytes() == (d / b).read_bytes(), f"{a} differs from {b}"
    return check


def not_started(d, r):
    """Refused before any computing: no null fit was printed."""
    assert "## phenotype" not in r.stdout, r.stdout


C = Case
REPORT = ["plot", "res.zarr"]
RESUME = RESUMABLE + ["--out", "part", "--resume"]
RESUMED = ("part.zarr.partial*", "part.lock")  # what a resumed run may move or remove

CASES = [
    # ---------------------------------------------------------------- overwrite, data loss
    C("overwrite", "plot-onto-the-bed", REPORT + ["-o", "p.bed"], says=("p.bed: output exists",)),
    C("overwrite", "plot-png-onto-the-fam", REPORT + ["-o", "new.html", "--png", "p.fam"],
      says=("p.fam: output exists",)),
    C("overwrite", "plot-onto-a-table", REPORT + ["-o", "res.assoc.tsv"],
      says=("res.assoc.tsv: output exists",)),
    C("overwrite", "plot-onto-its-store", REPORT + ["-o", "res.zarr", "--overwrite"],
      says=("res.zarr: is inside the result store",)),
    C("overwrite", "plot-into-its-store", REPORT + ["-o", "res.zarr/r.html"],
      says=("inside the result store",)),
    C("overwrite", "plot-html-and-png-one-file", REPORT + ["-o", "a.png", "--png", "a.png"],
      says=("a.png", "twice")),
    C("overwrite", "plot-overwrite-replaces", REPORT + ["-o", "r.html", "--overwrite"],
      setup=write("r.html", "old"), status=0, lines=0, changes=("r.html",),
      then=lambda d, r: "<html" in (d / "r.html").read_text()),
    C("overwrite", "scan-report-exists", ["scan", "p", "--no-dashboard", "--out", "s"],
      setup=write("s.report.html", "mine"), says=("s.report.html: output exists",)),
    C("overwrite", "scan-table-exists", SCAN + ["--out", "s"], setup=write("s.assoc.tsv", "x"),
      says=("s.assoc.tsv: output exists",)),
    C("overwrite", "scan-log-exists", SCAN + ["--out", "s"], setup=write("s.log.txt", "x"),
      says=("s.log.txt: output exists",)),
    C("overwrite", "scan-store-exists", SCAN + ["--out", "res"],
      says=("res.zarr: output exists",)),
    C("overwrite", "scan-gzip-exists", SCAN + ["--gzip", "--out", "s"],
      setup=write("s.assoc.tsv.gz", "x"), says=("s.assoc.tsv.gz: output exists",)),
    C("overwrite", "scan-second-trait-log-exists",
      SCAN + ["--pheno", "t.txt", "--pheno-col", "all", "--out", "s"],
      setup=both(pheno_with_ids("t.txt", {"a": np.sin, "b": np.cos}), write("s.b.log.txt", "x")),
      says=("s.b.log.txt: output exists",)),
    C("overwrite", "scan-interrupted-store-there", SCAN + ["--out", "part"],
      says=("part.zarr.partial: an interrupted scan is here", "--resume")),
    C("overwrite", "scan-store-is-a-file", SCAN + ["--out", "s", "--overwrite"],
      setup=write("s.zarr", "x"), says=("s.zarr: exists and is a file",)),
    C("overwrite", "scan-log-is-a-folder", SCAN + ["--out", "s", "--overwrite"],
      setup=mkdir("s.log.txt"), says=("s.log.txt: exists and is a folder",)),
    C("overwrite", "scan-out-is-the-genotype-prefix", SCAN + ["--out", "p"], status=0, lines=0,
      then=lambda d, r: (d / "p.assoc.tsv").is_file()),
    C("overwrite", "scan-store-a-link-to-the-genotypes", SCAN + ["--out", "s", "--overwrite"],
      setup=symlink("g.zarr", "s.zarr"), status=0, lines=0,
      then=lambda d, r: (d / "s.zarr").is_dir() and not (d / "s.zarr").is_symlink()),
    C("overwrite", "scan-table-a-link-to-the-bed", SCAN + ["--out", "s", "--overwrite"],
      setup=symlink("p.bed", "s.assoc.tsv"), status=0, lines=0,
      then=lambda d, r: not (d / "s.assoc.tsv").is_symlink()),
    C("overwrite", "scan-overwrite-replaces", SCAN + ["--out", "res", "--overwrite"], status=0,
      lines=0, changes=("res.*", "res.zarr/*")),
    C("overwrite", "grm-onto-a-result-store", ["grm", "p", "-o", "res", "--no-dashboard"],
      says=("res.zarr: output exists",)),
    C("overwrite", "grm-gemma-text-exists", ["grm", "p", "-o", "k", "--gemma-text",
                                             "--no-dashboard"],
      setup=write("k.cXX.txt", "x"), says=("k.cXX.txt: output exists",),
      then=lambda d, r: not (d / "k.zarr").exists()),
    C("overwrite", "convert-onto-a-store", ["convert", "p", "g.zarr"],
      says=("g.zarr: output exists",)),
    C("overwrite", "convert-onto-its-own-bed", ["convert", "p", "p.bed", "--overwrite"],
      says=("p.bed: exists and is a file",)),
    C("overwrite", "convert-onto-its-source", ["convert", "g.zarr", "g.zarr"],
      says=("g.zarr: output exists",)),
    C("overwrite", "demo-genotypes-exist", ["demo", "--out", "dd", "--families", "4",
                                            "--variants", "50", "--no-dashboard"],
      setup=both(mkdir("dd"), write("dd/demo.bed", "mine")), says=("demo.bed: output exists",)),
    C("overwrite", "demo-table-exists", ["demo", "--out", "dd", "--families", "4",
                                         "--variants", "50", "--no-dashboard"],
      setup=both(mkdir("dd"), write("dd/demo.assoc.tsv", "mine")),
      says=("demo.assoc.tsv: output exists",),
      then=lambda d, r: not (d / "dd/demo.bed").exists()),
    C("overwrite", "demo-out-is-a-file", ["demo", "--out", "p.bed"], says=("p.bed", "a file")),

    # ------------------------------------------------------------------- resume mismatch
    C("resume", "same-options-same-bytes", RESUME, status=0, lines=0, changes=RESUMED,
      then=same_bytes("part.assoc.tsv", "full.assoc.tsv")),
    C("resume", "output-options-may-change", RESUME + ["--gzip"], status=0, lines=0,
      changes=RESUMED, then=lambda d, r: (d / "part.assoc.tsv.gz").is_file()),
    C("resume", "from-another-folder", ["scan", "../d/p", "--pheno", "../d/ph.txt",
                                        "--chunk-size", "10", "--no-plot", "--no-dashboard",
                                        "--out", "part", "--resume"],
      status=0, lines=0, changes=RESUMED,
      then=same_bytes("part.assoc.tsv", "full.assoc.tsv")),
    C("resume", "maf", RESUME + ["--maf", "0.05"], says=("cannot resume", "maf (--maf)")),
    C("resume", "max-missing", RESUME + ["--max-missing", "0.2"],
      says=("cannot resume", "--max-missing")),
    C("resume", "no-center-kinship", RESUME + ["--no-center-kinship"],
      says=("cannot resume", "--no-center-kinship")),
    C("resume", "model", RESUME + ["--model", "genotypic"], says=("cannot resume", "--model")),
    C("resume", "test", RESUME + ["--test", "wald"], says=("cannot resume", "--test")),
    C("resume", "chunk-size", RESUME + ["--chunk-size", "20"],
      says=("cannot resume", "--chunk-size")),
    C("resume", "solver", RESUME + ["--solver", "em"], says=("cannot resume", "--solver")),
    C("resume", "em-start", RESUME + ["--em-start", "null"], says=("cannot resume", "--em-start")),
    C("resume", "em-max-iter", RESUME + ["--em-max-iter", "5"],
      says=("cannot resume", "--em-max-iter")),
    C("resume", "loco", RESUME + ["--loco"], says=("cannot resume", "--loco")),
    C("resume", "kinship-rank", RESUME + ["--kinship-rank", "20"],
      says=("cannot resume", "--kinship-rank")),
    C("resume", "kinship-variants", RESUME + ["--kinship-variants", "20"],
      says=("cannot resume", "kinship variants (--kinship-variants)")),
    C("resume", "rotation-dtype", RESUME + ["--rotation-dtype", "float32"],
      says=("cannot resume", "--rotation-dtype")),
    C("resume", "kinship-given", RESUME + ["--kinship", "A.txt"],
      says=("cannot resume", "kinship (given now)")),
    C("resume", "covariates-given", RESUME + ["--covar", "c.txt"],
      setup=covariates("c.txt", lambda n: np.arange(n) % 3),
      says=("cannot resume", "covariates (given now)")),
    C("resume", "bed-rewritten-in-place", RESUME, setup=bed_flipped,
      says=("cannot resume", "genotypes file (rewritten: sha256")),
    C("resume", "bim-rewritten", RESUME, setup=lines_edit("p.bim", 3, "1 snp4 0 999999 A C"),
      says=("cannot resume", "genotypes file (rewritten")),
    C("resume", "phenotype-file-rewritten", RESUME, setup=lines_edit("ph.txt", 0, "0.5"),
      says=("cannot resume", "phenotypes file (rewritten")),
    C("resume", "fam-rewritten", RESUME, setup=fam_edit(2, 4, "1"),
      says=("cannot resume", "genotypes file (rewritten")),
    C("resume", "bed-given-for-prefix-rewritten", ["scan", "p.bed", *RESUME[2:]],
      setup=fam_edit(2, 4, "1"), says=("cannot resume", "genotypes file (rewritten")),
    C("resume", "overwrite-and-resume", RESUME + ["--overwrite"],
      says=("--resume", "--overwrite")),
    C("resume", "nothing-to-resume", SCAN + ["--out", "none", "--resume"],
      says=("nothing to resume",)),
    C("resume", "broken-interrupted-store", RESUME, setup=partial_broken,
      says=("part.zarr.partial", "cannot be read", "--overwrite"), then=not_started),
    C("resume", "interrupted-store-without-blocks", RESUME, setup=partial_blocks_missing,
      says=("part.zarr.partial", "cannot be read"), then=not_started),
    C("resume", "complete-store-nothing-to-do", SCAN + ["--out", "res", "--resume"],
      status=0, lines=0, then=lambda d, r: "nothing to do" in r.stdout),
    C("resume", "complete-store-other-maf", SCAN + ["--out", "res", "--resume", "--maf", "0.2"],
      says=("cannot resume", "--maf"), then=not_started),

    # ------------------------------------------------- concurrency (see also test_two_runs_*)
    C("concurrency", "scan-out-locked", SCAN + ["--out", "s"], hold="s.lock",
      says=("s.lock: another dlmm run is writing these outputs",)),
    C("concurrency", "scan-resume-locked", RESUME, hold="part.lock",
      says=("part.lock: another dlmm run",), then=not_started),
    C("concurrency", "scan-overwrite-locked", SCAN + ["--out", "res", "--overwrite"],
      hold="res.lock", says=("res.lock: another dlmm run",), then=not_started),
    C("concurrency", "grm-locked", ["grm", "p", "-o", "k"], hold="k.lock",
      says=("k.lock: another dlmm run",)),
    C("concurrency", "convert-locked", ["convert", "p", "c.zarr"], hold="c.zarr.lock",
      says=("c.zarr.lock: another dlmm run",)),
    C("concurrency", "demo-locked", ["demo", "--out", "dd", "--families", "4", "--variants",
                                     "50", "--overwrite"],
      setup=mkdir("dd"), hold="dd/demo.lock", says=("dd/demo.lock: another dlmm run",),
      then=lambda d, r: not (d / "dd/demo.bed").exists()),
    C("concurrency", "plot-locked", REPORT + ["-o", "r.html"], hold="r.html.lock",
      says=("r.html.lock: another dlmm run",)),
    C("concurrency", "stale-lock-of-a-killed-run", SCAN + ["--out", "s"],
      setup=write("s.lock", ""), status=0, lines=0, changes=("s.lock",),
      then=lambda d, r: not (d / "s.lock").exists()),

    # ---------------------------------------------------------------------------- services
    C("services", "grm-scheduler-not-an-address", ["grm", "p", "-o", "k", "--scheduler",
                                                   "not an address"],
      says=("--scheduler",)),
    C("services", "demo-scheduler-refused-port", ["demo", "--out", "dd", "--scheduler",
                                                  "tcp://127.0.0.1:{port}"],
      says=("--scheduler", "refused"), then=lambda d, r: not (d / "dd").exists()),
    C("services", "scan-scheduler-is-http", SCAN[:2] + ["--out", "s", "--scheduler",
                                                        "tcp://127.0.0.1:{http}"],
      says=("not a Dask",)),
    C("services", "demo-dashboard-address-bad", ["demo", "--out", "dd", "--dashboard-address",
                                                 "nowhere:port"],
      says=("--dashboard-address",), then=lambda d, r: not (d / "dd").exists()),
    C("services", "grm-scheduler-http-scheme", ["grm", "p", "-o", "k", "--scheduler",
                                                "http://127.0.0.1:{http}"],
      says=("--scheduler",)),

    # --------------------------------------------------------------- silent wrong output
    C("silent", "fam-duplicate-iid-with-npz-kinship", SCAN + ["--kinship", "K.npz", "--out", "s"],
      setup=fam_duplicate_iid_and_npz, says=("p.fam", "duplicated")),
    C("silent", "fam-duplicate-iid-with-id-phenotypes",
      SCAN + ["--pheno", "t.txt", "--out", "s"],
      setup=both(pheno_with_ids("t.txt", {"a": np.sin}), fam_edit(1, 1, "f0_0")),
      says=("p.fam", "duplicated")),
    C("silent", "zarr-allele-index-5", ["scan", "g.zarr", "--no-plot", "--no-dashboard",
                                        "--out", "s"],
      setup=zarr_set("call_genotype", (3, 4, 0), 5), says=("g.zarr", "call_genotype[3, 4]")),
    C("silent", "zarr-allele-index-minus-7", ["scan", "g.zarr", "--no-plot", "--no-dashboard",
                                              "--out", "s"],
      setup=zarr_set("call_genotype", (25, 7, 1), -7),
      says=("g.zarr", "call_genotype[25, 7]", "invalid allele index")),
    C("silent", "zarr-ploidy-3", ["scan", "h.zarr", "--pheno", "ph.txt", "--out", "s"],
      setup=ploidy3_store, says=("h.zarr", "ploidy 3")),
    C("silent", "phenotype-near-1e307", SCAN + ["--out", "s"],
      setup=fam_column(5, lambda i, v: f"{float(v) * 1e306:.6g}"),
      says=("p.fam", "overflow")),
    C("silent", "covariate-near-1e307", SCAN + ["--covar", "c.txt", "--out", "s"],
      setup=covariates("c.txt", lambda n: np.linspace(-1e307, 1e307, n)),
      says=("c.txt", "overflow")),
    C("silent", "em-max-iter-0", SCAN + ["--solver", "em", "--em-max-iter", "0", "--out", "s"],
      says=("--em-max-iter",)),
    C("silent", "grm-maf-0.6", ["grm", "p", "-o", "k", "--maf", "0.6"], says=("--maf",)),
    C("silent", "scan-chunk-size-0", SCAN + ["--chunk-size", "0", "--out", "s"],
      says=("--chunk-size",)),
    C("silent", "grm-chunk-size-negative", ["grm", "p", "-o", "k", "--chunk-size", "-5"],
      says=("--chunk-size",)),
    C("silent", "maf-negative", SCAN + ["--maf", "-1", "--out", "s"], says=("--maf",)),
    C("silent", "maf-nan", SCAN + ["--maf", "nan", "--out", "s"], says=("--maf",)),
    C("silent", "max-missing-2", SCAN + ["--max-missing", "2", "--out", "s"],
      says=("--max-missing",)),
    C("silent", "em-tol-nan", SCAN + ["--solver", "em", "--em-tol", "nan", "--out", "s"],
      says=("--em-tol",)),
    C("silent", "em-tol-negative", SCAN + ["--solver", "em", "--em-tol", "-1", "--out", "s"],
      says=("--em-tol",)),
    C("silent", "duplicate-variant-ids-warned", SCAN + ["--out", "s"],
      setup=lines_edit("p.bim", 5, "1 snp1 0 6000000 A C"), status=0, lines=1,
      says=("warning: ", "p.bim", "snp1")),
    C("silent", "kinship-variants-duplicate-id",
      SCAN + ["--kinship-variants", "kv.txt", "--out", "s"],
      setup=both(lines_edit("p.bim", 5, "1 snp1 0 6000000 A C"), write("kv.txt", "snp1\nsnp3\n")),
      lines=2, says=("warning: p.bim", "kv.txt", "snp1")),
    C("silent", "same-trait-twice", SCAN + ["--pheno", "ph.txt", "--pheno-col", "1,1",
                                            "--out", "s"],
      says=("ph.txt", "repeats a column")),
    C("silent", "plot-significance-nan", REPORT + ["-o", "r.html", "--significance", "nan"],
      says=("--significance",)),
    C("silent", "plot-top-negative", REPORT + ["-o", "r.html", "--top", "-1"],
      says=("--top",)),

    # ---------------------------------------------------------- tracebacks -> one line
    C("traceback", "covariates-all-NA", SCAN + ["--covar", "c.txt", "--out", "s"],
      setup=covariates("c.txt", lambda n: ["NA"] * n), says=("c.txt",)),
    C("traceback", "kinship-all-zeros", SCAN + ["--kinship", "z.txt", "--out", "s"],
      setup=write("z.txt", ("0 " * 60 + "\n") * 60), says=("z.txt", "kinship")),
    C("traceback", "every-variant-filtered", SCAN + ["--out", "s"], setup=bed_constant,
      says=("no variant passes",)),
    C("traceback", "every-variant-filtered-given-kinship",
      SCAN + ["--kinship", "A.txt", "--out", "s"], setup=bed_constant,
      says=("no variant passes",), then=lambda d, r: not (d / "s.zarr").exists()),
    C("traceback", "every-variant-filtered-loco", SCAN + ["--loco", "--out", "s"],
      setup=bed_constant, says=("no variant passes",)),
    C("traceback", "store-array-folder-missing", ["scan", "g.zarr", "--no-plot", "--out", "s"],
      setup=remove("g.zarr/variant_position"), says=("g.zarr",)),
    C("traceback", "store-genotype-folder-missing", ["scan", "g.zarr", "--no-plot", "--out", "s"],
      setup=remove("g.zarr/call_genotype"), says=("g.zarr",)),
    C("traceback", "output-folder-read-only", SCAN + ["--out", "ro/s"],
      setup=mkdir("ro"), no_root=True, says=("ro", "not writable"), then=not_started),
    C("traceback", "output-on-a-read-only-file-system", SCAN + ["--out", "out/s"],
      mount="ro,size=1m", says=("out", "not writable"), then=not_started),
    C("traceback", "output-in-proc", SCAN + ["--out", "/proc/s"], says=("/proc",)),
    C("traceback", "disk-full", SCAN + ["--out", "out/s"], mount="size=64k",
      says=("disk is full",)),
    C("traceback", "grm-disk-full", ["grm", "p", "-o", "out/k", "--gemma-text"],
      mount="size=16k", says=("disk is full",)),
    C("traceback", "convert-disk-full", ["convert", "p", "out/c.zarr"], mount="size=16k",
      says=("out/c.zarr: cannot write (the disk is full)",)),
    C("traceback", "demo-disk-full", ["demo", "--out", "out/dd", "--families", "40",
                                      "--no-dashboard"],
      mount="size=64k", says=("demo.bed: cannot write (the disk is full)",)),
    C("traceback", "plot-disk-full", REPORT + ["-o", "out/r.html"], mount="size=64k",
      says=("out/r.html: cannot write (the disk is full)",)),
    C("traceback", "grm-read-only-folder", ["grm", "p", "-o", "ro/k"], setup=mkdir("ro"),
      no_root=True, says=("ro", "not writable")),
    C("traceback", "demo-in-a-read-only-folder", ["demo", "--out", "ro/dd"], setup=mkdir("ro"),
      no_root=True, says=("ro/dd", "permission denied")),
    C("traceback", "convert-into-proc", ["convert", "p", "/proc/c.zarr"], says=("/proc",)),
    C("traceback", "out-name-300-characters", SCAN + ["--out", long_name()],
      says=("too long",)),
    C("traceback", "genotype-name-300-characters", ["scan", long_name(), "--out", "s"],
      says=("too long",)),
    C("traceback", "phenotype-name-300-characters", SCAN + ["--pheno", long_name(), "--out",
                                                           "s"],
      says=("too long",)),
    C("traceback", "output-store-a-symlink-loop", SCAN + ["--out", "s"],
      setup=symlink("s.zarr", "s.zarr"), says=("s.zarr",)),
    C("traceback", "output-folder-a-symlink-loop", SCAN + ["--out", "loop/s"],
      setup=symlink("loop", "loop"), says=("loop",)),
    C("traceback", "convert-chunk-size-0", ["convert", "p", "c.zarr", "--chunk-size", "0"],
      says=("--chunk-size",)),
    C("traceback", "convert-to-a-read-only-folder", ["convert", "p", "ro/c.zarr"],
      setup=mkdir("ro"), no_root=True, says=("ro", "not writable")),
    C("traceback", "demo-variants-0", ["demo", "--out", "dd", "--variants", "0"],
      says=("--variants",), then=lambda d, r: not (d / "dd").exists()),
    C("traceback", "demo-families-negative", ["demo", "--out", "dd", "--families", "-3"],
      says=("--families",), then=lambda d, r: not (d / "dd").exists()),
    C("traceback", "plot-out-a-folder", REPORT + ["-o", "dir"], setup=mkdir("dir"),
      says=("dir: exists and is a folder",)),
    C("traceback", "plot-out-a-symlink-loop", REPORT + ["-o", "loop"], setup=symlink("loop", "loop"),
      says=("loop",)),
    C("traceback", "plot-unreadable-variable", REPORT + ["-o", "r.html"],
      setup=result_chunk_unreadable, says=("res.zarr", "variant_lmm_p_value")),
    C("traceback", "plot-unreadable-file", REPORT + ["-o", "r.html"],
      setup=lambda d: os.chmod(d / "res.zarr/variant_lmm_beta/0.0", 0), no_root=True,
      says=("res.zarr", "variant_lmm_beta cannot be read")),
    C("traceback", "plot-an-interrupted-store", ["plot", "part.zarr", "-o", "r.html"],
      says=("part.zarr", "--resume")),
    C("traceback", "plot-a-genotype-store", ["plot", "g.zarr", "-o", "r.html"],
      says=("g.zarr", "not a complete result store")),
    C("traceback", "genotypes-given-as-bed", ["scan", "p.bed", "--no-plot", "--no-dashboard",
                                              "--out", "s"], status=0, lines=0),
    C("traceback", "genotypes-given-as-pgen", ["scan", "x.pgen", "--out", "s"],
      setup=write_bytes("x.pgen", b"l\x1b\x10" + bytes(range(256))), says=("x.pvar", "not found")),
    C("traceback", "genotypes-given-as-bgen", ["scan", "x.bgen", "--out", "s"],
      setup=write_bytes("x.bgen", bytes(range(256))), says=("x.bgen", "BGEN")),
    C("traceback", "genotypes-given-as-vcf-gz", ["scan", "x.vcf.gz", "--out", "s"],
      setup=write_bytes("x.vcf.gz", b"\x1f\x8b\x08" + bytes(100)), says=("x.vcf.gz", "VCF")),
    C("traceback", "genotypes-a-binary-file", ["scan", "x.txt", "--pheno", "ph.txt", "--out",
                                               "s"],
      setup=lambda d: shutil.copy(d / "p.bed", d / "x.txt"), says=("x.txt", "not text")),
    C("traceback", "genotypes-dev-null", ["scan", "/dev/null", "--pheno", "ph.txt", "--out", "s"],
      says=("/dev/null",)),
    C("traceback", "kinship-is-the-bed", SCAN + ["--kinship", "p.bed", "--out", "s"],
      says=("p.bed", "kinship")),
    C("traceback", "phenotype-dev-null", SCAN + ["--pheno", "/dev/null", "--out", "s"],
      says=("/dev/null",)),
    C("traceback", "covariates-binary", SCAN + ["--covar", "p.bed", "--out", "s"],
      says=("p.bed",)),
    C("traceback", "unknown-flag", SCAN + ["--out", "s", "--frobnicate"],
      says=("--frobnicate",)),
    C("traceback", "missing-out", SCAN, says=("--out",)),

    # ------------------------------------------------------------------------- messages
    C("messages", "bed-wrong-magic", SCAN + ["--out", "s"],
      setup=lambda d: (d / "p.bed").write_bytes(b"\x00\x00\x00" + (d / "p.bed").read_bytes()[3:]),
      says=("p.bed", "6c1b01")),
    C("messages", "covariate-infinite", SCAN + ["--covar", "c.txt", "--out", "s"],
      setup=covariates("c.txt", lambda n: ["inf"] + ["1.5"] * (n - 1)),
      says=("c.txt", "infinite")),
    C("messages", "phenotype-word-shown-plainly", SCAN + ["--pheno", "ph.txt", "--out", "s"],
      setup=lines_edit("ph.txt", 4, "abc"), says=("'abc'", "line 5")),
    C("messages", "zarr-input-quiet", ["scan", "g.zarr", "--no-plot", "--out", "s"], status=0,
      lines=0),
    C("messages", "zarr-input-quiet-with-report", ["scan", "g.zarr", "--out", "s"], status=0,
      lines=0, then=lambda d, r: (d / "s.report.html").is_file()),
    C("messages", "parquet-needs-pyarrow", SCAN + ["--format", "tsv,parquet", "--out", "s"],
      **({"status": 0, "lines": 0} if HAVE_PYARROW else {"says": ("--format", "pyarrow")})),
    C("messages", "unknown-test", SCAN + ["--test", "t", "--out", "s"], says=("--test", "'t'")),
]
CASES += [Case("bad-input", name, ["scan", *args, "--out", "out/res"],
                setup=both(mkdir("out"), *([make] if make else [])), says=tuple(says),
                no_root=name == "phenotype-unreadable")
          for name, make, args, says in BAD_INPUT]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile(case: Case, base, server, tmp_path, request):
    d = tmp_path / "d"
    shutil.copytree(base, d, symlinks=True)
    if case.setup is not None:
        case.setup(d)
    if case.mount is not None:
        mount_tmpfs(request, d / "out", case.mount)
    if case.hold is not None:
        (d / case.hold).touch()
    before, names = checksums(d), entries(d)
    with contextlib.ExitStack() as stack:
        if case.hold is not None:  # as a running dlmm holds it
            held = stack.enter_context(open(d / case.hold, "a"))
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fill = {"port": free_port()}
        if any("{http}" in str(a) for a in case.args):
            fill["http"] = stack.enter_context(HttpServer())
        args = [str(a).format(**fill) if "{" in str(a) else a for a in case.args]
        if case.no_root or case.own_process or case.mount:
            for ro in ("ro",):
                if (d / ro).is_dir():
                    os.chmod(d / ro, 0o555)
            r = run_process(args, d, prefix=no_root_prefix() if case.no_root else ())
        else:
            r = server.run(args, d)
    assert_one_line(r, case.status, case.lines, case.says)
    assert_nothing_lost(d, before, names, case.changes, failed=case.status != 0)
    if case.then is not None:
        assert case.then(d, r) is not False


# --------------------------------------------------------------------------
# a scan long enough to be interrupted: 30 blocks of ~0.3 s (as test_faults)
# --------------------------------------------------------------------------
BIG = ["--solver", "em", "--chunk-size", "100", "--no-plot", "--no-dashboard"]


@pytest.fixture(scope="module")
def big(plink, server, tmp_path_factory):
    """The long scan's arguments (add ``--out``) and its uninterrupted table's bytes."""
    d = tmp_path_factory.mktemp("big")
    args = ["scan", str(plink["prefix"]), *BIG]
    r = server.run(args + ["--out", d / "ref"], d)
    assert r.status == 0, r.stderr
    return {"args": args, "tsv": (d / "ref.assoc.tsv").read_bytes()}


def start(args, cwd, prefix=()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, PY, "-m", "dlmm.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, DASK_SCHEDULER_ADDRESS=""))


def wait_for_blocks(zpath, proc: subprocess.Popen, n: int, timeout: float = 300) -> None:
    """Until ``n`` blocks of the store being written are done (the run still going)."""
    deadline = time.time() + timeout
    while blocks_done(zpath) < n:
        assert proc.poll() is None, f"the scan ended before {n} blocks: {proc.stderr.read()}"
        assert time.time() < deadline, f"fewer than {n} blocks in {timeout} s"
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> Result:
    out, err = proc.communicate(timeout=300)
    return Result(proc.returncode, out, err)


def assert_resumes_to_the_same_bytes(big, server, where: Path, out: Path, runs: int = 2):
    """``--resume`` completes the store, whose table has the bytes of an uninterrupted
    run, and leaves only the outputs; its blocks were written by ``runs`` runs."""
    import zarr

    r = server.run(big["args"] + ["--out", out, "--resume"], where)
    assert_one_line(r, 0, 0)
    assert (where / f"{out.name}.assoc.tsv").read_bytes() == big["tsv"]
    assert sorted(p.name for p in where.iterdir() if p.name.startswith(out.name)) == [
        f"{out.name}.assoc.tsv", f"{out.name}.log.txt", f"{out.name}.zarr"]
    run = zarr.open_group(str(where / f"{out.name}.zarr"), mode="r")["blocks/run"][:]
    assert len(set(run.tolist())) == runs, run


@pytest.mark.parametrize("sig, status, line", [
    (signal.SIGINT, 130, "dlmm: interrupted; finished blocks are kept: rerun with --resume"),
    (signal.SIGTERM, 143, "dlmm: terminated; finished blocks are kept: rerun with --resume"),
    (signal.SIGKILL, -signal.SIGKILL, None),
], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_at_30_percent_resumes_to_the_same_bytes(sig, status, line, big, server,
                                                             tmp_path):
    """Interrupts: a signal at ~30 % of the blocks; one line (none can be printed after
    SIGKILL), the finished blocks kept, and ``--resume`` gives the uninterrupted bytes."""
    out = tmp_path / "s"
    proc = start(big["args"] + ["--out", out], tmp_path)
    wait_for_blocks(f"{out}.zarr", proc, 9)
    proc.send_signal(sig)
    r = finish(proc)
    assert 9 <= blocks_done(f"{out}.zarr") < 30
    assert_one_line(r, status, 0 if line is None else 1, () if line is None else (line,))
    left = sorted(p.name for p in tmp_path.iterdir())
    # only SIGKILL, which no process survives to clean up after, leaves the lock file
    assert left == (["s.lock"] if sig == signal.SIGKILL else []) + ["s.zarr.partial"], left
    assert_resumes_to_the_same_bytes(big, server, tmp_path, out)


def test_interrupted_twice(big, server, tmp_path):
    """Ctrl-C at ~30 %, a resume interrupted at ~60 %, a resume: the same bytes, three
    runs' blocks."""
    out = tmp_path / "s"
    for n, extra in ((9, []), (18, ["--resume"])):
        proc = start(big["args"] + ["--out", out, *extra], tmp_path)
        wait_for_blocks(f"{out}.zarr", proc, n)
        proc.send_signal(signal.SIGINT)
        assert_one_line(finish(proc), 130, 1, ("dlmm: interrupted",))
    assert_resumes_to_the_same_bytes(big, server, tmp_path, out, runs=3)


def test_two_runs_on_one_out(big, server, tmp_path):
    """Concurrency: while a scan writes PREFIX, a second (as it was, with --resume, with
    --overwrite) refuses in one line and touches nothing; the first completes to the
    bytes of a run alone."""
    out = tmp_path / "s"
    first = start(big["args"] + ["--out", out], tmp_path)
    wait_for_blocks(f"{out}.zarr", first, 2)
    for extra in ([], ["--resume"], ["--overwrite"]):
        r = server.run(big["args"] + ["--out", out, *extra], tmp_path)
        assert_one_line(r, 2, 1, ("s.lock: another dlmm run is writing these outputs",))
        assert "## phenotype" not in r.stdout  # refused before any work
        assert first.poll() is None, "the first run ended: nothing was tested"
    assert_one_line(finish(first), 0, 0)
    assert (tmp_path / "s.assoc.tsv").read_bytes() == big["tsv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.assoc.tsv", "s.log.txt",
                                                          "s.zarr"]


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as fh:
        while True:
            fh.write(bytes(1 << 16))


@pytest.mark.parametrize("how", ["disk-full", "read-only"])
def test_no_space_mid_scan_keeps_the_finished_blocks(how, big, server, tmp_path, request):
    """Tracebacks: the disk fills up (or the folder turns read-only) after the GRM pass,
    mid-scan: one line naming the store, the cause and --resume; the finished blocks are
    kept, and once there is room ``--resume`` gives the uninterrupted bytes."""
    out_dir = tmp_path / "out"
    prefix = []
    if how == "disk-full":
        mount_tmpfs(request, out_dir, "size=16m")
    else:
        out_dir.mkdir()
        prefix = no_root_prefix()
    proc = start(big["args"] + ["--out", out_dir / "s"], tmp_path, prefix)
    wait_for_blocks(out_dir / "s.zarr", proc, 3)
    if how == "disk-full":
        _fill(out_dir)
    else:
        subprocess.run(["chmod", "-R", "a-w", str(out_dir)], check=True)
    r = finish(proc)
    cause = "the disk is full" if how == "disk-full" else "permission denied"
    assert_one_line(r, 2, 1, (f"s.zarr: cannot write ({cause})", "rerun with --resume"))
    assert 3 <= blocks_done(out_dir / "s.zarr") < 30
    if how == "disk-full":
        (out_dir / "filler").unlink()
        assert sorted(p.name for p in out_dir.iterdir()) == ["s.zarr.partial"]
    else:  # nothing can be removed from a read-only folder: the lock file stays
        subprocess.run(["chmod", "-R", "u+w", str(out_dir)], check=True)
        assert sorted(p.name for p in out_dir.iterdir()) == ["s.lock", "s.zarr.partial"]
    assert_resumes_to_the_same_bytes(big, server, out_dir, out_dir / "s")
