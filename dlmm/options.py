"""The options of a scan, checked once, in one place.

:class:`ScanOptions` is what :func:`dlmm.run` (and the ``dlmm scan`` command, which only
parses flags into it) takes.  Every value is checked when the object is made; an
:class:`~dlmm.errors.OptionError` names the option as the library names it, and the
command line reports it under its flag.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from . import schema
from .errors import OptionError

__all__ = ["ScanOptions", "GrmOptions", "DEFAULT_MAF", "DEFAULT_MAX_MISSING",
           "positive_int"]

DEFAULT_MAF = 0.01
DEFAULT_MAX_MISSING = 0.05
_FORMATS = ("tsv", "parquet")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise OptionError(name, f"unknown value {value!r}", f"use {' or '.join(allowed)}")


def _in_range(name: str, value, lo, hi) -> None:
    try:
        ok = lo <= float(value) <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OptionError(name, f"{value!r} is outside [{lo:g}, {hi:g}]",
                          f"give a number from {lo:g} to {hi:g}")


def positive_int(name: str, value, none_ok: bool = True) -> None:
    """``value`` is a whole number >= 1 (or None, with ``none_ok``), else an OptionError
    naming the option ``name``."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(name, f"{value!r} is not a positive whole number",
                          "give 1 or more")


def check_filters(maf, max_missing, chunk_size) -> None:
    """GEMMA's variant filters and the variants per task (None: from a byte budget)."""
    _in_range("maf", maf, 0.0, 0.5)
    _in_range("max_missing", max_missing, 0.0, 1.0)
    positive_int("chunk_size", chunk_size)


@dataclass(frozen=True)
class ScanOptions:
    """How to scan: model, solver, tests, kinship handling, filters and outputs.

    Parameters
    ----------
    model : ``"additive"`` (1 df) or ``"genotypic"`` (additive + dominance, 2 df).
    solver : ``"exact"`` (profile ML over lambda, GEMMA -lmm 2) or ``"em"`` (the lab's EM).
    em_start : ``"classic"`` (sa2 = 70, se2 = 10, b = 0) or ``"null"`` (the ML null fit).
    em_tol, em_max_iter : the EM's stop (lnL gain below ``em_tol``) and iteration cap.
    tests : any of ``lrt`` (-lmm 2), ``wald`` (-lmm 1), ``score`` (-lmm 3), ``ols`` (the
        lab's fixed-effect F-test); ``"all"`` is the three LMM tests; a string
        ``"lrt,ols"`` or a sequence.
    center : double-centre the analysed kinship (as GEMMA does); None: centre, except
        for the course lab's text genotypes, whose EM uses the kinship as given.
    maf, max_missing : GEMMA's filters on the analysed samples.
    chunk_size : most variants per task; None: from a byte budget per task.
    loco : leave one chromosome out (one GRM per chromosome).
    kinship_variants : low-rank kinship: a count N (spread evenly), a file of variant
        ids, or variant indices.
    kinship_rank : keep the kinship's largest ``kinship_rank`` eigenpairs.
    rotation_dtype : ``"float64"`` or ``"float32"`` (full rank only).
    plot : write the HTML report.  formats : result tables, ``"tsv"`` and/or
        ``"parquet"``.  gzip : compress the TSV (``.assoc.tsv.gz``).
    scratch : folder for the low-rank eigenvectors on disk while the scan runs (8 n r
        bytes; the workers must reach it); None: beside the outputs (:func:`dlmm.run`),
        else Dask's ``temporary-directory`` or the system's.
    """

    model: str = "additive"
    solver: str = "exact"
    em_start: str = "classic"
    em_tol: float = 1e-5
    em_max_iter: int = 100
    tests: tuple[str, ...] = ("lrt",)
    center: bool | None = None
    maf: float = DEFAULT_MAF
    max_missing: float = DEFAULT_MAX_MISSING
    chunk_size: int | None = None
    loco: bool = False
    kinship_variants: object = None
    kinship_rank: int | None = None
    rotation_dtype: str = "float64"
    plot: bool = True
    formats: tuple[str, ...] = ("tsv",)
    gzip: bool = False
    scratch: str | None = None

    def __post_init__(self):
        _choice("model", self.model, ("additive", "genotypic"))
        _choice("solver", self.solver, ("exact", "em"))
        _choice("em_start", self.em_start, ("classic", "null"))
        if not (isinstance(self.em_tol, (int, float)) and math.isfinite(self.em_tol)
                and self.em_tol > 0):
            raise OptionError("em_tol", f"{self.em_tol!r} is not a positive finite number",
                              "give e.g. 1e-5")
        positive_int("em_max_iter", self.em_max_iter, none_ok=False)
        try:
            tests = schema.parse_tests(self.tests)
        except ValueError as e:
            raise OptionError("test", str(e), "use lrt, wald, score, ols, all, or a "
                              "comma-separated list of them") from None
        object.__setattr__(self, "tests", tests)
        check_filters(self.maf, self.max_missing, self.chunk_size)
        positive_int("kinship_rank", self.kinship_rank)
        _choice("rotation_dtype", self.rotation_dtype, ("float64", "float32"))
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        for f in formats:
            _choice("format", f, _FORMATS)
        if not formats:
            raise OptionError("format", "no result table format", "give tsv and/or parquet")
        object.__setattr__(self, "formats", tuple(f for f in _FORMATS if f in formats))
        self._check_combinations()

    def _check_combinations(self) -> None:
        lowrank = self.kinship_variants is not None or self.kinship_rank is not None
        if self.loco and lowrank:
            raise OptionError("loco", "leave-one-chromosome-out is for the full-rank kinship",
                              "drop --loco, or --kinship-variants and --kinship-rank")
        if self.rotation_dtype == "float32" and lowrank:
            raise OptionError("rotation_dtype", "float32 is for the full-rank scan",
                              "drop --rotation-dtype float32, or --kinship-variants and "
                              "--kinship-rank")

    @property
    def lowrank(self) -> bool:
        """Whether the kinship is low-rank (``kinship_variants`` or ``kinship_rank``)."""
        return self.kinship_variants is not None or self.kinship_rank is not None

    @property
    def lmm_tests(self) -> tuple[str, ...]:
        """The mixed-model tests asked (without ``ols``)."""
        return tuple(t for t in self.tests if t in schema.LMM_TESTS)

    def replace(self, **changes) -> "ScanOptions":
        """A copy with ``changes`` (checked again)."""
        return replace(self, **changes)

    def result_options(self) -> dict:
        """The options that change results (for the resume fingerprint and the store's
        attrs); the kinship variants are recorded by the run as the indices used."""
        out = asdict(self)
        for k in ("plot", "formats", "gzip", "chunk_size", "kinship_variants", "scratch"):
            out.pop(k)
        out["tests"] = ",".join(self.tests)
        return out


@dataclass(frozen=True)
class GrmOptions:
    """How to compute a GRM: centred (GEMMA -gk 1) or ``standardise``\\d (-gk 2), over the
    variants passing ``maf``/``max_missing`` on the analysed samples."""

    standardise: bool = False
    maf: float = DEFAULT_MAF
    max_missing: float = DEFAULT_MAX_MISSING
    chunk_size: int | None = None
    gemma_text: bool = False

    def __post_init__(self):
        check_filters(self.maf, self.max_missing, self.chunk_size)
