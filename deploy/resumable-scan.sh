#!/bin/sh
# Run a scan so that running it again finishes it: the one entry point of the
# deploy recipes (compose `scan` service, Kubernetes DaskJob, SLURM batch script).
#
#   resumable-scan.sh OUT_PREFIX GENOTYPES [dlmm scan options...]
#
# - OUT_PREFIX.assoc.tsv exists: the scan is complete, nothing is done (exit 0);
# - OUT_PREFIX.zarr exists: `dlmm scan ... --resume` computes the missing blocks;
# - otherwise a new scan starts.
# Uses the scheduler in $DASK_SCHEDULER_ADDRESS when set (the Dask Kubernetes
# operator and deploy/slurm/slurm_cluster.py set it), else a local cluster.
# $DLMM is the dlmm command (default: dlmm).
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUT_PREFIX GENOTYPES [dlmm scan options...]" >&2
    exit 2
fi
out=$1
shift
if [ -e "$out.assoc.tsv" ]; then
    echo "dlmm: $out.assoc.tsv exists: the scan is complete (delete it to run again)"
    exit 0
fi
if [ -d "$out.zarr" ]; then
    echo "dlmm: resuming the scan in $out.zarr"
    set -- "$@" --resume
fi
if [ -n "${DASK_SCHEDULER_ADDRESS:-}" ]; then
    set -- "$@" --scheduler "$DASK_SCHEDULER_ADDRESS"
fi
# shellcheck disable=SC2086  # $DLMM may be a command with arguments
exec ${DLMM:-dlmm} scan "$@" --out "$out"
