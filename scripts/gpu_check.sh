#!/usr/bin/env bash
# The GPU check (issue 16): what a developer or instructor with an NVIDIA GPU runs, via `make gpu-check`.
#
#   1. describe    nvidia-smi (if present) and `config.describe()`: the card, torch, device and precision used
#   2. pytest      the test suite on CUDA: KD_QUICK=1 python -m pytest tests -m "not browser" -q
#   3. nb-04/06/07 notebooks 04, 06 and 07 in full mode (jupyter nbconvert --execute); executed copies kept
#   4. bench       python bench/bench_epoch.py: one table per device (the CPU and the GPU)
#
# Every step's log, the executed notebooks and summary.txt (step, exit code, wall seconds) go to
# artifacts/gpu-check/ (git-ignored). Exits 1 if any step failed, 2 (with a message) when torch sees
# no CUDA device, unless --force-cpu is given.
#
# Usage: scripts/gpu_check.sh [--force-cpu] [--quick]
#   --force-cpu  run anyway without CUDA, everything on the CPU (KD_DEVICE=cpu): for testing this script
#   --quick      a few minutes instead of the real check: tests/test_config.py and tests/test_cifar_path.py
#                only, the notebooks with KD_QUICK=1 instead of full mode, the bench on its 6k-image subset
# Environment: GPU_CHECK_PYTHON (default .venv/bin/python, else python3); GPU_CHECK_STEP_TIMEOUT
# (seconds per step, default 1800).
set -u
cd "$(dirname "$0")/.."

force_cpu=0
quick=0
for arg in "$@"; do
  case "$arg" in
    --force-cpu) force_cpu=1 ;;
    --quick) quick=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option '$arg' (use --force-cpu, --quick or --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "${GPU_CHECK_PYTHON:-}" ]]; then PY=$GPU_CHECK_PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
STEP_TIMEOUT=${GPU_CHECK_STEP_TIMEOUT:-1800}
OUT=artifacts/gpu-check
# Passive OpenMP waiting must be set before Python starts (README, Settings); `make` sets it too.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu-check: '$PY' cannot import torch; run 'make setup' first (or set GPU_CHECK_PYTHON)." >&2
  exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  if [[ $force_cpu -eq 0 ]]; then
    cuda_build=$("$PY" -c 'import torch; print(torch.version.cuda or "none (a CPU-only build)")')
    cat >&2 <<EOF
