"""Write the data set of the classic-EM reference table (run once, committed).

    python tests/data/em_reference/make_data.py && Rscript tests/data/em_reference/classic_em.R tests/data/em_reference

30 nuclear families of 5 (n = 150, pedigree kinship A, non-singular), 40 unlinked
variants in the lab's -1/0/1 coding, two causal.  The trait's scale (sa2 = 20,
se2 = 20, mean 0.5) lets the classic start (70, 10, b = 0) converge in 62-92
iterations, below the lab's cap of 98 updates, so iteration counts are tested.  Small
enough for the tests to re-run R on every variant (about 80 dense EM fits of ~75
iterations, n x n ginv each; at n = 300 one fit took 2.4 s).
"""
from pathlib import Path

import numpy as np

from dlmm.simulate import simulate_families

here = Path(__file__).parent
sim = simulate_families(n_families=30, n_children=3, n_variants=40, n_causal=2, effect=4.0,
                        sigma_sq_a=20.0, sigma_sq_e=20.0, mean=0.5, seed=20261128)
np.savetxt(here / "X.txt", (sim["dosage"] - 1).T.astype(int), fmt="%d")
np.savetxt(here / "Y.txt", sim["phenotype"], fmt="%.17g")
np.savetxt(here / "A.txt", sim["kinship"], fmt="%.17g")
print("causal variants (1-based):", sim["causal"] + 1)
