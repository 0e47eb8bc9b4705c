"""The command line: parses flags into the library's calls and prints.

Every job is a library call (:func:`dlmm.run`, :func:`dlmm.run_grm`, ...); heavy modules
load inside the commands, so ``dlmm --help`` starts fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

__all__ = ["main", "run"]


def _scan_parser(sub) -> None:
    s = sub.add_parser("scan", help="test every variant for association (LMM)",
                       description="Fit y = X b + a + e, a ~ N(0, sa2 K), per variant by "
                       "maximum likelihood and test it against the null model (LRT; Wald, "
                       "score and least squares on request).")
    s.add_argument("genotypes", help="VCF Zarr store (folder or URL), PLINK prefix (or its "
                   ".bed) or the course lab's text matrix (rows samples, columns variants)")
    s.add_argument("--pheno", help="phenotype file: with a header (#FID IID name ...) joined "
                   "by sample id; GEMMA's headerless file in genotype order. Default: the "
                   "genotypes' own (.fam column 6 on, a store's sample_phenotype)")
    s.add_argument("--pheno-col", help="phenotype column(s), 1-based (GEMMA -n): 2, 1,2,3 "
                   "or all; several traits: one TSV and log each. Default 1")
    s.add_argument("--pheno-name", help="phenotype column(s) by header name: a or a,b")
    s.add_argument("--covar", help="covariates: with a header (#FID IID ...) joined by id, "
                   "an intercept added; GEMMA's headerless file (-c) includes the intercept")
    s.add_argument("--covar-name", help="covariate columns by name or number (default all)")
    s.add_argument("--kinship", help="kinship: .npz (kinship, sample_id) or a `dlmm grm` "
                   "Zarr store, joined by id; GEMMA text or .npy in genotype order. "
                   "Default: the centred GRM (= gemma -gk 1)")
    s.add_argument("--solver", choices=("exact", "em"), default="exact",
                   help="exact: profile ML over lambda (GEMMA -lmm 2); em: the lab's EM")
    s.add_argument("--em-start", choices=("classic", "null"), default="classic",
                   help="EM start: classic (sa2=70, se2=10, b=0) or the ML null fit")
    s.add_argument("--em-tol", type=float, default=1e-5, help="EM: stop when lnL gains less")
    s.add_argument("--em-max-iter", type=int, default=100, help="EM: the lab's max.iter")
    s.add_argument("--test", default="lrt", help="lrt (GEMMA -lmm 2), wald (-lmm 1), score "
                   "(-lmm 3), all (-lmm 4), ols (least squares, no kinship: the lab's "
                   "baseline), or a list: lrt,ols")
    s.add_argument("--model", choices=("additive", "genotypic"), default="additive",
                   help="additive (1 df) or additive + dominance (2 df)")
    s.add_argument("--loco", action="store_true", help="leave one chromosome out: each "
                   "chromosome tested with the GRM of the others; not with --kinship")
    s.add_argument("--kinship-variants", metavar="FILE|N", help="low-rank kinship: the GRM "
                   "of these variants (a file of ids, or N spread evenly)")
    s.add_argument("--kinship-rank", type=int, metavar="K",
                   help="keep the kinship's K largest eigenpairs (low-rank)")
    s.add_argument("--rotation-dtype", choices=("float64", "float32"), default="float64",
                   help="precision of the genotype rotation (float32: about twice as fast, "
                   "full rank only)")
    c = s.add_mutually_exclusive_group()
    c.add_argument("--center-kinship", dest="center", action="store_const", const=True,
                   help="double-centre the kinship (GEMMA; the default but for text input)")
    c.add_argument("--no-center-kinship", dest="center", action="store_const", const=False,
                   help="use the kinship as given (the default for the lab's text format)")
    _filters(s)
    s.add_argument("--out", "-o", required=True, help="output prefix: PREFIX.zarr, "
                   "PREFIX.assoc.tsv, PREFIX.log.txt, PREFIX.report.html")
    s.add_argument("--format", default="tsv", help="result tables: tsv, parquet or tsv,parquet")
    s.add_argument("--gzip", action="store_true", help="gzip the TSV (.assoc.tsv.gz)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    w.add_argument("--resume", action="store_true",
                   help="finish an interrupted scan: compute only the blocks not written")
    s.add_argument("--no-plot", dest="plot", action="store_false",
                   help="do not write the report PREFIX.report.html")
    _cluster(s)


def _filters(p) -> None:
    p.add_argument("--maf", type=float, default=0.01, help="minimum allele frequency (0.01)")
    p.add_argument("--max-missing", type=float, default=0.05,
                   help="maximum missing rate of a variant (0.05)")
    p.add_argument("--chunk-size", type=int, help="variants per task (default: as many as "
                   "fit a task's 256 MiB budget, at most 10000)")


def _cluster(p) -> None:
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
                   help="local cluster: no Dask dashboard, no HTTP server at all")


def _cluster_options(args) -> dict:
    """The command's cluster options, checked (an InputError naming the bad one)."""
    import dlmm

    opts = {"threads": args.threads, "workers": args.workers,
            "memory_limit": args.memory_limit, "dashboard_address": args.dashboard_address,
            "dashboard": args.dashboard}
    dlmm.cluster.check_options(args.scheduler, **opts)
    return opts


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (as every other error)."""

    def error(self, message: str):
        self.exit(2, f"dlmm: error: {message}. Fix: see {self.prog} --help\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dlmm", description="Dask-distributed linear mixed "
                "model association scans.")
    p.add_argument("--version", action="store_true", help="print dlmm's version and exit")
    sub = p.add_subparsers(dest="command")
    _scan_parser(sub)
    k = sub.add_parser("grm", help="compute the genomic relatedness matrix (GEMMA -gk 1/2)",
                       description="The GRM over chunks of variants (centred = gemma -gk 1, "
                       "standardised = -gk 2), over the variants passing GEMMA's filters on "
                       "the analysed samples; writes PREFIX.zarr for `dlmm scan --kinship`.")
    k.add_argument("genotypes", help="VCF Zarr store, PLINK prefix or text genotype matrix")
    k.add_argument("--out", "-o", required=True, help="output prefix: PREFIX.zarr (and "
                   "PREFIX.cXX.txt or .sXX.txt with --gemma-text)")
    k.add_argument("--standardise", action="store_true", help="= gemma -gk 2")
    k.add_argument("--gemma-text", action="store_true", help="also GEMMA's text format")
    k.add_argument("--pheno", help="phenotype file choosing the analysed samples")
    k.add_argument("--pheno-col", default="1", help="phenotype column (number or name)")
    k.add_argument("--covar", help="covariates: samples missing them are dropped")
    _filters(k)
    _cluster(k)
    k.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    c = sub.add_parser("convert", help="write genotypes to a VCF Zarr store",
                       description="Stream genotypes into a VCF Zarr store, chunk by chunk.")
    c.add_argument("source", help="PLINK prefix, VCF Zarr store or text genotype matrix")
    c.add_argument("out", help="output store, e.g. data.zarr")
    c.add_argument("--chunk-size", type=int, help="variants per chunk (default: as many "
                   "as fit a task's 256 MiB budget, at most 10000)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing store")
    d = sub.add_parser("demo", help="simulate a small family data set and scan it",
                       description="Simulate (seeded) nuclear families with a few causal "
                       "variants, write them as PLINK files and scan them with the GRM.")
    d.add_argument("--out", "-o", default="dlmm-demo", help="output folder (dlmm-demo)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--families", type=int, default=150)
    d.add_argument("--variants", type=int, default=20_000)
    d.add_argument("--overwrite", action="store_true", help="replace an earlier demo's files")
    _cluster(d)
    pl = sub.add_parser("plot", help="Manhattan and QQ plots of a scan: an HTML report",
                        description="A self-contained HTML page (opens offline): summary "
                        "table, Manhattan and QQ plots of a result store.")
    pl.add_argument("results", help="result store PREFIX.zarr written by dlmm scan")
    pl.add_argument("--out", "-o", required=True, help="the HTML file, e.g. report.html")
    pl.add_argument("--png", help="also write the plots to this PNG file (no browser needed)")
    pl.add_argument("--significance", default="5e-8", help="p-value of the significance "
                    "line (5e-8), or 'bonferroni' (0.05 / variants tested)")
    pl.add_argument("--top", type=int, default=100, help="top hits drawn as points (100)")
    pl.add_argument("--overwrite", action="store_true", help="replace existing files")
    return p


class _Progress:
    """Blocks written so far, on stderr: a bar redrawn in place on a terminal, else a
    line at every tenth (for batch logs)."""

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
            print(f"\r[{'#' * int(30 * frac):<30}] {text}", end="", file=self.stream,
                  flush=True)
            if n_written == n_todo:
                print(file=self.stream)
        elif int(10 * frac) > self.shown:
            self.shown = int(10 * frac)
            print(f"progress: {text}", file=self.stream, flush=True)


def _cluster_of(args):
    """The command's Dask client (a context manager yielding it), announced on stderr."""
    import contextlib

    import dlmm

    @contextlib.contextmanager
    def client():
        with dlmm.client_for(args.scheduler, **_cluster_options(args)) as (c, what):
            print(f"dask dashboard: {c.dashboard_link or 'off'} ({what})", file=sys.stderr)
            yield c
    return client()


