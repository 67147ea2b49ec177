# Each target creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench eval baselines clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## generate a product, train, run the watcher while a simulated camera drops parts, summarise from the DB
	$(PY) -m inspector.demo

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q

bench: $(STAMP)  ## speed ratios on generated 5 MP JPEGs
	$(PY) -m inspector bench

eval: $(STAMP)  ## detection quality on ../shared/data
	for d in ../shared/data/*/; do $(PY) -m inspector eval "$$d"; done

baselines: $(STAMP)  ## the two reference baselines on ../shared/data
	$(PY) benchmarks/baselines.py

clean:
	rm -rf $(VENV) demo .pytest_cache
