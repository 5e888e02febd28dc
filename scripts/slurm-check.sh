#!/usr/bin/env bash
# Runs configs/cluster/slurm-quantize.sh on a real Slurm: brings up a one-node cluster on
# this machine (Debian's slurm-wlm and munge; a minimal slurm.conf for this host), submits
# the recipe as README.md documents it (an array of workers, then the merge it submits
# with a dependency), waits, and compares the result with one run of `quant quantize`
# byte for byte (the timings in quantization_info.json aside). Stops everything it started.
#
#   sudo scripts/slurm-check.sh [MODEL_FOLDER] [METHOD] [WORKERS]
#
# Environment:
#   QUANT_BIN=FILE     the quant CLI (default: target/release/quant, else target/debug/quant)
#   SHARD_SIZE=SIZE    --max-shard-size for both runs, small enough to give every worker
#                      files (default 1MB)
#   CHECK_DIR=DIR      scratch folder (default: a new temporary folder, removed at the end)
# Run by hand as root on a Debian machine (not part of CI): it installs packages and
# starts daemons. Default model: the sample model `quant demo --keep` writes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
method=${2:-bnb_4bit_config_bf16}
workers=${3:-3}
shard_size=${SHARD_SIZE:-1MB}
[ "$(id -u)" = 0 ] || { echo "run as root (installs slurm-wlm and munge, starts their daemons)" >&2; exit 2; }

quant=${QUANT_BIN:-}
if [ -z "$quant" ]; then
  for q in "$repo/target/release/quant" "$repo/target/debug/quant"; do
    [ -x "$q" ] && { quant=$q; break; }
  done
fi
[ -x "${quant:-}" ] || { echo "no quant CLI: build it (cargo build --release -p quant-cli) or set QUANT_BIN" >&2; exit 2; }
quant=$(readlink -f "$quant")

echo "== packages"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi
slurmctld -V

work=${CHECK_DIR:-$(mktemp -d /tmp/quant-slurm.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
chmod 755 "$work"
pids=()
cleanup() {
  set +e
  echo "== stopping what this script started"
  if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
    scancel --quiet --user=root 2>/dev/null
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[$i]}" 2>/dev/null && wait "${pids[$i]}" 2>/dev/null
  done
  if [ -f "$work/munge/munged.pid" ]; then
    kill "$(cat "$work/munge/munged.pid")" 2>/dev/null
  fi
  [ -z "${CHECK_DIR:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

echo "== munge"
mkdir -p "$work/munge"
chown munge: "$work/munge"
chmod 755 "$work/munge"
key="$work/munge/munge.key"
dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
chown munge: "$key"
chmod 400 "$key"
runuser -u munge -- munged --key-file="$key" --socket="$work/munge/munge.socket" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
  --seed-file="$work/munge/munged.seed"
for _ in $(seq 50); do [ -S "$work/munge/munge.socket" ] && break; sleep 0.1; done
munge --socket="$work/munge/munge.socket" -n | unmunge --socket="$work/munge/munge.socket" >/dev/null
echo "munged up ($work/munge/munge.socket)"

echo "== slurm.conf"
host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
mkdir -p "$work/state" "$work/spool" "$work/jobs"
cat >"$work/slurm.conf" <<EOF
ClusterName=quantcheck
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6917
SlurmdPort=6918
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm.conf"
cat "$SLURM_CONF"

echo "== daemons"
slurmctld -D -i >"$work/slurmctld.stdout" 2>&1 &
pids+=($!)
slurmd -D >"$work/slurmd.stdout" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
  sleep 0.2
done
sinfo

echo "== input"
model=${1:-}
if [ -z "$model" ]; then
  "$quant" demo --keep "$work/demo" --methods basic_bf16 >/dev/null
  model="$work/demo/sample"
fi
model=$(readlink -f "$model")
echo "model $model, method $method, $workers workers, --max-shard-size $shard_size"

echo "== one run"
"$quant" quantize "$model" -o "$work/single" --method "$method" --max-shard-size "$shard_size" --quiet

# As README.md documents it: `sbatch --array=0-N configs/cluster/slurm-quantize.sh MODEL OUT
# METHOD`, with quant on PATH. This machine's CPUs and memory override the recipe's
# #SBATCH requests (command-line options win over #SBATCH lines).
export PATH="$(dirname "$quant"):$PATH"
export QUANT_MAX_SHARD_SIZE="$shard_size"
mkdir -p "$work/jobs"
cd "$work/jobs"
recipe="$repo/configs/cluster/slurm-quantize.sh"
submit() {
  sbatch --parsable --cpus-per-task=1 --mem=1G "$@"
}
# Waits until the queue is empty (the array, then the merge it submits), then prints and
# removes the jobs' output files.
wait_and_show() {
  sleep 1
  for _ in $(seq 1200); do
    [ "$(squeue -h 2>/dev/null | wc -l)" = 0 ] && break
    sleep 0.5
  done
  for f in $(ls -tr "$work/jobs"/slurm-*.out 2>/dev/null); do
    echo "--- $(basename "$f")"
    cat "$f"
    rm -f "$f"
  done
}
status=0
# Compares output folder $1 with the one run, file by file.
compare() {
  local out=$1 bad=0
  (cd "$work/single" && find . -type f | sort) >"$work/single.files"
  (cd "$out" && find . -type f | sort) >"$work/other.files"
  if ! diff "$work/single.files" "$work/other.files"; then
    echo "the two folders hold different files"
    bad=1
  fi
  while read -r f; do
    a="$work/single/$f" b="$out/$f"
    [ -f "$b" ] || continue
    if [ "$(basename "$f")" = quantization_info.json ]; then
      # The run's seconds differ from run to run; everything else must not.
      if diff <(jq -S 'del(.seconds)' "$a") <(jq -S 'del(.seconds)' "$b") >/dev/null; then
        echo "same (seconds aside) $f"
      else
        echo "DIFFERENT $f"
        diff <(jq -S . "$a") <(jq -S . "$b") | head -20
        bad=1
      fi
    elif cmp -s "$a" "$b"; then
      echo "byte-identical $f ($(stat -c %s "$a") bytes)"
    else
      echo "DIFFERENT $f"
      bad=1
    fi
  done <"$work/single.files"
  if [ "$bad" = 0 ]; then
    echo "RESULT: $out is the folder one run writes"
  else
    echo "RESULT: $out differs from one run (see above)"
    status=1
  fi
}
command -v jq >/dev/null || apt-get install -y -qq jq >/dev/null

echo "== the recipe on Slurm: sbatch --array=0-$((workers - 1)) slurm-quantize.sh MODEL OUT METHOD"
array=$(submit --array=0-$((workers - 1)) "$recipe" "$model" "$work/slurm" "$method")
echo "submitted array job $array"
wait_and_show
echo "== comparison (one run vs Slurm)"
compare "$work/slurm"

if [ "$workers" -ge 3 ]; then
  k=1
  echo "== a failed worker rerun as documented: the array without task $k, then sbatch --array=$k ... $workers"
  others=$(seq -s, 0 $((workers - 1)) | sed "s/\b$k,//")
  array=$(submit --array="$others" "$recipe" "$model" "$work/rerun" "$method" "$workers")
  echo "submitted array job $array (tasks $others)"
  wait_and_show
  array=$(submit --array="$k" "$recipe" "$model" "$work/rerun" "$method" "$workers")
  echo "submitted array job $array (task $k)"
  wait_and_show
  echo "== comparison (one run vs Slurm with a rerun task)"
  compare "$work/rerun"
fi
exit "$status"
