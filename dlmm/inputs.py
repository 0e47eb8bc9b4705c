"""A scan's per-sample inputs, joined to the genotypes and checked at the boundary.

:func:`prepare_inputs` takes phenotypes, covariates and a kinship in any accepted form
(files, numpy, pandas, xarray; see :mod:`dlmm.samples`), joins those with sample ids to
the genotypes' ``sample_id``, and checks everything that can be checked before any
genotype is read.  Inside the scan the result, :class:`ScanInputs`, is trusted.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import io, samples
from .errors import DlmmWarning, InputError, OptionError
from .options import ScanOptions
from .samples import Kinship, SampleTable, few

__all__ = ["ScanInputs", "prepare_inputs", "as_kinship", "trait_groups"]

#: Phenotype or covariate values beyond this overflow the fits' sums of squares.
_MAX_VALUE = 1e100


@dataclass(frozen=True)
class ScanInputs:
    """Per-sample inputs in the genotypes' sample order (N samples).

    Attributes
    ----------
    phenotypes : (N, t) float64, NaN where missing (or not in an id-joined table).
    traits : (t,) trait names.
    covariates : (N, c) float64 with the intercept, NaN where missing.
    kinship : the kinship as read, or None (the GRM is computed).
    kinship_pos : (N,) each genotype sample's row in ``kinship``, -1 where absent.
    kinship_variants : low-rank mode: sorted variant indices, or None.
    notes : how each input was joined, for the log.  sources : names for messages.
    """

    phenotypes: np.ndarray
    traits: tuple[str, ...]
    covariates: np.ndarray
    kinship: Kinship | None
    kinship_pos: np.ndarray | None
    kinship_variants: np.ndarray | None
    notes: tuple[str, ...]
    sources: dict

    def analysed(self, j: int) -> np.ndarray:
        """(N,) bool: the samples trait ``j`` is analysed on (phenotype, covariates and,
        for a given kinship, a kinship row)."""
        ok = ~np.isnan(self.phenotypes[:, j]) & ~np.isnan(self.covariates).any(axis=1)
        return ok if self.kinship_pos is None else ok & (self.kinship_pos >= 0)

    def kinship_of(self, mask: np.ndarray) -> np.ndarray:
        """The given kinship's rows and columns of the samples ``mask`` (a copy)."""
        pos = self.kinship_pos[mask]
        return self.kinship.values[np.ix_(pos, pos)]


def as_kinship(kinship, source: str = "kinship") -> Kinship:
    """A kinship input as a :class:`~dlmm.samples.Kinship`: a path (:func:`dlmm.io.
    read_kinship`), a Kinship, an xarray DataArray with a ``sample_id`` coordinate (e.g.
    from :func:`dlmm.grm`), or a numpy (n, n) array in the genotypes' sample order."""
    if isinstance(kinship, Kinship):
        return kinship
    if isinstance(kinship, (str, os.PathLike)):
        return io.read_kinship(kinship)
    ids = None
    if isinstance(kinship, xr.DataArray):
        if "sample_id" in kinship.coords:
            ids = np.asarray(kinship["sample_id"].values).astype(str)
            samples.check_unique(ids, source)
        kinship = kinship.values
    return Kinship(io.validate_kinship(kinship, source, psd=False), ids, source)


def _phenotype_table(ds, phenotypes, traits) -> SampleTable:
    if phenotypes is None:
        if "sample_phenotype" not in ds:
            raise InputError(ds.attrs.get("source", "genotypes"), "the genotypes carry no "
                             "phenotype (no .fam column 6 or sample_phenotype)",
                             "give a phenotype file (--pheno)")
        values = np.asarray(ds["sample_phenotype"].values, dtype=np.float64)
        values = values.reshape(values.shape[0], -1)
        source = ds.attrs.get("source", "genotypes")
        if ds.attrs.get("format") == "plink":
            source = f"{ds.attrs['source']}.fam"
        table = SampleTable(values, tuple(str(j + 1) for j in range(values.shape[1])),
                            None, str(source))
        return samples.select_columns(table, 1 if traits is None else traits)
    return samples.select_columns(samples.as_sample_table(phenotypes, "phenotype"), traits)


