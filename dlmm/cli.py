"""Command line: a thin layer over the Python API.

Heavy modules (numpy, dask, xarray) are imported inside the commands, so
``dlmm --help`` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "run"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dlmm",
        description="Dask-distributed linear mixed model association scans.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("scan", help="test every variant for association (LMM, LRT)",
                       description="Fit y = X b + a + e, a ~ N(0, sa2 K), per variant by "
                       "maximum likelihood and test it against the null model by an LRT.")
    s.add_argument("genotypes", help="VCF Zarr store, PLINK prefix (PREFIX.bed/.bim/.fam) or "
                   "a whitespace text matrix (rows samples, columns variants, coded -1/0/1 "
                   "or 0/1/2)")
    s.add_argument("--pheno", help="phenotype file, one row per sample (GEMMA -p); "
                   "default for PLINK: .fam column 6 on")
    s.add_argument("--pheno-col", default="1",
                   help="which phenotype column, 1-based (GEMMA -n); default 1. Several "
                   "(1,2,3) or all: one scan of many traits, one TSV and log per trait "
                   "(PREFIX.phenoN.assoc.tsv); traits missing on the same samples share "
                   "one eigendecomposition and one rotation of each genotype block")
    s.add_argument("--kinship", help="kinship: GEMMA n x n text, .npy or a Zarr store from "
                   "`dlmm grm`, all samples in genotype order; default: the centred GRM "
                   "(= gemma -gk 1)")
    s.add_argument("--covar", help="covariates, one row per sample, with the intercept "
                   "column (GEMMA -c); default: intercept only")
    s.add_argument("--solver", choices=("exact", "em"), default="exact",
                   help="exact: profile ML over lambda (GEMMA -lmm 2); em: the classic EM")
    s.add_argument("--em-start", choices=("classic", "null"), default="classic",
                   help="EM start: classic (sa2=70, se2=10, b=0) or the ML null fit")
    s.add_argument("--em-tol", type=float, default=1e-5, help="EM: stop when lnL gains less")
    s.add_argument("--em-max-iter", type=int, default=100, help="EM: the lab's max.iter")
    s.add_argument("--test", default="lrt",
                   help="lrt (GEMMA -lmm 2, default), wald (-lmm 1: F-test at each variant's "
                   "REML lambda), score (-lmm 3: F-test at the null ML lambda), all (-lmm 4), "
                   "or a comma-separated list")
    s.add_argument("--model", choices=("additive", "genotypic"), default="additive",
                   help="additive (1 df) or additive + dominance (2 df)")
    s.add_argument("--loco", action="store_true",
                   help="leave one chromosome out: test each chromosome's variants with the "
                   "GRM of the other chromosomes (one pass over the genotypes; one "
                   "eigendecomposition and null fit per chromosome); not with --kinship")
    s.add_argument("--kinship-variants", metavar="FILE|N",
                   help="low-rank mode (FaST-LMM): the kinship is the GRM of these variants "
                   "only, a file of variant ids or a count N (N variants spread evenly); "
                   "no n x n matrix, each variant's fit costs O(n k) for k of them; "
                   "not with --kinship or --loco")
    s.add_argument("--kinship-rank", type=int, metavar="K",
                   help="low-rank mode: keep the kinship's K largest eigenpairs (of --kinship, "
                   "the GRM, or the --kinship-variants GRM); equal to the full scan when the "
                   "kinship's rank is at most K")
    s.add_argument("--rotation-dtype", choices=("float64", "float32"), default="float64",
                   help="precision of the genotypes' rotation by the eigenvectors, the "
                   "scan's main cost (float32: about twice as fast, p-values within ~1e-5 "
                   "in -log10 p; full rank only)")
    s.add_argument("--no-center-kinship", dest="center", action="store_false",
                   help="use the kinship as given (GEMMA double-centres it)")
    s.add_argument("--maf", type=float, default=0.01, help="minimum allele frequency (0.01)")
    s.add_argument("--max-missing", type=float, default=0.05,
                   help="maximum missing rate of a variant (0.05)")
    s.add_argument("--chunk-size", type=int, default=10_000,
                   help="most variants per task (evened out across tasks); 10000")
    s.add_argument("--out", "-o", required=True,
                   help="output prefix: writes PREFIX.zarr, PREFIX.assoc.tsv, PREFIX.log.txt "
                   "and PREFIX.report.html")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument("--resume", action="store_true",
                   help="finish an interrupted scan: compute only blocks not in PREFIX.zarr")
    s.add_argument("--no-plot", dest="plot", action="store_false",
                   help="do not write the report PREFIX.report.html")
    _add_cluster_options(s)

    k = sub.add_parser("grm", help="compute the genomic relatedness matrix (GEMMA -gk 1/-gk 2)",
                       description="Accumulate the GRM over chunks of variants with Dask (the "
                       "genotype matrix is never in memory at once): centred (= gemma -gk 1) "
                       "or standardised (= gemma -gk 2). The variants are those passing "
                       "GEMMA's filters on the analysed samples (those with a phenotype and "
                       "covariates). Writes PREFIX.zarr, which `dlmm scan --kinship` reads.")
    k.add_argument("genotypes", help="VCF Zarr store, PLINK prefix or text genotype matrix")
    k.add_argument("--out", "-o", required=True,
                   help="output prefix: writes PREFIX.zarr (and PREFIX.cXX.txt or "
                   "PREFIX.sXX.txt with --gemma-text)")
    k.add_argument("--standardise", action="store_true",
                   help="standardised GRM (= gemma -gk 2); default centred (= gemma -gk 1)")
    k.add_argument("--gemma-text", action="store_true",
                   help="also write GEMMA's text format (PREFIX.cXX.txt / PREFIX.sXX.txt)")
    k.add_argument("--pheno", help="phenotype file choosing the analysed samples (GEMMA -p); "
                   "default for PLINK: .fam column 6 on; for a store: its sample_phenotype; "
                   "without any: all samples")
    k.add_argument("--pheno-col", type=int, default=1, help="phenotype column, 1-based (GEMMA -n)")
    k.add_argument("--covar", help="covariates (GEMMA -c): drop samples missing them and "
                   "variants they explain, as GEMMA does")
    k.add_argument("--maf", type=float, default=0.01, help="minimum allele frequency (0.01)")
    k.add_argument("--max-missing", type=float, default=0.05,
                   help="maximum missing rate of a variant (0.05)")
    k.add_argument("--chunk-size", type=int, default=10_000, help="variants per task")
    k.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_cluster_options(k)

    c = sub.add_parser("convert", help="write PLINK or text genotypes to a VCF Zarr store",
                       description="Stream genotypes into a VCF Zarr store (call_genotype "
                       "int8, -1 missing), chunk by chunk.")
    c.add_argument("source", help="PLINK prefix or text genotype matrix")
    c.add_argument("out", help="output store, e.g. data.zarr")
    c.add_argument("--chunk-size", type=int, default=10_000, help="variants per chunk")
    c.add_argument("--overwrite", action="store_true", help="replace an existing store")

    d = sub.add_parser("demo", help="simulate a small family data set and scan it",
                       description="Simulate (seeded) nuclear families with a few causal "
                       "variants, write them as PLINK files and scan them with the GRM.")
    d.add_argument("--out", "-o", default="dlmm-demo", help="output folder (dlmm-demo)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--families", type=int, default=150)
    d.add_argument("--variants", type=int, default=20_000)
    _add_cluster_options(d)

    pl = sub.add_parser("plot", help="Manhattan and QQ plots of a scan: an HTML report",
                        description="Write a self-contained HTML page (opens offline) with "
                        "the summary table, the Manhattan and the QQ plot of a result store.")
    pl.add_argument("results", help="result store PREFIX.zarr written by dlmm scan")
    pl.add_argument("--out", "-o", required=True, help="the HTML file, e.g. report.html")
    pl.add_argument("--png", help="also write the plots to this PNG file (no browser needed)")
    pl.add_argument("--significance", default="5e-8",
                    help="p-value of the significance line (5e-8), or 'bonferroni' "
                    "(0.05 / variants tested)")
    pl.add_argument("--top", type=int, default=100,
                    help="top hits drawn as points with hover (100)")
    return p


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    """The options of the Dask cluster a command runs on (see :mod:`dlmm.cluster`)."""
    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler", help="address of a running Dask scheduler, tcp://HOST:PORT "
                   "or tls://HOST:PORT (default: DASK_SCHEDULER_ADDRESS if set, else a "
                   "local cluster on this machine)")
    g.add_argument("--threads", type=int, help="local cluster: threads in all (default: "
                   "one per core)")
    g.add_argument("--workers", type=int, help="local cluster: workers (default 1, in this "
                   "process; more are processes sharing --threads and --memory-limit)")
    g.add_argument("--memory-limit", help="local cluster: memory in all, e.g. 8GiB "
                   "(default: all of this machine's)")
    g.add_argument("--dashboard-address", metavar="HOST:PORT", help="local cluster: where "
                   "the Dask dashboard listens (default 127.0.0.1, a free port; "
                   "0.0.0.0:PORT opens it to the network)")
    g.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                   help="local cluster: no Dask dashboard, no HTTP server at all (the "
                   "dashboard's Bokeh server takes ~0.5 s to start)")


def _cluster_options(args: argparse.Namespace) -> dict:
    """The local cluster's sizing options of a command, checked (InputError if bad)."""
    from .cluster import check_options

    opts = {"threads": args.threads, "workers": args.workers,
            "memory_limit": args.memory_limit, "dashboard_address": args.dashboard_address}
    check_options(args.scheduler, dashboard=args.dashboard, **opts)
    return opts


