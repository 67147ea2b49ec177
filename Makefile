# Each target creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Playwright (test extra) drives Debian's chromium through executable_path; it never downloads a browser of its own
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: demo test serve bench robustness defects fitsizes eval baselines clean lock

# constraints.txt pins every installed package to the versions the suite was last run with; `make lock`
# refreshes it on purpose (newest allowed by pyproject.toml), never a plain install
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

lock:  ## re-resolve the newest versions pyproject.toml allows into constraints.txt (then run make test)
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	.lock-venv/bin/python -m pip freeze --exclude-editable > constraints.txt
	rm -rf .lock-venv

demo: $(STAMP)  ## generate a product, train, run the watcher while a simulated camera drops parts, summarise from the DB
	$(PY) -m inspector.tooling.demo

# one test worker more than the cores, at most 4: many tests wait on processes they started (a watcher, a broker,
# a database outage), and a third worker on two cores fills those waits (the suite 8:06 against 8:36 with two,
# measured 2026-12-07 on this 2-core machine)
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(4, len(os.sched_getaffinity(0)) + 1))')

test: $(STAMP)  ## run the test suite (test files spread over one worker process more than the cores, at most 4)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

serve: $(STAMP)  ## the review page on [web] host:port (default http://127.0.0.1:8080/)
	$(PY) -m inspector serve

bench: $(STAMP)  ## speed ratios on generated 5 MP JPEGs
	$(PY) -m inspector bench

robustness: $(STAMP)  ## detection quality on perturbed copies of ../shared/data (lighting, colour, JPEG, noise, defocus, zoom, placement, pasted spots)
	$(PY) -m inspector.tooling.robustness

defects: $(STAMP)  ## detection limit: defects of 4-64 px pasted into 5 MP parts, default and finest setting (~5 min, 2 cores; add --real for the shared sets, ~25 min; plot in benchmarks/defects.png)
	$(PY) -m inspector bench --defects --plot benchmarks/defects.png

fitsizes: $(STAMP)  ## training at volume: fit time, peak memory and profile size for 200, 1,000 and 5,000 parts (~10 min)
	$(PY) -m inspector bench --fit-sizes 200,1000,5000

eval: $(STAMP)  ## detection quality on ../shared/data
	for d in ../shared/data/*/; do $(PY) -m inspector eval "$$d"; done

baselines: $(STAMP)  ## the two reference baselines on ../shared/data
	$(PY) benchmarks/baselines.py

clean:
	rm -rf $(VENV) demo .pytest_cache
