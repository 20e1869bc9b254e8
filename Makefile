# Two commands do everything on a fresh machine:
#   make demo   creates .venv, installs the CPU torch wheel, deepscope, and runs `deepscope demo`
#   make test   the same set-up plus test extras, then the whole test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= deepscope-demo

.PHONY: venv install install-test demo test clean bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: the pinned CPU wheel; everything after it finds torch satisfied.
$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIN)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/deepscope demo --out $(DEMO_OUT)

test: install-test
	$(BIN)/python -m pytest

bench: install-test
	# the anchors the benchmarks time deepscope against (old pins: no dependency resolution)
	$(BIN)/pip install --no-deps pyhessian==0.1 loss-landscapes==3.0.6
	for f in benchmarks/*_vs_*.py benchmarks/sweep_throughput.py benchmarks/train_overhead.py; \
		do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