class _QuietInputErrors(logging.Filter):
    """A task that raised InputError (e.g. a corrupt store chunk) is reported once,
    as the command's one-line error: drop the local worker's log of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ((msg.startswith("Compute Failed") and "InputError(" in msg)
                    # tasks cancelled as the command stops on that error
                    or msg.endswith("ended with CancelledError"))


@contextlib.contextmanager
def _client(address: str | None, dashboard: bool = True, **sizing):
    """The Dask client of a command: :func:`dlmm.cluster.client_for`.

    Yields ``(client, description)``: what the cluster is, for the log."""
    from .cluster import client_for

    with client_for(address, dashboard=dashboard, **sizing) as pair:
        yield pair


class _Progress:
    """Blocks written so far, on stderr: a bar redrawn in place on a terminal,
    otherwise a line at every tenth (for batch logs)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.shown = -1

    def __call__(self, n_written: int, n_todo: int) -> None:
        frac = n_written / max(n_todo, 1)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        text = f"{n_written}/{n_todo} blocks {frac:4.0%}  {elapsed:.0f} s, eta {eta:.0f} s"
        if self.tty:
            bar = "#" * int(30 * frac)
            print(f"\r[{bar:<30}] {text}", end="", file=self.stream, flush=True)
            if n_written == n_todo:
                print(file=self.stream)
        elif int(10 * frac) > self.shown:
            self.shown = int(10 * frac)
            print(f"progress: {text}", file=self.stream, flush=True)


