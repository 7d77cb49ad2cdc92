#!/usr/bin/env bash
# The one prepared GPU script: environment report, correctness of every family on the GPU, the benchmark-target
# ("headline") shapes, both CUDA loaders, the GPU tests, the quick and default-shape sweeps.
# Usage: bash bench/gpu_check.sh OUTDIR [STEPS]
#   STEPS: comma list of env,checks,headline,core,tests,quick,full (default env,checks,headline,core,tests)
# Installs nothing from the network. Each step is time-boxed (T_* seconds) so partial results always come back.
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUTDIR [steps]}
STEPS=${2:-env,checks,headline,core,tests}
T_CHECKS=${T_CHECKS:-150}; T_HEAD=${T_HEAD:-60}; T_CORE=${T_CORE:-45}; T_TESTS=${T_TESTS:-300}
T_QUICK=${T_QUICK:-300}; T_FULL=${T_FULL:-600}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WB_CACHE=${WB_CACHE:-$PWD/.cache}
FAMILIES="attention attention_decode matmul softmax knn quant_gemm"
has() { [[ ",$STEPS," == *",$1,"* ]]; }
say() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }
run() {  # run NAME TIMEOUT ARGS...: one bench/run.py invocation, time-boxed, log in OUT/NAME.log
  local name=$1 t=$2; shift 2
  timeout -k 10 "$t" python3 bench/run.py "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? $(grep -E '^results' "$OUT/$name.log" | tail -n 1)" | tee -a "$OUT/steps.log"
}

# a committed device profile (bench/results/<gpu>/profile.json) seeds the roofline cache: no re-measuring
python3 - <<'PY' 2>/dev/null
from pathlib import Path
import shutil
from harness.device import device_info
from roofline.ceilings import _slug, profile_path
d = device_info()
src = Path("bench/results") / _slug(str(d.get("name") or "")) / "profile.json"
if d.get("available") and src.exists() and not profile_path(d).exists():
    profile_path(d).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, profile_path(d))
    print("roofline profile seeded from", src)
PY

if has env; then
  say env
  { nvidia-smi; nvcc --version | tail -2; echo "commit ${WB_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null)}"
    python3 -c "import pycuda, pycuda.driver; print('pycuda', pycuda.VERSION_TEXT)" || echo "pycuda: not importable"
    python3 -m harness info 2>&1
  } > "$OUT/env.txt" 2>&1
  tail -n 5 "$OUT/env.txt"
fi
if has checks; then
  say "correctness of every family at its quick shapes, families in parallel (timeout ${T_CHECKS}s)"
  for fam in $FAMILIES; do
    [[ $fam == attention_decode ]] && continue  # --kernel attention covers both attention problems
    WB_TUNE=0 run "check_$fam" "$T_CHECKS" --kernel "$fam" --quick --check-only --seeds 0,1 &
  done
  wait
fi
if has headline; then
  say "benchmark-target shapes, one family at a time (timeout ${T_HEAD}s each)"
  for fam in $FAMILIES; do
    [[ $fam == attention_decode ]] && continue  # --kernel attention runs both attention problems
    t_var="T_HEAD_$fam"; t=${!t_var:-$T_HEAD}  # per-family box, e.g. T_HEAD_attention=70
    run "head_$fam" "$t" --kernel "$fam" --headline --max-time 0.25 --ab-rounds 10 --seeds 0,1 --no-figures
  done
fi
if has core; then
  say "cuda.core loader: softmax at its quick shapes (timeout ${T_CORE}s)"
  WB_CUDA_LOADER=cuda.core run core "$T_CORE" --kernel softmax --quick --check-only --no-figures
fi
if has tests; then
  say "gpu tests (timeout ${T_TESTS}s)"
  WB_TUNE=0 timeout -k 10 "$T_TESTS" python3 -m pytest -v -m gpu -p no:cacheprovider tests \
    > "$OUT/gpu_tests.log" 2>&1
  tail -n 3 "$OUT/gpu_tests.log"
fi
if has quick; then
  say "bench/run.py --kernel all --quick (timeout ${T_QUICK}s)"
  run quick "$T_QUICK" --kernel all --quick --max-time 0.2 --ab-rounds 10
fi
if has full; then
  say "bench/run.py --kernel all (default shapes; timeout ${T_FULL}s)"
  run full "$T_FULL" --kernel all --max-time 0.25 --ab-rounds 10 --seeds 0,1
fi
say done
