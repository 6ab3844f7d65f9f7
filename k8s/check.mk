# `make k8s-check`: offline validation of the Dockerfile, the Helm chart and the kustomize manifests
# (k8s/check.py says what it checks). Included from the Makefile, which defines VENV and PY; also
# usable alone: make -f k8s/check.mk k8s-check
VENV ?= .venv
PY ?= $(VENV)/bin/python

KUBERNETES_VALIDATE_VERSION := 1.37.0
CHECKOV_VERSION := 3.3.30
KSERVE_VERSION := 0.21.0
SIX_VERSION := 1.17.0
K8S_TOOLS_STAMP := $(VENV)/.k8s-check-tools
# Reinstall when the pins here change, or when tools/ was deleted since.
K8S_TOOLS_PRESENT := $(and $(wildcard tools/checkov/bin/checkov),$(wildcard tools/kserve/kserve/models))

.PHONY: k8s-check k8s-tools k8s-tools-missing chart-readme

k8s-check: k8s-tools  ## validate Dockerfile, Helm chart and kustomize offline (helm, kubernetes-validate, checkov)
	$(PY) k8s/check.py

k8s-tools: $(K8S_TOOLS_STAMP)

chart-readme:  ## rewrite the values table of helm/refund-sorter/README.md from values.schema.json and values.yaml
	$(PY) k8s/chart_readme.py

$(K8S_TOOLS_STAMP): k8s/check.mk $(if $(K8S_TOOLS_PRESENT),,k8s-tools-missing)
	@test -x $(PY) || { echo "$(PY) is missing: run 'make venv' first" >&2; exit 1; }
	$(PY) -m pip install --quiet kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)
	@# kserve: only its model classes are used, so --no-deps, and into tools/ rather than the venv,
	@# where its undeclared dependencies (fastapi, grpc, ...) would make `pip check` fail.
	rm -rf tools/kserve
	$(PY) -m pip install --quiet --no-deps --target tools/kserve kserve==$(KSERVE_VERSION) six==$(SIX_VERSION)
	@# checkov pins packaging, networkx and others below the project's versions: a venv of its own.
	test -x tools/checkov/bin/python || $(PY) -m venv tools/checkov
	tools/checkov/bin/python -m pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	$(PY) -m pip check
	touch $@
