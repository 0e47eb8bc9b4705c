"""The result schema: every variable a scan writes, its name, dtype, dims and GEMMA column.

One table says it all; the kernels, the result store, the TSV/Parquet writers, the log
and the report read it from here.  Per-variant results have dims ``(variants, traits)``
(a scan of one trait has one trait); null-model figures have dims ``(traits,)``, or
``(traits, contigs)`` for a leave-one-chromosome-out scan (each chromosome its own
null fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Variable", "TESTS", "LMM_TESTS", "VARIABLES", "NULL_VARIABLES", "parse_tests",
           "columns", "table_columns", "variable", "VARIANT_FIELDS", "primary_p_value"]

#: Association tests in canonical order: GEMMA's -lmm 2, -lmm 1, -lmm 3, and the lab's
#: fixed-effect F-test (ordinary least squares, no kinship).
TESTS = ("lrt", "wald", "score", "ols")
LMM_TESTS = ("lrt", "wald", "score")


@dataclass(frozen=True)
class Variable:
    """One result variable.

    ``key``: the kernels' column name and the TSV column (GEMMA's name where GEMMA has
    one); ``name``: the Dataset variable (sgkit's naming); ``tests``: the tests that
    compute it (empty: always); ``model``: ``"genotypic"`` for the dominance columns.
    """

    key: str
    name: str
    dtype: type
    tests: tuple[str, ...]
    description: str
    model: str | None = None


def _v(key, name, dtype, tests, description, model=None):
    return Variable(key, name, dtype, tuple(tests.split()) if tests else (), description,
                    model)


#: Per-variant variables, in the kernels' column order.
VARIABLES = (
    _v("n_miss", "variant_n_missing", np.int64, "", "missing calls among the analysed samples"),
    _v("af", "variant_allele_frequency", np.float64, "",
       "frequency of the counted allele (allele1) among the analysed samples"),
    _v("tested", "variant_lmm_tested", np.bool_, "", "passed the filters and was tested"),
    _v("logl_H1", "variant_lmm_logl", np.float64, "lrt", "ML log-likelihood with the variant"),
    _v("l_mle", "variant_lmm_lambda", np.float64, "lrt", "ML lambda = sigma_sq_a / sigma_sq_e"),
    _v("lrt", "variant_lmm_lrt_statistic", np.float64, "lrt", "2 (lnL1 - lnL0)"),
    _v("p_lrt", "variant_lmm_p_value", np.float64, "lrt", "likelihood-ratio test p-value"),
    _v("logl_remle", "variant_lmm_logl_reml", np.float64, "wald",
       "REML log-likelihood with the variant"),
    _v("l_remle", "variant_lmm_lambda_reml", np.float64, "wald", "REML lambda"),
    _v("wald", "variant_lmm_wald_statistic", np.float64, "wald", "Wald F statistic"),
    _v("p_wald", "variant_lmm_p_value_wald", np.float64, "wald", "Wald test p-value"),
    _v("score", "variant_lmm_score_statistic", np.float64, "score", "score F statistic"),
    _v("p_score", "variant_lmm_p_value_score", np.float64, "score", "score test p-value"),
    _v("beta", "variant_lmm_beta", np.float64, "lrt wald score",
       "effect of the counted allele (the Wald test's, else the ML fit's, else the score's)"),
    _v("se", "variant_lmm_beta_se", np.float64, "lrt wald score", "standard error of beta"),
    _v("beta_dom", "variant_lmm_beta_dominance", np.float64, "lrt wald score",
       "dominance effect", "genotypic"),
    _v("se_dom", "variant_lmm_beta_dominance_se", np.float64, "lrt wald score",
       "standard error of beta_dom", "genotypic"),
    _v("sigma_sq_a", "variant_lmm_sigma_sq_a", np.float64, "lrt", "ML sigma_sq_a"),
    _v("sigma_sq_e", "variant_lmm_sigma_sq_e", np.float64, "lrt", "ML sigma_sq_e"),
    _v("iterations", "variant_lmm_iterations", np.int64, "lrt", "iterations of the ML fit"),
    _v("iterations_remle", "variant_lmm_iterations_reml", np.int64, "wald",
       "iterations of the REML fit"),
    _v("beta_ols", "variant_linreg_beta", np.float64, "ols",
       "least-squares effect of the counted allele (no kinship)"),
    _v("se_ols", "variant_linreg_beta_se", np.float64, "ols", "standard error of beta_ols"),
    _v("f_ols", "variant_linreg_f_statistic", np.float64, "ols",
       "F statistic of the variant's columns (the lab's fixed-effect baseline)"),
    _v("p_ols", "variant_linreg_p_value", np.float64, "ols", "least-squares F-test p-value"),
)

_BY_KEY = {v.key: v for v in VARIABLES}
_BY_NAME = {v.name: v for v in VARIABLES}

#: Null-model figures: key (as GEMMA's log names them) -> (variable, dtype, per contig
#: under LOCO, the log's line).
NULL_VARIABLES = {
    "n_analysed": ("trait_n_analysed", np.int64, False, "number of analyzed individuals"),
    "n_covariates": ("trait_n_covariates", np.int64, False, "number of covariates"),
    "kinship_rank": ("null_kinship_rank", np.int64, True, None),
    "remle_logl_null": ("null_remle_logl", np.float64, True, "REMLE log-likelihood"),
    "mle_logl_null": ("null_mle_logl", np.float64, True, "MLE log-likelihood"),
    "pve_null": ("null_pve", np.float64, True, "pve estimate"),
    "pve_se_null": ("null_pve_se", np.float64, True, "se(pve)"),
    "vg_null": ("null_vg", np.float64, True, "vg estimate"),
    "ve_null": ("null_ve", np.float64, True, "ve estimate"),
    "remle_lambda_null": ("null_remle_lambda", np.float64, True, "REMLE lambda"),
    "mle_lambda_null": ("null_mle_lambda", np.float64, True, "MLE lambda"),
    "mle_sigma_sq_a_null": ("null_mle_sigma_sq_a", np.float64, True, "MLE sigma_sq_a"),
    "mle_sigma_sq_e_null": ("null_mle_sigma_sq_e", np.float64, True, "MLE sigma_sq_e"),
    "em_logl_null": ("null_em_logl", np.float64, True, "EM log-likelihood"),
}

#: The variant fields a result carries beside the tests' variables (dims ``variants``).
VARIANT_FIELDS = ("variant_id", "variant_contig", "variant_contig_name", "variant_position",
                  "variant_allele1", "variant_allele0")

#: GEMMA's table: -lmm 2's columns for the LRT alone, -lmm 4's order otherwise.
_GEMMA_LRT = ("logl_H1", "l_mle", "p_lrt", "beta", "se")
_GEMMA_TESTS = ("beta", "se", "logl_H1", "l_remle", "l_mle", "p_wald", "p_lrt", "p_score")
_TABLE_TAIL = ("beta_dom", "se_dom", "sigma_sq_a", "sigma_sq_e", "iterations",
               "iterations_remle", "beta_ols", "se_ols", "p_ols")


#: The p-value a report plots, the first a result holds.
_PRIMARY_P = ("variant_lmm_p_value", "variant_lmm_p_value_wald", "variant_lmm_p_value_score",
              "variant_linreg_p_value")


def primary_p_value(names) -> str:
    """The p-value variable plots and top hits use: the LRT's, else Wald's, else the
    score test's, else least squares'."""
    names = set(names)
    return next(v for v in _PRIMARY_P if v in names)


def parse_tests(test: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"lrt"``, ``"wald,score"``, ``"all"`` (GEMMA -lmm 4: the three LMM tests) or a
    sequence -> tests in canonical order.  Raises ValueError naming the unknown ones."""
    names = test.split(",") if isinstance(test, str) else list(test)
    names = [t.strip() for t in names]
    if "all" in names:
        names = [t for t in names if t != "all"] + list(LMM_TESTS)
    bad = [t for t in names if t not in TESTS]
    if bad or not names:
        raise ValueError(f"unknown test {', '.join(map(repr, bad)) or repr(test)}")
    return tuple(t for t in TESTS if t in names)


def columns(model: str, tests) -> list[Variable]:
    """The per-variant variables a scan of ``model`` and ``tests`` computes, in the
    kernels' column order."""
    tests = parse_tests(tests)
    return [v for v in VARIABLES
            if (not v.tests or set(v.tests) & set(tests))
            and (v.model is None or v.model == model)]


def variable(key_or_name: str) -> Variable:
    """A variable by its key (``p_lrt``) or its name (``variant_lmm_p_value``)."""
    return _BY_KEY.get(key_or_name) or _BY_NAME[key_or_name]


def table_columns(names) -> list[str]:
    """The GEMMA-style table's test columns (keys) for a result holding the variables
    ``names``: -lmm 2's order for the LRT alone, -lmm 4's with the Wald or score test,
    then the dominance, variance, iteration and least-squares columns present."""
    keys = {variable(n).key for n in names if n in _BY_NAME}
    lrt_only = not keys & {"p_wald", "p_score"}
    head = _GEMMA_LRT if lrt_only else _GEMMA_TESTS
    return [k for k in head + _TABLE_TAIL if k in keys or (k == "logl_H1" and "logl_remle" in keys
                                                            and not lrt_only)]
