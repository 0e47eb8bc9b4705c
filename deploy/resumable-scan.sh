#!/bin/sh
# Run a scan so that running it again finishes it: the one entry point of the
# deploy recipes (compose `scan` service, Kubernetes DaskJob, SLURM batch script).
#
#   resumable-scan.sh OUT_PREFIX GENOTYPES [dlmm scan options...]
#
# - OUT_PREFIX.zarr.partial exists (an interrupted scan): `dlmm scan ... --resume`
#   computes the blocks not written, then writes the tables, logs and report;
# - OUT_PREFIX.zarr exists and its `complete` flag is set: `--resume` writes any
#   output still missing (after a crash between the store and the tables), or says
#   the scan is complete; dlmm refuses either if the inputs or options changed;
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
if [ -d "$out.zarr.partial" ]; then
    echo "dlmm: resuming the interrupted scan in $out.zarr.partial"
    set -- "$@" --resume
elif [ -d "$out.zarr" ] && grep -q '"complete": true' "$out.zarr/.zattrs" 2>/dev/null; then
    echo "dlmm: $out.zarr is complete; writing any missing output"
    set -- "$@" --resume
fi
if [ -n "${DASK_SCHEDULER_ADDRESS:-}" ]; then
    set -- "$@" --scheduler "$DASK_SCHEDULER_ADDRESS"
fi
# shellcheck disable=SC2086  # $DLMM may be a command with arguments
exec ${DLMM:-dlmm} scan "$@" --out "$out"
