# One place for the README's commands. Override TORCH_SPEC for a GPU build, e.g.
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test test-slow test-gpu demo lint mutate

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

lint: setup
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

test-gpu: setup
	$(PY) -m pytest -q -m gpu

# Plants named bugs in a temporary copy of the repo, one at a time, and lists those no test catches (not in CI:
# 10-20 minutes on 2 cores). MUTATE_ARGS="--only NAME,..." or "--list".
mutate: setup
	$(PY) tools/mutate.py $(MUTATE_ARGS)

demo: setup
	$(VENV)/bin/flip demo $(DEMO_ARGS)
