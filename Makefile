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

.PHONY: install bench test test-fast report clean-results

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch==2.13.0 is pinned so pip takes the CPU wheel; never an open range (a CUDA build is GBs)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/prefbench run $(SUITE) --preset $(PRESET) --algorithms $(ALGORITHMS) --seeds $(SEEDS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

report: $(STAMP)
	$(VENV)/bin/prefbench report --suite $(SUITE)

clean-results:
	rm -rf results/$(SUITE)