def _genotypes(args):
    """Genotype Dataset and the phenotypes it carries: ``(ds, carried, source, what)``.

    ``carried`` is a (samples, phenotypes) array or None (``--pheno`` needed).
    """
    from . import io
    from .errors import InputError

    g = args.genotypes
    # the genotypes, and the phenotypes they carry (None: --pheno is needed)
    if io.is_url(g) or io.is_zarr_store(g) or Path(g).is_dir():
        ds = io.open_store(g)  # a folder that is no Zarr store: open_store says so
        carried = ds["sample_phenotype"].values if "sample_phenotype" in ds else None
        carried_src, what = g, "store"
    elif Path(f"{g}.bed").exists() or Path(f"{g}.fam").exists():
        ds = io.read_plink(g, chunk_size=args.chunk_size)
        carried, carried_src, what = io.read_fam_phenotypes(g), f"{g}.fam", ".fam"
    elif Path(g).is_file():
        ds = io.read_text_genotypes(g, chunk_size=args.chunk_size)
        carried, carried_src, what = None, g, "text matrix"
    else:
        raise InputError(g, "no PLINK fileset (.bed/.bim/.fam) or text matrix of that name",
                         "give a PLINK prefix without extension, or a text matrix file")
    return ds, carried, carried_src, what


def _load(args):
    """Genotype Dataset, phenotype, kinship and covariates from the arguments."""
    import numpy as np

    from . import io
    from .errors import InputError

    ds, carried, carried_src, what = _genotypes(args)
    g = args.genotypes
    if what == "text matrix" and (not args.pheno or not args.kinship):
        raise InputError(g, "a text genotype matrix needs --pheno and --kinship",
                         "give both (or use a PLINK prefix)")
    n = ds.sizes["samples"]
    if args.pheno:
        table, ysrc, what = io.read_phenotypes(args.pheno, n), args.pheno, "phenotype file"
    elif carried is not None:
        table, ysrc = np.asarray(carried, dtype=np.float64), carried_src
    else:
        raise InputError(g, "the store has no sample_phenotype variable",
                         "give --pheno FILE (one row per store sample)")
    cols = io.parse_pheno_cols(args.pheno_col, table.shape[1], ysrc, what)
    if cols is None:
        y = io.select_phenotype(table, int(args.pheno_col), ysrc, what)
    else:
        y = np.column_stack([io.select_phenotype(table, c, ysrc, what) for c in cols])
        args.traits = [f"pheno{c}" for c in cols]
    K = io.read_kinship(args.kinship, n, ds["sample_id"].values) if args.kinship else None
    W = _covariates(args, n)
    if getattr(args, "kinship_variants", None) is not None:
        args.kinship_index = io.kinship_variants(args.kinship_variants, ds["variant_id"].values)
    return ds, y, ysrc, K, W


