# syntax=docker/dockerfile:1

# ---- build: turn the project into a wheel, install it with its dependencies ----
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src

RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /build/dist . \
    && /opt/venv/bin/pip install /build/dist/*.whl

# ---- runtime: the virtual environment only, run as an unprivileged user ----
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 eventflow \
    && useradd --system --no-log-init --uid 10001 --gid eventflow \
        --home-dir /app --create-home --shell /usr/sbin/nologin eventflow

COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/eventflow/healthcheck.py

WORKDIR /app
USER 10001:10001

EXPOSE 8000 9100

# Probes the API's liveness route, or the worker's metrics server, depending on
# which `eventflow` subcommand the container runs.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/eventflow/healthcheck.py"]

ENTRYPOINT ["eventflow"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
