"""The scan: strata, their set-up, and the one graph that maps the block kernel over them.

A *stratum* is a group of traits analysed on the same samples, tested on one kinship:
a plain scan of one trait is one stratum; traits missing on different samples are one
stratum each; a leave-one-chromosome-out scan has one per trait group and chromosome.
Set-up (kinship, eigendecomposition, null fits) runs once per stratum on the client;
each stratum's shared state (eigenvectors, null fits) is scattered once; every chunk
of variants is one task (read, filter, impute, rotate, fit, test) with its stratum's
state.  In the low-rank mode the eigenvectors are chunked over samples (on disk, or
scattered) and each chunk of variants is a task per chunk of samples, their sums
added, then one task testing it (:mod:`dlmm.sharded`).  The result is a lazy ``xarray.Dataset`` laid
out by :mod:`dlmm.schema`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from . import kernels, progress, schema
from .errors import InputError
from .inputs import ScanInputs, prepare_inputs, trait_groups
from .nullmodel import NullModel, fit_null_model, null_figures
from .options import ScanOptions

__all__ = ["scan", "scan_inputs", "setup", "Stratum", "as_options", "resolve_center",
           "BlockColumns"]

#: Shared state goes to the workers by ``client.scatter`` (False: a key in the graph;
#: benchmarks/broadcast.py compares the two).
SCATTER = True


@dataclass
class Stratum:
    """Traits ``traits`` (indices) analysed on ``samples`` (N,) bool, tested on one
    kinship: the genome's, or (LOCO) the one without ``contig``, whose variants it
    tests.  ``nulls``: one null fit per trait, sharing one eigendecomposition."""

    traits: np.ndarray
    contig: int | None
    samples: np.ndarray
    nulls: list[NullModel]
    kinship_variants_used: int | None = None


def as_options(options: ScanOptions | None, changes: dict) -> ScanOptions:
    """``options`` (default ScanOptions()) with keyword changes, checked."""
    options = options or ScanOptions()
    return options.replace(**changes) if changes else options


def resolve_center(options: ScanOptions, ds: xr.Dataset) -> bool:
    """Whether the kinship is double-centred: as asked, else as GEMMA does, except for
    the course lab's text format (its EM uses the kinship as given)."""
    if options.center is not None:
        return options.center
    return ds.attrs.get("format") != "text"


def scan(ds: xr.Dataset, phenotypes=None, *, traits=None, covariates=None, kinship=None,
         options: ScanOptions | None = None, **option_changes) -> xr.Dataset:
    """LMM association scan of every variant, lazy over chunks of variants.

    Parameters
    ----------
    ds : genotypes (``call_dosage`` (variants, samples) chunked along variants,
        ``variant_*``, ``sample_id``), e.g. from :func:`dlmm.open_genotypes`.
    phenotypes : None (those the genotypes carry), a file, a numpy array (samples,)
        or (samples, traits) in genotype order, or a pandas / xarray object indexed by
        sample id (joined by id; :mod:`dlmm.samples`).
    traits : which phenotype columns (1-based numbers or names); default all given,
        the first carried one.
    covariates : like ``phenotypes`` (GEMMA's files include the intercept; tables with
        sample ids get one added); default the intercept alone.
    kinship : None (the centred GRM, GEMMA -gk 1), a file, a numpy (n, n) array in
        genotype order, or a DataArray with ``sample_id`` (e.g. :func:`dlmm.grm`).
    options : :class:`~dlmm.options.ScanOptions`; keyword arguments (``model=...``,
        ``tests="lrt,wald"``, ...) change single options.

    Returns
    -------
    Dataset over ``variants`` and ``traits`` (:mod:`dlmm.schema`): the tests' variables
    (lazy dask arrays, one task per chunk), the variant fields, ``trait_id`` and the
    null models' figures (computed).  Fitting the null model (and the GRM when no
    kinship is given) happens here, on the current Dask client if any.
    """
    options = as_options(options, option_changes)
    inputs = prepare_inputs(ds, phenotypes, traits=traits, covariates=covariates,
                            kinship=kinship, options=options)
    return scan_inputs(ds, inputs, options)


def scan_inputs(ds: xr.Dataset, inputs: ScanInputs, options: ScanOptions,
                strata: list[Stratum] | None = None) -> xr.Dataset:
    """:func:`scan` of checked inputs; ``strata`` from :func:`setup` to reuse a set-up."""
    strata = setup(ds, inputs, options) if strata is None else strata
    array, keys = _graph(ds, inputs, strata, options)
    return _dataset(ds, inputs, strata, options, array, keys)