def _traits(args):
    if args.pheno_name and args.pheno_col:
        raise _flag_error("pheno_name", "give --pheno-col or --pheno-name, not both")
    return args.pheno_name or args.pheno_col or "1"


def _flag_error(option: str, problem: str):
    import dlmm

    return dlmm.OptionError(option, problem, "see dlmm scan --help")


def _scan(args) -> int:
    import dlmm

    options = dlmm.ScanOptions(
        model=args.model, solver=args.solver, em_start=args.em_start, em_tol=args.em_tol,
        em_max_iter=args.em_max_iter, tests=args.test, center=args.center, maf=args.maf,
        max_missing=args.max_missing, chunk_size=args.chunk_size, loco=args.loco,
        kinship_variants=args.kinship_variants, kinship_rank=args.kinship_rank,
        rotation_dtype=args.rotation_dtype, plot=args.plot, formats=args.format.split(","),
        gzip=args.gzip)
    plan = dlmm.plan(args.genotypes, args.pheno, traits=_traits(args), covariates=args.covar,
                     covariate_columns=args.covar_name, kinship=args.kinship, options=options,
                     out=args.out, overwrite=args.overwrite, resume=args.resume,
                     command=["dlmm", *sys.argv[1:]], echo=print)
    with _cluster_of(args) as client:
        dlmm.execute(plan, client=client, echo=print, on_block=_Progress())
    return 0


