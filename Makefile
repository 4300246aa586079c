# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench install clean down chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "greenctl needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/greenctl demo

# Two pytest calls: the suite on 3 xdist workers (--dist loadfile: a file's tests, and its module
# fixtures, stay on one worker; most tests wait on leases and subprocesses, so 3 workers on 2 cores
# still gain: 456-524 s vs 534 s with 2 on 2026-12-01), then the tests marked `alone` (pyproject
# markers: they need the machine to themselves, e.g. per-task energy within 2 % of fake RAPL
# counters), serially.
test: $(STAMP) chromium lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 -n 3 --dist loadfile -m "not alone"
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 -m alone
	COMPOSE_CHECK_OPTIONAL=1 $(MAKE) --no-print-directory compose-check

# Layer contracts (pyproject.toml [tool.importlinter]) and ruff's small rule set ([tool.ruff]).
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check --quiet .

# tests/test_html_report.py opens the HTML report in headless Chromium (Debian package `chromium`).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# docker-compose.yml built and run for real (tests/compose/check.sh): a private dockerd, images
# from Debian packages, every healthcheck, `greenctl submit --wait`, Flower's auth, `down -v`.
# From `make test` it is skipped, saying why, where no Docker engine can start (needs root).
.PHONY: compose-check
compose-check: $(STAMP)
	PY=$(PY) bash tests/compose/check.sh

bench: $(STAMP)
	$(PY) -m bench all

down: $(STAMP)
	$(VENV)/bin/greenctl down

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
