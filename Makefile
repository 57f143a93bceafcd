# Two commands on a fresh machine: `make demo` and `make test`.
# Set-up is a virtual environment in .venv; it is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vgrad-installed

.PHONY: setup demo test clean

setup: $(STAMP)

# torch/torchvision first and pinned: these versions install from the machine's disk;
# any other request would download a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/vgrad grid list
	$(VENV)/bin/vgrad grid show paper --limit 8
	$(VENV)/bin/vgrad model --input cifar --depth 20 --arch residual | head -8
	$(VENV)/bin/vgrad grid show smoke
	RAY_AUTH_MODE=token $(VENV)/bin/vgrad probe --grid smoke --out ./results --steps 4
	RAY_AUTH_MODE=token $(VENV)/bin/vgrad sweep --grid smoke --storage ./results --resume

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) results .pytest_cache
