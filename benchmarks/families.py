"""Simulated families as PLINK files, of any size, written chunk by chunk (for benchmarks).

Nuclear families (two founders and three children) whose founders come from four
populations (Balding-Nichols, Fst 0.05); unlinked variants on ten chromosomes; a trait
made of 10 strong causal variants (0.4 % of the variance each), 1,000 small ones (40 %
together), population means (5 %) and noise. The .bed is written one chunk of variants
at a time (a chunk's genotypes are the only ones in memory), the .fam last, with the
trait in column 6. ``causal.txt`` beside the files lists the causal variants' ids, so a
benchmark can take lambda_GC over the null ones.

    python benchmarks/families.py OUT_PREFIX --samples 10000 --variants 20000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

FAMILY = 5  # two founders, three children
N_POPULATIONS = 4
N_CONTIGS = 10


def _chunk_genotypes(rng, n: int, m: int, fst: float) -> np.ndarray:
    """(m, n) int8 counts of allele A1 for families in sample order."""
    n_fam = -(-n // FAMILY)
    pop = np.arange(n_fam) % N_POPULATIONS
    p = rng.uniform(0.05, 0.5, m)
    a, b = p * (1 - fst) / fst, (1 - p) * (1 - fst) / fst
    freq = rng.beta(a[:, None], b[:, None], (m, N_POPULATIONS))[:, pop]  # (m, families)
    founders = rng.random((m, n_fam, 2, 2)) < freq[:, :, None, None]  # variant, fam, parent, hap
    g = np.empty((m, n_fam, FAMILY), dtype=np.int8)
    g[:, :, :2] = founders.sum(axis=3)
    for c in range(FAMILY - 2):  # one allele of each parent, at random
        pick = rng.integers(0, 2, (m, n_fam, 2))
        father = np.take_along_axis(founders[:, :, 0], pick[:, :, :1], axis=2)[..., 0]
        mother = np.take_along_axis(founders[:, :, 1], pick[:, :, 1:], axis=2)[..., 0]
        g[:, :, 2 + c] = father.astype(np.int8) + mother
    return g.reshape(m, n_fam * FAMILY)[:, :n]


def _pack_bed(g: np.ndarray) -> bytes:
    """(m, n) 0/1/2 counts of A1 -> variant-major .bed rows (00 = two A1, 10 = one, 11 = none)."""
    code = np.array([3, 2, 0], dtype=np.uint8)[g]
    m, n = code.shape
    pad = np.zeros((m, -n % 4), dtype=np.uint8)
    q = np.concatenate([code, pad], axis=1).reshape(m, -1, 4)
    return (q[..., 0] | q[..., 1] << 2 | q[..., 2] << 4 | q[..., 3] << 6).tobytes()


def write_families(prefix: str | os.PathLike, n: int, m: int, *, seed: int = 1,
                   n_strong: int = 10, n_small: int = 1000, fst: float = 0.05,
                   chunk: int | None = None) -> Path:
    """Write ``prefix.bed/.bim/.fam`` (n samples, m variants) and ``prefix.causal.txt``,
    unless they exist (each file is written under a temporary name and renamed, the .fam
    last). Returns the prefix."""
    prefix = Path(prefix)
    fam = Path(f"{prefix}.fam")
    if fam.exists():
        return prefix
    rng = np.random.default_rng([seed, n, m])
    causal = np.sort(rng.choice(m, n_strong + n_small, replace=False))
    strong = set(rng.choice(causal, n_strong, replace=False).tolist())
    beta = np.where(np.isin(causal, list(strong)), np.sqrt(0.004),
                    np.sqrt(0.40 / max(n_small, 1)))
    g_sum = np.zeros(n)
    chunk = chunk or max(16, min(1000, 20_000_000 // n))  # ~0.5 GB of draws at most
    bed = Path(f"{prefix}.bed.partial")
    with open(bed, "wb") as out:
        out.write(b"\x6c\x1b\x01")
        for start in range(0, m, chunk):
            stop = min(start + chunk, m)
            g = _chunk_genotypes(np.random.default_rng([seed, n, m, start]), n, stop - start, fst)
            out.write(_pack_bed(g))
            for j in np.flatnonzero((causal >= start) & (causal < stop)):
                x = g[causal[j] - start].astype(np.float64)
                g_sum += beta[j] * (x - x.mean()) / max(x.std(), 1e-12)
    contig = np.repeat(np.arange(1, N_CONTIGS + 1), -(-m // N_CONTIGS))[:m]
    pos = np.concatenate([np.cumsum(rng.integers(1_000, 20_000, int((contig == c).sum())))
                          for c in range(1, N_CONTIGS + 1)])
    bim = Path(f"{prefix}.bim.partial")
    with open(bim, "w") as out:
        for j in range(m):
            out.write(f"{contig[j]}\tv{j}\t0\t{pos[j]}\tA\tG\n")
    pop = (np.arange(n) // FAMILY) % N_POPULATIONS
    y = g_sum + np.sqrt(0.05) * (pop - pop.mean()) / max(pop.std(), 1e-12)
    y += np.sqrt(max(1.0 - np.var(y), 0.1)) * rng.standard_normal(n)
    Path(f"{prefix}.causal.txt").write_text("".join(f"v{j}\n" for j in causal))
    tmp = Path(f"{prefix}.fam.partial")
    with open(tmp, "w") as out:
        for i in range(n):
            f = i // FAMILY
            k = i % FAMILY
            dad, mum = (f"f{f}_0", f"f{f}_1") if k >= 2 else ("0", "0")
            out.write(f"f{f}\tf{f}_{k}\t{dad}\t{mum}\t{1 + k % 2}\t{y[i]:.6f}\n")
    os.replace(bed, f"{prefix}.bed")
    os.replace(bim, f"{prefix}.bim")
    os.replace(tmp, fam)
    return prefix


def causal_variants(prefix: str | os.PathLike) -> set[str]:
    """The ids of the causal variants of a set written by :func:`write_families`."""
    return set(Path(f"{prefix}.causal.txt").read_text().split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix")
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(write_families(a.prefix, a.samples, a.variants, seed=a.seed))


if __name__ == "__main__":
    main()
