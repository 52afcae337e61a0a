# Every target installs what it needs from the project's own files, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: run test test-deep lint sim bench package clean deps

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "pip<26.3"  # chalice 1.34 requires pip<26.3
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

# Browser tests drive Debian's Chromium through Playwright (never `playwright install`, which downloads one).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "Browser tests need Debian's chromium: sudo apt-get install -y chromium"; exit 1; \
	fi

deps: $(STAMP) $(CHROMIUM)

run: $(STAMP)
	$(PY) -m devstack

sim: $(STAMP)
	$(PY) -m arksim

test: $(STAMP) $(CHROMIUM)
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# Every Hypothesis test on its long profile (tests/conftest.py): long runs, kept out of `make test`.
test-deep: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -m hypothesis -n $(PYTEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m scripts.bench

package: $(STAMP)
	$(PY) -m infra.package

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
