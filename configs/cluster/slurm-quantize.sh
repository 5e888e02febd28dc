#!/usr/bin/env bash
# Quantize one model with a Slurm job array: each array task is one quant worker writing its
# share of the output files; a second job, run after every task succeeded, ties them together.
#
#   sbatch --array=0-7 configs/cluster/slurm-quantize.sh MODEL OUT METHOD
#
# MODEL and OUT must be on a file system every node sees. Rerun a failed task with
# `sbatch --array=K ...`: it replaces only its own files.
#SBATCH --job-name=quant
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
set -euo pipefail
MODEL=${1:?usage: sbatch --array=0-N configs/cluster/slurm-quantize.sh MODEL OUT METHOD}
OUT=${2:?output folder}
METHOD=${3:-bnb_4bit_config_bf16}
quant quantize "$MODEL" -o "$OUT" --method "$METHOD" --max-shard-size 5GB \
  --threads "${SLURM_CPUS_PER_TASK:-8}" \
  --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}"
# The last task to finish submits the merge once the whole array has succeeded.
if [ "${SLURM_ARRAY_TASK_ID}" = "${SLURM_ARRAY_TASK_MAX}" ]; then
  sbatch --dependency=afterok:"${SLURM_ARRAY_JOB_ID}" --job-name=quant-merge \
    --wrap "quant merge '$OUT'"
fi
