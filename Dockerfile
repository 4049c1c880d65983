# syntax=docker/dockerfile:1
# The toolgate image: `toolgate` (the CLI; `toolgate serve` is the sidecar), installed from the
# wheel that scripts/build-wheel makes. Nothing is compiled here: no Rust, no compiler, no
# sources in the image.
#
#   bash scripts/build-wheel                      # dist/toolgate-<version>-cp311-abi3-manylinux_*.whl
#   mkdir -p dist/envoy-module/amd64 && cp "$(bash scripts/build-envoy-module \
#     --target x86_64-unknown-linux-gnu | tail -n 1)/libtoolgate.so" dist/envoy-module/amd64/
#   docker build -t toolgate:0.2.0 .
#   docker run --rm -i toolgate:0.2.0 validate /dev/stdin < examples/policy.json
#
# For ARM nodes: `bash scripts/build-wheel --target aarch64-unknown-linux-gnu`, then
# `docker build --platform linux/arm64 --build-arg WHEEL=<that wheel's file name> .` (the RUN
# steps run under emulation: qemu-user-static registered with binfmt_misc).
#
# BASE is any Debian bookworm image: one with Python 3.11+ (the default, from a public registry),
# or a bare Debian, on which Debian's python3 (3.11) is installed. scripts/build-image builds on
# a base made with debootstrap, for machines that reach no image registry. Bookworm either way:
# the wheel is built there (its glibc is at most the runtime's).
ARG BASE=python:3.11-slim-bookworm

# --- python: an interpreter and an empty virtual environment ---------------------------------
FROM ${BASE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/toolgate
# The uid/gid deploy/kubernetes runs every container as (runAsUser/runAsGroup).
RUN groupadd --gid 10001 toolgate \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin toolgate

# --- install: the wheel and its dependencies into the environment ----------------------------
FROM python AS install
ARG VERSION=0.2.0
# The wheel for the image's architecture, a file name in dist/ (scripts/build-image names it);
# by default the one manylinux wheel there.
ARG WHEEL=toolgate-${VERSION}-cp311-abi3-manylinux*.whl
# Build-time only, for pip behind a TLS-intercepting proxy or a mirror: a CA bundle to trust
# (scripts/build-image mounts the host's when PIP_CERT is set) and an index.
ARG PIP_CERT
ARG PIP_INDEX_URL
COPY dist/${WHEEL} /tmp/wheels/
RUN /opt/toolgate/bin/pip install /tmp/wheels/toolgate-*.whl

# --- runtime: the environment without the wheel file or pip's leftovers ----------------------
FROM python AS runtime
COPY --from=install /opt/toolgate /opt/toolgate
# Envoy's toolgate module (scripts/build-envoy-module --target) for the image's architecture,
# which an init container copies into the volume Envoy loads it from (deploy/kubernetes/module).
# It needs glibc alone, all that Envoy's distroless image has.
# TARGETARCH is the builder's (BuildKit, podman): without one the path names no file, and the
# build stops rather than put another architecture's module in the image.
ARG TARGETARCH
ARG ENVOY_MODULE=envoy-module/${TARGETARCH}/libtoolgate.so
COPY dist/${ENVOY_MODULE} /opt/toolgate/envoy/libtoolgate.so
ENV PATH=/opt/toolgate/bin:$PATH
USER 10001:10001
# The ports deploy/kubernetes uses: gRPC (bound to 127.0.0.1 there) and /metrics.
EXPOSE 9191 9464
ENTRYPOINT ["toolgate"]
CMD ["--help"]
