# The registry's commands. On a fresh machine: `make up`, then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGES := libs/registry_common libs/registry_contracts $(addprefix services/,accounts issuance transfers compliance auctions notifications gateway) tools/registry_cli tools/demo
# Tests use the machine's servers when no Docker engine answers (see README, "Tests").
export TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/

.PHONY: venv up down logs status lint test test-unit bench chaos fuzz infra clean

$(VENV)/.installed: requirements.lock $(addsuffix /pyproject.toml,$(PACKAGES))
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade 'pip==25.3' 'setuptools==80.9.0' wheel
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES))
	@touch $@

venv: $(VENV)/.installed

infra:
	bash scripts/infra.sh

up: venv infra
	$(PY) -m registry_common.launcher up

down:
	@if [ -x $(PY) ]; then $(PY) -m registry_common.launcher down; else echo "not running"; fi

status: venv
	$(PY) -m registry_common.launcher status

logs:
	tail -n 50 -F var/run/log/*.log

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration and not system" $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench $(BENCH)

# The load-and-fault run (a few minutes, loopback, its own databases and broker node): exits non-zero
# unless every invariant held. CHAOS_SECONDS sets how long the load and the faults last.
chaos: venv
	$(PY) -m chaos $(CHAOS)

# Schemathesis over every route of the gateway's OpenAPI document, every role (at most 10 minutes).
fuzz: venv
	$(PY) -m fuzz $(FUZZ)

# The pilot's three periods end to end on the running system, through the public API (a fresh `make up`:
# the programme clock only moves forward; see README, "The demo"). DEMO="--installations 8" and so on.
.PHONY: demo
demo: venv
	$(PY) -m registry_demo $(DEMO)

clean: down
	rm -rf $(VENV) var/run
