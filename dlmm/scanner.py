"""The scan: the thin Dask layer that maps the per-block kernel over variants.

Set-up (phenotype alignment, kinship, its eigendecomposition and the null
fit) runs once on the client; the eigenvectors and null quantities are
scattered to every worker once (with a ``distributed`` client) and every block
task depends on that one key; each variant chunk is one task: read, filter,
impute, rotate, fit, LRT.  The result is a lazy
``xarray.Dataset`` over ``variants``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import kernels
from .errors import InputError
from .nullmodel import NullModel, fit_null_model

__all__ = ["scan", "prepare", "validate_inputs", "check_lowrank", "parse_tests", "trait_groups",
           "trait_attrs",
           "contig_attrs",
           "RESULT_VARIABLES"]

_OUTPUT_NAMES = {
    "n_miss": "variant_n_missing",
    "af": "variant_allele_frequency",
    "tested": "variant_lmm_tested",
    "logl_H1": "variant_lmm_logl",
    "l_mle": "variant_lmm_lambda",
    "lrt": "variant_lmm_lrt_statistic",
    "p_lrt": "variant_lmm_p_value",
    "beta": "variant_lmm_beta",
    "se": "variant_lmm_beta_se",
    "beta_dom": "variant_lmm_beta_dominance",
    "se_dom": "variant_lmm_beta_dominance_se",
    "sigma_sq_a": "variant_lmm_sigma_sq_a",
    "sigma_sq_e": "variant_lmm_sigma_sq_e",
    "iterations": "variant_lmm_iterations",
    "logl_remle": "variant_lmm_logl_reml",
    "l_remle": "variant_lmm_lambda_reml",
    "wald": "variant_lmm_wald_statistic",
    "p_wald": "variant_lmm_p_value_wald",
    "iterations_remle": "variant_lmm_iterations_reml",
    "score": "variant_lmm_score_statistic",
    "p_score": "variant_lmm_p_value_score",
}

#: The per-variant variables a scan computes.
RESULT_VARIABLES = frozenset(_OUTPUT_NAMES.values())


def _validate_phenotype(y: np.ndarray, n: int, source: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise InputError(source, f"phenotype has shape {y.shape}, the genotypes have {n} samples",
                         "give one phenotype value per genotype sample")
    if np.isinf(y).any():
        raise InputError(source, "phenotype has infinite values", "use NA for missing values")
    obs = y[~np.isnan(y)]
    if obs.size == 0:
        raise InputError(source, "phenotype is missing for every sample",
                         "check the phenotype column (--pheno-col)")
    if np.ptp(obs) == 0:
        raise InputError(source, f"phenotype is constant ({obs[0]:g}) on the analysed samples",
                         "pick a phenotype that varies")
    return y


def validate_inputs(ds: xr.Dataset, phenotype: np.ndarray, *, kinship: np.ndarray | None = None,
                    covariates: np.ndarray | None = None, phenotype_source: str = "phenotype",
                    kinship_source: str = "kinship", covariate_source: str = "covariates",
                    psd: bool = True):
    """Check the inputs of a scan at the boundary (no genotype is read).

    With ``psd`` a given kinship is also checked to be positive semi-definite:
    one Cholesky factorisation.  :func:`scan` checks that instead from the
    eigendecomposition it computes anyway, so a caller that runs this before
    ``scan`` (the CLI, to fail before its cluster starts) checks it once more.

    Returns ``(y, samples, W, K)``: the phenotype (samples,) (one trait), the analysed
    samples' mask (non-missing phenotype and covariates), their covariates
    (n, c) and the validated kinship (samples, samples) or None.
    """
    from .io import validate_kinship

    n_all = ds.sizes["samples"]
    y = _validate_phenotype(phenotype, n_all, phenotype_source)
    samples = ~np.isnan(y)
    if covariates is None:
        W_all = np.ones((n_all, 1))
    else:
        W_all = np.asarray(covariates, dtype=np.float64)
        if W_all.ndim != 2 or W_all.shape[0] != n_all:
            raise InputError(covariate_source, f"covariates have shape {W_all.shape}, expected "
                             f"({n_all}, c)", "give one covariate row per genotype sample")
        samples &= ~np.isnan(W_all).any(axis=1)
    n = int(samples.sum())
    W = W_all[samples]
    if n < W.shape[1] + 2:
        raise InputError(phenotype_source, f"only {n} analysed samples for {W.shape[1]} "
                         "covariates", "give at least covariates + 2 samples with data")
    if np.linalg.matrix_rank(W) < W.shape[1]:
        raise InputError(covariate_source, "covariate columns are collinear on the "
                         f"{n} analysed samples (rank {np.linalg.matrix_rank(W)} < "
                         f"{W.shape[1]} columns)", "drop redundant covariate columns")
    K = None if kinship is None else validate_kinship(kinship, kinship_source, n_all, psd=psd)
    return y, samples, W, K


def prepare(ds: xr.Dataset, phenotype: np.ndarray, *, kinship: np.ndarray | None = None,
            covariates: np.ndarray | None = None, center: bool = True,
            solver: str = "exact", maf: float = 0.01, max_missing: float = 0.05,
            em_tol: float = 1e-5, em_max_iter: int = 100,
            kinship_variants: np.ndarray | None = None, kinship_rank: int | None = None,
            phenotype_source: str = "phenotype", kinship_source: str = "kinship",
            covariate_source: str = "covariates") -> tuple[np.ndarray, NullModel]:
    """Set up a scan: analysed samples, kinship, eigendecomposition, null fit.

    Returns ``(samples, null)``: the (samples,) bool mask of analysed samples
    (non-missing phenotype and covariates) and the :class:`NullModel`.
    Computes the GRM (one pass over the genotypes) when ``kinship`` is None;
    ``kinship_variants`` and ``kinship_rank`` choose the low-rank mode (see
    :func:`scan`).
    """
    kinship_variants = check_lowrank(ds, kinship_variants, kinship_rank, kinship=kinship)
    samples, nulls = _prepare_traits(
        ds, np.asarray(phenotype, dtype=np.float64)[:, None], kinship=kinship,
        covariates=covariates, center=center, solver=solver, maf=maf,
        max_missing=max_missing, em_tol=em_tol, em_max_iter=em_max_iter,
        kinship_variants=kinship_variants, kinship_rank=kinship_rank,
        phenotype_source=phenotype_source, kinship_source=kinship_source,
        covariate_source=covariate_source)
    return samples, nulls[0]


def _lowrank_eig(ds, samples, W, variants, rank, center, maf, max_missing, source):
    """``(s, U1, used)`` from the GRM factor of ``variants`` (:func:`dlmm.kinship.grm_factor`)
    by :func:`dlmm.sharded.lowrank_eigen` (U1 a Dask array chunked over samples)."""
    from .kinship import grm_factor
    from .sharded import lowrank_eigen

    f = grm_factor(ds, variants, samples, W, maf=maf, max_missing=max_missing)
    Z = f["grm_factor"].data
    if center:  # P K P = (P Z)(P Z)^T: centring the factor double-centres K
        Z = Z - Z.mean(axis=0, keepdims=True)
    s, U1, used = lowrank_eigen(Z, rank=rank, also=f["kinship_variant_used"].data.sum())
    if used == 0:
        raise InputError(source, f"none of the {Z.shape[1]} kinship variants passes the "
                         "filters (--maf, --max-missing) on the analysed samples",
                         "choose other or more variants for --kinship-variants")
    return s, U1, int(used)


def _prepare_traits(ds, Y, *, kinship, covariates, center, solver, maf, max_missing, em_tol,
                    em_max_iter, phenotype_source, kinship_source,
                    covariate_source="covariates", kinship_variants=None, kinship_rank=None,
                    info=None):
    """:func:`prepare` for traits ``Y`` (samples, t) missing on the same samples: one
    kinship and one eigendecomposition, one null fit per trait.  ``info``: a dict
    to receive ``kinship_variants_used`` in the low-rank mode."""
    from .io import PSD_TOL, not_psd
    from .kinship import grm

    # a given kinship is checked once per group; positive semi-definite from its
    # eigenvalues when all are computed (free), else by a Cholesky factorisation
    all_eigen = kinship_variants is None and kinship_rank is None
    checked = [validate_inputs(ds, Y[:, j], kinship=kinship if j == 0 else None,
                               covariates=covariates, phenotype_source=phenotype_source,
                               kinship_source=kinship_source,
                               covariate_source=covariate_source, psd=not all_eigen)
               for j in range(Y.shape[1])]
    _, samples, W, K = checked[0]
    if any((c[1] != samples).any() for c in checked):
        raise ValueError("the traits of one group must be missing on the same samples")
    if kinship_variants is not None:
        *eig, used = _lowrank_eig(ds, samples, W, kinship_variants, kinship_rank, center,
                                  maf, max_missing, kinship_source)
        if info is not None:
            info["kinship_variants_used"] = used
        K = None
    else:
        if K is None:
            K = grm(ds, samples, W, maf=maf, max_missing=max_missing, subset=True).values
        else:
            K = K[np.ix_(samples, samples)]
        if center:
            K = kernels.center_kinship(K)
        try:  # the kinship as used: the analysed samples' (centred) part
            eig = kernels.eigh_kinship(K, rank=kinship_rank, overwrite=True,  # K is ours
                                       psd_tol=PSD_TOL if kinship is not None else None)
        except kernels.NotPositiveSemiDefinite:
            raise not_psd(kinship_source) from None
    if kinship_variants is not None or eig[1].shape[1] < eig[1].shape[0]:  # low rank
        from .sharded import lowrank_nulls, rows_to_workers, sample_chunks

        s, U1 = eig
        if isinstance(U1, np.ndarray):  # --kinship-rank: the same path, U1 chunked
            U1 = rows_to_workers(U1, sample_chunks(*U1.shape))
        nulls = lowrank_nulls(s, U1, W, np.column_stack([c[0][samples] for c in checked]),
                              solver=solver, em_tol=em_tol, em_max_iter=em_max_iter)
        return samples, nulls
    nulls = [fit_null_model(c[0][samples], W, K, em=(solver == "em"), em_tol=em_tol,
                            em_max_iter=em_max_iter, eig=eig) for c in checked]
    return samples, nulls


def check_rotation_dtype(rotation_dtype: str, kinship_variants=None,
                         kinship_rank: int | None = None) -> None:
    """``rotation_dtype`` is float64 or float32, and float32 comes without the low-rank mode
    (there the part outside U's span is a difference of Gram matrices, which float32
    rounding would swamp; and the rotation is cheap)."""
    if rotation_dtype not in ("float64", "float32"):
        raise InputError("--rotation-dtype", f"unknown dtype {rotation_dtype!r}",
                         "use float64 or float32")
    if rotation_dtype == "float32" and (kinship_variants is not None
                                        or kinship_rank is not None):
        raise InputError("--rotation-dtype", "float32 is for the full-rank scan",
                         "drop --rotation-dtype float32, or --kinship-variants and "
                         "--kinship-rank")


def check_lowrank(ds: xr.Dataset, kinship_variants=None, kinship_rank: int | None = None, *,
                  kinship=None, loco: bool = False) -> np.ndarray | None:
    """Check the low-rank options of :func:`scan` at the boundary.

    Returns ``kinship_variants`` as sorted unique int64 indices (None if not given).
    """
    if kinship_variants is not None and (kinship is not None or loco):
        raise InputError("--kinship-variants", "the kinship variants define the kinship; "
                         f"not with {'--loco' if loco else '--kinship'}",
                         "drop one of the two options")
    if kinship_rank is not None and (int(kinship_rank) < 1 or loco):
        raise InputError("--kinship-rank", f"rank {kinship_rank} " + (
            "is not available with --loco" if loco else "must be at least 1"),
            "drop --loco" if loco else "give a positive number of eigenvectors")
    if kinship_variants is None:
        return None
    idx = np.asarray(kinship_variants)
    idx = np.flatnonzero(idx) if idx.dtype == bool else np.unique(idx.astype(np.int64))
    n_var = ds.sizes["variants"]
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= n_var:
        raise InputError("--kinship-variants", "kinship variants must be a non-empty set "
                         f"of variant indices in 0..{n_var - 1}",
                         "list variant ids of the genotypes, or give a count")
    return idx


def trait_groups(ds: xr.Dataset, phenotypes: np.ndarray,
                 covariates: np.ndarray | None = None) -> list[np.ndarray]:
    """Group traits analysed on the same samples (non-missing trait and covariates).

    Parameters
    ----------
    phenotypes : (samples, traits).

    Returns
    -------
    List of int arrays of trait indices, in order of first appearance; each
    group shares one eigendecomposition and one rotation of every block.
    """
    Y = np.asarray(phenotypes, dtype=np.float64)
    ok = ~np.isnan(Y)
    if covariates is not None:
        ok &= ~np.isnan(np.asarray(covariates, dtype=np.float64)).any(axis=1)[:, None]
    groups: dict[bytes, list[int]] = {}
    for j in range(Y.shape[1]):
        groups.setdefault(np.packbits(ok[:, j]).tobytes(), []).append(j)
    return [np.array(g) for g in groups.values()]


def scan(ds: xr.Dataset, phenotype: np.ndarray, *, kinship: np.ndarray | None = None,
         covariates: np.ndarray | None = None, model: str = "additive",
         solver: str = "exact", em_start: str = "classic", center: bool = True,
         maf: float = 0.01, max_missing: float = 0.05, em_tol: float = 1e-5,
         em_max_iter: int = 100, null: tuple[np.ndarray, NullModel] | None = None,
         broadcast: bool = True, test: str | tuple[str, ...] = "lrt", traits=None,
         loco: bool = False, kinship_variants: np.ndarray | None = None,
         kinship_rank: int | None = None, rotation_dtype: str = "float64",
         **sources) -> xr.Dataset:
    """LMM association scan of every variant, lazy over variant chunks.

    Parameters
    ----------
    ds : genotype Dataset (``call_dosage`` (variants, samples), chunked along
        variants; ``variant_*``, ``sample_id``).
    phenotype : (samples,) trait, NaN where missing (those samples are dropped);
        or (samples, traits) for many traits at once: traits missing on the
        same samples share one eigendecomposition and one rotation of each
        genotype block (each group computes its own GRM when ``kinship`` is None).
    kinship : (samples, samples) kinship; default the centred GRM (GEMMA -gk 1).
    covariates : (samples, c) covariates *including* the intercept column
        (default: intercept only).
    model : "additive" (1-df LRT) or "genotypic" (additive + dominance, 2 df).
    solver : "exact" (profile ML over lambda, GEMMA -lmm 2) or "em" (classic EM).
    em_start : "classic" (sa2=70, se2=10, b=0) or "null" (the ML null fit).
    center : double-centre the analysed kinship, as GEMMA does.
    maf, max_missing : GEMMA's variant filters on the analysed samples.
    null : a ``(samples, NullModel)`` from :func:`prepare`, to skip set-up
        (one trait only).
    test : ``"lrt"`` (default), ``"wald"``, ``"score"``, ``"all"`` or a tuple of
        them (GEMMA ``-lmm 2``, ``1``, ``3``, ``4``).  The LRT compares ML fits;
        the Wald F-test uses each variant's REML lambda, the score F-test the
        null model's ML lambda (as GEMMA); both on ``n - c - k`` df.
    traits : (traits,) names of the phenotype columns (default ``pheno1..``), the
        ``trait_id`` coordinate along ``traits``.
    broadcast : with a ``distributed`` client, scatter the eigenvectors and null
        fit (to one worker; each other worker fetches them once, see
        :func:`_share`) instead of embedding them in the graph; with ``loco``
        each chromosome's go only to where its blocks run.
    loco : leave one chromosome out: each contig's variants are tested with the
        GRM of the other contigs (:func:`dlmm.kinship.grm_loco`: one pass over the
        genotypes, the whole-genome sums minus the contig's), with its own
        eigendecomposition and null fit.  Not with ``kinship`` or ``null``.
    kinship_variants : low-rank mode (FaST-LMM): int indices (or a bool mask) of
        the variants whose GRM is the kinship, ``K = Z Z^T`` with ``Z`` (n, q)
        their centred dosages / sqrt(q) (:func:`dlmm.kinship.grm_factor`).  No
        n x n matrix is formed: U (n, r <= q) comes from Dask's tall-and-skinny
        SVD of Z, each variant's rotation costs O(n r) instead of O(n^2), and
        the likelihood adds the part outside U's span in closed form
        (:func:`dlmm.kernels.lowrank_rest`).  Not with ``kinship`` or ``loco``.
    kinship_rank : keep only the kinship's ``kinship_rank`` largest eigenpairs
        (of the given or computed kinship, or of the ``kinship_variants``
        factor): the same low-rank likelihood.  When the kinship's rank is at
        most ``kinship_rank``, results equal the full-rank scan's.
    rotation_dtype : ``"float64"`` (default) or ``"float32"``: the precision of
        the genotype blocks' rotation ``U^T X`` (the scan's dominant cost, twice
        as fast in float32; the dosages are exact in float32, U and the sums are
        rounded to it).  The fits stay float64.  Measured on mouse_hs1940: max
        |d(-log10 p)| 3.3e-6 against float64.  Full rank only.

    Returns
    -------
    Dataset over ``variants`` (and ``traits`` for a 2-D phenotype, with the
    ``trait_id`` coordinate): ``variant_lmm_p_value`` (LRT),
    ``variant_lmm_p_value_wald``, ``variant_lmm_p_value_score``,
    ``variant_lmm_beta`` (the Wald test's when it runs, else the ML fit's, else
    the score test's), ``variant_lmm_logl``, ``variant_lmm_lambda_reml``, ...
    (lazy dask arrays, for the tests asked), the input's ``variant_*``
    coordinates, and the null model's figures in ``attrs`` (one list entry per
    trait for many traits).
    """
    import dask.array as da

    if model not in ("additive", "genotypic"):
        raise InputError("--model", f"unknown model {model!r}", "use additive or genotypic")
    if solver not in ("exact", "em"):
        raise InputError("--solver", f"unknown solver {solver!r}", "use exact or em")
    if em_start not in ("classic", "null"):
        raise InputError("--em-start", f"unknown start {em_start!r}", "use classic or null")
    tests = parse_tests(test)
    check_rotation_dtype(rotation_dtype, kinship_variants, kinship_rank)
    Y = np.asarray(phenotype, dtype=np.float64)
    multi = Y.ndim == 2
    Y = Y if multi else Y[:, None]
    n_traits = Y.shape[1]
    if null is not None and multi:
        raise ValueError("null= is for one trait; give a 1-D phenotype")
    if loco and (kinship is not None or null is not None):
        raise InputError("--loco", "LOCO computes one GRM per chromosome itself",
                         "drop --kinship (or null=) when using --loco")
    kinship_variants = check_lowrank(ds, kinship_variants, kinship_rank, kinship=kinship,
                                     loco=loco)
    groups = [np.arange(1)] if null is not None else trait_groups(ds, Y, covariates)
    from .kinship import dosage_blocks

    dosage = dosage_blocks(ds)
    if loco:
        from .kinship import split_at_contigs
        dosage, block_contig = split_at_contigs(dosage, ds["variant_contig"].values)
        loco_contigs = [int(c) for c in dict.fromkeys(block_contig.tolist())]
    else:
        block_contig, loco_contigs = np.zeros(dosage.numblocks[0], dtype=int), [None]
    cols = kernels.result_columns(model, tests)
    outs, summaries, digest = [], [None] * n_traits, hashlib.sha1()
    kin_bytes = (b"grm-loco" if loco else b"grm") if kinship is None else np.asarray(
        kinship, dtype=np.float64)
    if kinship_variants is not None or kinship_rank is not None:
        kin_bytes = np.ascontiguousarray(kin_bytes).tobytes() + repr(
            (kinship_rank, None if kinship_variants is None else kinship_variants.tolist())
        ).encode()
    kin_info: dict = {}
    prep = dict(covariates=covariates, center=center, solver=solver, maf=maf,
                max_missing=max_missing, em_tol=em_tol, em_max_iter=em_max_iter,
                kinship_variants=kinship_variants, kinship_rank=kinship_rank, info=kin_info,
                phenotype_source=sources.get("phenotype_source", "phenotype"),
                kinship_source=sources.get("kinship_source", "kinship"),
                covariate_source=sources.get("covariate_source", "covariates"))
    for idx in groups:
        if loco:
            from .kinship import grm_loco
            _, s_g, W_g, _ = validate_inputs(ds, Y[:, idx[0]], covariates=covariates,
                                             phenotype_source=prep["phenotype_source"],
                                             covariate_source=prep["covariate_source"])
            K_loco = grm_loco(ds, s_g, W_g, maf=maf, max_missing=max_missing).values
        shared, per_contig = {}, []
        for c in loco_contigs:
            if null is not None:
                samples, nulls = null[0], [null[1]]
            else:
                samples, nulls = _prepare_traits(
                    ds, Y[:, idx], kinship=K_loco[c] if loco else kinship, **prep)
            nm = nulls[0]
            null_fits = [x.em if solver == "em" else x.ml for x in nulls]
            starts = None
            if solver == "em" and em_start == "null":
                starts = [(x.ml.beta[0], x.ml.sigma_sq_a[0], x.ml.sigma_sq_e[0])
                          for x in nulls]
            if not isinstance(nm.U, np.ndarray):  # low rank: sharded over samples
                from .sharded import lowrank_scan_blocks

                shared[c] = lowrank_scan_blocks(
                    dosage, samples, nm.s, nm.U, nm.W, np.column_stack([x.y for x in nulls]),
                    nulls, model=model, solver=solver, em_start=em_start, tests=tests,
                    maf=maf, max_missing=max_missing, em_tol=em_tol, em_max_iter=em_max_iter)
            else:
                # LOCO: each chromosome's eigenvectors go only where its blocks run, not
                # to every worker (C of them per worker otherwise)
                shared[c] = _share(
                    {"samples": samples, "U": nm.U.astype(np.float32) if rotation_dtype ==
                     "float32" else nm.U, "s": nm.s, "W": nm.W, "Wr": nm.Wr,
                     "yr": np.column_stack([x.yr for x in nulls]),
                     "logl_null": np.array([float(f.logl[0]) for f in null_fits]),
                     "null_start": starts, "tests": tests,
                     "lam_null": np.array([float(x.ml.lam[0]) for x in nulls])},
                    broadcast=broadcast and not loco)
            sm = []
            for x in nulls:
                summary = x.summary()
                if solver == "em":
                    summary["em_logl_null"] = float(x.em.logl[0])
                sm.append(summary)
            per_contig.append(sm)
            # the inputs, not derived floats (eigh is not bit-reproducible)
            for part in [samples, Y[np.ix_(samples, idx)], nm.W, kin_bytes]:
                digest.update(part if isinstance(part, bytes) else
                              np.ascontiguousarray(part).tobytes())
        for jj, j in enumerate(idx):
            summaries[j] = (per_contig[0][jj] if not loco else
                            {k: [pc[jj][k] for pc in per_contig] for k in per_contig[0][jj]})
        kw = dict(model=model, solver=solver, maf=maf, max_missing=max_missing, em_tol=em_tol,
                  em_max_iter=em_max_iter, new_axis=2, dtype=np.float64)
        if not loco and isinstance(shared[None], da.Array):  # the low-rank scan, built
            outs.append(shared[None])
        elif not loco:
            outs.append(dosage.map_blocks(
                _block, shared[None], chunks=(dosage.chunks[0], (len(idx),), (len(cols),)),
                **kw))
        else:  # each block with its own contig's eigenbasis: one task per block, in order
            outs.append(da.concatenate([
                dosage.blocks[b].map_blocks(
                    _block, shared[int(block_contig[b])],
                    chunks=((dosage.chunks[0][b],), (len(idx),), (len(cols),)), **kw)
                for b in range(dosage.numblocks[0])], axis=0))
    order = np.argsort(np.concatenate(groups), kind="stable")
    # one chunk over traits, so each variants chunk is one Zarr chunk
    out = outs[0] if len(outs) == 1 else da.concatenate(outs, axis=1)[:, order].rechunk(
        {1: -1})
    dims = ("variants", "traits") if multi else ("variants",)
    data, columns = {}, {}
    for i, c in enumerate(cols):
        dtype = np.int64 if c == "n_miss" else bool if c == "tested" else np.float64
        col = out[:, :, i] if multi else out[:, 0, i]
        if dtype is not np.float64:
            col = col.astype(dtype)
        data[_OUTPUT_NAMES[c]] = (dims, col)
        columns[_OUTPUT_NAMES[c]] = (i, dtype, col.name)
    keep = [v for v in ("variant_id", "variant_contig", "variant_position", "variant_allele",
                        "contig_id") if v in ds]
    # strings as object arrays: Zarr v2 stores them as vlen-utf8 whatever they came as
    res = xr.Dataset(data).assign({v: ds[v].astype(object) if ds[v].dtype.kind in "UOT"
                                   else ds[v] for v in keep})
    if multi:
        names = [f"pheno{j + 1}" for j in range(n_traits)] if traits is None else list(traits)
        res = res.assign_coords(trait_id=("traits", np.asarray(names, dtype=object)))
        attrs = {k: [sm[k] for sm in summaries] for k in summaries[0]}
    else:
        attrs = dict(summaries[0])
    if loco:
        contig_names = np.asarray(ds["contig_id"].values, dtype=object).astype(str)
        attrs["loco_contigs"] = [str(contig_names[c]) for c in loco_contigs]
    attrs.update(kin_info)
    attrs["inputs_sha1"] = digest.hexdigest()
    attrs.update(model=model, solver=solver, n_samples_total=int(ds.sizes["samples"]),
                 rotation_dtype=rotation_dtype,
                 em_start=em_start if solver == "em" else "", tests=",".join(tests))
    res.attrs.update(attrs)
    # for writers (dlmm.store.write_results_zarr): every variable of a block from one task
    res.encoding["dlmm_blocks"] = BlockColumns(out, columns, multi)
    return res


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
    multi: bool

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
        out = []
        for v in names:
            i, dtype, _ = self.columns[v]
            out.append((block[:, :, i] if self.multi else block[:, 0, i]).astype(dtype))
        return tuple(out)


def trait_attrs(attrs: dict, i: int) -> dict:
    """The attrs of trait ``i`` of a many-trait result (list values -> their i-th entry)."""
    return {k: v[i] if isinstance(v, list) and k != "loco_contigs" else v
            for k, v in attrs.items()}


def contig_attrs(attrs: dict, i: int) -> dict:
    """The null figures of the i-th LOCO contig (``attrs["loco_contigs"][i]``) of one
    trait's attrs (list values -> their i-th entry)."""
    return {k: v[i] if isinstance(v, list) else v for k, v in attrs.items()
            if k != "loco_contigs"}