def _covariates(args, n: int):
    """``--covar`` (n, c) or None; warns when no column is constant (no intercept)."""
    import numpy as np

    from . import io

    W = io.read_covariates(args.covar, n) if args.covar else None
    if W is not None and not (np.ptp(W[~np.isnan(W).any(axis=1)], axis=0) == 0).any():
        print(f"warning: {args.covar}: no constant column; GEMMA's convention is to include "
              "the intercept as a column of 1s", file=sys.stderr)
    return W


def _count_lines(attrs, n_variants: int, n_tested: int | None) -> list[str]:
    lines = [
        f"## number of total individuals = {attrs['n_samples_total']}",
        f"## number of analyzed individuals = {attrs['n_analysed']}",
        f"## number of covariates = {attrs['n_covariates']}",
        f"## number of total SNPs/var = {n_variants}",
    ]
    if n_tested is not None:
        lines.append(f"## number of analyzed SNPs/var = {n_tested}")
    if attrs.get("kinship_rank", attrs["n_analysed"]) < attrs["n_analysed"]:
        used = attrs.get("kinship_variants_used")
        lines.append(f"## low-rank kinship: rank {attrs['kinship_rank']}"
                     + ("" if used is None else f", the GRM of {used} variants"))
    if attrs.get("rotation_dtype") == "float32":
        lines.append("## genotype rotation = float32")
    return lines


def _null_block(a) -> list[str]:
    """:func:`_null_lines`, once per chromosome for a LOCO scan."""
    from .scanner import contig_attrs

    if "loco_contigs" not in a:
        return _null_lines(a)
    lines = []
    for k, name in enumerate(a["loco_contigs"]):
        lines.append(f"## LOCO: chromosome {name}, kinship from the other chromosomes")
        lines += _null_lines(contig_attrs(a, k))
    return lines


def _counts(a, n_variants: int, n_tested: int | None) -> list[str]:
    """:func:`_count_lines` of one trait's attrs (LOCO: the first chromosome's counts)."""
    from .scanner import contig_attrs

    return _count_lines(contig_attrs(a, 0) if "loco_contigs" in a else a, n_variants, n_tested)


