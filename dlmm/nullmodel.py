"""The null model (no variant), fitted once and shared by every variant."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kernels

__all__ = ["NullModel", "fit_null_model", "fit_null_rotated", "null_figures"]


@dataclass
class NullModel:
    """Eigendecomposition, rotated data and null fits shared by all variants.

    Attributes
    ----------
    s : (r,) kinship eigenvalues (those below ``kernels.EIGEN_TOL`` set to 0).
    U : (n, r) eigenvectors: a numpy array for the full rank (r = n); in the
        low-rank mode (r < n) chunked over samples, a :class:`dlmm.sharded.DiskRows`
        or a Dask array (:mod:`dlmm.sharded`), or None.
    W : (n, c) covariates; Wr = U^T W.   yr : (r,) U^T y.   y : (n,) the phenotype.
    ml : the ML null fit (``kernels.Fit`` of one row): logl, lam, beta,
        sigma_sq_a, sigma_sq_e.
    em : the classic-EM null fit (same form), when the EM solver is used.
    reml_lam, reml_logl, vg, ve : the REML null estimates.
    pve, pve_se : proportion of variance explained by the kinship (REML),
        ``tr(K)/n * lam / (tr(K)/n * lam + 1)``, and its standard error, as
        GEMMA reports them.
    n_samples : n, the analysed samples.
    """

    s: np.ndarray
    U: object
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
    n_samples: int = 0

    @property
    def n(self) -> int:
        return self.n_samples

    @property
    def rank(self) -> int:
        """Number of eigenvectors kept (n unless low-rank)."""
        return self.s.shape[0]

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
    """Eigendecompose the kinship and fit the null model ``y = W b + a + e`` (full rank).

    Parameters
    ----------
    y : (n,) phenotype of the analysed samples.
    W : (n, c) covariates (with the intercept column).
    kinship : (n, n) kinship of the analysed samples.
    em : also fit the null by the classic EM (for the ``em`` solver's LRT).
    eig : ``(s, U)`` from ``kernels.eigh_kinship(kinship)``, to share one
        eigendecomposition between traits (default: computed here).  The
        low-rank mode (thin U) is :func:`dlmm.sharded.lowrank_nulls`.

    Returns
    -------
    NullModel
    """
    s, U = kernels.eigh_kinship(kinship) if eig is None else eig
    n = U.shape[0]
    if U.shape[1] != n:
        raise ValueError("fit_null_model takes a full eigenbasis; a thin one: "
                         "dlmm.sharded.lowrank_nulls")
    Wr = kernels.rotate(U, W.T).T
    yr = kernels.rotate(U, y)
    return fit_null_rotated(s, Wr, yr, n=n, em=em, em_tol=em_tol, em_max_iter=em_max_iter,
                            U=U, W=W, y=y)


def fit_null_rotated(s: np.ndarray, Wr: np.ndarray, yr: np.ndarray, *, n: int,
                     rest: np.ndarray | None = None, em: bool = False, em_tol: float = 1e-5,
                     em_max_iter: int = 100, U=None, W: np.ndarray | None = None,
                     y: np.ndarray | None = None) -> NullModel:
    """Fit the null model from the rotated covariates and phenotype.

    Parameters
    ----------
    s : (r,) eigenvalues; Wr : (r, c) = U^T W; yr : (r,) = U^T y.
    n : the number of analysed samples.
    rest : low-rank mode (r < n): the (1, c + 1, c + 1) Gram of ``[W, y]``
        outside U's span (:func:`dlmm.kernels.lowrank_rest`); None for a full
        eigenbasis.
    em, em_tol, em_max_iter : as in :func:`fit_null_model`.
    U, W, y : kept in the NullModel (W, y: (n, c), (n,) on the analysed samples).

    Returns
    -------
    NullModel
    """
    lowrank = dict(n=n, rest=rest)
    no_variant = np.zeros((1, 0, s.shape[0]))
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
    return NullModel(s=s, U=U, W=W, Wr=Wr, yr=yr,
                     y=None if y is None else np.asarray(y, dtype=np.float64),
                     ml=ml, reml_lam=lam,
                     reml_logl=float(reml.logl[0]), vg=float(reml.sigma_sq_a[0]),
                     ve=float(reml.sigma_sq_e[0]), pve=float(pve), pve_se=float(pve_se),
                     em=em_fit, n_samples=int(n))


def null_figures(nulls: list[NullModel], solver: str, em_start: str) -> dict:
    """Per trait, what a block's tests take from the null fits: the solver's null lnL,
    the ML lambda (the score test's), the REML lambda (where the Wald test's fits
    start), EM's start (None: the classic one)."""
    fits = [x.em if solver == "em" else x.ml for x in nulls]
    starts = None
    if solver == "em" and em_start == "null":
        starts = [(x.ml.beta[0], x.ml.sigma_sq_a[0], x.ml.sigma_sq_e[0]) for x in nulls]
    return {"logl_null": np.array([float(f.logl[0]) for f in fits]),
            "lam_null": np.array([float(x.ml.lam[0]) for x in nulls]),
            "lam_reml": np.array([x.reml_lam for x in nulls]), "null_start": starts}
