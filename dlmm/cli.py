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

__all__ = ["main"]


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
    s.add_argument("--pheno-col", type=int, default=1,
                   help="which phenotype column, 1-based (GEMMA -n); default 1")
    s.add_argument("--kinship", help="kinship: GEMMA n x n text or .npy, all samples in "
                   "genotype order; default: the centred GRM (= gemma -gk 1)")
    s.add_argument("--covar", help="covariates, one row per sample, with the intercept "
                   "column (GEMMA -c); default: intercept only")
    s.add_argument("--solver", choices=("exact", "em"), default="exact",
                   help="exact: profile ML over lambda (GEMMA -lmm 2); em: the classic EM")
    s.add_argument("--em-start", choices=("classic", "null"), default="classic",
                   help="EM start: classic (sa2=70, se2=10, b=0) or the ML null fit")
    s.add_argument("--em-tol", type=float, default=1e-5, help="EM: stop when lnL gains less")
    s.add_argument("--em-max-iter", type=int, default=100, help="EM: the lab's max.iter")
    s.add_argument("--model", choices=("additive", "genotypic"), default="additive",
                   help="additive (1 df) or additive + dominance (2 df)")
    s.add_argument("--no-center-kinship", dest="center", action="store_false",
                   help="use the kinship as given (GEMMA double-centres it)")
    s.add_argument("--maf", type=float, default=0.01, help="minimum allele frequency (0.01)")
    s.add_argument("--max-missing", type=float, default=0.05,
                   help="maximum missing rate of a variant (0.05)")
    s.add_argument("--chunk-size", type=int, default=10_000,
                   help="most variants per task (evened out across tasks); 10000")
    s.add_argument("--scheduler", help="address of a running Dask scheduler "
                   "(default: a local cluster on this machine)")
    s.add_argument("--out", "-o", required=True,
                   help="output prefix: writes PREFIX.zarr, PREFIX.assoc.tsv, PREFIX.log.txt "
                   "and PREFIX.report.html")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument("--resume", action="store_true",
                   help="finish an interrupted scan: compute only blocks not in PREFIX.zarr")
    s.add_argument("--no-plot", dest="plot", action="store_false",
                   help="do not write the report PREFIX.report.html")

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
    d.add_argument("--scheduler", help="address of a running Dask scheduler")

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


