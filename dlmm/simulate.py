"""Seeded simulation of genotypes and a phenotype with family structure."""

from __future__ import annotations

import numpy as np

__all__ = ["simulate_families", "pedigree_kinship", "simulate_population",
           "simulate_results"]


def pedigree_kinship(n_families: int, n_children: int) -> np.ndarray:
    """Additive relationship matrix (2 x coancestry) of nuclear families.

    Each family is two unrelated founders and ``n_children`` full sibs, in that
    order; families are unrelated.  Returns ``(n, n)``, ``n = n_families *
    (2 + n_children)``; it is positive definite.
    """
    size = 2 + n_children
    block = np.full((size, size), 0.5)
    block[0, 1] = block[1, 0] = 0.0
    np.fill_diagonal(block, 1.0)
    return np.kron(np.eye(n_families), block)


def simulate_families(n_families: int = 60, n_children: int = 2, n_variants: int = 60, *,
                      n_causal: int = 2, effect: float = 0.6, sigma_sq_a: float = 2.0,
                      sigma_sq_e: float = 1.0, mean: float = 10.0, n_contigs: int = 1,
                      missing_rate: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Simulate nuclear families, their genotypes and a trait.

    Founders draw alleles at frequencies uniform on [0.1, 0.5]; each child
    takes one allele of each parent at random (unlinked variants).  The trait
    is ``mean + sum(effect * x_causal) + a + e`` with ``a ~ N(0, sigma_sq_a A)``
    (A the pedigree kinship) and ``e ~ N(0, sigma_sq_e I)``.

    Returns
    -------
    dict with ``dosage`` (m, n) float (0/1/2, NaN where missing), ``phenotype``
    (n,), ``kinship`` (n, n) pedigree A, ``causal`` (n_causal,) variant indices,
    ``contig`` (m,) int, ``position`` (m,) int, ``family`` (n,) int.
    """
    rng = np.random.default_rng(seed)
    size = 2 + n_children
    n = n_families * size
    freq = rng.uniform(0.1, 0.5, n_variants)
    hap = np.empty((n_variants, n, 2), dtype=np.int8)
    for f in range(n_families):
        i0 = f * size
        hap[:, i0:i0 + 2, :] = rng.random((n_variants, 2, 2)) < freq[:, None, None]
        for c in range(n_children):
            pick = rng.integers(0, 2, (n_variants, 2))
            father = hap[:, i0, :][np.arange(n_variants), pick[:, 0]]
            mother = hap[:, i0 + 1, :][np.arange(n_variants), pick[:, 1]]
            hap[:, i0 + 2 + c, 0] = father
            hap[:, i0 + 2 + c, 1] = mother
    dosage = hap.sum(axis=2).astype(np.float64)
    A = pedigree_kinship(n_families, n_children)
    causal = np.sort(rng.choice(n_variants, n_causal, replace=False))
    g = np.linalg.cholesky(A) @ rng.standard_normal(n)
    y = (mean + effect * dosage[causal].sum(axis=0) + np.sqrt(sigma_sq_a) * g
         + np.sqrt(sigma_sq_e) * rng.standard_normal(n))
    if missing_rate > 0:
        dosage[rng.random(dosage.shape) < missing_rate] = np.nan
    contig = np.repeat(np.arange(n_contigs), -(-n_variants // n_contigs))[:n_variants]
    position = np.zeros(n_variants, dtype=np.int64)
    for ctg in range(n_contigs):
        sel = contig == ctg
        position[sel] = np.cumsum(rng.integers(1_000, 50_000, sel.sum()))
    return {"dosage": dosage, "phenotype": y, "kinship": A, "causal": causal,
            "contig": contig, "position": position,
            "family": np.repeat(np.arange(n_families), size)}


def simulate_population(n_samples: int, n_variants: int, *, chunk_size: int = 10_000,
                        n_populations: int = 4, fst: float = 0.05, n_causal: int = 500,
                        h2: float = 0.5, n_contigs: int = 10, seed: int = 0):
    """A lazy, seeded genotype Dataset of any size, and a trait: for benchmarks.

    Samples fall in ``n_populations`` equal groups whose allele frequencies
    are drawn around a common one (Balding-Nichols, ``fst``); variants are
    unlinked.  Each chunk of variants is generated from its own seed when it
    is computed, so the matrix never exists in memory at once and any chunk
    is reproducible on any worker.

    Returns
    -------
    ``(ds, y)``: the genotype Dataset (``call_dosage`` (variants, samples) as a
    dask array with chunks of ``chunk_size`` variants, ``variant_*``,
    ``sample_id``) and a polygenic trait (samples,): normal effects of
    ``n_causal`` variants of the first chunk (standardised), scaled to explain
    ``h2`` of the variance, plus noise.
    """
    import dask.array as da

    from .io import genotype_dataset

    pop = np.repeat(np.arange(n_populations), -(-n_samples // n_populations))[:n_samples]
    chunks = (tuple(min(chunk_size, n_variants - i) for i in range(0, n_variants, chunk_size)),
              (n_samples,))
    dosage = da.map_blocks(_population_block, pop=pop, fst=fst, seed=seed, chunks=chunks,
                           dtype=np.float64)
    rng = np.random.default_rng([seed, 2**31])
    contig = np.repeat(np.arange(n_contigs), -(-n_variants // n_contigs))[:n_variants]
    position = np.concatenate([np.cumsum(rng.integers(1_000, 20_000, (contig == c).sum()))
                               for c in range(n_contigs)])
    ds = genotype_dataset(
        dosage, sample_id=np.array([f"s{i}" for i in range(n_samples)]),
        variant_id=np.array([f"v{j}" for j in range(n_variants)]), variant_contig=contig,
        contig_id=np.array([str(c + 1) for c in range(n_contigs)]), variant_position=position,
        variant_allele=np.tile(np.array(["A", "G"], dtype=object), (n_variants, 1)))
    first = dosage.blocks[0].compute()
    causal = rng.choice(first.shape[0], min(n_causal, first.shape[0]), replace=False)
    g = first[causal]
    g = (g - g.mean(axis=1, keepdims=True)) / np.maximum(g.std(axis=1, keepdims=True), 1e-12)
    a = rng.standard_normal(causal.size) @ g
    a *= np.sqrt(h2) / max(a.std(), 1e-12)
    y = a + np.sqrt(1.0 - h2) * rng.standard_normal(n_samples)
    return ds, y


def _population_block(pop, fst, seed, block_info=None):
    (start, stop), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([seed, start])
    m, k = stop - start, pop.max() + 1
    p = rng.uniform(0.05, 0.5, m)
    a = p * (1 - fst) / fst
    freq = rng.beta(a[:, None], ((1 - p) * (1 - fst) / fst)[:, None], (m, k))
    return rng.binomial(2, freq[:, pop]).astype(np.float64)


def simulate_results(n_variants: int = 10_000, *, n_contigs: int = 5, n_hits: int = 5,
                     n_traits: int = 1, untested: float = 0.01, seed: int = 0):
    """A result Dataset laid out as :func:`dlmm.scan` makes it (:mod:`dlmm.schema`), with
    p-values drawn, not fitted.

    For plotting and its benchmarks: p-values uniform (the null) except
    ``n_hits`` variants per trait at p = 1e-9 ... 1e-30 with their neighbours
    (a peak of 50 variants each); a fraction ``untested`` not tested (NaN).
    Contigs have equal numbers of variants at increasing positions.

    Returns
    -------
    xarray.Dataset over ``variants`` and ``traits`` (``trait_id`` trait1, ...), with
    per-trait null figures.
    """
    import xarray as xr

    from . import schema

    rng = np.random.default_rng(seed)
    m, k = n_variants, n_traits
    p = rng.uniform(size=(m, k))
    for t in range(k):
        for i, j in enumerate(rng.choice(m, size=min(n_hits, m), replace=False)):
            lo, hi = max(j - 25, 0), min(j + 25, m)
            peak = 10.0 ** -(9 + 21 * i / max(n_hits - 1, 1))
            # neighbours: in LD with the hit, weaker the further away
            p[lo:hi, t] = peak ** (1.0 / (1.0 + np.abs(np.arange(lo, hi) - j)))
    tested = rng.uniform(size=m) >= untested
    p[~tested] = np.nan
    contig = np.repeat(np.arange(n_contigs), -(-m // n_contigs))[:m].astype(np.int32)
    position = np.empty(m, dtype=np.int64)
    for c in range(n_contigs):
        sel = contig == c
        position[sel] = np.cumsum(rng.integers(1, 400, size=sel.sum()))
    beta = rng.normal(scale=0.1, size=(m, k))
    beta[np.isnan(p)] = np.nan
    dims = ("variants", "traits")
    names = np.array([str(c + 1) for c in range(n_contigs)], dtype=object)
    ds = xr.Dataset({
        "variant_lmm_p_value": (dims, p),
        "variant_lmm_beta": (dims, beta),
        "variant_lmm_beta_se": (dims, np.full((m, k), 0.1)),
        "variant_lmm_tested": (dims, np.repeat(tested[:, None], k, axis=1)),
        "variant_contig": (("variants",), contig),
        "variant_contig_name": (("variants",), names[contig]),
        "variant_position": (("variants",), position),
        "variant_id": (("variants",), np.array([f"rs{j + 1}" for j in range(m)], dtype=object)),
    }, coords={"trait_id": ("traits", np.array([f"trait{t + 1}" for t in range(k)],
                                                dtype=object))})
    null = {"vg_null": 1.0, "ve_null": 1.0, "pve_null": 0.5, "pve_se_null": 0.05,
            "mle_sigma_sq_a_null": 0.98, "mle_sigma_sq_e_null": 1.01, "n_analysed": 500,
            "n_covariates": 1}
    for key, v in null.items():
        name, dtype = schema.NULL_VARIABLES[key][:2]
        scale = 1.0 if dtype is np.int64 else 1 + 0.1 * np.arange(k)
        ds[name] = ("traits", (np.full(k, v) * scale).astype(dtype))
    ds.attrs.update(n_samples_total=510, model="additive", solver="exact", source="simulated")
    return ds