# --------------------------------------------------------------------------
# set-up: kinship, eigendecomposition, null fits per stratum
# --------------------------------------------------------------------------
def setup(ds: xr.Dataset, inputs: ScanInputs, options: ScanOptions,
          echo=None) -> list[Stratum]:
    """The strata of a scan, each with its eigendecomposition and null fits; ``echo``
    (e.g. ``print``) is told each phase as it starts, with the last one's time."""
    phase = _Phases(echo)
    out = []
    for group in trait_groups(inputs):
        mask = inputs.analysed(group[0])
        W = inputs.covariates[mask]
        Y = inputs.phenotypes[np.ix_(mask, group)]
        for contig, eig, used in _eigens(ds, inputs, mask, W, options, phase):
            phase(f"null fits of {len(group)} trait(s) on {int(mask.sum()):,} samples")
            out.append(Stratum(group, contig, mask, _nulls(eig, W, Y, options), used))
    phase(None)
    return out


def _nulls(eig, W: np.ndarray, Y: np.ndarray, options: ScanOptions) -> list[NullModel]:
    """The null fit of each trait (columns of Y) on one eigendecomposition; in the low-rank
    mode from sums over samples, U1 chunked over them (:mod:`dlmm.sharded`)."""
    kw = dict(em_tol=options.em_tol, em_max_iter=options.em_max_iter)
    if options.lowrank:
        from .sharded import lowrank_nulls, rows_to_workers, sample_chunks

        s, U1 = eig
        if isinstance(U1, np.ndarray):  # --kinship-rank: the same path, U1 chunked
            U1 = rows_to_workers(U1, sample_chunks(*U1.shape))
        return lowrank_nulls(s, U1, W, Y, solver=options.solver, **kw)
    return [fit_null_model(Y[:, j], W, None, em=options.solver == "em", eig=eig, **kw)
            for j in range(Y.shape[1])]


class _Phases:
    """Announces set-up phases as they start (``## set-up: ...``), each with the time the
    previous one took: the progress of steps that are one big computation."""

    def __init__(self, echo):
        import time

        self.echo, self.clock, self.t0, self.last = echo, time.perf_counter, None, None

    def __call__(self, what: str | None) -> None:
        if self.echo is None:
            return
        now = self.clock()
        took = "" if self.last is None else f" ({self.last}: {now - self.t0:.1f} s)"
        if what is not None:
            self.echo(f"## set-up: {what}...{took}")
        elif took:
            self.echo(f"## set-up done{took}")
        self.t0, self.last = now, what and what.split(" of ")[0].split(":")[0]


def _eigens(ds, inputs: ScanInputs, mask, W, options: ScanOptions, phase):
    """``(contig, (s, U), kinship variants used)`` for each kinship of one trait group."""
    from .kinship import grm, grm_loco

    center = resolve_center(options, ds)
    kw = dict(maf=options.maf, max_missing=options.max_missing)
    source = inputs.sources["kinship"]
    n, m = int(mask.sum()), ds.sizes["variants"]
    pass_ = f"over {m:,} variants ({ds['call_dosage'].data.numblocks[0]} tasks)"
    if options.loco:
        phase(f"GRM per chromosome of {n:,} samples, one pass {pass_}")
        K = progress.compute(grm_loco(ds, mask, W, **kw)).values
        for c in np.unique(ds["variant_contig"].values):
            phase(f"eigendecomposition of the {n:,} x {n:,} kinship without contig {c}")
            yield int(c), _eigh(_no_nan(K[c][np.ix_(mask, mask)], ds), center, None, None), None
    elif inputs.kinship_variants is not None:
        phase(f"GRM factor of {inputs.kinship_variants.size:,} kinship variants and its "
              "eigendecomposition")
        eig, used = _lowrank_eig(ds, mask, W, inputs.kinship_variants, options.kinship_rank,
                                 center, source, scratch=options.scratch, **kw)
        yield None, eig, used
    elif inputs.kinship is None:
        phase(f"GRM of {n:,} samples {pass_}")
        K = _no_nan(progress.compute(grm(ds, mask, W, subset=True, **kw)).values, ds)
        phase(f"eigendecomposition of the {n:,} x {n:,} kinship")
        yield None, _eigh(K, center, options.kinship_rank, None), None
    else:
        K = inputs.kinship_of(mask)
        if options.kinship_rank is not None:  # a partial eigendecomposition: check it first
            from .io import validate_kinship
            validate_kinship(K, source, psd=True)
        phase(f"eigendecomposition of the {n:,} x {n:,} kinship")
        yield None, _eigh(K, center, options.kinship_rank, source), None