def _grm(args) -> int:
    import dlmm

    options = dlmm.GrmOptions(standardise=args.standardise, maf=args.maf,
                              max_missing=args.max_missing, chunk_size=args.chunk_size,
                              gemma_text=args.gemma_text)
    t0 = time.perf_counter()
    with _cluster_of(args):
        written = dlmm.run_grm(args.genotypes, out=args.out, phenotypes=args.pheno,
                               traits=args.pheno_col, covariates=args.covar, options=options,
                               overwrite=args.overwrite, echo=print)
    print(f"wrote {', '.join(map(str, written))} in {(time.perf_counter() - t0) / 60:.3g} min")
    return 0


def _convert(args) -> int:
    import dlmm

    ds = dlmm.open_genotypes(args.source, chunk_size=args.chunk_size)
    out = dlmm.convert(ds, args.out, chunk_size=args.chunk_size, overwrite=args.overwrite)
    print(f"wrote {out}: {ds.sizes['variants']} variants x {ds.sizes['samples']} samples")
    return 0


def _demo(args) -> int:
    import dlmm

    with _cluster_of(args) as client:
        dlmm.run_demo(args.out, seed=args.seed, n_families=args.families,
                      n_variants=args.variants, overwrite=args.overwrite, client=client,
                      echo=print, on_block=_Progress())
    return 0