def _null_lines(a) -> list[str]:
    """The null fit, printed as GEMMA's log prints it (6 significant digits)."""
    lines = [
        f"## REMLE log-likelihood in the null model = {a['remle_logl_null']:.6g}",
        f"## MLE log-likelihood in the null model = {a['mle_logl_null']:.6g}",
        f"## pve estimate in the null model = {a['pve_null']:.6g}",
        f"## se(pve) in the null model = {a['pve_se_null']:.6g}",
        f"## vg estimate in the null model = {a['vg_null']:.6g}",
        f"## ve estimate in the null model = {a['ve_null']:.6g}",
        f"## REMLE lambda in the null model = {a['remle_lambda_null']:.6g}",
        f"## MLE lambda in the null model = {a['mle_lambda_null']:.6g}",
        f"## MLE sigma_sq_a in the null model = {a['mle_sigma_sq_a_null']:.6g}",
        f"## MLE sigma_sq_e in the null model = {a['mle_sigma_sq_e_null']:.6g}",
    ]
    if a["solver"] == "em":
        lines.append(f"## EM log-likelihood in the null model = {a['em_logl_null']:.6g}")
    return lines


def _skipped_line(res, maf: float, max_missing: float) -> str | None:
    """Why the variants that were not tested were skipped, as one log line."""
    skip = ~res["variant_lmm_tested"].values.astype(bool)
    if not skip.any():
        return None
    n = res.attrs["n_analysed"]
    miss = res["variant_n_missing"].values[skip]
    af = res["variant_allele_frequency"].values[skip]
    reasons = {
        "all missing": miss == n,
        f"missing rate above {max_missing:g}": (miss < n) & (miss / n > max_missing),
        "monomorphic": (miss / n <= max_missing) & ((af == 0) | (af == 1)),
        f"allele frequency below {maf:g}": ((miss / n <= max_missing) & (af > 0) & (af < 1)
                                             & ((af < maf) | (af > 1 - maf))),
    }
    other = skip.sum() - sum(int(v.sum()) for v in reasons.values())
    parts = [f"{int(v.sum())} {k}" for k, v in reasons.items() if v.any()]
    if other:
        parts.append(f"{other} without variation or explained by the covariates")
    return f"## number of skipped SNPs/var = {int(skip.sum())} ({', '.join(parts)})"


