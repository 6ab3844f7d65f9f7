# syntax=docker/dockerfile:1.7
# refund-sorter images (`make archive` first: the serve image bakes in the .mar).
#
#   docker build --target serve -t REGISTRY/refund-sorter-serve:0.1.0 .
#   docker build --target batch -t REGISTRY/refund-sorter-batch:0.1.0 .
#   docker push REGISTRY/refund-sorter-serve:0.1.0 && docker push REGISTRY/refund-sorter-batch:0.1.0
#
# Build args:
#   MODEL_MAR        the model archive baked into the serve image (default var/model-store/refund-classifier.mar;
#                    .dockerignore admits var/model-store/*.mar only). It is served as refund-classifier.
#   TORCH_INDEX_URL  where torch and torchvision come from (default: PyTorch's CPU index; empty: PyPI).
#
# The model is baked in, not fetched at start: an image tag is one model version, a rollback is a
# tag (or digest) change, TorchServe pods need no object store credentials and start without a
# network download, and what `make archive` tested is byte for byte what runs. (The chart's kserve
# mode is the fetch-at-start alternative: KServe downloads the .mar from the object store.)

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# One unprivileged user for both images, with a uid no host account has (the chart runs as 10001).
RUN groupadd --gid 10001 refund \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin refund
WORKDIR /src
# Each component's pins come from pyproject.toml's extras, so the images and `make venv` agree.
COPY pyproject.toml ./
RUN python -c "import tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; \
[open(f'requirements-{name}.txt', 'w').write('\n'.join(extras[name]) + '\n') for name in ('serve', 'batch')]"

# --- serve: dependencies -----------------------------------------------------------------------
FROM base AS serve-deps
# pyproject pins torch==2.14.1, whose PyPI build pulls several GB of CUDA libraries. The CPU build
# (2.14.1+cpu, which satisfies that pin) comes from PyTorch's CPU index; the rest from PyPI.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      grep -E '^torch(vision)?==' requirements-serve.txt > requirements-torch.txt \
      && /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" -r requirements-torch.txt; \
    fi \
 && /opt/venv/bin/pip install -r requirements-serve.txt

# --- serve: TorchServe with the model ----------------------------------------------------------
FROM base AS serve
# TorchServe's frontend needs Java 17; tini is PID 1, passes SIGTERM to the whole process group
# (frontend and Python workers) and reaps the workers. The man1 folder works around openjdk's
# postinst on slim images. Debian's versions are not pinned: bookworm's archive keeps only the
# latest security release of each, so a pin would break the build at the next JRE update.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=serve-deps /opt/venv /opt/venv
WORKDIR /opt/refund-sorter
COPY handlers/log4j2.xml handlers/config.properties ./
# The project's config, with inference and metrics on the container's address so `docker run -p`
# works; management and gRPC stay on loopback. (The Helm chart mounts its own copy over it.)
RUN sed -i -E 's#^(inference|metrics)_address=http://127\.0\.0\.1:#\1_address=http://0.0.0.0:#' config.properties \
 && grep -qx 'management_address=http://127.0.0.1:8081' config.properties \
 && grep -qx 'inference_address=http://0.0.0.0:8080' config.properties
ARG MODEL_MAR=var/model-store/refund-classifier.mar
COPY ${MODEL_MAR} model-store/refund-classifier.mar
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

# --- batch: the nightly job --------------------------------------------------------------------
FROM base AS batch-build
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -r requirements-batch.txt
COPY README.md ./
COPY handlers/ handlers/
COPY training/ training/
COPY batch-job/batch_job/ batch-job/batch_job/
RUN /opt/venv/bin/pip install --no-deps .

FROM base AS batch
ENV PATH=/opt/venv/bin:$PATH
COPY --from=batch-build /opt/venv /opt/venv
USER 10001:10001
# Relative paths (the default sqlite:///var/results.db, var/store) land in the writable /tmp.
WORKDIR /tmp
# A run-to-completion job: Kubernetes watches its exit code, there is nothing to poll.
HEALTHCHECK NONE
ENTRYPOINT ["refund-batch"]
CMD ["run"]