def _plot(args) -> int:
    from dlmm import report

    for path in report.write_plots(args.results, args.out, png=args.png,
                                   significance=args.significance, n_top=args.top,
                                   overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0


class _QuietInputErrors(logging.Filter):
    """A task that raised InputError (e.g. a corrupt store chunk) is reported once, as the
    command's one-line error: drop the local worker's log of it. After Ctrl-C or SIGTERM,
    drop every distributed record: the cluster's teardown complains about the keys the
    interrupt abandoned, and the one line the command prints says all there is."""

    stopping = False

    def filter(self, record: logging.LogRecord) -> bool:
        if _QuietInputErrors.stopping and record.name.startswith("distributed"):
            return False
        msg = record.getMessage()
        return not ((msg.startswith("Compute Failed") and "Error(" in msg)
                    or msg.endswith("ended with CancelledError"))


def _quiet_logs() -> None:
    """A root handler at WARNING (else a dependency's first log call prints every INFO
    record of distributed), without the workers' copy of an input error; dlmm's own
    warnings as one line each, the dependencies' silenced."""
    import warnings

    import dlmm

    warnings.simplefilter("ignore")
    warnings.simplefilter("always", dlmm.DlmmWarning)
    warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}",
                                                          file=sys.stderr)
    if not logging.root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        logging.root.addHandler(handler)
    for handler in logging.root.handlers + logging.getLogger("distributed").handlers:
        if not any(isinstance(f, _QuietInputErrors) for f in handler.filters):
            handler.addFilter(_QuietInputErrors())


def main(argv: list[str] | None = None, *, args: argparse.Namespace | None = None) -> int:
    """Entry point of the ``dlmm`` command; returns the exit status.

    ``argv``: the arguments (default ``sys.argv[1:]``), or ``args`` already parsed.
    """
    parser = _parser()
    args = parser.parse_args(argv) if args is None else args
    if args.version:
        import dlmm

        print(f"dlmm {dlmm.__version__}")
        return 0
    if args.command is None:
        parser.print_usage(sys.stderr)
        return 2
    import dlmm

    _quiet_logs()
    try:
        if hasattr(args, "dashboard"):
            _cluster_options(args)  # bad cluster options fail before any input is read
        return {"scan": _scan, "demo": _demo, "convert": _convert, "grm": _grm,
                "plot": _plot}[args.command](args)
    except dlmm.OptionError as e:
        print(f"dlmm: error: {e.as_flag()}", file=sys.stderr)
        return 2
    except dlmm.InputError as e:
        print(f"dlmm: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as e:
        finish = {"scan": "finished blocks are kept: rerun with --resume to finish",
                  "demo": "rerun with --overwrite to start again"}.get(
                      args.command, "nothing was left behind")
        print(f"dlmm: {'terminated' if isinstance(e, _Terminated) else 'interrupted'}; "
              f"{finish}", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT)


class _Terminated(BaseException):
    """SIGTERM (a batch system's stop, ``kill``), raised to unwind as Ctrl-C does."""


def _on_signal(signum, frame):
    _QuietInputErrors.stopping = True
    raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def run() -> None:
    """The ``dlmm`` executable (also ``python -m dlmm.cli``): :func:`main`, with Python's
    cyclic garbage collector kept off what lives to the end of the process.

    After the arguments are parsed (``--help`` stays fast) the heavy modules are
    imported with the collector off, then frozen: its collections no longer traverse
    them (about a million objects), and the last full collection at exit is skipped by
    freezing again before it (what it saves: ``benchmarks/startup.py``).
    """
    import gc

    args = _parser().parse_args()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    gc.disable()
    import distributed  # noqa: F401

    import dlmm

    dlmm.run  # noqa: B018 (imports the pipeline and what it needs)
    gc.freeze()
    gc.enable()
    status = main(args=args)
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    run()
