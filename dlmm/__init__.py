"""dlmm: Dask-distributed, out-of-core linear mixed model association scans.

The whole job is one call, :func:`run` (what ``dlmm scan`` does); :func:`scan` is its
lazy core.  The public API is imported lazily, so that ``import dlmm`` (and the
command line's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib

__all__ = [
    "DlmmWarning",
    "GrmOptions",
    "InputError",
    "NullModel",
    "OptionError",
    "ScanOptions",
    "__version__",
    "client_for",
    "convert",
    "execute",
    "fit_null_model",
    "grm",
    "grm_factor",
    "load_results",
    "open_genotypes",
    "open_results",
    "open_store",
    "plan",
    "plot",
    "read_fam_phenotype",
    "read_kinship",
    "read_plink",
    "read_sample_table",
    "read_text_genotypes",
    "report",
    "run",
    "run_demo",
    "run_grm",
    "scan",
    "simulate_families",
    "to_gemma_table",
    "write_demo_plink",
    "write_kinship_text",
    "write_kinship_zarr",
    "write_parquet",
    "write_results",
    "write_tsv",
]

_WHERE = {
    "DlmmWarning": "errors",
    "GrmOptions": "options",
    "InputError": "errors",
    "NullModel": "nullmodel",
    "OptionError": "errors",
    "ScanOptions": "options",
    "client_for": "cluster",
    "convert": "store",
    "execute": "pipeline",
    "fit_null_model": "nullmodel",
    "grm": "kinship",
    "grm_factor": "kinship",
    "load_results": "results",
    "open_genotypes": "formats",
    "open_results": "results",
    "open_store": "io",
    "plan": "pipeline",
    "read_fam_phenotype": "io",
    "read_kinship": "io",
    "read_plink": "io",
    "read_sample_table": "samples",
    "read_text_genotypes": "io",
    "run": "pipeline",
    "run_demo": "demo",
    "run_grm": "pipeline",
    "scan": "scanner",
    "simulate_families": "simulate",
    "to_gemma_table": "export",
    "write_demo_plink": "demo",
    "write_kinship_text": "store",
    "write_kinship_zarr": "store",
    "write_parquet": "export",
    "write_results": "results",
    "write_tsv": "export",
}


#: submodules that are part of the API (HoloViews and Bokeh load on first use)
_MODULES = {"cluster", "plot", "report"}


def __getattr__(name: str):
    if name == "__version__":
        from .provenance import version

        return version()
    if name in _MODULES:
        return importlib.import_module(f"dlmm.{name}")
    if name in _WHERE:
        return getattr(importlib.import_module(f"dlmm.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dlmm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
