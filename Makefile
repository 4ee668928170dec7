# Parley: `make run` serves the app (embedded mode), `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Django's debug pages (tracebacks, URL listings) only on request: DEBUG=1 make run.
DEBUG ?= 0
# Pytest flags for both passes; override e.g. PYTEST_ARGS="-x -k consumer".
PYTEST_ARGS ?=

.PHONY: run test test-embedded test-services bench bench-quick chaos lint clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Embedded default: SQLite, in-process channel layer and agent worker.
run: $(VENV)/.installed
	@mkdir -p var
	env -u REDIS_URL -u DATABASE_URL $(PY) manage.py migrate --noinput -v0
	env -u REDIS_URL -u DATABASE_URL $(PY) manage.py seed_demo
	@echo "Parley: open http://127.0.0.1:$(PORT)/ and log in with the demo login above."
	env -u REDIS_URL -u DATABASE_URL DEBUG=$(DEBUG) $(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) config.asgi:application

# The embedded suite always; the same suite plus the multi-process integration
# tests on PostgreSQL and Redis when DATABASE_URL and REDIS_URL are set.
# The two passes share no service (SQLite and in-process layers; PostgreSQL and
# Redis), so they run side by side; the second pass's output follows the first's.
test: $(VENV)/.installed-dev
	@mkdir -p var
	@if [ -n "$$REDIS_URL" ] && [ -n "$$DATABASE_URL" ]; then \
	  $(MAKE) --no-print-directory test-services > var/test-services.log 2>&1 & \
	  services=$$!; \
	  $(MAKE) --no-print-directory test-embedded; embedded=$$?; \
	  wait $$services; status=$$?; \
	  echo "=== the PostgreSQL/Redis pass (var/test-services.log) ==="; \
	  cat var/test-services.log; \
	  test $$embedded -eq 0 -a $$status -eq 0; \
	else \
	  $(MAKE) --no-print-directory test-embedded && \
	  echo "REDIS_URL/DATABASE_URL not set: skipped the PostgreSQL/Redis pass"; \
	fi

test-embedded: $(VENV)/.installed-dev
	@mkdir -p var
	env -u REDIS_URL -u DATABASE_URL $(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# Tests of an embedded server process ran in the embedded pass: not again here.
test-services: $(VENV)/.installed-dev
	$(PY) -m pytest -m "not browser and not embedded_process" $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(PY) -m bench.run

bench-quick: $(VENV)/.installed-dev
	$(PY) -m bench.run --quick

# Faults under a steady load (roadmap issue 25): quick by default (< 10 min),
# `make chaos CHAOS=full` for the full counts; writes bench/CHAOS.md.
chaos: $(VENV)/.installed-dev
	CHAOS="$(CHAOS)" $(PY) -m chaos

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf var/ tests/artifacts/ .pytest_cache