def _trait_names(names) -> tuple[str, ...]:
    return tuple(f"pheno{x}" if x.isdigit() else x for x in names)


def _covariate_table(covariates, columns, n: int, notes: list, warn: list):
    """(N, c) covariates with the intercept."""
    if covariates is None:
        return np.ones((n, 1))
    table = samples.select_columns(samples.as_sample_table(covariates, "covariate"),
                                   columns, option="covar_name")
    W = table.values
    empty = [name for name, col in zip(table.names, W.T) if np.isnan(col).all()]
    if empty:
        raise InputError(table.source, f"covariate column(s) {few(empty)} missing (NA) for "
                         "every sample", "fill them in, or leave them out (--covar-name)")
    finite = W[~np.isnan(W).any(axis=1)]
    constant = finite.shape[0] > 0 and (np.ptp(finite, axis=0) == 0).any()
    if table.has_ids and not constant:  # PLINK 2 style: the intercept is implied
        W = np.column_stack([np.ones(len(W)), W])
        table = SampleTable(W, ("intercept",) + table.names, table.ids, table.source)
        notes.append(f"{table.source}: an intercept column added (no constant column)")
    elif not constant:
        warn.append(f"{table.source}: no constant column; GEMMA's convention is to include "
                    "the intercept as a column of 1s")
    return table


def prepare_inputs(ds: xr.Dataset, phenotypes=None, *, traits=None, covariates=None,
                   covariate_columns=None, kinship=None,
                   options: ScanOptions | None = None) -> ScanInputs:
    """Join and check a scan's per-sample inputs (see the module's docstring).

    Parameters
    ----------
    ds : the genotypes (``sample_id``, ``variant_id``, ...).
    phenotypes : None (the phenotypes the genotypes carry), a file path, or an array /
        pandas / xarray object (:func:`dlmm.samples.as_sample_table`).
    traits : which phenotype columns: 1-based numbers or names (a list, or ``"1,2"``,
        ``"all"``); default: all columns of ``phenotypes``, the first of carried ones.
    covariates : like ``phenotypes``; default the intercept alone.
    covariate_columns : which covariate columns (as ``traits``); default all.
    kinship : None (the GRM), a path, an array in genotype order, or a DataArray /
        :class:`~dlmm.samples.Kinship` with sample ids.
    options : the scan's options (for the kinship variants and LOCO).
    """
    options = options or ScanOptions()
    n = ds.sizes["samples"]
    sample_id = ds["sample_id"].values
    notes, warn = [], []
    pheno = _phenotype_table(ds, phenotypes, traits)
    ids_from = ds.attrs.get("sample_source", ds.attrs.get("source", "genotypes"))
    joined = samples.join(pheno, sample_id, "phenotype", id_source=ids_from)
    notes.append(joined.note)
    Y = joined.values
    cov = _covariate_table(covariates, covariate_columns, n, notes, warn)
    if isinstance(cov, SampleTable):
        cj = samples.join(cov, sample_id, "covariate", id_source=ids_from)
        notes.append(cj.note)
        W, cov_source = cj.values, cov.source
    else:
        W, cov_source = cov, "covariates"
    kin, pos = None, None
    if kinship is not None:
        if options.loco:
            raise OptionError("loco", "LOCO computes one GRM per chromosome itself",
                              "drop --kinship when using --loco")
        if options.kinship_variants is not None:
            raise OptionError("kinship_variants", "the kinship variants define the kinship; "
                              "not with --kinship", "drop one of the two options")
        kin = as_kinship(kinship)
        pos, note = samples.join_kinship(kin, sample_id, id_source=ids_from)
        notes.append(note)
    for w in warn:
        warnings.warn(w, DlmmWarning, stacklevel=2)
    inputs = ScanInputs(Y, _trait_names(joined.names), W, kin, pos,
                        _kinship_variants(ds, options), tuple(notes),
                        {"phenotype": pheno.source, "covariates": cov_source,
                         "kinship": kin.source if kin is not None else "kinship"})
    _check_values(inputs)
    for group in trait_groups(inputs):
        _check_group(inputs, group)
    return inputs