class _QuietInputErrors(logging.Filter):
    """A task that raised InputError (e.g. a corrupt store chunk) is reported once,
    as the command's one-line error: drop the local worker's log of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ((msg.startswith("Compute Failed") and "InputError(" in msg)
                    # tasks cancelled as the command stops on that error
                    or msg.endswith("ended with CancelledError"))


@contextlib.contextmanager
def _client(address: str | None):
    """The Dask client of a command: the given scheduler, or a local cluster.

    Yields ``(client, description)``: what the cluster is, for the log."""
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client, f"scheduler {address}"
        return
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    # Sized to the machine (cgroup limits included): one worker in this process with a
    # thread per core and all the memory. The kernels spend their time in numpy/BLAS,
    # which release the GIL, so threads share U without copies or serialisation.
    with LocalCluster(n_workers=1, threads_per_worker=CPU_COUNT, processes=False,
                      memory_limit=MEMORY_LIMIT, dashboard_address=":0",
                      silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        yield client, (f"local cluster: 1 worker, {CPU_COUNT} threads, "
                       f"{MEMORY_LIMIT / 2**30:.1f} GiB")


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


def _load(args):
    """Genotype Dataset, phenotype, kinship and covariates from the arguments."""
    import numpy as np

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
        if not args.pheno or not args.kinship:
            raise InputError(g, "a text genotype matrix needs --pheno and --kinship",
                             "give both (or use a PLINK prefix)")
        carried = None
    else:
        raise InputError(g, "no PLINK fileset (.bed/.bim/.fam) or text matrix of that name",
                         "give a PLINK prefix without extension, or a text matrix file")
    n = ds.sizes["samples"]
    if args.pheno:
        y, ysrc = io.read_phenotype(args.pheno, args.pheno_col, n), args.pheno
    elif carried is not None:
        y = io.select_phenotype(np.asarray(carried, dtype=np.float64), args.pheno_col,
                                carried_src, what)
        ysrc = carried_src
    else:
        raise InputError(g, "the store has no sample_phenotype variable",
                         "give --pheno FILE (one row per store sample)")
    K = (io.read_kinship(args.kinship, n, sample_id=ds["sample_id"].values)
         if args.kinship else None)
    W = io.read_covariates(args.covar, n) if args.covar else None
    if W is not None and not (np.ptp(W[~np.isnan(W).any(axis=1)], axis=0) == 0).any():
        print(f"warning: {args.covar}: no constant column; GEMMA's convention is to include "
              "the intercept as a column of 1s", file=sys.stderr)
    return ds, y, ysrc, K, W


def _count_lines(attrs, n_variants: int, n_tested: int | None) -> list[str]:
    lines = [
        f"## number of total individuals = {attrs['n_samples_total']}",
        f"## number of analyzed individuals = {attrs['n_analysed']}",
        f"## number of covariates = {attrs['n_covariates']}",
        f"## number of total SNPs/var = {n_variants}",
    ]
    if n_tested is not None:
        lines.append(f"## number of analyzed SNPs/var = {n_tested}")
    return lines


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
    import numpy as np

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
             source: str = "", plot: bool = True, **options) -> tuple[Path, object]:
    """Driver shared by ``dlmm scan`` and ``dlmm demo``.

    Fits the null model, computes the variant chunks as Dask tasks, writes each
    to ``PREFIX.zarr`` as it finishes, then assembles the TSV and the log from
    the store, and (``plot``) the report ``PREFIX.report.html``.
    """
    from . import scanner as scan_mod
    from . import store
    from .errors import InputError

    zpath, tsv, log = Path(f"{out}.zarr"), Path(f"{out}.assoc.tsv"), Path(f"{out}.log.txt")
    if not tsv.parent.is_dir():
        raise InputError(tsv.parent, "output folder does not exist", "create it first")
    if resume and not zpath.exists():
        raise InputError(zpath, "nothing to resume", "run the scan without --resume first")
    if not (overwrite or resume):
        for p in (zpath, tsv, log):
            if p.exists():
                raise InputError(p, "output exists", "pass --overwrite, --resume, or another --out")
    scan_mod.validate_inputs(ds, y, kinship=kinship, covariates=covariates, **(sources or {}))
    t0 = time.perf_counter()
    m = ds.sizes["variants"]
    with _client(scheduler) as (client, cluster):
        print(f"dask dashboard: {client.dashboard_link} ({cluster})", file=sys.stderr)
        res = scan_mod.scan(ds, y, kinship=kinship, covariates=covariates, **options,
                            **(sources or {}))
        res.attrs["source"] = source
        print("\n".join(_count_lines(res.attrs, m, None) + _null_lines(res.attrs)))
        store.write_results_zarr(res, zpath, resume=resume, overwrite=overwrite,
                                 client=client, on_block=_Progress())
    res = store.open_results(zpath).load()
    n_tested = int(res["variant_lmm_tested"].sum())
    lines = _count_lines(res.attrs, m, n_tested) + _null_lines(res.attrs)
    skipped = _skipped_line(res, options.get("maf", 0.01), options.get("max_missing", 0.05))
    if skipped:
        lines.insert(5, skipped)
    store.write_tsv(res, tsv)
    lines.append(f"## total computation time = {(time.perf_counter() - t0) / 60:.6g} min")
    tmp = log.with_name(log.name + ".partial")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, log)
    print("\n".join(lines[4:6] if skipped else lines[4:5]))
    print(f"results: {zpath} (Zarr), {tsv}\nlog: {log}")
    if plot:
        from .report import report_path, write_report

        print(f"report: {write_report(res, report_path(out))}")
    return tsv, res


def _scan(args) -> int:
    ds, y, ysrc, K, W = _load(args)
    run_scan(ds, y, out=args.out, overwrite=args.overwrite, resume=args.resume,
             scheduler=args.scheduler, source=_source_name(args.genotypes),
             kinship=K, covariates=W, model=args.model, solver=args.solver,
             em_start=args.em_start, center=args.center, maf=args.maf,
             max_missing=args.max_missing, em_tol=args.em_tol, em_max_iter=args.em_max_iter,
             plot=args.plot,
             sources={"phenotype_source": ysrc, "kinship_source": args.kinship or "kinship",
                      "covariate_source": args.covar or "covariates"})
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
             scheduler=args.scheduler)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dlmm`` command; returns the exit status."""
    args = _parser().parse_args(argv)
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
        return {"scan": _scan, "demo": _demo, "convert": _convert,
                "plot": _plot}[args.command](args)
    except InputError as e:
        print(f"dlmm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
