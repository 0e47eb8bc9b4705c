"""Start a Dask cluster of SLURM jobs (dask-jobqueue) and run one command against it.

    python deploy/slurm/slurm_cluster.py --jobs 4 -- COMMAND [ARGS...]

The scheduler runs in this process (inside the batch job of
``deploy/slurm/scan.sbatch``); each worker is a SLURM job configured by
``deploy/slurm/jobqueue.yaml``.  COMMAND sees the scheduler's address in
``DASK_SCHEDULER_ADDRESS``; the workers are cancelled when it ends, and its
exit status is returned.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_config(path: str | os.PathLike = HERE / "jobqueue.yaml") -> None:
    """Merge a jobqueue.yaml into Dask's configuration (it takes precedence)."""
    import dask.config
    import yaml

    with open(path) as fh:
        dask.config.update(dask.config.config, yaml.safe_load(fh), priority="new")


def make_cluster(config: str | os.PathLike = HERE / "jobqueue.yaml", **overrides):
    """A ``dask_jobqueue.SLURMCluster`` from ``config`` (no job is submitted yet)."""
    load_config(config)
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(**overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=4, help="worker jobs to submit (4)")
    p.add_argument("--config", default=HERE / "jobqueue.yaml", help="jobqueue.yaml to use")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to run after --")
    with make_cluster(args.config) as cluster:
        print(cluster.job_script(), file=sys.stderr, flush=True)
        cluster.scale(jobs=args.jobs)
        env = dict(os.environ, DASK_SCHEDULER_ADDRESS=cluster.scheduler_address)
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
