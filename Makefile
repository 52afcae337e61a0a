# Every target installs what it needs from the project's own files, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One worker more than CI's two cores: the stack and browser tests spend much of their time waiting on their
# servers, and a third worker fills the cores meanwhile.
PYTEST_WORKERS ?= 3

.PHONY: run test test-deep lint sim bench package clean deps test-deps toolchains toolchain-package toolchain-scan lock \
	deploy destroy update-swagger-ui update-uplot

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

test-deps: $(STAMP) $(CHROMIUM) toolchains

run: $(STAMP)
	$(PY) -m devstack

sim: $(STAMP)
	$(PY) -m arksim

# Packaging runs on the Lambda runtime's Python (3.13) in a venv of its own, and the scanners (checkov,
# aws-sam-translator) in another: neither fits the dev venv. Both are kept per content under ~/.cache/arkflow.
toolchains: toolchain-package toolchain-scan

toolchain-package: $(STAMP)
	$(PY) -m infra.toolchain

toolchain-scan: $(STAMP)
	$(PY) -m infra.toolchain --scan

# Hypothesis runs its derandomized `ci` profile here, so every run tries the same examples (the random search
# belongs to `make test-deep`).
# What the tests need is installed in parallel (Chromium from apt beside the dev venv, then both toolchains): on a
# fresh machine that is most of the set-up's minute and a half.
test:
	@$(MAKE) --no-print-directory -j4 test-deps
	$(PY) -m ruff check .
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# Every Hypothesis test on its long profile (tests/conftest.py): long runs, kept out of `make test`.
test-deep: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -m hypothesis -n $(PYTEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m scripts.bench
	$(PY) -m scripts.ws_latency

package: $(STAMP)
	$(PY) -m infra.package

# Re-resolve the runtime set (requirements.in) into requirements.txt, on the Lambda runtime's Python.
lock: $(STAMP)
	$(PY) -m infra.toolchain --lock

# One stage to AWS: package it, upload its artifacts, create or update (or re-create) its stack, print its outputs.
STAGE ?= dev
deploy: $(STAMP)
	@test -n "$(ARTIFACTS_BUCKET)" || { echo "usage: make deploy STAGE=dev|prod ARTIFACTS_BUCKET=<bucket>" \
		"[CORS_ORIGINS=https://app.example.com] [WS_ALLOWED_ORIGINS=...] [ADMIN_USERNAME=...]" \
		"[ARK_INPUTS_SIGNING_SECRET=<secret name>] [ALARM_NOTIFICATION_TOPIC=<SNS topic ARN>]"; exit 2; }
	$(PY) -m infra.package --stage $(STAGE)
	$(PY) -m infra.deploy deploy --stage $(STAGE) --artifacts-bucket "$(ARTIFACTS_BUCKET)" \
		--parameter "CorsOrigins=$(CORS_ORIGINS)" --parameter "WsAllowedOrigins=$(WS_ALLOWED_ORIGINS)" \
		--parameter "AdminUsername=$(ADMIN_USERNAME)" --parameter "ArkInputsSigningSecret=$(ARK_INPUTS_SIGNING_SECRET)" \
		--parameter "AlarmNotificationTopic=$(ALARM_NOTIFICATION_TOPIC)"

# Delete a stage's stack: dev empties its buckets first; prod keeps its tables and buckets (CONFIRM=arkflow-prod).
destroy: $(STAMP)
	$(PY) -m infra.deploy destroy --stage $(STAGE) --confirm "$(CONFIRM)"

# The API reference's viewer (web/reference.html), vendored from npm so the app loads nothing from a CDN:
# `make update-swagger-ui SWAGGER_UI_VERSION=x.y.z` replaces it (then check the page and its test, tests/web).
SWAGGER_UI_VERSION ?= 5.35.0
SWAGGER_UI_DIR := web/vendor/swagger-ui
update-swagger-ui:
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null \
		&& tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz && cd - >/dev/null \
		&& cp $$tmp/package/swagger-ui-bundle.js $$tmp/package/swagger-ui-bundle.js.LICENSE.txt \
			$$tmp/package/swagger-ui.css $$tmp/package/LICENSE $$tmp/package/NOTICE $(SWAGGER_UI_DIR)/ \
		&& echo "swagger-ui-dist $(SWAGGER_UI_VERSION)" > $(SWAGGER_UI_DIR)/VERSION && rm -rf $$tmp

# The admin dashboard's charts (web/js/charts.js), vendored from npm the same way: its ES module build and
# stylesheet. `make update-uplot UPLOT_VERSION=x.y.z` replaces it (then run tests/web/test_web_admin_ops.py).
UPLOT_VERSION ?= 1.6.32
UPLOT_DIR := web/vendor/uplot
update-uplot:
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null \
		&& tar xzf uplot-$(UPLOT_VERSION).tgz && cd - >/dev/null && mkdir -p $(UPLOT_DIR) \
		&& cp $$tmp/package/dist/uPlot.esm.js $$tmp/package/dist/uPlot.min.css $$tmp/package/LICENSE $(UPLOT_DIR)/ \
		&& echo "uplot $(UPLOT_VERSION)" > $(UPLOT_DIR)/VERSION && rm -rf $$tmp

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
