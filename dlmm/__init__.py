"""dlmm: Dask-distributed, out-of-core linear mixed model association scans.

The public API is imported lazily, so that ``import dlmm`` (and the CLI's
``--help``) stays fast.
"""

from __future__ import annotations

import importlib

__all__ = [
    "InputError",
    "NullModel",
    "fit_null_model",
    "grm",
    "grm_factor",
    "plot",
    "prepare",
    "read_covariates",
    "read_fam_phenotype",
    "read_kinship",
    "read_phenotype",
    "read_plink",
    "read_text_genotypes",
    "report",
    "scan",
    "simulate_families",
    "to_gemma_table",
    "write_tsv",
]

_WHERE = {
    "InputError": "errors",
    "NullModel": "nullmodel",
    "fit_null_model": "nullmodel",
    "grm": "kinship",
    "grm_factor": "kinship",
    "prepare": "scanner",
    "read_covariates": "io",
    "read_fam_phenotype": "io",
    "read_kinship": "io",
    "read_phenotype": "io",
    "read_plink": "io",
    "read_text_genotypes": "io",
    "scan": "scanner",
    "simulate_families": "simulate",
    "to_gemma_table": "store",
    "write_tsv": "store",
}


#: submodules that are part of the API (HoloViews and Bokeh load on first use)
_MODULES = {"plot", "report"}


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"dlmm.{name}")
    if name in _WHERE:
        return getattr(importlib.import_module(f"dlmm.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dlmm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
