"""The whole job of ``dlmm scan``, as one library call the command line and notebooks share.

:func:`run` = :func:`plan` (open the genotypes, read and join every per-sample input,
check the options and the outputs: nothing heavy, nothing written) then :func:`execute`
(kinship and null fits, the scan on the current Dask client, the result store block by
block, then per trait the tables and the log, and the report).  The command line plans
before it starts its cluster, so bad input stops before any cluster starts.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr

from . import export, gemma_log, io, outputs, provenance, results, scanner
from .errors import DlmmWarning, InputError, OptionError
from .formats import open_genotypes
from .inputs import ScanInputs, prepare_inputs
from .options import ScanOptions

__all__ = ["run", "plan", "execute", "run_grm", "RunPlan", "RunResult", "Outputs",
           "output_paths", "check_outputs", "check_memory"]


@dataclass(frozen=True)
class Outputs:
    """The files of a run with ``--out PREFIX``: the result store, per trait its tables
    (``.assoc.tsv[.gz]``, ``.assoc.parquet``) and log, and the report."""

    prefix: str
    store: Path
    tables: dict
    logs: dict
    report: Path | None

    def files(self) -> list[Path]:
        """Every output that is a file."""
        out = [p for ps in self.tables.values() for p in ps] + list(self.logs.values())
        return out + ([self.report] if self.report else [])


def _stem(trait: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", trait)


def output_paths(prefix: str | os.PathLike, traits, options: ScanOptions) -> Outputs:
    """Where a run writes (see :class:`Outputs`); one trait: ``PREFIX.assoc.tsv``, several:
    ``PREFIX.TRAIT.assoc.tsv``."""
    prefix = str(prefix)
    stems = {t: prefix if len(traits) == 1 else f"{prefix}.{_stem(t)}" for t in traits}
    if len(set(stems.values())) != len(stems):
        raise OptionError("traits", "two traits give the same file name",
                          "rename the phenotype columns")
    suffix = {"tsv": ".assoc.tsv.gz" if options.gzip else ".assoc.tsv",
              "parquet": ".assoc.parquet"}
    tables = {t: [Path(st + suffix[f]) for f in options.formats] for t, st in stems.items()}
    logs = {t: Path(st + ".log.txt") for t, st in stems.items()}
    report = Path(f"{prefix}.report.html") if options.plot else None
    return Outputs(prefix, Path(f"{prefix}.zarr"), tables, logs, report)


@dataclass
class RunPlan:
    """A checked run, ready to :func:`execute`."""

    genotypes: xr.Dataset
    inputs: ScanInputs
    options: ScanOptions
    outputs: Outputs
    overwrite: bool
    resume: bool
    provenance: dict
    identities: dict = field(default_factory=dict)
    strata: list | None = None


@dataclass
class RunResult:
    """What a run wrote: ``outputs`` and the ``results`` (loaded from the store)."""

    outputs: Outputs
    results: xr.Dataset
    minutes: float


def plan(genotypes, phenotypes=None, *, out: str | os.PathLike, traits=None,
         covariates=None, covariate_columns=None, kinship=None,
         options: ScanOptions | None = None, overwrite: bool = False, resume: bool = False,
         chunk_size: int | None = None, command: list[str] | None = None,
         echo=None) -> RunPlan:
    """Read and check everything a run needs, write nothing (see :func:`run`); with a
    given kinship, also its eigendecomposition and the null fits (no genotype is read)."""
    options = options or ScanOptions()
    if overwrite and resume:
        raise OptionError("resume", "--resume and --overwrite contradict each other",
                          "give one of them")
    if options.plot and not plotting_installed():
        warnings.warn("the report is skipped: its plotting packages are not installed "
                      "(pip install 'dlmm[plot]', or pass --no-plot)", DlmmWarning,
                      stacklevel=2)
        options = options.replace(plot=False)
    outputs.check_unlocked(out)
    ds = genotypes if isinstance(genotypes, xr.Dataset) else open_genotypes(
        genotypes, chunk_size=chunk_size or options.chunk_size)
    inputs = prepare_inputs(ds, phenotypes, traits=traits, covariates=covariates,
                            covariate_columns=covariate_columns, kinship=kinship,
                            options=options)
    paths = output_paths(out, inputs.traits, options)
    check_outputs(paths, overwrite, resume)
    if options.scratch is None:  # the low-rank eigenvectors go beside the outputs
        options = options.replace(scratch=str(paths.store.parent))
    roles = {"genotypes": None if isinstance(genotypes, xr.Dataset) else genotypes,
             "phenotypes": _path(phenotypes), "covariates": _path(covariates),
             "kinship": _path(kinship), "kinship_variants": _variants_file(options)}
    prov = provenance.provenance(roles, command)
    # a file is identified by its size, time and content, wherever it is; a URL by itself
    identities = {role: {k: v for k, v in ident.items() if k != "path" or len(ident) == 1}
                  for role, ident in prov["inputs"].items()}
    if resume:  # refuse a mismatch now, not after the GRM pass and the null fits
        results.check_resumable(paths.store, _known_fingerprint(ds, options, identities))
    if inputs.kinship is not None and not resume:  # its eigendecomposition runs here
        check_memory(ds, inputs, options)
    # a given kinship needs no pass over the genotypes: its eigendecomposition (which
    # checks it positive semi-definite) and the null fits run here, before any cluster
    strata = (scanner.setup(ds, inputs, options, echo=echo) if inputs.kinship is not None
              and not resume else None)
    return RunPlan(ds, inputs, options, paths, overwrite, resume, prov, identities, strata)


def _path(obj):
    return obj if isinstance(obj, (str, os.PathLike)) else None


def _variants_file(options: ScanOptions):
    """``--kinship-variants`` when it names a file (not a count)."""
    spec = options.kinship_variants
    return None if spec is None or io.is_variant_count(spec) else _path(spec)


def plotting_installed() -> bool:
    """Whether the report's packages (the ``plot`` extra) are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("holoviews", "bokeh", "datashader", "matplotlib"))


