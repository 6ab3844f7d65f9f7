# refund-sorter: `make demo` runs the whole path on embedded defaults, `make test` the tests.
# Every setting below can be overridden on the command line: make train EPOCHS=20

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATASETS ?= ../shared/datasets
TRAIN_DATA ?= $(DATASETS)/fashion-product-images-small
SAMPLE ?= $(DATASETS)/returns-photos-sample
STORE ?= var/store
DATABASE_URL ?= sqlite:///var/results.db
# Quick training for the demo: minutes on 2 CPU cores. Drop MAX_PER_CLASS for a full run.
EPOCHS ?= 5
MAX_PER_CLASS ?= 400
TRAIN_ARGS ?=

# The model `make archive` packages (and `make train` trains when it holds none): make archive MODEL_DIR=var/model-full
MODEL_DIR ?= var/model
# What `make serve` serves: the .mar the last `make archive` wrote, whichever model it came from.
MAR := var/model-store/refund-classifier.mar
# The console scripts `pip install` puts in the venv, as the docs show them.
TRAIN := $(VENV)/bin/refund-train
SERVE := $(VENV)/bin/refund-serve
BATCH := REFUND_STORE=$(STORE) REFUND_DATABASE_URL=$(DATABASE_URL) $(VENV)/bin/refund-batch
# The model registry (a folder, or s3://bucket/prefix) and the version `make serve-model` serves.
REGISTRY ?= var/registry
MODEL_VERSION ?= production
REGISTRY_CLI := $(TRAIN) registry --registry $(REGISTRY)

.PHONY: help venv sysdeps data train archive serve publish promote rollback serve-model stop inbox nightly report demo test unit docs bench-nightly lint clean
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -hE '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

venv: $(VENV)/.installed sysdeps  ## create .venv with pinned dependencies (and Java 17, PostgreSQL 15, Chromium, promtool of package prometheus where missing)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@# The base install's wheels, for tests/test_install.py to install the project offline (tests reach no network).
	$(PY) -c "import tomllib; print('setuptools>=69', *tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > $(VENV)/base-requirements.txt
	$(PY) -m pip download --quiet --dest $(VENV)/wheelhouse -r $(VENV)/base-requirements.txt
	touch $@

sysdeps:  ## with apt, where missing: Java 17 (TorchServe), PostgreSQL 15, Chromium + chromedriver, promtool (package prometheus's, alone: no service)
	@command -v java >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; }
	@test -x /usr/lib/postgresql/15/bin/postgres || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15; }
	@test -x /usr/bin/chromedriver || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	@# promtool (tests of the chart's alert rules) taken alone from Debian's prometheus package: installing the package
	@# would enable and start prometheus.service (port 9090) on a host with systemd.
	@command -v promtool >/dev/null || { tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && apt-get update -qq && \
		(cd "$$tmp" && apt-get download -qq prometheus) && dpkg-deb -x "$$tmp"/prometheus_*.deb "$$tmp/deb" && \
		install -m 755 "$$tmp/deb/usr/bin/promtool" /usr/local/bin/promtool; }

data: var/data/manifest.csv  ## filter classes, skip bad images, write the stratified split

var/data/manifest.csv: | $(VENV)/.installed
	$(TRAIN) prepare --data $(TRAIN_DATA) --out var/data

train: $(MODEL_DIR)/model.pt  ## train the ResNet if no model exists (quick settings: EPOCHS, MAX_PER_CLASS)

$(MODEL_DIR)/model.pt: | var/data/manifest.csv
	$(TRAIN) train --prepared var/data --out $(MODEL_DIR) --epochs $(EPOCHS) --eval-photos $(SAMPLE) \
		$(if $(MAX_PER_CLASS),--max-per-class $(MAX_PER_CLASS)) $(TRAIN_ARGS)

# Always runs: the .mar is whatever MODEL_DIR was archived last, which file dates cannot tell. Never trains:
# a MODEL_DIR without a model (a typo, a training still running) is an error, not a reason for a quick model.
archive: | $(VENV)/.installed  ## package MODEL_DIR (default var/model) as var/model-store/refund-classifier.mar
	@test -f $(MODEL_DIR)/model.pt || { echo "no $(MODEL_DIR)/model.pt: train first (make train, or refund-train train --out $(MODEL_DIR))" >&2; exit 1; }
	$(TRAIN) archive --model $(MODEL_DIR) --out $(dir $(MAR))