def parse_tests(test: str | tuple[str, ...]) -> tuple[str, ...]:
    """``"lrt"``, ``"wald,score"``, ``"all"`` or a tuple -> tests in canonical order."""
    names = test.split(",") if isinstance(test, str) else list(test)
    names = [t.strip() for t in names]
    if names == ["all"]:
        return kernels.TESTS
    bad = [t for t in names if t not in kernels.TESTS]
    if bad or not names:
        raise InputError("--test", f"unknown test {','.join(bad) or test!r}",
                         "use lrt, wald, score, all, or a comma-separated list of them")
    return tuple(t for t in kernels.TESTS if t in names)


def _share(shared: dict, broadcast: bool = True):
    """The state every block task needs (U, s, the null fit) as one graph input.

    With a ``distributed`` client current and ``broadcast``, it is scattered
    once, to one worker; each other worker fetches it from a peer when its
    first block needs it and keeps it while it has blocks to run, so it
    reaches every worker once.  It is not broadcast to every worker up front:
    the scheduler's Active Memory Manager (ReduceReplicas, every 2 s) drops
    replicas that no pending task needs, so a broadcast made while the client
    still prepares the graph can be dropped and fetched again (seen in the
    workers' logs in tests/test_store.py on a loaded machine).  The
    alternative, a ``dask.delayed`` key embedded in the graph, also reaches each worker once
    but travels inside the graph: client to scheduler, scheduler to the worker
    that materialises it, then worker to worker; the scheduler holds U (n x n
    float64) for the life of the graph and warns about the graph's size.
    ``benchmarks/broadcast.py`` times both: equal within noise at n = 3,000
    on two local worker processes (4.25 s and 4.05 s, medians of 3), so the
    choice rests on keeping U off the scheduler, which matters at biobank n.
    Loading U from Zarr on each worker would need storage shared by client and
    workers, which a laptop cluster or a cloud cluster without a shared
    filesystem lacks.  Without a client (the threaded scheduler) the delayed
    key is a plain in-memory object.
    """
    import dask

    if broadcast:
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