def check_memory(ds: xr.Dataset, inputs: ScanInputs, options: ScanOptions,
                 client=None) -> None:
    """Refuse in one line a scan that would not fit in memory, before the work: its peak
    on this process and on each worker (:func:`dlmm.memory.estimate_scan`) against the
    memory they have (:func:`dlmm.cluster.resources`; no client: this process alone)."""
    import numpy as np

    from .cluster import resources
    from .kinship import dosage_blocks
    from .memory import check_fits, estimate_scan

    where = resources(client)
    kv = inputs.kinship_variants
    path = "lowrank" if kv is not None else "loco" if options.loco else "full"
    est = estimate_scan(
        path, ds.sizes["samples"], ds.sizes["variants"], rank=options.kinship_rank,
        n_kinship_variants=None if kv is None else int(kv.size),
        chunk=max(dosage_blocks(ds).chunks[0], default=1), n_traits=len(inputs.traits),
        threads_per_worker=where["threads_per_worker"], n_workers=where["n_workers"],
        n_contigs=int(np.unique(ds["variant_contig"].values).size),
        in_process=where["in_process"], rotation_dtype=options.rotation_dtype)
    check_fits(est, where["client_bytes"], where["worker_bytes"],
               local_workers=where["local_workers"])


def _known_fingerprint(ds: xr.Dataset, options: ScanOptions, identities: dict) -> dict:
    """The part of a run's fingerprint known before any work (see :func:`execute`)."""
    known = dict(options.result_options(), center=scanner.resolve_center(options, ds),
                 inputs=identities, dlmm_version=provenance.version())
    if not options.loco:  # the blocks are the genotypes' chunks (LOCO splits them)
        from .kinship import dosage_blocks

        known["chunks"] = [int(c) for c in dosage_blocks(ds).chunks[0]]
    return known


def check_outputs(paths: Outputs, overwrite: bool, resume: bool) -> None:
    """Nothing is replaced without ``overwrite``; a resume needs an interrupted store."""
    for p in [paths.store, *paths.files()]:
        outputs.check_writable(p)
    partial = outputs.partial_path(paths.store)
    if resume:  # finish the blocks of an interrupted store, or a complete store's outputs
        if not partial.is_dir() and not results.is_complete(paths.store):
            raise InputError(paths.store, "nothing to resume: no interrupted scan "
                             f"({partial.name}) and no complete result store",
                             "run without --resume")
        return
    if partial.exists() and not overwrite:
        raise InputError(partial, "an interrupted scan is here",
                         "finish it with --resume, or start again with --overwrite")
    outputs.check_new([paths.store, *paths.files()], overwrite, dirs=(paths.store,))


