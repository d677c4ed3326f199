# The README's two set-up commands are `make run` and `make test`.
# Both create .venv through the one shared `venv` step when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: venv run test lint bench demo-models clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch pinned to the CPU build kept on these machines; an unpinned torch pulls a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $@

run: venv
	$(VENV)/bin/feqa serve

test: venv
	bash scripts/test.sh

lint: venv
	$(VENV)/bin/ruff check model worker service training tests bench

bench: venv
	$(PY) -m bench

demo-models: venv
	$(VENV)/bin/feqa train --demo --out models

clean:
	rm -rf $(VENV) var test-artifacts
