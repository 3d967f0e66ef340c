# syntax=docker/dockerfile:1
#
# aitems-sync as a container: docker build -t aitems-sync:0.1.0 .
#
# Two stages. The builder builds the wheel from this checkout and installs it with the PostgreSQL
# driver into a virtualenv, every dependency pinned by constraints.txt; the final image holds
# that virtualenv and nothing used to build it, and runs as the unprivileged user 10001.
# tests/test_packaging.py runs this file's `pip wheel` command and resolves its `pip install`
# command (no Docker needed), and checks that README.md shows the same commands: keep each pip
# command on a line of its own, and change README.md with it.
#
# Pin the base image by digest for reproducible builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The build backend, pinned; it must satisfy [build-system] requires in pyproject.toml.
RUN python -m pip install setuptools==84.2.1
COPY pyproject.toml README.md constraints.txt ./
COPY aitems_sync ./aitems_sync
RUN python -m pip wheel --no-deps --no-build-isolation --check-build-dependencies --wheel-dir /wheels .
RUN python -m venv /opt/aitems-sync
RUN /opt/aitems-sync/bin/pip install --constraint constraints.txt "$(echo /wheels/aitems_sync-*-py3-none-any.whl)[postgres,objectstorage]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="aitems-sync" \
      org.opencontainers.image.description="Incremental sync from SQL databases into NAVER Cloud AiTEMS datasets" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
RUN groupadd --system --gid 10001 aitems-sync \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin aitems-sync
COPY --from=builder /opt/aitems-sync /opt/aitems-sync
# Bytecode was compiled at install time; the root filesystem may be read-only at run time.
ENV PATH=/opt/aitems-sync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["aitems-sync"]
CMD ["--help"]
