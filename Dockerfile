# Three images from one Dockerfile (the nightly job's is batch-job/Dockerfile; `make images` builds them all):
#
#   docker build --target serve -t REGISTRY/refund-sorter-serve:0.1.0 .       serve: TorchServe, no model
#   docker build --target train -t REGISTRY/refund-sorter-train:0.1.0 .       the weekly retraining job
#   docker build --target serve-baked --build-arg MODEL_MAR=... -t ... .      serve with one .mar baked in
#
# The serve image carries no model: the chart's init container (the batch image's `refund-batch
# fetch-model`) fetches the registry's production version (or a pinned one) into its model store at pod
# start, so one image serves every model and a promotion needs no image build. serve-baked is for
# clusters that cannot reach the object store: an image tag is then one model version. train adds
# training's dependencies and code on top of serve, so it shares serve's torch layers (most of its size)
# on a node that has both.
#
# Build args:
#   BASE_IMAGE       the Python base (default python:3.11-slim-bookworm; the lab cluster builds a local stand-in).
#   TORCH_INDEX_URL  an extra index with torch's CPU build (default: PyTorch's CPU index; pip prefers its
#                    2.14.1+cpu to the default index's 2.14.1). Empty: PyPI's CUDA build, about 5 GB larger.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL   pip's own variables, e.g. for a mirror.
#   MODEL_MAR        serve-baked only: the model archive baked in (default var/model-store/refund-classifier.mar;
#                    .dockerignore admits var/model-store/*.mar only). It is served as refund-classifier.

# checkov:skip=CKV_DOCKER_7: the base is a build arg whose default is a pinned tag (a stand-in may replace it)
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS deps
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The pins come from pyproject.toml's `serve` extra, so the image and `make venv` agree. openvino (and onnxruntime,
# for .mar files archived before it) are among them: without them the handler would run PyTorch fp32 instead of
# the .mar's int8 model, so the build checks them.
COPY pyproject.toml ./
# triton is torch.compile's kernel compiler, which the handler never uses: 0.9 GB where the CUDA build brings it.
RUN python -c "import tomllib; open('requirements.txt', 'w').write('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serve']))" \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r requirements.txt \
 && /opt/venv/bin/pip uninstall --yes triton \
 && /opt/venv/bin/python -c "import openvino, onnxruntime"

FROM ${BASE_IMAGE} AS serve
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# One unprivileged user, with a uid no host account has (the chart runs as 10001).
RUN groupadd --gid 10001 refund \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin refund
# TorchServe's frontend needs Java 17; tini is PID 1, passes SIGTERM to the whole process group
# (frontend and Python workers) and reaps the workers. The man1 folder works around openjdk's
# postinst on slim images. Debian's versions are not pinned: bookworm's archive keeps only the
# latest security release of each, so a pin would break the build at the next JRE update.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=deps /opt/venv /opt/venv
WORKDIR /opt/refund-sorter
COPY handlers/log4j2.xml handlers/config.properties ./
# The project's config, with inference and metrics on the container's address so `docker run -p`
# works; management and gRPC stay on loopback. (The Helm chart mounts its own copy over it.)
RUN sed -i -E 's#^(inference|metrics)_address=http://127\.0\.0\.1:#\1_address=http://0.0.0.0:#' config.properties \
 && grep -qx 'management_address=http://127.0.0.1:8081' config.properties \
 && grep -qx 'inference_address=http://0.0.0.0:8080' config.properties
# The model store: empty here; the chart mounts a volume its init container fills (serve-baked copies one in).
RUN mkdir model-store
# TorchServe writes its pid file, the unpacked .mar and the workers' sockets to TMPDIR and
# java.io.tmpdir, its logs to LOG_LOCATION: all outside the (read-only in Kubernetes) image.
RUN mkdir -p /var/log/torchserve && chown 10001:10001 /var/log/torchserve
ENV PATH=/opt/venv/bin:$PATH \
    TMPDIR=/tmp \
    JAVA_TOOL_OPTIONS=-Djava.io.tmpdir=/tmp \
    LOG_LOCATION=/var/log/torchserve \
    METRICS_LOCATION=/var/log/torchserve
USER 10001:10001
EXPOSE 8080 8082
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"]
ENTRYPOINT ["tini", "-g", "--", "torchserve", "--foreground", "--ncs", \
            "--log-config", "/opt/refund-sorter/log4j2.xml", \
            "--model-store", "/opt/refund-sorter/model-store", \
            "--models", "refund-classifier=refund-classifier.mar"]
CMD ["--ts-config", "/opt/refund-sorter/config.properties"]

# The retraining job (refund-train retrain): serve's venv plus what training needs beyond serving (the
# project's base dependencies for the registry and the Kubernetes API, and the train extra), and its code.
FROM serve AS train
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/refund-sorter
USER 0:0
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; open('/tmp/requirements.txt', 'w').write('\n'.join(p['dependencies'] + [r for r in p['optional-dependencies']['train'] if not r.startswith('refund-sorter')]))" \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/pyproject.toml /tmp/requirements.txt
COPY common/ common/
COPY handlers/ handlers/
COPY training/ training/
USER 10001:10001
# Relative paths and scratch land in the writable /tmp (the chart mounts a volume there).
WORKDIR /tmp
HEALTHCHECK NONE
ENTRYPOINT ["tini", "--", "python", "-m", "training"]
CMD ["retrain"]

# Last, so that the legacy builder (which builds every stage before its target) needs MODEL_MAR only here.
FROM serve AS serve-baked
ARG MODEL_MAR=var/model-store/refund-classifier.mar
COPY ${MODEL_MAR} model-store/refund-classifier.mar
