"""The low-rank scan of one block of variants from sums over chunks of samples.

In the low-rank mode (FaST-LMM) the kinship is ``U1 diag(s) U1^T`` with U1 (n, r),
r < n, and a variant's likelihood needs only ``U1'x`` (r,), the Gram of
``[W, x, y]`` (sums over samples) and the null model's rotated ``U1'W``, ``U1'y``:
the part of ``[W, x, y]`` outside U1's span enters through the difference of
the two Grams (:func:`dlmm.kernels.lowrank_rest`).  Each of these is a sum over
samples, so a block is computed chunk by chunk of samples
(:func:`chunk_sums`, one ``U1`` chunk at a time), the chunks' sums added
(:func:`dlmm.sums.combine`), and the block tested from the total
(:func:`lowrank_block`), with no worker holding U1 or the block's n samples
at once.  The dask wiring is :mod:`dlmm.sharded`; no dask here.
"""

from __future__ import annotations

import numpy as np

from . import kernels, sums

__all__ = ["chunk_sums", "imputed_sums", "lowrank_block", "null_grams"]


def chunk_sums(dosage: np.ndarray, analysed: np.ndarray, U: np.ndarray, F: np.ndarray,
               model: str = "additive") -> dict[str, np.ndarray]:
    """The sums of one block of variants on one chunk of samples.

    Parameters
    ----------
    dosage : (m, N_c) dosages on the chunk's samples (NaN for missing), all of them.
    analysed : (N_c,) bool, the chunk's analysed samples (n_c of them).
    U : (n_c, r) their rows of U1; F : (n_c, c + t) their ``[W, Y]``.
    model : ``"additive"`` or ``"genotypic"``.

    Returns
    -------
    :func:`dlmm.sums.variant_sums` with ``xf``, ``mf``, ``xu``, ``miss_rows``, ``mu``.
    """
    return sums.variant_sums(kernels.analysed(dosage, analysed), F=F, U=U, model=model)


def _miss_rows(total: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(len(rows), r): ``U1'miss`` of the variants ``rows`` (sorted), dense."""
    out = np.zeros((rows.size, total["xu"].shape[2]))
    pos = np.searchsorted(rows, total["miss_rows"])
    hit = pos < rows.size
    hit[hit] = rows[pos[hit]] == total["miss_rows"][hit]
    out[pos[hit]] = total["mu"][hit]
    return out


def imputed_sums(total: dict[str, np.ndarray], rows: np.ndarray, mean: np.ndarray,
                 model: str = "additive"):
    """The sums of the variants ``rows`` (sorted) with missing calls at their ``mean``
    (m,): ``U1'X_j`` (m_t, k, r), ``X_j'F`` (m_t, k, f), ``X_j'X_j`` (m_t, k, k)."""
    v = sums.impute_values(mean[rows], model)  # (m_t, k): the imputed value
    nm = total["counts"][rows, 3].astype(np.float64)
    Xr = total["xu"][rows] + v[:, :, None] * _miss_rows(total, rows)[:, None, :]
    FX = total["xf"][rows] + v[:, :, None] * total["mf"][rows][:, None, :]
    XX = total["xx"][rows] + v[:, :, None] * v[:, None, :] * nm[:, None, None]
    return Xr, FX, XX


def lowrank_block(total: dict[str, np.ndarray], *, s: np.ndarray, Fr: np.ndarray,
                  FF: np.ndarray, c: int, n: int, logl_null, lam_null=None, lam_reml=None,
                  null_start=None, model: str = "additive", solver: str = "exact",
                  tests=("lrt",), maf: float = 0.01, max_missing: float = 0.05,
                  em_tol: float = 1e-5, em_max_iter: int = 100) -> np.ndarray:
    """Filter, impute and test one block of variants from its sums over all samples.

    Parameters
    ----------
    total : the block's :func:`chunk_sums` added over every chunk of samples.
    s : (r,) eigenvalues; Fr : (r, c + t) = U1'[W, Y]; FF : (c + t, c + t) = F'F.
    c : covariate columns; n : analysed samples.
    logl_null, lam_null, lam_reml, null_start, model, solver, tests, maf, max_missing,
        em_tol, em_max_iter : as in :func:`dlmm.kernels.scan_block` (per trait: (t,)).

    Returns
    -------
    (m, t, len(kernels.result_columns(model, tests))): the columns of
    :func:`dlmm.kernels.scan_block`, with its NaN conventions.
    """
    tests = kernels._check_tests(tests)
    st = sums.filters(total, n, WtW=FF[:c, :c], maf=maf, max_missing=max_missing,
                      model=model)
    t = FF.shape[0] - c
    traits = kernels.trait_args(t, logl_null, lam_null, null_start, lam_reml, tests)
    cols = kernels.result_columns(model, tests)
    out = kernels.block_out(st, t, cols)
    rows = np.flatnonzero(st["tested"])
    if rows.size == 0:
        return out
    Xr, FX, XX = imputed_sums(total, rows, st["mean"], model)
    lmm = tuple(v for v in tests if v != "ols")
    for j, tr in enumerate(traits):
        FFj, Frj = null_grams(FF, Fr, c, j)
        FXj = FX[..., np.r_[np.arange(c), c + j]]
        if "ols" in tests:
            kernels.put_columns(out, rows, j, cols, kernels.ols_columns(kernels.ols_gram(
                FFj, FXj, XX, n)))
        if not lmm:
            continue
        if "wald" in lmm and tr["lam_reml"] is None:
            tr["lam_reml"] = kernels.null_reml_lambda(s, Frj[:, :c], Frj[:, c], n,
                                                       kernels.lowrank_rest(FFj, Frj))
        kernels.put_columns(out, rows, j, cols, kernels.lmm_columns(
            Xr, s=s, Wr=Frj[:, :c], yr=Frj[:, c], solver=solver, em_tol=em_tol,
            em_max_iter=em_max_iter, tests=lmm, n=n, model=model,
            rest=kernels.lowrank_rest(FFj, Frj, FXj, Xr, XX), **tr))
    return out


def null_grams(FF: np.ndarray, Fr: np.ndarray, c: int, j: int):
    """Trait j's ``[W, y_j]`` blocks of ``F'F`` (f, f) and ``Fr = U1'F`` (r, f), with
    ``F = [W (c), Y (t)]``: ``(FF_j (c + 1, c + 1), Fr_j (r, c + 1))``."""
    idx = np.r_[np.arange(c), c + j]
    return FF[np.ix_(idx, idx)], Fr[:, idx]
