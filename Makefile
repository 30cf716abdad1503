# Two entry points that do all the set-up themselves: `make train` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: train test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The runtime needs NumPy, tqdm and threadpoolctl only; the tests add pytest, hypothesis, matplotlib and NVRTC 13 and 12.
$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $@ $(VENV)/.runtime

train: $(VENV)/.runtime
	$(PY) -m gpunet train

test: $(VENV)/.test
	$(PY) -m pytest -q

bench: $(VENV)/.test
	$(PY) -m pip install -q torch==2.13.0 || echo "bench: no PyTorch, gpunet alone"
	$(PY) scripts/bench

clean:
	rm -rf $(VENV) runs .pytest_cache .cache
