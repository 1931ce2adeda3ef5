# SMS marketing platform. `make run` starts everything on embedded defaults; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PG_URL ?= postgresql://postgres@127.0.0.1:5432/smsplatform
REDIS_URL ?= redis://127.0.0.1:6379/15
AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//

# The embedded local run is in debug, the only mode that starts without DJANGO_SECRET_KEY
# (smsplatform/settings.py); production sets DJANGO_SECRET_KEY and leaves DJANGO_DEBUG off.
migrate seed run docs: export DJANGO_DEBUG ?= 1

.PHONY: venv install migrate seed run test test-sqlite test-postgres test-celery test-celery-rabbitmq lint bench docs clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=python3"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

# Web + Celery worker + beat on SQLite and the file-based broker.
run: seed
	$(PY) manage.py runplatform

# The README's test command: the suite on SQLite, again on PostgreSQL, then the tests
# that drive a real Celery worker through Redis (.ci/run starts both servers), with the
# other real-process tests (Node MCP clients, fuzzers: marker real_clients) run once there.
test: test-sqlite test-postgres test-celery test-celery-rabbitmq

# Each suite runs in two passes: the process-free tests in parallel (pytest-xdist, whole files per
# worker), then, once and one at a time, the `process` tests that start servers or subprocesses
# (SMSC simulator, live server, short-link server, Kannel), which would only fight over the cores.
TEST_WORKERS ?= auto
PARALLEL := -n $(TEST_WORKERS) --dist loadfile -m "not celery_worker and not topology and not process and not browser and not real_clients"
SERIAL := -m "process and not celery_worker and not topology and not browser and not real_clients"

test-sqlite: install
	$(PY) -m pytest -q -p no:cacheprovider $(PARALLEL)
	$(PY) -m pytest -q -p no:cacheprovider $(SERIAL)

test-postgres: install
	DATABASE_URL=$(PG_URL) $(PY) -m pytest -q -p no:cacheprovider $(PARALLEL)
	DATABASE_URL=$(PG_URL) $(PY) -m pytest -q -p no:cacheprovider $(SERIAL)

# The real-process tests, run once: a real Celery worker on Redis, and the admin in Debian's chromium.
test-celery: install
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(PY) -m pytest -q -p no:cacheprovider -m "celery_worker or browser or real_clients"

# The real-worker tests again with RabbitMQ as the broker (production runs either), and the
# topology test: production's processes on this one machine, one of each kind killed mid-send.
test-celery-rabbitmq: install
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(AMQP_URL) $(PY) -m pytest -q -p no:cacheprovider -m "celery_worker or topology"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

bench: install
	$(PY) bench/run_all.py

docs: install
	$(PY) manage.py mcp_tool_reference --write docs/MCP_TOOLS.md

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
