#!/usr/bin/env bash
# Train on a TPU pod slice: the same `jaxformer train` runs on every worker VM, and JAX finds its
# peers itself (jax.distributed.initialize reads the TPU metadata). Every worker must see the same
# repository, config and data paths; the run directory should be on a shared bucket/filesystem
# (gs://... via gcsfuse, or Filestore) so that all processes write one checkpoint.
#
#   TPU_NAME=my-v5p-32 ZONE=us-east5-a scripts/launch_tpu_pod.sh configs/my_run.yaml mesh.fsdp=-1 \
#       train.run_dir=/mnt/shared/runs/my_run
#
# Optional: PROJECT (gcloud project), REPO_DIR (checkout on the workers, default ~/jaxformer),
# SETUP=1 to pip-install the checkout on every worker first.
# Start-up bypasses any http(s)_proxy for the coordinator and ends with one line naming the
# cause after mesh.init_timeout_s (default 120 s): see docs/multihost.md.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name (gcloud compute tpus tpu-vm list)}"
: "${ZONE:?set ZONE to the TPU zone, e.g. us-central2-b}"
if [ "$#" -lt 1 ]; then
  echo "usage: TPU_NAME=... ZONE=... $0 CONFIG [key=value ...]" >&2
  exit 2
fi
REPO_DIR="${REPO_DIR:-~/jaxformer}"
PROJECT_FLAG=()
if [ -n "${PROJECT:-}" ]; then PROJECT_FLAG=(--project "$PROJECT"); fi

ARGS=$(printf ' %q' "$@")
SETUP_CMD=""
if [ "${SETUP:-0}" = "1" ]; then
  SETUP_CMD="pip install -q 'jax[tpu]' -e $REPO_DIR && "
fi

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" ${PROJECT_FLAG[@]+"${PROJECT_FLAG[@]}"} --worker=all \
  --command "cd $REPO_DIR && ${SETUP_CMD}python -m jaxformer train${ARGS}"