def run(genotypes, phenotypes=None, *, out: str | os.PathLike, traits=None,
        covariates=None, covariate_columns=None, kinship=None,
        options: ScanOptions | None = None, overwrite: bool = False, resume: bool = False,
        chunk_size: int | None = None, client=None, echo=None,
        on_block=None) -> RunResult:
    """Scan and write every output, as ``dlmm scan`` does.

    Parameters
    ----------
    genotypes : a path (:func:`dlmm.open_genotypes`) or an opened Dataset.
    phenotypes, traits, covariates, covariate_columns, kinship : see
        :func:`dlmm.inputs.prepare_inputs` (files, arrays, pandas or xarray objects).
    out : output prefix: ``PREFIX.zarr``, ``PREFIX[.TRAIT].assoc.tsv``, ``.log.txt``,
        ``PREFIX.report.html``.
    options : :class:`~dlmm.options.ScanOptions`.
    overwrite, resume : replace existing outputs; finish an interrupted run.
    client : a distributed Client (default the current one; none: Dask's threads).
    echo : called with each line of the log as the run goes (e.g. ``print``).
    on_block : called as ``on_block(n_written, n_todo)`` after each block.
    """
    p = plan(genotypes, phenotypes, out=out, traits=traits, covariates=covariates,
             covariate_columns=covariate_columns, kinship=kinship, options=options,
             overwrite=overwrite, resume=resume, chunk_size=chunk_size, echo=echo)
    return execute(p, client=client, echo=echo, on_block=on_block)


def execute(plan: RunPlan, *, client=None, echo=None, on_block=None) -> RunResult:
    """Run a :func:`plan`: set-up, scan, result store, tables, logs, report."""
    echo = echo or (lambda line: None)
    t0 = time.perf_counter()
    warming = None
    if plan.outputs.report is not None:  # the plotting stack loads while the scan runs
        from .report import warm_up

        warming = warm_up()
    with outputs.lock(plan.outputs.prefix):
        if plan.strata is None:  # (with a given kinship, checked by plan)
            check_memory(plan.genotypes, plan.inputs, plan.options, client)
        strata = plan.strata or scanner.setup(plan.genotypes, plan.inputs, plan.options,
                                              echo=echo)
        lazy = scanner.scan_inputs(plan.genotypes, plan.inputs, plan.options, strata)
        lazy.attrs["provenance"] = plan.provenance
        for i in range(lazy.sizes["traits"]):
            one = export.select_trait(lazy, i)
            echo("\n".join([f"## phenotype = {plan.inputs.traits[i]}"]
                            + gemma_log.fit_lines(one)))
        fingerprint = results.ResultStore.fingerprint_of(
            lazy, {"inputs": plan.identities, "dlmm_version": provenance.version()})
        store = plan.outputs.store
        if plan.resume and not outputs.partial_path(store).exists():
            results.check_complete_matches(store, fingerprint)
            if all(p.exists() for p in plan.outputs.files()):
                echo(f"the scan is complete: {store} and its outputs exist (nothing to do)")
                return RunResult(plan.outputs, results.load_results(store), 0.0)
        else:
            results.write_results(lazy, store, resume=plan.resume, overwrite=plan.overwrite,
                                  client=client, on_block=on_block, fingerprint=fingerprint)
        res = results.load_results(store, index=False)
        _some_tested(res, plan)
        minutes = (time.perf_counter() - t0) / 60
        try:
            for i, trait in enumerate(plan.inputs.traits):
                _write_trait(res, i, trait, plan, minutes, echo)
            if plan.outputs.report is not None:
                from .report import write_report

                warming.join()
                echo(f"report: {write_report(res, plan.outputs.report)}")
        except InputError as e:  # a table, log or report could not be written (disk)
            raise InputError(e.source, e.problem, "free space, then rerun with --resume "
                             f"(the results are complete in {store})") from None
    return RunResult(plan.outputs, results.index_variants(res), minutes)


