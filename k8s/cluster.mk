# Images and a real cluster: included from the Makefile (which defines PY, MAR, SAMPLE).
#   make images                  build the serve, batch and train images with Docker, print their sizes
#   make serve-baked-image       the serve image with MODEL_MAR baked in (clusters without a reachable store)
#   make k8s-e2e                 a whole night in a real cluster (KUBECONFIG), and the monitoring objects
#                                before its API server: tests/k8s's cluster tests
#   make cluster-up / cluster-down  the local single-node cluster of ../shared/k8s-lab, where it exists
#
# A user's cluster (kind, k3d, minikube) works the same: KUBECONFIG=... IMAGE_LOAD="kind load docker-image"
# make k8s-e2e; images reach the cluster with IMAGE_LOAD (their names appended), e.g. a registry push script.

IMAGE_TAG ?= 0.1.0
SERVE_IMAGE ?= refund-sorter-serve
BATCH_IMAGE ?= refund-sorter-batch
TRAIN_IMAGE ?= refund-sorter-train
MODEL_MAR ?= $(MAR)
DOCKER ?= docker
# Extra `docker build` arguments; with the lab: its stand-in base image and its local wheel mirror.
DOCKER_BUILD_ARGS ?= $(LAB_BUILD_ARGS)
LAB ?= ../shared/k8s-lab/lab
ifneq ($(wildcard $(LAB)),)
LAB_ENV = eval "$$($(LAB) env)" &&
LAB_BUILD_ARGS = --network host --build-arg BASE_IMAGE=local/python:3.11-slim-bookworm \
	--build-arg TORCH_INDEX_URL= --build-arg PIP_EXTRA_INDEX_URL="$$LAB_PIP_INDEX"
IMAGE_LOAD ?= $(LAB) load
endif
K8S_E2E_ARGS ?=
LAB_DOWN_ARGS ?=

# "NAME:TAG: N MB" for a built image (the k8s-e2e test prints this line in its progress).
image_size = $(LAB_ENV) $(DOCKER) image inspect --format '$(1) {{.Size}}' $(1) | awk '{printf "%s: %.0f MB\n", $$1, $$2 / 1e6}'

.PHONY: images serve-image serve-baked-image train-image batch-image k8s-e2e cluster-up cluster-down hadolint

images: serve-image batch-image train-image  ## build the three images with Docker (IMAGE_TAG, DOCKER_BUILD_ARGS)

serve-image:  ## the TorchServe image without a model: the chart fetches one from the registry at pod start
	$(LAB_ENV) $(DOCKER) build $(DOCKER_BUILD_ARGS) --target serve -t $(SERVE_IMAGE):$(IMAGE_TAG) .
	@$(call image_size,$(SERVE_IMAGE):$(IMAGE_TAG))

serve-baked-image:  ## the TorchServe image with MODEL_MAR baked in (make archive writes the default one)
	@test -f $(MODEL_MAR) || { echo "no $(MODEL_MAR): run make archive first (or set MODEL_MAR)" >&2; exit 1; }
	$(LAB_ENV) $(DOCKER) build $(DOCKER_BUILD_ARGS) --target serve-baked --build-arg MODEL_MAR=$(MODEL_MAR) \
		-t $(SERVE_IMAGE):$(IMAGE_TAG) .
	@$(call image_size,$(SERVE_IMAGE):$(IMAGE_TAG))

train-image:  ## the weekly retraining job's image: serve's layers plus training's dependencies and code
	$(LAB_ENV) $(DOCKER) build $(DOCKER_BUILD_ARGS) --target train -t $(TRAIN_IMAGE):$(IMAGE_TAG) .
	@$(call image_size,$(TRAIN_IMAGE):$(IMAGE_TAG))

batch-image:  ## the nightly job's image (no torch)
	$(LAB_ENV) $(DOCKER) build $(DOCKER_BUILD_ARGS) -f batch-job/Dockerfile -t $(BATCH_IMAGE):$(IMAGE_TAG) .
	@$(call image_size,$(BATCH_IMAGE):$(IMAGE_TAG))

hadolint: venv  ## lint both Dockerfiles (every ignore is commented where it stands)
	$(VENV)/bin/hadolint Dockerfile batch-job/Dockerfile

k8s-e2e: venv k8s-tools  ## build, load and install into KUBECONFIG's cluster; run whole nights with faults
	$(LAB_ENV) PATH="$(CURDIR)/tools/bin:$$PATH" IMAGE_LOAD="$(IMAGE_LOAD)" \
		$(PY) -m pytest -s tests/k8s -m cluster --durations=0 $(K8S_E2E_ARGS)

# `lab up` on a lab that is up re-checks its routes with `grep -q` under pipefail and dies ("cannot route
# 10.96.0.0/16 onto labcni0") when the broken pipe fails the check, about one call in fourteen here: so a lab that
# is up (every component running, safety net OK) is left alone, and any other is taken down first, which also
# clears what a run cut off before its `lab down` left (the bridge and its routes), so that `lab up` starts clean.
cluster-up:  ## start the lab cluster with its base image and wheel mirror (elsewhere: check KUBECONFIG is set)
ifneq ($(wildcard $(LAB)),)
	@if $(LAB) status 2>/dev/null | awk '/ stopped$$/ {down = 1} /^safety net: OK/ {net = 1} END {exit down || !net}'; \
	then echo "lab: already up"; else set -x; $(LAB) down && $(LAB) up; fi
	$(LAB) base-image && $(LAB) pip-mirror
else
	@test -n "$$KUBECONFIG" || { echo "KUBECONFIG is not set: point it at a cluster (kind, k3d, minikube)" >&2; exit 1; }
endif

cluster-down:  ## stop the lab cluster; LAB_DOWN_ARGS=--purge also deletes its images and state
	$(LAB) down $(LAB_DOWN_ARGS)