def _no_nan(K: np.ndarray, ds) -> np.ndarray:
    """A GRM of no variant (every one filtered out) is 0/0."""
    if not np.isfinite(K[0, 0]):
        raise InputError(ds.attrs.get("source", "genotypes"), "no variant passes the filters "
                         "(maf, max_missing) on the analysed samples, so there is no GRM",
                         "lower --maf or raise --max-missing, or give --kinship")
    return K


def _eigh(K: np.ndarray, center: bool, rank: int | None, source: str | None):
    """``(s, U)`` of the analysed kinship (centred as asked); a given kinship (``source``)
    is checked positive semi-definite from its eigenvalues."""
    from .io import PSD_TOL, not_psd

    if center:  # K is this scan's own copy (a GRM, or the analysed rows of a kinship)
        K = kernels.center_kinship(K, overwrite=True)
    try:
        s, U = kernels.eigh_kinship(K, rank=rank, overwrite=True,
                                    psd_tol=PSD_TOL if source is not None else None)
    except kernels.NotPositiveSemiDefinite:
        raise not_psd(source) from None
    if not (s > 0).any():
        raise InputError(source or "kinship", "the kinship is zero" + (
            " after double-centring" if center else ""), "give a relationship matrix with "
            "variation between samples (e.g. the GRM: drop --kinship)")
    return s, U


def _lowrank_eig(ds, samples, W, variants, rank, center, source, maf, max_missing,
                 scratch):
    """``((s, U1), used)``: U1 (n, r) on disk in ``scratch``, chunked over samples, from
    the factor of ``variants`` (:func:`dlmm.kinship.factor_rows`) by
    :func:`dlmm.sharded.lowrank_eigen` (the factor's Gram, a q x q eigenproblem)."""
    from .kinship import factor_rows
    from .sharded import lowrank_eigen

    # P K P = (P Z)(P Z)^T: centring the factor's rows double-centres K
    _, rows, used = factor_rows(ds, variants, samples, W, center=center, maf=maf,
                                max_missing=max_missing)
    s, U1, n_used = lowrank_eigen(rows, used, scratch=scratch, rank=rank)
    if n_used == 0:
        raise InputError(source, f"none of the {rows.shape[0]} kinship variants passes the "
                         "filters (maf, max_missing) on the analysed samples",
                         "choose other or more variants for --kinship-variants")
    return (s, U1), int(n_used)


# --------------------------------------------------------------------------
# the graph: one task per chunk of variants, with its stratum's shared state
# --------------------------------------------------------------------------
def _graph(ds, inputs: ScanInputs, strata: list[Stratum], options: ScanOptions):
    """The lazy (variants, traits, columns) array of every block, and the column keys."""
    import dask.array as da

    from .kinship import dosage_blocks, split_at_contigs

    keys = kernels.result_columns(options.model, options.tests)
    dosage = dosage_blocks(ds)
    block_contig = None
    if options.loco:
        dosage, block_contig = split_at_contigs(dosage, ds["variant_contig"].values)
    shared = {id(st): _share(_shared_state(st, options)) for st in strata
              if not options.lowrank}
    groups, order = [], []
    for group in trait_groups(inputs):
        by_contig = {st.contig: st for st in strata if np.array_equal(st.traits, group)}
        parts = [_stratum_blocks(_blocks(dosage, a, b), by_contig[c], options, shared)
                 for a, b, c in _runs(block_contig, dosage.numblocks[0])]
        groups.append(parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0))
        order.extend(group)
    out = groups[0] if len(groups) == 1 else da.concatenate(groups, axis=1)
    if len(groups) > 1:  # traits back in their order, one chunk over them
        out = out[:, np.argsort(order, kind="stable")].rechunk({1: -1})
    return out, keys


def _stratum_blocks(dosage, st: Stratum, options: ScanOptions, shared: dict):
    """The (variants, traits, columns) array of stratum ``st`` over ``dosage``'s blocks:
    one task per block with the stratum's shared state, or in the low-rank mode
    :func:`dlmm.sharded.lowrank_scan_blocks` (tasks per block and chunk of samples)."""
    kw = dict(model=options.model, solver=options.solver, maf=options.maf,
              max_missing=options.max_missing, em_tol=options.em_tol,
              em_max_iter=options.em_max_iter)
    if options.lowrank:
        from .sharded import lowrank_scan_blocks

        nm = st.nulls[0]
        return lowrank_scan_blocks(dosage, st.samples, nm.s, nm.U, nm.W,
                                   np.column_stack([x.y for x in st.nulls]), st.nulls,
                                   em_start=options.em_start, tests=options.tests, **kw)
    cols = kernels.result_columns(options.model, options.tests)
    return dosage.map_blocks(_block, shared[id(st)], new_axis=2, dtype=np.float64,
                             chunks=(dosage.chunks[0], (len(st.traits),), (len(cols),)),
                             **kw)


