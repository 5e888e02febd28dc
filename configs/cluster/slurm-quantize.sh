#!/usr/bin/env bash
# Quantize one model with a Slurm job array: each array task is one quant worker writing its
# share of the output files; a second job, run after every task succeeded, ties them together.
#
#   sbatch --array=0-7 configs/cluster/slurm-quantize.sh MODEL OUT METHOD
#
# MODEL and OUT must be on a file system every node sees; quant must be on PATH. Rerun a
# failed task K of N with `sbatch --array=K configs/cluster/slurm-quantize.sh MODEL OUT
# METHOD N`: it replaces only its own files, then submits the merge again. (N is needed
# there: a resubmitted array of one task has SLURM_ARRAY_TASK_COUNT=1.)
# QUANT_MAX_SHARD_SIZE (default 5GB) sets the size of the output files, the unit of work
# the workers share.
#SBATCH --job-name=quant
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
set -euo pipefail
MODEL=${1:?usage: sbatch --array=0-N configs/cluster/slurm-quantize.sh MODEL OUT METHOD [WORKERS]}
OUT=${2:?output folder}
METHOD=${3:-bnb_4bit_config_bf16}
WORKERS=${4:-${SLURM_ARRAY_TASK_COUNT}}
quant quantize "$MODEL" -o "$OUT" --method "$METHOD" --max-shard-size "${QUANT_MAX_SHARD_SIZE:-5GB}" \
  --threads "${SLURM_CPUS_PER_TASK:-8}" \
  --shard "${SLURM_ARRAY_TASK_ID}/${WORKERS}"
# The highest-numbered task of this array submits the merge; Slurm starts it once every
# task of the array has succeeded, and drops it if one failed (rerun that task: its
# array submits the merge again).
if [ "${SLURM_ARRAY_TASK_ID}" = "${SLURM_ARRAY_TASK_MAX}" ]; then
  sbatch --dependency=afterok:"${SLURM_ARRAY_JOB_ID}" --kill-on-invalid-dep=yes \
    --job-name=quant-merge --wrap "quant merge '$OUT'"
fi