def _some_tested(res: xr.Dataset, plan: RunPlan) -> None:
    """A scan that tested no variant (every one filtered out) is an error, and leaves
    no result store."""
    if res["variant_lmm_tested"].values.any():
        return
    outputs.remove(plan.outputs.store)
    raise InputError(plan.genotypes.attrs.get("source", "genotypes"), "no variant passes "
                     "the filters (maf, max_missing) on the analysed samples",
                     "lower --maf or raise --max-missing")


def _write_trait(res: xr.Dataset, i: int, trait: str, plan: RunPlan, minutes: float,
                 echo) -> None:
    """One trait's tables and log."""
    one = export.select_trait(res, i)
    for path in plan.outputs.tables[trait]:
        if path.suffix == ".parquet":
            export.write_parquet(res, path, i)
        else:
            export.write_tsv(res, path, i)
    lines = gemma_log.log_lines(one, minutes)
    log = plan.outputs.logs[trait]
    outputs.write_file(log, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    skipped = gemma_log.skipped_line(one)
    tested = int(one["variant_lmm_tested"].values.sum())
    echo("\n".join([f"## phenotype = {trait}", f"## number of analyzed SNPs/var = {tested}"]
                   + ([skipped] if skipped else [])
                   + [f"results: {plan.outputs.store} (Zarr), "
                      + ", ".join(map(str, plan.outputs.tables[trait])), f"log: {log}"]))


def run_grm(genotypes, *, out: str | os.PathLike, phenotypes=None, traits=None,
            covariates=None, covariate_columns=None, options=None, overwrite: bool = False,
            echo=None) -> list[Path]:
    """``dlmm grm``: the GRM over chunks of variants, written as ``PREFIX.zarr`` (and
    GEMMA's ``PREFIX.cXX.txt``/``sXX.txt`` with ``options.gemma_text``).

    The variants are those passing GEMMA's filters on the analysed samples: those with
    the phenotype (``phenotypes``/``traits`` as in :func:`run`; default the genotypes'
    own, else every sample) and every covariate.  Returns the paths written.
    """
    import numpy as np

    from . import samples, store
    from .inputs import _phenotype_table
    from .kinship import grm
    from .options import GrmOptions

    options = options or GrmOptions()
    echo = echo or (lambda line: None)
    ds = genotypes if isinstance(genotypes, xr.Dataset) else open_genotypes(
        genotypes, chunk_size=options.chunk_size)
    zpath = Path(f"{out}.zarr")
    txt = Path(f"{out}.{'sXX' if options.standardise else 'cXX'}.txt")
    written = [zpath, txt] if options.gemma_text else [zpath]
    outputs.check_unlocked(out)
    outputs.check_new(written, overwrite, dirs=(zpath,))
    ids = ds["sample_id"].values
    ids_from = ds.attrs.get("sample_source", ds.attrs.get("source", "genotypes"))
    mask = np.ones(ds.sizes["samples"], dtype=bool)
    if phenotypes is not None or "sample_phenotype" in ds:
        y = samples.join(_phenotype_table(ds, phenotypes, traits or 1), ids, "phenotype",
                         id_source=ids_from)
        mask &= ~np.isnan(y.values[:, 0])
    W = np.ones((len(mask), 1))
    if covariates is not None:
        table = samples.select_columns(samples.as_sample_table(covariates, "covariate"),
                                       covariate_columns, option="covar_name")
        W = samples.join(table, ids, "covariate", id_source=ids_from).values
        mask &= ~np.isnan(W).any(axis=1)
    if not mask.any():
        raise InputError(out, "no sample has both a phenotype and the covariates",
                         "check the phenotype column (--pheno-col) and --covar")
    with outputs.lock(out):
        K = grm(ds, mask, W[mask], standardise=options.standardise, maf=options.maf,
                max_missing=options.max_missing).compute()
        if not np.isfinite(K.values[0, 0]):
            raise InputError(ds.attrs.get("source", "genotypes"), "no variant passes the "
                             "filters (maf, max_missing) on the analysed samples",
                             "lower --maf or raise --max-missing")
        store.write_kinship_zarr(K, zpath, overwrite=overwrite)
        if options.gemma_text:
            store.write_kinship_text(K.values, txt)
    echo(f"{K.attrs['kind']} GRM (= {K.attrs['gemma_equivalent']}) of {len(mask)} samples, "
         f"variants filtered on {int(mask.sum())} analysed samples")
    return written