# Serves the .mar that is there (never trains or archives); prints the version it serves.
serve: sysdeps | $(VENV)/.installed  ## start TorchServe on 127.0.0.1:8080 (management 8081, metrics 8082) with the archived model
	$(SERVE) start --model-store $(dir $(MAR)) --run-dir var/serve

publish: archive  ## publish MODEL_DIR and its .mar to the registry as models/<version>/
	$(REGISTRY_CLI) publish --model $(MODEL_DIR) --mar $(MAR)

promote:  ## promote the newest published model if it beats production on the test split (VERSION=...)
	$(REGISTRY_CLI) promote $(or $(VERSION),latest) --prepared var/data

rollback:  ## put the previous production model back
	$(REGISTRY_CLI) rollback

serve-model: sysdeps  ## start TorchServe with a registry version (MODEL_VERSION=production|latest|<version>)
	$(VENV)/bin/refund-batch fetch-model $(MODEL_VERSION) --registry $(REGISTRY) --out var/serve-model-store
	$(SERVE) start --model-store var/serve-model-store --run-dir var/serve

stop:  ## stop TorchServe
	$(SERVE) stop --run-dir var/serve

inbox:  ## put the 200 returned-item photos into the store's inbox (today's partition)
	$(BATCH) ingest $(SAMPLE)/images

nightly:  ## run the nightly batch job once over the inbox
	$(BATCH) run

report:  ## per-category summary and accuracy against the sample's labels
	$(BATCH) report --labels $(SAMPLE)/styles.csv --classes $(MODEL_DIR)/index_to_name.json

# The review page on 127.0.0.1:8090 (REFUND_ROUTE as the nightly ran); add a reviewer with: $(VENV)/bin/refund-batch review-passwd NAME >> $(REVIEWERS)
REVIEWERS ?= var/reviewers
.PHONY: review
review:  ## serve the review page for the doubtful items on 127.0.0.1:8090 (REVIEWERS=var/reviewers)
	$(BATCH) review --users-file $(REVIEWERS) \
		--classes $(MODEL_DIR)/index_to_name.json

DEMO_STEPS := venv data train archive serve inbox nightly report stop
demo:  ## set up and run everything end to end, printing each step's time
	@timings=""; trap '$(MAKE) --no-print-directory stop >/dev/null 2>&1 || true' EXIT; \
	for step in $(DEMO_STEPS); do \
		printf '\n=== %s\n' "$$step"; started=$$(date +%s); \
		$(MAKE) --no-print-directory $$step || exit 1; \
		timings="$$timings$$(printf '%-8s %5ss' $$step $$(( $$(date +%s) - started )))\n"; \
	done; \
	printf '\n=== step times\n%b' "$$timings"

# Each step of `make test`, timed; every step runs, and a failed one fails the whole at the end.
# unit: pytest (real TorchServe, S3, PostgreSQL, browser);
# k8s-e2e: images built, loaded and installed into the cluster (the cluster tests of tests/k8s).
# The offline k8s check (make k8s-check) runs within unit: tests/k8s/test_k8s_check.py runs it whole.
TEST_STEPS ?= unit docs hadolint lint cluster-up k8s-e2e
test: venv  ## every test: unit/integration, offline k8s check, Dockerfile and Python lint, nights in a real cluster
	@timings=""; failed=""; for step in $(TEST_STEPS); do \
		printf '\n=== %s\n' "$$step"; started=$$(date +%s); \
		$(MAKE) --no-print-directory $$step || failed="$$failed $$step"; \
		timings="$$timings$$(printf '%-10s %5ss' $$step $$(( $$(date +%s) - started )))\n"; \
	done; \
	printf '\n=== step times\n%b' "$$timings"; \
	if [ -n "$$failed" ]; then printf '=== failed:%s\n' "$$failed"; exit 1; fi

unit: venv  ## pytest without the cluster tests
	$(PY) -m pytest --durations=15

k8s-check: venv

NIGHTLY_SIZES ?= 10000 100000 1000000
NIGHTLY_ARGS ?=
bench-nightly:  ## listing, registration and peak RSS of a night: 5,000 new among NIGHTLY_SIZES old photos, folder and S3
	$(PY) -m tests.benchmarks.bench_nightly --sizes $(NIGHTLY_SIZES) $(NIGHTLY_ARGS)

docs: venv  ## build the documentation site into var/site; --strict fails on broken links and missing pages
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint:  ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

include k8s/check.mk
include k8s/cluster.mk
include tests/benchmarks/bench.mk

clean:  ## remove generated data, models, stores and logs (keeps .venv)
	-$(MAKE) --no-print-directory stop 2>/dev/null
	rm -rf var