def run_scan(ds, y, *, out: str, overwrite: bool = False, resume: bool = False,
             scheduler: str | None = None, kinship=None, covariates=None, sources=None,
             source: str = "", plot: bool = True, dashboard: bool = True,
             cluster_options: dict | None = None, **options) -> tuple[Path, object]:
    """Driver shared by ``dlmm scan`` and ``dlmm demo``.

    Fits the null model, computes the variant chunks as Dask tasks, writes each
    to ``PREFIX.zarr`` as it finishes, then assembles the TSV and the log from
    the store, and (``plot``) the report ``PREFIX.report.html``.
    """
    from . import scanner as scan_mod
    from . import store
    from .errors import InputError

    zpath = Path(f"{out}.zarr")
    traits = options.get("traits")
    if getattr(y, "ndim", 1) == 2 and traits is None:
        traits = options["traits"] = [f"pheno{j + 1}" for j in range(y.shape[1])]
    stems = [f"{out}.{t}" for t in traits] if traits is not None else [out]
    tsvs = [Path(f"{st}.assoc.tsv") for st in stems]
    logs = [Path(f"{st}.log.txt") for st in stems]
    if not zpath.parent.is_dir():
        raise InputError(zpath.parent, "output folder does not exist", "create it first")
    if resume and not zpath.exists():
        raise InputError(zpath, "nothing to resume", "run the scan without --resume first")
    if not (overwrite or resume):
        for p in (zpath, *tsvs, *logs):
            if p.exists():
                raise InputError(p, "output exists", "pass --overwrite, --resume, or another --out")
    # a given kinship of one trait in full rank: set up (eigendecomposition, null fit)
    # before the cluster starts; the eigenvalues show a bad kinship, with no Cholesky
    early = (kinship is not None and y.ndim == 1 and not options.get("loco")
             and options.get("kinship_rank") is None
             and options.get("kinship_variants") is None)
    for j in range(y.shape[1] if y.ndim == 2 else 1):  # the kinship once
        scan_mod.validate_inputs(ds, y[:, j] if y.ndim == 2 else y,
                                 kinship=kinship if j == 0 else None,
                                 covariates=covariates, psd=not early, **(sources or {}))
    scan_mod.parse_tests(options.get("test", "lrt"))
    if options.get("loco") and kinship is not None:
        raise InputError("--loco", "LOCO computes one GRM per chromosome itself",
                         "drop --kinship when using --loco")
    scan_mod.check_rotation_dtype(options.get("rotation_dtype", "float64"),
                                  options.get("kinship_variants"), options.get("kinship_rank"))
    scan_mod.check_lowrank(ds, options.get("kinship_variants"), options.get("kinship_rank"),
                           kinship=kinship, loco=options.get("loco", False))
    if early:
        options["null"] = scan_mod.prepare(
            ds, y, kinship=kinship, covariates=covariates,
            **{k: options[k] for k in ("center", "solver", "maf", "max_missing", "em_tol",
                                       "em_max_iter") if k in options}, **(sources or {}))
    t0 = time.perf_counter()
    m = ds.sizes["variants"]
    with _client(scheduler, dashboard, **(cluster_options or {})) as (client, cluster):
        link = client.dashboard_link or "off"
        print(f"dask dashboard: {link} ({cluster})", file=sys.stderr)
        res = scan_mod.scan(ds, y, kinship=kinship, covariates=covariates, **options,
                            **(sources or {}))
        res.attrs["source"] = source
        for i, stem in enumerate(stems):
            a = res.attrs if traits is None else scan_mod.trait_attrs(res.attrs, i)
            head = [] if traits is None else [f"## phenotype {traits[i]}"]
            print("\n".join(head + _counts(a, m, None) + _null_block(a)))
        store.write_results_zarr(res, zpath, resume=resume, overwrite=overwrite,
                                 client=client, on_block=_Progress())
    res = store.load_results(zpath)
    minutes = (time.perf_counter() - t0) / 60
    for i, (tsv, log) in enumerate(zip(tsvs, logs)):
        one = res.copy(deep=False) if traits is None else res.isel(traits=i)
        a = res.attrs if traits is None else scan_mod.trait_attrs(res.attrs, i)
        # this trait's figures (LOCO: the counts are the same for every chromosome)
        one.attrs = scan_mod.contig_attrs(a, 0) if "loco_contigs" in a else dict(a)
        n_tested = int(one["variant_lmm_tested"].sum())
        lines = _counts(a, m, n_tested) + _null_block(a)
        skipped = _skipped_line(one, options.get("maf", 0.01), options.get("max_missing", 0.05))
        if skipped:
            lines.insert(5, skipped)
        store.write_tsv(one, tsv)
        lines.append(f"## total computation time = {minutes:.6g} min")
        tmp = log.with_name(log.name + ".partial")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, log)
        if traits is not None:
            print(f"## phenotype {traits[i]}")
        print("\n".join(lines[4:6] if skipped else lines[4:5]))
        print(f"results: {zpath} (Zarr), {tsv}\nlog: {log}")
    if plot:
        from .report import report_path, write_report

        print(f"report: {write_report(_report_view(res), report_path(out))}")
    return (tsvs[0] if traits is None else tsvs), res


def _report_view(res):
    """The result as the report reads it: for LOCO, a null figure that differs between
    chromosomes (a list per trait) is left out (the report shows n/a; the logs have
    them), one shared by all (the sample counts) is kept as one value."""
    if "loco_contigs" not in res.attrs:
        return res

    def one(v):
        return v[0] if all(x == v[0] for x in v) else None

    attrs = {}
    multi = "traits" in res.dims
    for k, v in res.attrs.items():
        if k == "loco_contigs" or not isinstance(v, list):
            attrs[k] = v
            continue
        v = [one(x) for x in v] if multi else one(v)
        if v is not None and not (multi and any(x is None for x in v)):
            attrs[k] = v
    view = res.copy(deep=False)
    view.attrs = attrs
    return view


