# syntax=docker/dockerfile:1
# The toolgate image: `toolgate` (the CLI; `toolgate serve` is the sidecar) on Python 3.11.
#
#   docker build -t toolgate:0.1.0 .
#   docker run --rm -i toolgate:0.1.0 validate /dev/stdin < examples/policy.json
#
# Two stages: the Rust extension is compiled into a wheel in `build` (Rust toolchain, C
# compiler, maturin), and only that wheel and its Python dependencies go into `runtime`.
# Both stages are Debian bookworm, so the wheel's glibc is the runtime's. The wheel is abi3
# (CPython >= 3.11); Rust 1.95 (the workspace's rust-version is the minimum).

# --- build: the wheel ------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir "maturin==1.16.0"
WORKDIR /src
# What the build reads (.dockerignore keeps everything else out of the context).
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY proto/ proto/
COPY rust/ rust/
COPY python/ python/
# --locked: exactly the crates in Cargo.lock.
RUN /opt/maturin/bin/maturin build --release --locked --out /wheels

# --- runtime: Python, the wheel, its dependencies; no compiler, no Rust, no sources ----------
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl
# The uid/gid deploy/kubernetes/deployment.yaml runs as (runAsUser/runAsGroup).
RUN groupadd --gid 10001 toolgate \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin toolgate
USER 10001:10001
# The ports deploy/kubernetes uses: gRPC (bound to 127.0.0.1 there) and /metrics.
EXPOSE 9191 9464
ENTRYPOINT ["toolgate"]
CMD ["--help"]