gpu-check: torch cannot see a CUDA GPU on this machine (torch's CUDA version: $cuda_build), so there is
nothing for this check to measure. It is meant for a machine with an NVIDIA GPU and a CUDA build of torch;
on a CPU, 'make test' and 'make bench' are the checks to run.
To test this script itself on the CPU, pass --force-cpu (make gpu-check GPU_CHECK_FLAGS=--force-cpu).
EOF
    exit 2
  fi
  echo "gpu-check: no CUDA here; --force-cpu given, so every step runs on the CPU"
fi
if [[ $force_cpu -eq 1 ]]; then
  export KD_DEVICE=cpu
fi
# The mode `describe` reports; each later step sets or clears KD_QUICK itself.
if [[ $quick -eq 1 ]]; then export KD_QUICK=1; else unset KD_QUICK; fi

mkdir -p "$OUT/notebooks"
summary=$OUT/summary.txt
rows=()
failed=0
timeout_cmd=()
# --foreground: Ctrl-C still reaches the step (without it, timeout leaves the terminal's process group)
command -v timeout >/dev/null 2>&1 && timeout_cmd=(timeout --foreground "$STEP_TIMEOUT")

# run_step NAME COMMAND...: log to $OUT/NAME.log (and the terminal), record exit code and wall seconds.
run_step() {
  local name=$1; shift
  local log=$OUT/$name.log
  echo
  echo "=== gpu-check step '$name' (log: $log)"
  local start end rc limit=()
  declare -F "$1" >/dev/null || limit=(${timeout_cmd[@]+"${timeout_cmd[@]}"})  # shell functions run as they are
  start=$(date +%s.%N)
  { echo "\$ $*"; ${limit[@]+"${limit[@]}"} "$@" 2>&1; } | tee "$log"
  rc=${PIPESTATUS[0]}
  end=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  [[ $rc -ne 0 ]] && failed=$((failed + 1))
  if [[ $rc -eq 124 && ${#limit[@]} -gt 0 ]]; then
    echo "gpu-check: step '$name' ran past ${STEP_TIMEOUT} s and was stopped" | tee -a "$log"
  fi
  rows+=("$(printf '%-12s %5s %9s  %s' "$name" "$rc" "$secs" "$log")")
}

describe() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
  else
    echo "nvidia-smi: not found on PATH"
  fi
  "$PY" -c 'from kd_lessons import config; print(config.describe())' || return
  "$PY" - <<'EOF'
import platform, torch
from kd_lessons import config
if torch.cuda.is_available():
    d = torch.cuda.current_device()
    print(f"GPU: {torch.cuda.get_device_name(d)}; CUDA {torch.version.cuda}; bf16 supported: "
          f"{torch.cuda.is_bf16_supported()}")
print(f"python {platform.python_version()}; data folder {config.data_dir()}; cache folder {config.cache_dir()}")
EOF
}

# Notebooks run as executed copies under $OUT/notebooks; the committed notebooks stay untouched.
nbconvert=("$PY" -m jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout="$STEP_TIMEOUT"
           --output-dir "$OUT/notebooks")

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
run_step describe describe
if [[ $quick -eq 1 ]]; then
  run_step pytest env KD_QUICK=1 "$PY" -m pytest tests/test_config.py tests/test_cifar_path.py -m "not browser" -q \
    -p no:cacheprovider
  for nb in 04_distill_mnist 06_cifar10_gpu 07_hinton_2015_reproduction; do
    rm -f "$OUT/notebooks/$nb.ipynb"  # no executed copy from an earlier run is left to mislead
    run_step "nb-${nb:0:2}" env KD_QUICK=1 "${nbconvert[@]}" "notebooks/$nb.ipynb"
  done
  bench_args=(--quick)
else
  run_step pytest env KD_QUICK=1 "$PY" -m pytest tests -m "not browser" -q -p no:cacheprovider
  for nb in 04_distill_mnist 06_cifar10_gpu 07_hinton_2015_reproduction; do
    rm -f "$OUT/notebooks/$nb.ipynb"
    run_step "nb-${nb:0:2}" env -u KD_QUICK "${nbconvert[@]}" "notebooks/$nb.ipynb"  # full mode
  done
  bench_args=()
fi
[[ $force_cpu -eq 1 ]] && bench_args+=(--device cpu)
run_step bench env -u KD_QUICK "$PY" bench/bench_epoch.py ${bench_args[@]+"${bench_args[@]}"}  # --quick: its own subset

device_line=$(grep -m1 '^device=' "$OUT/describe.log" || echo "device=?")
gpu_line=$(grep -m1 '^GPU: ' "$OUT/describe.log" || echo "GPU: none (CUDA not available)")
{
  what="full check"
  [[ $quick -eq 1 ]] && what="--quick (not the real check)"
  [[ $force_cpu -eq 1 ]] && what="$what, --force-cpu"
  echo "gpu-check started $started on $(hostname); $what"
  echo "$gpu_line"
  echo "$device_line"
  printf '%-12s %5s %9s  %s\n' step exit seconds log
  printf '%s\n' "${rows[@]}"
  if [[ $failed -eq 0 ]]; then echo "result: PASS (all ${#rows[@]} steps exited 0)"
  else echo "result: FAIL ($failed of ${#rows[@]} steps failed; see their logs)"; fi
} > "$summary"
echo
cat "$summary"
echo "(summary, logs and executed notebooks under $OUT/)"
[[ $failed -eq 0 ]]