def _blocks(dosage, a: int, b: int):
    """Blocks ``a:b`` of ``dosage`` (all of them without a slicing layer)."""
    return dosage if (a, b) == (0, dosage.numblocks[0]) else dosage.blocks[a:b]


def _runs(block_contig, n_blocks: int):
    """``(first, stop, contig)`` of each run of consecutive blocks of one contig (one run
    of every block, contig None, for a plain scan)."""
    if block_contig is None:
        return [(0, n_blocks, None)]
    cuts = [0] + [b for b in range(1, n_blocks) if block_contig[b] != block_contig[b - 1]]
    return [(a, b, int(block_contig[a])) for a, b in zip(cuts, cuts[1:] + [n_blocks])]


def _shared_state(st: Stratum, options: ScanOptions) -> dict:
    """What a block task of stratum ``st`` needs besides its genotypes."""
    nm = st.nulls[0]
    U = nm.U.astype(np.float32) if options.rotation_dtype == "float32" else nm.U
    return {"samples": st.samples, "U": U, "s": nm.s, "W": nm.W, "Wr": nm.Wr,
            "yr": np.column_stack([x.yr for x in st.nulls]),
            "y": np.column_stack([x.y for x in st.nulls]), "tests": options.tests,
            **null_figures(st.nulls, options.solver, options.em_start)}


def _share(shared: dict):
    """The state every block task of a stratum needs, as one graph input.

    With a ``distributed`` client current, it is scattered once, to one worker; each
    other worker fetches it from a peer when its first block needs it and keeps it
    while it has blocks to run, so it reaches every worker once.  It is not broadcast
    up front: the scheduler's Active Memory Manager drops replicas that no pending task
    needs, so a broadcast made while the client still prepares the graph can be
    dropped and fetched again.  A ``dask.delayed`` key in the graph would also reach
    each worker once, but through the scheduler, which would hold U (n x n) for the
    life of the graph (``benchmarks/broadcast.py`` times both: equal within noise at
    n = 3,000).  Without a client (the threaded scheduler) the delayed key is a plain
    in-memory object.
    """
    import dask

    if SCATTER:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
        if client is not None:
            key = "dlmm-shared-" + dask.base.tokenize(*(shared[k] for k in sorted(shared)))
            return client.scatter({key: shared}, hash=False)[key]
    return dask.delayed(shared, pure=True)


def _block(dosage, shared, **kw):
    from .blas import single_threaded

    with single_threaded():
        return kernels.scan_block(dosage, **shared, **kw)


# --------------------------------------------------------------------------
# the result Dataset
# --------------------------------------------------------------------------
def _dataset(ds, inputs: ScanInputs, strata, options: ScanOptions, array, keys) -> xr.Dataset:
    """The lazy results as a Dataset over (variants, traits) (:mod:`dlmm.schema`)."""
    data, columns = {}, {}
    for i, key in enumerate(keys):
        var = schema.variable(key)
        col = array[:, :, i]
        if var.dtype is not np.float64:  # an untested variant's count is NaN: -1
            col = col.map_blocks(_as_dtype, var.dtype, dtype=var.dtype)
        data[var.name] = (("variants", "traits"), col)
        columns[var.name] = (i, var.dtype, col.name)
    res = xr.Dataset(data, coords={"trait_id": ("traits", np.asarray(inputs.traits,
                                                                     dtype=object))})
    res = res.assign_coords(variant_fields(ds)).assign(_null_variables(ds, inputs, strata,
                                                                       options))
    if options.loco:
        res = res.assign_coords(contig_id=("contigs", _strings(ds["contig_id"].values)))
    res.attrs.update(_attrs(ds, inputs, strata, options))
    # for writers (dlmm.results): every variable of a block from one task
    res.encoding["dlmm_blocks"] = BlockColumns(array, columns)
    return res


def _strings(a) -> np.ndarray:
    return np.asarray(a, dtype=object).astype(str).astype(object)


