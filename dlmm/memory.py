"""Memory known before the work: variants per task from a byte budget, and a scan's peak.

Pure Python and numpy (no dask): the figures come from the sizes alone, so a scan can be
refused in one line before any genotype is read, rather than killed by the kernel.

The constants were measured (``benchmarks/memory_estimate.py``, ``benchmarks/eigh.py``:
peak RSS, VmHWM, of a task or of whole runs, on simulated families) unless their
comment says they are counted; the comments give the figures.  Bytes are counted as the
process's resident memory: arrays, plus the Python runtime of each process
(:data:`RUNTIME`).

A task of the scan holds, per variant and per sample, the float32 genotypes it read (4
bytes); it filters, rotates and fits them in slabs of a fixed size.  A task of the GRM
pass holds the block it read (4) and its genotypes gathered in float32 (4; 8 in float64
with missing calls or ``--standardise``), and adds them into one n x n sum per worker.  A
conversion task holds the float32 dosages, the int8 calls (ploidy bytes) and Zarr's
encoding buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TASK_BUDGET", "MAX_CHUNK", "RUNTIME", "task_bytes", "auto_chunk_size",
           "Estimate", "estimate_scan", "check_fits"]

MiB = 2**20
GiB = 2**30

#: Default bytes one task may hold (its working set, beyond what its worker shares).
#: Measured (``benchmarks/memory_estimate.py``, "chunk"): the scan's rate per variant is
#: flat from ~250 variants per task at n = 10,000 (50 MB) and ~500 at n = 2,000
#: (20 MB).  256 MiB is five times that: 1,170 and 5,850 variants, so tasks stay few
#: (each costs the scheduler and the client's write of its block a few ms) at biobank
#: variant counts, while a worker's tasks (threads x 256 MiB) stay well under the
#: memory of its cores.
TASK_BUDGET = 256 * MiB
#: Most variants per task whatever the budget allows (the CLI's default before chunks
#: by bytes): beyond it a task is no faster per variant (measured up to 10,000 at
#: n = 2,000), and resuming and the progress report are coarser.
MAX_CHUNK = 10_000

#: Resident bytes of a dlmm process besides its data: the interpreter, numpy, scipy,
#: dask, distributed, xarray, zarr and numba with the compiled kernels (measured: the
#: client's peak RSS of a full-rank scan at n = 2,000 is 0.29 GiB, with 0.1 GiB of n x n
#: matrices; a worker's, 1.08 GiB with 0.83 GiB of tasks).
RUNTIME = {"client": 256 * MiB, "worker": 256 * MiB}

# Bytes per variant and per sample held by one task at its peak, and the fixed part: see
# task_bytes.  The scan reads its block (float32) and works on it in slabs of
# kernels._SCAN_SLAB_ELEMENTS (the gathered float64 design and its rotation, a fixed
# part): whole runs (benchmarks/memory_estimate.py "runs", 20,000 variants in blocks of
# 10,000, two threads) measured 4.9 bytes at n = 10,000 and 5.1 at 5,000 beyond U and the
# runtime.  GRM 8.0-8.3 and 1-8 MiB; convert 7.7-12.8 bytes (the 77-113 MiB beside them
# are zarr's import and the store's metadata, once per process: RUNTIME).
_PER_CALL = {
    "scan": 5.0,  # the read (float32), and the slabs' share
    "grm": 8.5,  # the read and the gathered float32 genotypes (4 more in float64)
    "convert": 4.0,  # the float32 read, plus ploidy x 4 (the int8 calls, Zarr's buffers)
}
_CONVERT_PER_PLOIDY = 4.0
_FIXED = {"scan": 48 * MiB, "grm": 16 * MiB, "convert": 16 * MiB}
#: Bytes of one GRM product slab (kernels._SLAB_ELEMENTS in float32) per thread.
_SLAB = 16 * MiB


def _per_variant(task: str, n_samples: int, ploidy: int, float64: bool) -> float:
    if task not in _PER_CALL:
        raise ValueError(f"task must be one of {sorted(_PER_CALL)}, not {task!r}")
    per = _PER_CALL[task]
    if task == "grm" and float64:
        per += 4.0
    elif task == "convert":
        per += ploidy * _CONVERT_PER_PLOIDY
    return per * n_samples


def task_bytes(n_samples: int, chunk: int, *, task: str = "scan", ploidy: int = 2,
               float64: bool = False) -> int:
    """Bytes one task holds at its peak.

    Parameters
    ----------
    n_samples : samples in the block (all those of the store: a task reads them all).
    chunk : variants in the block.
    task : ``"scan"`` (read, filter, rotate, fit), ``"grm"`` (one block of the GRM pass;
        not its n x n sum, which its worker holds once) or ``"convert"``.
    ploidy : calls per sample (``convert``).
    float64 : the GRM block in float64 (missing calls, or the standardised GRM).
    """
    per = _per_variant(task, n_samples, ploidy, float64)
    return int(_FIXED[task] + chunk * per)


def auto_chunk_size(n_samples: int, *, task: str = "scan", budget: int = TASK_BUDGET,
                    ploidy: int = 2, float64: bool = False,
                    n_variants: int | None = None, n_threads: int | None = None) -> int:
    """Variants per task so that a task holds at most ``budget`` bytes, whatever n is.

    As Dask's ``chunks="auto"`` does with its array chunk size, but from what a task of
    dlmm really holds (:func:`task_bytes`): 256 MiB gives 10,000 variants up to
    n = 4,360, 4,360 at 10,000, 436 at 100,000.

    Parameters
    ----------
    n_samples : samples per block (the store's).
    task, ploidy, float64 : as in :func:`task_bytes`.
    budget : bytes per task (default :data:`TASK_BUDGET`).
    n_variants, n_threads : when both are given, also at least two tasks per thread
        (the last tasks then finish together).

    Returns
    -------
    Variants per task, from 1 to :data:`MAX_CHUNK`.
    """
    per = _per_variant(task, n_samples, ploidy, float64)
    room = budget - _FIXED[task]  # (task checked by _per_variant)
    chunk = int(room // per) if per > 0 else MAX_CHUNK
    chunk = max(1, min(MAX_CHUNK, chunk))
    if n_variants and n_threads:
        chunk = min(chunk, max(1, -(-int(n_variants) // (2 * int(n_threads)))))
    return chunk


@dataclass(frozen=True)
class Estimate:
    """A scan's peak memory, by process and phase, broken down.

    ``client_phases`` and ``worker_phases`` map each phase (``"grm"``, ``"eigen"``,
    ``"factor"``, ``"gram"``, ``"scan"``) to what the process holds then (``"kinship"``,
    ``"eigenvectors"``, ``"tasks"``, ``"runtime"``, ...: bytes); ``worker_phases`` are
    per worker (empty when the worker is the client's own process).  ``client`` and
    ``worker`` are the parts at each one's peak phase.
    """

    path: str
    n_samples: int
    client_phases: dict = field(default_factory=dict)
    worker_phases: dict = field(default_factory=dict)

    @property
    def client_phase(self) -> str:
        return _peak_phase(self.client_phases)

    @property
    def worker_phase(self) -> str:
        return _peak_phase(self.worker_phases)

    @property
    def client(self) -> dict:
        return self.client_phases.get(self.client_phase, {})

    @property
    def worker(self) -> dict:
        return self.worker_phases.get(self.worker_phase, {})

    @property
    def client_peak(self) -> int:
        return int(sum(self.client.values()))

    @property
    def worker_peak(self) -> int:
        return int(sum(self.worker.values()))

    def together(self, local_workers: int) -> int:
        """The peak of the client and ``local_workers`` workers on one machine, phase
        by phase."""
        phases = set(self.client_phases) | set(self.worker_phases)
        return int(max((sum(self.client_phases.get(p, {}).values()) + local_workers
                        * sum(self.worker_phases.get(p, {}).values()) for p in phases),
                       default=0))

    def describe(self) -> str:
        """One line: each process's peak and its largest parts."""
        out = f"client {self.client_peak / GiB:.1f} GiB ({_parts(self.client)})"
        if self.worker_phases:
            out += f", each worker {self.worker_peak / GiB:.1f} GiB ({_parts(self.worker)})"
        return out


def _peak_phase(phases: dict) -> str:
    return max(phases, key=lambda k: sum(phases[k].values())) if phases else ""


def estimate_scan(path: str, n_samples: int, n_variants: int, *, rank: int | None = None,
                  n_kinship_variants: int | None = None, chunk: int | None = None,
                  n_traits: int = 1, threads_per_worker: int = 1, n_workers: int = 1,
                  n_contigs: int = 1, in_process: bool = False,
                  rotation_dtype: str = "float64") -> Estimate:
    """Peak memory of a scan on the client and on each worker, before the work.

    Parameters
    ----------
    path : ``"full"`` (the GRM pass, its eigendecomposition, U on every worker),
        ``"lowrank"`` (``--kinship-variants``: the factor and U1 (n, r) on disk) or
        ``"loco"`` (one GRM and eigendecomposition per contig).
    n_samples : analysed samples (n).
    n_variants : variants scanned.
    rank : eigenvectors kept (``--kinship-rank``); low rank: at most the kinship variants.
    n_kinship_variants : the low-rank kinship's variants (``--kinship-variants N``).
    chunk : variants per task (default :func:`auto_chunk_size`).
    n_traits : traits scanned together.
    threads_per_worker : tasks a worker runs at once.
    n_workers : workers (the GRM pass's per-worker sums are added pairwise on one).
    n_contigs : contigs (``loco``).
    in_process : the client and its one worker are one process (the CLI's default
        local cluster): each phase's parts add up, and shared arrays count once.
    rotation_dtype : ``"float32"``: U in float32 on the workers.

    Returns
    -------
    :class:`Estimate`: by phase, ``grm`` (the genotype pass), ``centre`` and ``eigen``
    (the client's eigendecomposition), ``factor`` and ``gram`` (low rank), ``scan`` and
    ``end`` (the result tables).
    """
    if path not in ("full", "lowrank", "loco"):
        raise ValueError(f"path must be 'full', 'lowrank' or 'loco', not {path!r}")
    n, T = int(n_samples), int(threads_per_worker)
    r = min(n, rank or n_kinship_variants or n) if path == "lowrank" else min(n, rank or n)
    chunk = chunk or auto_chunk_size(n)
    tasks = T * task_bytes(n, chunk)
    if path == "lowrank":
        client, worker = _lowrank(n, r, int(n_kinship_variants or r), tasks, T,
                                  chunk * int(n_kinship_variants or r) / max(1, n_variants),
                                  in_process)
    else:
        C = max(1, int(n_contigs)) if path == "loco" else 1
        client, worker = _full(n, r, C, tasks, T, n_workers, in_process, rotation_dtype)
    fields = int(n_variants) * _VARIANT_ROW
    client["end"] = {"results": int(n_variants) * int(n_traits) * _RESULT_ROW}
    for name, phases in (("client", client), ("worker", worker)):
        for parts in phases.values():
            parts["runtime"] = RUNTIME[name]
            if name == "client":
                parts["variant fields"] = fields
    clean = {}
    for name, phases in (("client", client), ("worker", worker)):
        clean[name] = {p: {k: int(v) for k, v in d.items() if v} for p, d in phases.items()}
    return Estimate(path=path, n_samples=n, client_phases=clean["client"],
                    worker_phases=clean["worker"])


def _full(n, r, C, tasks, T, n_workers, in_process, rotation_dtype):
    """Full rank (C = 1) and LOCO (C contigs): (client, worker) phases -> parts."""
    nn = 8.0 * n * n  # one n x n float64 matrix
    block = task_bytes(n, auto_chunk_size(n, task="grm"), task="grm") + T * _SLAB
    # the pass: one sum per worker, two on the worker adding two workers' sums; LOCO:
    # a sum per contig, and their total while each becomes its contig's GRM in place
    sums = C + 1 if C > 1 else (2 if n_workers > 1 and not in_process else 1)
    worker = {"grm": {"kinship sums": sums * nn, "blocks": block}}
    # the client receives the kinship(s) and Dask joins the chunks into a new array
    # (in process the sum is the received chunk)
    client = {"grm": {"kinship (received)": 0 if in_process else C * nn,
                      "kinship (joined)": C * nn}}
    # then per contig: its kinship copied (LOCO: the analysed samples'), centred in place
    # (measured 3.0 n x n when it arrives read-only from a worker process: the received
    # matrix and its centred copy), and LAPACK: K as its
    # workspace, U, and the driver's own workspace; the contigs done before hold their U
    loco = C > 1
    held = {"kinships": C * nn if loco else 0, "eigenvectors before": (C - 1) * nn}
    client["centre"] = {**held, "kinship": nn, "centring copies": 0 if in_process else 2 * nn}
    client["eigen"] = {**held, "kinship": nn, "eigenvectors": nn * r / n,
                       "LAPACK workspace": _EIGH_WORKSPACE * nn}
    client["scan"] = {"eigenvectors": C * nn * r / n}
    # scan blocks run in contig order: a worker holds one or two contigs' U (LOCO's
    # travel in the graph, copies even in process; U itself is scattered, shared)
    u_w = nn * r / n * (0.5 if rotation_dtype == "float32" else 1.0) * min(C, 2)
    shared = in_process and not loco and rotation_dtype != "float32"
    worker["scan"] = {"eigenvectors": 0 if shared else u_w, "tasks": tasks}
    return _merged(client, worker, in_process)


def _lowrank(n, r, q, tasks, T, rows_per_block, in_process):
    """The low-rank path (factor of q kinship variants, U1 (n, r)): phases -> parts.  The
    factor and U1 are on disk, chunked over samples (:func:`dlmm.sharded.lowrank_eigen`):
    a task holds a block's kinship rows on every sample, or a chunk of the factor or U1
    (at most :data:`SAMPLE_CHUNK_BYTES`); a worker, one q x q Gram sum (two while two
    are added); the client, the Gram and its eigenvectors."""
    rows = 8.0 * n * min(q, max(1.0, rows_per_block))  # a block's kinship rows, float64
    gram = 8.0 * q * q
    worker = {"factor": {"tasks": tasks + T * rows},
              "gram": {"Gram sums": 2 * gram,
                       "factor chunk": min(SAMPLE_CHUNK_BYTES, 8.0 * n * q)},
              "scan": {"tasks": tasks + T * min(SAMPLE_CHUNK_BYTES, 8.0 * n * r)}}
    client = {"gram": {"Gram and its eigenvectors": 4 * gram}, "scan": {}}
    return _merged(client, worker, in_process)


def _merged(client, worker, in_process):
    """In process, each phase's worker parts are the client's too."""
    if not in_process:
        return client, worker
    for phase, parts in worker.items():
        client[phase] = {**client.get(phase, {}), **{k: client.get(phase, {}).get(k, 0) + v
                                                     for k, v in parts.items()}}
    return client, {}


#: LAPACK's eigendecomposition beyond the kinship (its workspace) and U, in n x n
#: matrices: dsyevr as kernels.eigh_kinship calls it, 1.03 n x n above the kinship
#: measured at n = 5,000 (benchmarks/eigh.py: U and O(n)).
_EIGH_WORKSPACE = 0.05
#: Bytes of the low-rank factor or U1 per chunk of samples (dlmm.sharded's, counted).
SAMPLE_CHUNK_BYTES = 128 * MiB
#: Client bytes per variant: the variant fields read (ids, positions, alleles: 200-300
#: measured for a .bim of 20,000 variants) and, per trait, the result row as the tables
#: are written (its ~15 float64 columns and their text, counted, not measured).
_VARIANT_ROW = 300
_RESULT_ROW = 200


def check_fits(estimate: Estimate, client_bytes: int, worker_bytes: list[int],
               local_workers: int = 0) -> None:
    """Refuse a scan that cannot fit, in one line, before the work.

    Parameters
    ----------
    estimate : from :func:`estimate_scan`.
    client_bytes : memory the client may use (e.g. the machine's available memory).
    worker_bytes : each worker's memory limit (empty for an in-process cluster,
        whose worker is the client).
    local_workers : worker processes on the client's machine: the client and they
        share ``client_bytes``.

    Raises
    ------
    dlmm.errors.InputError
        ``memory: a full-rank scan of 30,000 samples needs about ... GiB on ...,
        which has ... GiB. Fix: ...``, naming the figures and the way out.
    """
    from .errors import InputError

    short = []
    if estimate.client_peak > client_bytes:
        short.append(f"{estimate.client_peak / GiB:.1f} GiB on the client "
                     f"({_parts(estimate.client)}), which has {client_bytes / GiB:.1f} GiB")
    low = min(worker_bytes) if worker_bytes and estimate.worker_phases else None
    if low is not None and estimate.worker_peak > low:
        short.append(f"{estimate.worker_peak / GiB:.1f} GiB per worker "
                     f"({_parts(estimate.worker)}), and a worker has {low / GiB:.1f} GiB")
    both = estimate.together(local_workers) if local_workers else 0
    if not short and both > client_bytes:
        short.append(f"{both / GiB:.1f} GiB on this machine for the client and its "
                     f"{local_workers} worker process(es), which has "
                     f"{client_bytes / GiB:.1f} GiB")
    if not short:
        return
    what = {"full": "a full-rank scan", "lowrank": "a low-rank scan",
            "loco": "a LOCO scan"}[estimate.path]
    need = max(estimate.client_peak, estimate.worker_peak, both)
    # the way out follows what is short: the client's parts if it is, else the workers'
    parts = estimate.client if estimate.client_peak > client_bytes or \
        estimate.client_peak >= estimate.worker_peak else estimate.worker
    if max(parts, key=parts.get, default="") == "tasks":  # the blocks, not the kinship
        fix = (f"a smaller --chunk-size, fewer --threads, or at least {-(-need // GiB)} GiB "
               "per process")
    elif estimate.path == "lowrank":
        fix = ("keep fewer eigenvectors (--kinship-rank) or fewer --kinship-variants, give "
               f"each process at least {-(-need // GiB)} GiB (a bigger node), or add workers")
    else:
        fix = ("use the low-rank kinship (--kinship-variants 2000, or --kinship-rank K: no "
               f"n x n matrix), or run on a node with at least {-(-need // GiB)} GiB")
    raise InputError("memory", f"{what} of {estimate.n_samples:,} samples needs about "
                     + " and ".join(short), fix)


def _parts(d: dict) -> str:
    top = sorted(((v, k) for k, v in d.items() if k != "runtime"), reverse=True)[:2]
    return ", ".join(f"{k} {v / GiB:.1f}" for v, k in top)
