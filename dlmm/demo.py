"""``dlmm demo``: the main job on a built-in, seeded data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .simulate import simulate_families

__all__ = ["write_demo_plink", "run_demo"]


def write_demo_plink(prefix: str | Path, *, seed: int = 1, n_families: int = 150,
                     n_variants: int = 20_000, n_causal: int = 5) -> dict:
    """Simulate nuclear families (2 parents, 3 children) and write PLINK files.

    Five chromosomes; ``n_causal`` causal variants of effect 0.8 (trait
    variance components sa2 = 1, se2 = 1); 1% missing calls.  Returns the
    simulation (see :func:`dlmm.simulate.simulate_families`).
    """
    from bed_reader import to_bed

    sim = simulate_families(n_families=n_families, n_children=3, n_variants=n_variants,
                            n_causal=n_causal, effect=0.8, sigma_sq_a=1.0, sigma_sq_e=1.0,
                            mean=0.0, n_contigs=5, missing_rate=0.01, seed=seed)
    n = sim["phenotype"].shape[0]
    fam = sim["family"]
    iid = [f"f{f}_{i}" for i, f in enumerate(fam)]
    rng = np.random.default_rng(seed + 1)
    bases = np.array(list("ACGT"))
    a1 = bases[rng.integers(0, 4, n_variants)]
    a2 = bases[(np.searchsorted(bases, a1) + rng.integers(1, 4, n_variants)) % 4]
    props = {
        "fid": [f"f{f}" for f in fam], "iid": iid,
        "father": ["0"] * n, "mother": ["0"] * n, "sex": [0] * n,
        "pheno": [f"{v:.6f}" for v in sim["phenotype"]],
        "chromosome": [str(c + 1) for c in sim["contig"]],
        "sid": [f"snp{j + 1}" for j in range(n_variants)],
        "cm_position": [0.0] * n_variants, "bp_position": sim["position"],
        "allele_1": a1, "allele_2": a2,
    }
    to_bed(f"{prefix}.bed", sim["dosage"].T.astype(np.float32), properties=props,
           count_A1=True)
    return sim


def run_demo(out: str | Path = "dlmm-demo", *, seed: int = 1, n_families: int = 150,
             n_variants: int = 20_000, scheduler: str | None = None, dashboard: bool = True,
             cluster_options: dict | None = None):
    """Simulate, write PLINK files to ``out/``, scan with the GRM, print the top hits
    (on ``scheduler``, or a local cluster sized by ``cluster_options``: see
    :func:`dlmm.cluster.client_for`)."""
    from . import io
    from .cli import run_scan

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "demo"
    sim = write_demo_plink(prefix, seed=seed, n_families=n_families, n_variants=n_variants)
    ds = io.read_plink(prefix)
    y = io.read_fam_phenotype(prefix)
    print(f"simulated {y.size} samples in {n_families} families x {n_variants} variants: "
          f"{prefix}.bed/.bim/.fam")
    tsv, res = run_scan(ds, y, out=str(out / "demo"), overwrite=True, scheduler=scheduler,
                        dashboard=dashboard, cluster_options=cluster_options,
                        sources={"phenotype_source": f"{prefix}.fam"})
    from .store import to_gemma_table

    table = to_gemma_table(res)
    top = table.nsmallest(10, "p_lrt")[["chr", "rs", "ps", "af", "beta", "se", "p_lrt"]]
    causal = {f"snp{j + 1}" for j in sim["causal"]}
    top.insert(0, "causal", ["*" if r in causal else "" for r in top["rs"]])
    print("\ntop hits (* = simulated causal variant):")
    print(top.to_string(index=False))
    return tsv, res