def _scan(args) -> int:
    ds, y, ysrc, K, W = _load(args)
    run_scan(ds, y, out=args.out, overwrite=args.overwrite, resume=args.resume,
             scheduler=args.scheduler, source=_source_name(args.genotypes),
             kinship=K, covariates=W, model=args.model, solver=args.solver,
             em_start=args.em_start, center=args.center, maf=args.maf,
             max_missing=args.max_missing, em_tol=args.em_tol, em_max_iter=args.em_max_iter,
             test=args.test, traits=getattr(args, "traits", None), loco=args.loco,
             kinship_variants=getattr(args, "kinship_index", None),
             kinship_rank=args.kinship_rank, rotation_dtype=args.rotation_dtype,
             plot=args.plot, dashboard=args.dashboard,
             cluster_options=_cluster_options(args),
             sources={"phenotype_source": ysrc,
                      "kinship_source": args.kinship or args.kinship_variants or "kinship",
                      "covariate_source": args.covar or "covariates"})
    return 0


def _grm(args) -> int:
    """``dlmm grm``: the GRM over variant chunks, written as Zarr (and GEMMA text)."""
    import numpy as np

    from . import io, store
    from .errors import InputError
    from .kinship import grm

    ds, carried, carried_src, what = _genotypes(args)
    n = ds.sizes["samples"]
    zpath = Path(f"{args.out}.zarr")
    txt = Path(f"{args.out}.{'sXX' if args.standardise else 'cXX'}.txt")
    if not zpath.parent.is_dir():
        raise InputError(zpath.parent, "output folder does not exist", "create it first")
    if not args.overwrite:
        for p in (zpath, txt) if args.gemma_text else (zpath,):
            if p.exists():
                raise InputError(p, "output exists", "pass --overwrite or another --out")
    if args.pheno:
        y = io.read_phenotype(args.pheno, args.pheno_col, n)
    elif carried is not None:
        y = io.select_phenotype(np.asarray(carried, dtype=np.float64), args.pheno_col,
                                carried_src, what)
    else:
        y = np.zeros(n)
    samples = ~np.isnan(y)
    W = _covariates(args, n)
    if W is not None:
        samples &= ~np.isnan(W).any(axis=1)
    if not samples.any():
        raise InputError(args.pheno or carried_src, "no sample has both a phenotype and the "
                         "covariates", "check the phenotype column (--pheno-col) and --covar")
    W = np.ones((int(samples.sum()), 1)) if W is None else W[samples]
    t0 = time.perf_counter()
    with _client(args.scheduler, args.dashboard, **_cluster_options(args)) as (client, cluster):
        print(f"dask dashboard: {client.dashboard_link or 'off'} ({cluster})", file=sys.stderr)
        K = grm(ds, samples, W, standardise=args.standardise, maf=args.maf,
                max_missing=args.max_missing).compute()
    store.write_kinship_zarr(K, zpath, overwrite=args.overwrite)
    written = [zpath]
    if args.gemma_text:
        written.append(store.write_kinship_text(K.values, txt))
    print(f"{K.attrs['kind']} GRM (= {K.attrs['gemma_equivalent']}) of {n} samples, "
          f"variants filtered on {int(samples.sum())} analysed samples, in "
          f"{(time.perf_counter() - t0) / 60:.3g} min")
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _source_name(genotypes: str) -> str:
    """The genotypes as recorded in the results: an absolute path, or the URL."""
    from .io import is_url

    return genotypes if is_url(genotypes) else str(Path(genotypes).resolve())


def _convert(args) -> int:
    from . import io, store
    from .errors import InputError

    src = args.source
    if Path(f"{src}.bed").exists():
        ds = io.read_plink(src, chunk_size=args.chunk_size)
        ds = ds.assign(sample_phenotype=(("samples", "phenotypes"), io.read_fam_phenotypes(src)))
    elif Path(src).is_file():
        ds = io.read_text_genotypes(src, chunk_size=args.chunk_size)
    else:
        raise InputError(src, "no PLINK fileset (.bed/.bim/.fam) or text matrix of that name",
                         "give a PLINK prefix without extension, or a text matrix file")
    out = store.convert(ds, args.out, chunk_size=args.chunk_size, overwrite=args.overwrite)
    print(f"wrote {out}: {ds.sizes['variants']} variants x {ds.sizes['samples']} samples")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, seed=args.seed, n_families=args.families, n_variants=args.variants,
             scheduler=args.scheduler, dashboard=args.dashboard,
             cluster_options=_cluster_options(args))
    return 0