def variant_fields(ds: xr.Dataset) -> dict:
    """The variant fields of a result (:data:`dlmm.schema.VARIANT_FIELDS`) from the
    genotypes: ids, contig index and name, position, the counted allele (allele1) and
    the other (allele0); every one over ``variants`` alone."""
    contig = np.asarray(ds["variant_contig"].values)
    allele = _strings(ds["variant_allele"].values)
    names = _strings(ds["contig_id"].values)
    return {"variant_id": ("variants", _strings(ds["variant_id"].values)),
            "variant_contig": ("variants", contig),
            "variant_contig_name": ("variants", names[contig]),
            "variant_position": ("variants", np.asarray(ds["variant_position"].values)),
            "variant_allele1": ("variants", allele[:, 1]),
            "variant_allele0": ("variants", allele[:, 0])}


def _null_variables(ds, inputs: ScanInputs, strata, options: ScanOptions) -> dict:
    """The null models' figures as variables over ``traits`` (and ``contigs`` for LOCO:
    NaN for a contig with no variant)."""
    t = len(inputs.traits)
    n_contigs = ds.sizes.get("contigs", 1)
    out = {}
    for key, (name, dtype, per_contig, _) in schema.NULL_VARIABLES.items():
        if key == "em_logl_null" and options.solver != "em":
            continue
        loco = options.loco and per_contig
        shape = (t, n_contigs) if loco else (t,)
        values = np.full(shape, np.nan if dtype is np.float64 else -1, dtype=dtype)
        for st in strata:
            for j, null in zip(st.traits, st.nulls):
                v = _null_summary(null, options)[key]
                if loco:
                    values[j, st.contig] = v
                else:
                    values[j] = v
        out[name] = (("traits", "contigs") if loco else ("traits",), values)
    return out


def _null_summary(null: NullModel, options: ScanOptions) -> dict:
    summary = null.summary()
    if options.solver == "em":
        summary["em_logl_null"] = float(null.em.logl[0])
    return summary


def _attrs(ds, inputs: ScanInputs, strata, options: ScanOptions) -> dict:
    """Run-level figures: the options that change results, the samples, the inputs."""
    attrs = dict(options.result_options())
    attrs.update(center=resolve_center(options, ds), n_samples_total=int(ds.sizes["samples"]),
                 inputs_digest=_digest(inputs, strata), sample_notes=list(inputs.notes),
                 source=str(ds.attrs.get("source", "")),
                 kinship=inputs.sources["kinship"] if inputs.kinship is not None else
                 ("GRM per chromosome (LOCO)" if options.loco else "GRM (gemma -gk 1)"))
    used = {st.kinship_variants_used for st in strata} - {None}
    if used:
        attrs["kinship_variants_used"] = int(max(used))
    return attrs


def _digest(inputs: ScanInputs, strata) -> str:
    """A hash of the per-sample inputs as analysed (the kinship's values too, unless it
    came from a file, whose identity the pipeline records)."""
    h = hashlib.blake2b(digest_size=20)
    parts = [inputs.phenotypes, inputs.covariates, *[st.samples for st in strata]]
    if inputs.kinship_variants is not None:
        parts.append(inputs.kinship_variants)
    if inputs.kinship is not None:
        parts.append(inputs.kinship_pos)
        if not Path(inputs.kinship.source).exists():
            parts.append(inputs.kinship.values)
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class BlockColumns:
    """How a scan's result variables come from one (variants, traits, columns) array.

    Each variable is a column of ``array``, whose variants chunks are the scan's
    tasks, so a writer can compute a block as that one task (:meth:`blocks`) and
    split it into the variables itself (:meth:`split`), not run a task per
    variable and block.  ``columns``: name -> (column, dtype, the Dask name of
    the variable as :func:`scan` made it).
    """

    array: object
    columns: dict

    def covers(self, res: xr.Dataset, names) -> bool:
        """Whether ``res[names]`` are still the columns of ``array`` (not edited)."""
        return all(v in self.columns and getattr(res[v].data, "name", None) ==
                   self.columns[v][2] for v in names)

    def blocks(self) -> list:
        """``array``'s variants chunks as Dask delayed objects (one chunk across the
        other axes)."""
        parts = self.array.to_delayed(optimize_graph=False)
        return list(parts.reshape(parts.shape[0]))

    def split(self, block: np.ndarray, names) -> tuple[np.ndarray, ...]:
        """The variables ``names`` of one computed block of ``array``."""
        return tuple(_as_dtype(block[:, :, self.columns[v][0]], self.columns[v][1])
                     for v in names)


def _as_dtype(column: np.ndarray, dtype) -> np.ndarray:
    """A float column as ``dtype``: NaN (an untested variant's count) as -1 for integers."""
    if np.dtype(dtype).kind in "iu":
        column = np.where(np.isnan(column), -1.0, column)
    return column.astype(dtype)