def _kinship_variants(ds, options: ScanOptions) -> np.ndarray | None:
    spec = options.kinship_variants
    if spec is None:
        return None
    if isinstance(spec, (str, os.PathLike, int, np.integer)) and not isinstance(spec, bool):
        return io.kinship_variants(spec, ds["variant_id"].values)
    idx = np.asarray(spec)
    idx = np.flatnonzero(idx) if idx.dtype == bool else np.unique(idx.astype(np.int64))
    m = ds.sizes["variants"]
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= m:
        raise OptionError("kinship_variants", "kinship variants must be a non-empty set of "
                          f"variant indices in 0..{m - 1}",
                          "list variant ids of the genotypes, or give a count")
    return idx


def _check_values(inp: ScanInputs) -> None:
    for values, source, what in ((inp.phenotypes, inp.sources["phenotype"], "phenotype"),
                                 (inp.covariates, inp.sources["covariates"], "covariate")):
        if np.isinf(values).any():
            raise InputError(source, f"{what}s have infinite values",
                             "use NA for missing values")
        big = np.nanmax(np.abs(values), initial=0.0)
        if big > _MAX_VALUE:
            raise InputError(source, f"{what} values up to {big:.3g} overflow the fits",
                             f"rescale the {what} (e.g. to standard units)")
    for j, name in enumerate(inp.traits):
        obs = inp.phenotypes[~np.isnan(inp.phenotypes[:, j]), j]
        if obs.size == 0:
            raise InputError(inp.sources["phenotype"], f"phenotype {name} is missing for "
                             "every genotype sample", "check the phenotype column "
                             "(--pheno-col) and the sample ids")


def trait_groups(inp: ScanInputs) -> list[np.ndarray]:
    """Traits analysed on the same samples, as lists of trait indices in order of first
    appearance; each group shares one kinship, eigendecomposition and rotation."""
    groups: dict[bytes, list[int]] = {}
    for j in range(inp.phenotypes.shape[1]):
        groups.setdefault(np.packbits(inp.analysed(j)).tobytes(), []).append(j)
    return [np.array(g) for g in groups.values()]


def _check_group(inp: ScanInputs, group: np.ndarray) -> None:
    """Enough analysed samples, a varying phenotype, covariates of full rank."""
    mask = inp.analysed(group[0])
    n = int(mask.sum())
    W = inp.covariates[mask]
    if n == 0:
        raise InputError(inp.sources["phenotype"], f"no sample has phenotype "
                         f"{inp.traits[group[0]]}, every covariate and a kinship row",
                         "check the phenotype column, the covariates and the sample ids")
    if n < W.shape[1] + 2:
        raise InputError(inp.sources["phenotype"], f"only {n} analysed samples for "
                         f"{W.shape[1]} covariates", "give at least covariates + 2 samples "
                         "with data")
    for j in group:
        y = inp.phenotypes[mask, j]
        if np.ptp(y) == 0:
            raise InputError(inp.sources["phenotype"], f"phenotype {inp.traits[j]} is "
                             f"constant ({y[0]:g}) on the {n} analysed samples",
                             "pick a phenotype that varies")
    rank = np.linalg.matrix_rank(W)
    if rank < W.shape[1]:
        raise InputError(inp.sources["covariates"], f"covariate columns are collinear on the "
                         f"{n} analysed samples (rank {rank} < {W.shape[1]} columns)",
                         "drop redundant covariate columns")
