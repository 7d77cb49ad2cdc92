#!/usr/bin/env bash
# The one prepared GPU run, as a lent machine runs it (after `make gpu-prep` here):
#   bash bench/gpu_check.sh [BUNDLE_DIR] [gpu-run options...]
# Installs the carried wheels (.whl/, no network), then runs `python3 -m harness gpu-run` (steps by priority under
# a 540 s deadline; results in bench/results/<gpu>/<date>-<sha>/) and packs them into BUNDLE_DIR (default $OUT)
# as one .tgz plus summary.txt and steps.log: a lent machine returns at most 8 files.
set -uo pipefail
BUNDLE=${1:-${OUT:-runs/gpu-bundle}}
shift || true
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl \
    && export PYTHONPATH=$PWD/.site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
[[ -d .cache/gpu-prep ]] && export WB_CACHE=${WB_CACHE:-$PWD/.cache/gpu-prep}
exec python3 -m harness gpu-run --deadline "${DEADLINE:-540}" --bundle "$BUNDLE" "$@"