def _plot(args) -> int:
    from . import io, store
    from .errors import InputError

    sig = args.significance
    if sig.lower() != "bonferroni":
        try:
            sig = float(sig)
        except ValueError:
            sig = -1.0
        if not 0 < sig < 1:
            raise InputError("--significance", f"{args.significance!r} is not a p-value in "
                             "(0, 1) or 'bonferroni'", "give e.g. 5e-8 or bonferroni")
    if not io.is_zarr_store(args.results):
        raise InputError(args.results, "not a Zarr store",
                         "give the PREFIX.zarr that dlmm scan wrote")
    if args.top < 0:
        raise InputError("--top", f"{args.top} is negative", "give 0 or more top hits")
    res = store.open_results(args.results)
    if "variant_lmm_p_value" not in res:
        raise InputError(args.results, "no variant_lmm_p_value: not a result store of dlmm scan",
                         "give the PREFIX.zarr that dlmm scan wrote")
    if "block_done" in res and not bool(res["block_done"].all()):
        raise InputError(args.results, "the scan is incomplete (some blocks not done)",
                         "finish it with dlmm scan ... --resume")
    for path in (args.out, args.png):
        if path and not Path(path).resolve().parent.is_dir():
            raise InputError(path, "output folder does not exist", "create it first")
    from .report import write_png, write_report

    print(f"report: {write_report(res, args.out, significance=sig, n_top=args.top)}")
    if args.png:
        print(f"png: {write_png(res, args.png, significance=sig, n_top=args.top)}")
    return 0


def _freeze_gc() -> None:
    """Move every object made so far out of the cyclic garbage collector's reach, and
    collect again from then on (see :func:`run`)."""
    import gc

    gc.freeze()
    gc.enable()


def run() -> None:
    """The ``dlmm`` executable (also ``python -m dlmm.cli``): :func:`main` with the
    garbage collector kept off what lives to the end of the process.

    After the arguments are parsed (``--help`` stays fast) the heavy modules are
    imported with the cyclic collector off, and then frozen: its collections no longer
    traverse them (about a million objects), and the interpreter's last full collection
    at exit, over everything imported, is skipped by freezing again before it.  That
    was 0.7 s of a 3.8 s scan of mouse_hs1940 with a kinship given.  Nothing else
    about the exit changes (atexit handlers, flushed files).  ``main`` called in a
    process that goes on leaves the collector alone.
    """
    import gc

    args = _parser().parse_args()
    gc.disable()
    import distributed  # noqa: F401

    from . import io, kinship, scanner, store  # noqa: F401
    _freeze_gc()
    status = main(args=args)
    gc.freeze()
    sys.exit(status)


def main(argv: list[str] | None = None, *, args: argparse.Namespace | None = None) -> int:
    """Entry point of the ``dlmm`` command; returns the exit status.

    ``argv``: the arguments (default ``sys.argv[1:]``), or ``args`` already parsed.
    """
    args = _parser().parse_args(argv) if args is None else args
    from .errors import InputError

    # A root handler at WARNING: without one, the first module-level logging call of a
    # dependency installs a handler that prints every INFO record of distributed.
    if not logging.root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.addFilter(_QuietInputErrors())
        logging.root.addHandler(handler)

    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _QuietInputErrors) for f in worker_log.filters):
        worker_log.addFilter(_QuietInputErrors())
    try:
        if hasattr(args, "dashboard_address"):
            _cluster_options(args)  # checked before any input is read
        return {"scan": _scan, "demo": _demo, "convert": _convert,
                "grm": _grm, "plot": _plot}[args.command](args)
    except InputError as e:
        print(f"dlmm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    run()
