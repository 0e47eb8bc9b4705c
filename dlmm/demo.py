"""``dlmm demo``: the main job on a built-in, seeded data set."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from . import outputs
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
    tmp = outputs.partial_path(prefix)
    try:
        to_bed(f"{tmp}.bed", sim["dosage"].T.astype(np.float32), properties=props,
               count_A1=True)
        for ext in (".fam", ".bim", ".bed"):  # the .bed last: its presence means a fileset
            os.replace(f"{tmp}{ext}", f"{prefix}{ext}")
    except OSError as e:
        raise outputs.os_error(Path(f"{prefix}.bed"), e) from None
    finally:  # a failure or an interrupt leaves no half-written file
        for ext in (".fam", ".bim", ".bed"):
            Path(f"{tmp}{ext}").unlink(missing_ok=True)
    return sim


def run_demo(out: str | os.PathLike = "dlmm-demo", *, seed: int = 1, n_families: int = 150,
             n_variants: int = 20_000, overwrite: bool = False, client=None, echo=print,
             on_block=None):
    """Simulate, write PLINK files to ``out/``, scan them with the GRM (:func:`dlmm.run`),
    print the top hits.  Returns the :class:`~dlmm.pipeline.RunResult`."""
    from .errors import OptionError
    from .export import to_gemma_table
    from .options import ScanOptions
    from .pipeline import check_outputs, execute, output_paths, plan

    for name, v in (("families", n_families), ("variants", n_variants)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise OptionError(name, f"{v!r} is not a positive whole number", "give 1 or more")
    out = Path(out)
    prefix = out / "demo"
    if out.exists() and not out.is_dir():
        raise OptionError("out", f"{out} is a file", "give a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise outputs.os_error(out, e, "choose another --out") from None
    try:
        outputs.check_unlocked(prefix)
        outputs.check_new([Path(f"{prefix}{e}") for e in (".bed", ".bim", ".fam")],
                          overwrite)
        check_outputs(output_paths(prefix, ("pheno1",), ScanOptions()), overwrite,
                      resume=False)
        with outputs.lock(prefix):  # from the genotypes written to the scan's last output
            sim = write_demo_plink(prefix, seed=seed, n_families=n_families,
                                   n_variants=n_variants, n_causal=min(5, n_variants))
            echo(f"simulated {sim['phenotype'].size} samples in {n_families} families x "
                 f"{n_variants} variants: {prefix}.bed/.bim/.fam")
            result = execute(plan(prefix, out=prefix, overwrite=overwrite), client=client,
                             echo=echo, on_block=on_block)
    except BaseException:
        if created:  # the folder made for this run, if nothing was kept in it
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    table = to_gemma_table(result.results)
    top = table.nsmallest(10, "p_lrt")[["chr", "rs", "ps", "af", "beta", "se", "p_lrt"]]
    causal = {f"snp{j + 1}" for j in sim["causal"]}
    top.insert(0, "causal", ["*" if r in causal else "" for r in top["rs"]])
    echo("\ntop hits (* = simulated causal variant):")
    echo(top.to_string(index=False))
    return result
