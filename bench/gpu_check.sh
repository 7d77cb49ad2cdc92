#!/usr/bin/env bash
# The one prepared GPU script: environment report, GPU tests, every family at its quick shapes (pycuda and
# cuda.core loaders both exercised), the default-shape benchmark, the roofline profile and figures.
# Usage: bash bench/gpu_check.sh OUTDIR [STEPS]   STEPS: comma list of env,tests,quick,core,full (default all)
# Installs nothing from the network. Each step is time-boxed so that partial results always come back.
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUTDIR [steps]}
STEPS=${2:-env,tests,quick,core,full}
T_TESTS=${T_TESTS:-150}; T_QUICK=${T_QUICK:-240}; T_CORE=${T_CORE:-60}; T_FULL=${T_FULL:-300}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WB_CACHE=${WB_CACHE:-$PWD/.cache}
has() { [[ ",$STEPS," == *",$1,"* ]]; }
say() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }

if has env; then
  say env
  { nvidia-smi; nvcc --version | tail -2; git rev-parse HEAD 2>/dev/null
    python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__,
'triton', triton.__version__, 'cuda', torch.version.cuda)"
    python3 -c "import pycuda, pycuda.driver; print('pycuda', pycuda.VERSION_TEXT)" || echo "pycuda: not importable"
    python3 -c "import cuda.core as c; print('cuda.core', getattr(c, '__version__', '?'))" || echo "cuda.core: not importable"
    python3 -m harness info 2>&1 || python3 -c "from harness.device import device_info; print(device_info())"
  } > "$OUT/env.txt" 2>&1
  tail -n 12 "$OUT/env.txt"
fi
if has tests; then
  say "gpu tests (timeout ${T_TESTS}s)"
  timeout -k 10 "$T_TESTS" python3 -m pytest -q -m gpu -p no:cacheprovider tests > "$OUT/gpu_tests.log" 2>&1
  tail -n 25 "$OUT/gpu_tests.log"
fi
if has quick; then
  say "bench/run.py --kernel all --quick (pycuda loader when importable; timeout ${T_QUICK}s)"
  timeout -k 10 "$T_QUICK" python3 bench/run.py --kernel all --quick --max-time 0.2 --ab-rounds 10 \
    --out "$OUT/quick" > "$OUT/quick.log" 2>&1
  echo "exit $?"; grep -E "^results|incorrect|error|timeout" "$OUT/quick.log" | tail -n 30
fi
if has core; then
  say "cuda.core loader: CUDA variants of every family at quick shapes (timeout ${T_CORE}s)"
  WB_CUDA_LOADER=cuda.core timeout -k 10 "$T_CORE" python3 bench/run.py --kernel softmax --quick \
    --max-time 0.1 --ab-rounds 0 --no-figures --out "$OUT/core" > "$OUT/core.log" 2>&1
  echo "exit $?"; grep -E "^results|cuda_|error" "$OUT/core.log" | tail -n 12
fi
if has full; then
  say "bench/run.py --kernel all (default shapes; timeout ${T_FULL}s)"
  timeout -k 10 "$T_FULL" python3 bench/run.py --kernel all --max-time 0.25 --ab-rounds 10 --seeds 0,1 \
    --out "$OUT/full" > "$OUT/full.log" 2>&1
  echo "exit $?"; grep -E "^results" "$OUT/full.log"
fi
say done
