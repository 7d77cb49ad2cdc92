# Two commands on a fresh machine (README): `make bench` runs the main job, `make test` runs the lint + tests.
# The venv sees the machine's own packages (a GPU box's CUDA torch/triton stay in use, nothing is downloaded
# there); on a machine with no torch, the CPU build is installed first (plain `torch` would pull a multi-GB CUDA one).
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL ?= softmax
ARGS  ?=
CUBLAS ?= auto
# pytest-xdist workers: the suite is mostly single-threaded subprocesses (nvcc, g++, the interpreter), so two
# workers halve its wall time on CI's 2 cores; TEST_JOBS=0 runs it in one process, the default where a GPU is
# visible (its tests time kernels: two workers would share the card)
# (tests/ uses no benchmark fixture: -p no:benchmark spares its "disabled under xdist" warnings)
TEST_JOBS ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 0 || echo 2)

.PHONY: bench test lint gpu-check gpu-prep gpu-plan clean
bench: $(STAMP)
	$(PY) bench/run.py --kernel $(KERNEL) $(ARGS)

test: $(STAMP) lint
	$(PY) -m pytest -q -rfE -n $(TEST_JOBS) -p no:benchmark tests
	$(PY) -m pytest -q -rfE -n $(TEST_JOBS) bench/test_bench_kernels.py --benchmark-disable

lint: $(STAMP)
	$(PY) -m ruff check .

gpu-check: $(STAMP)
	bash bench/gpu_check.sh runs/gpu-check

# CPU side of a GPU lease: nvcc every CUDA variant for sm_90a into .cache/gpu-prep, the wheels into .whl/, the git
# sha into .cache/gpu-prep/provenance.json; prints the carried size and the command to run there.
gpu-prep: $(STAMP)
	$(PY) -m harness.gpurun prep

gpu-plan: $(STAMP)
	$(PY) -m harness gpu-run --plan

$(STAMP): setup.py
	python3 -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -c "import wheel, setuptools" 2>/dev/null || $(PY) -m pip install -q wheel setuptools
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	@# course files include <cublas_v2.h>: where nvcc has no cuBLAS, the nvidia-cublas wheel (~450 MB download,
	@# ~580 MB installed) goes into the venv; CUBLAS=0 skips it (then such files fail with what to install)
	@pkg=$$($(PY) -c "from harness.cuda import cublas_needed; print(cublas_needed())"); \
	if [ -n "$$pkg" ] && [ "$(CUBLAS)" != 0 ]; then echo "installing $$pkg (cuBLAS for nvcc)"; \
	$(PY) -m pip install -q --no-deps $$pkg; fi
	touch $(STAMP)

clean:
	rm -rf $(VENV) .cache runs
