# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0

DATA_DIR ?= data/sim
DAYS ?= 90
TX_PER_DAY ?= 4000
SEED ?= 7

.PHONY: venv run test lint bench bench-serving clean audit chaos

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/checkout-risk demo --data $(DATA_DIR) --days $(DAYS) --tx-per-day $(TX_PER_DAY) --seed $(SEED)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) -m bench.simulator_throughput
	$(PY) -m bench.feature_views
	$(PY) -m bench.replication
	$(PY) -m bench.offline_engine
	$(PY) -m bench.rung_cost

# open-loop load: single-process baseline vs fused vs graph, one run (6-13 min)
bench-serving: $(STAMP)
	$(PY) -m bench.serving

# known vulnerabilities in every installed dependency (the project itself is not on PyPI)
audit: $(STAMP)
	$(VENV)/bin/pip-audit --skip-editable --progress-spinner off

# the chaos suite alone, longer: make chaos CHAOS_ARGS=--chaos-long
chaos: $(STAMP)
	$(PY) -m pytest -q tests/chaos $(CHAOS_ARGS)

clean:
	rm -rf data reports .run
