"""The null model (no variant), fitted once and shared by every variant."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kernels

__all__ = ["NullModel", "fit_null_model"]


@dataclass
class NullModel:
    """Eigendecomposition, rotated data and null fits shared by all variants.

    Attributes
    ----------
    s : (r,) kinship eigenvalues (those below ``kernels.EIGEN_TOL`` set to 0).
    U : (n, r) eigenvectors; r = n, or r < n in the low-rank mode.
    W : (n, c) covariates; Wr = U^T W.   yr : (r,) U^T y.   y : (n,) the phenotype.
    ml : the ML null fit (``kernels.Fit`` of one row): logl, lam, beta,
        sigma_sq_a, sigma_sq_e.
    em : the classic-EM null fit (same form), when the EM solver is used.
    reml_lam, reml_logl, vg, ve : the REML null estimates.
    pve, pve_se : proportion of variance explained by the kinship (REML),
        ``tr(K)/n * lam / (tr(K)/n * lam + 1)``, and its standard error, as
        GEMMA reports them.
    """

    s: np.ndarray
    U: np.ndarray
    W: np.ndarray
    Wr: np.ndarray
    yr: np.ndarray
    ml: kernels.Fit
    reml_lam: float
    reml_logl: float
    vg: float
    ve: float
    pve: float
    pve_se: float
    em: kernels.Fit | None = field(default=None)
    y: np.ndarray | None = field(default=None)

    @property
    def n(self) -> int:
        return self.U.shape[0]

    @property
    def rank(self) -> int:
        """Number of eigenvectors kept (n unless low-rank)."""
        return self.U.shape[1]

    def summary(self) -> dict[str, float]:
        """Null-model figures, named as GEMMA's log names them."""
        return {
            "n_analysed": self.n,
            "n_covariates": self.W.shape[1],
            "kinship_rank": self.rank,
            "mle_logl_null": float(self.ml.logl[0]),
            "mle_lambda_null": float(self.ml.lam[0]),
            "mle_sigma_sq_a_null": float(self.ml.sigma_sq_a[0]),
            "mle_sigma_sq_e_null": float(self.ml.sigma_sq_e[0]),
            "remle_logl_null": self.reml_logl,
            "remle_lambda_null": self.reml_lam,
            "vg_null": self.vg,
            "ve_null": self.ve,
            "pve_null": self.pve,
            "pve_se_null": self.pve_se,
        }


def fit_null_model(y: np.ndarray, W: np.ndarray, kinship: np.ndarray, *,
                   em: bool = False, em_tol: float = 1e-5, em_max_iter: int = 100,
                   eig: tuple[np.ndarray, np.ndarray] | None = None) -> NullModel:
    """Eigendecompose the kinship and fit the null model ``y = W b + a + e``.

    Parameters
    ----------
    y : (n,) phenotype of the analysed samples.
    W : (n, c) covariates (with the intercept column).
    kinship : (n, n) kinship of the analysed samples.
    em : also fit the null by the classic EM (for the ``em`` solver's LRT).
    eig : ``(s, U)`` from ``kernels.eigh_kinship(kinship)``, to share one
        eigendecomposition between traits (default: computed here); a thin
        U (n, r < n) fits the low-rank model (``kinship`` is then not used).

    Returns
    -------
    NullModel
    """
    s, U = kernels.eigh_kinship(kinship) if eig is None else eig
    n, r = U.shape
    Wr = kernels.rotate(U, W.T).T
    yr = kernels.rotate(U, y)
    rest = None
    if r < n:
        rest = kernels.lowrank_rest(np.column_stack([W, y]), np.column_stack([Wr, yr]))
    lowrank = dict(n=n, rest=rest)
    no_variant = np.zeros((1, 0, r))
    ml = kernels.fit_exact(s, Wr, yr, no_variant, **lowrank)
    reml = kernels.fit_exact(s, Wr, yr, no_variant, reml=True, **lowrank)
    lam = float(reml.lam[0])
    trace_g = s.sum() / n
    curv = kernels.profile_curvature(s, Wr, yr, lam, reml=True, **lowrank)
    pve = trace_g * lam / (trace_g * lam + 1.0)
    pve_se = trace_g / (trace_g * lam + 1.0) ** 2 * np.sqrt(-1.0 / curv)
    em_fit = None
    if em:
        em_fit = kernels.fit_em(s, Wr, yr, no_variant, tol=em_tol, max_iter=em_max_iter,
                                **lowrank)
    return NullModel(s=s, U=U, W=W, Wr=Wr, yr=yr, y=np.asarray(y, dtype=np.float64),
                     ml=ml, reml_lam=lam,
                     reml_logl=float(reml.logl[0]), vg=float(reml.sigma_sq_a[0]),
                     ve=float(reml.sigma_sq_e[0]), pve=float(pve), pve_se=float(pve_se),
                     em=em_fit)
