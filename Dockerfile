# syntax=docker/dockerfile:1
# Multi-stage build: uv resolves the locked environment in the first stage; the runtime stage
# carries only the virtual environment and the code, and runs as a non-root user.

FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv
WORKDIR /app
# Dependencies first, so code changes do not invalidate the (large) dependency layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra openvino --no-install-project
COPY src ./src
COPY generated ./generated
COPY protos ./protos
COPY envoy ./envoy
RUN uv sync --frozen --no-dev --extra openvino --no-editable

FROM python:3.11-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /models /data && chown app:app /models /data
COPY --from=build --chown=app:app /app /app
# The root filesystem may be read-only (compose and Kubernetes mount it so): bytecode was compiled
# at build time, and caches and Envoy's config go to /tmp (a tmpfs or emptyDir).
ENV PATH=/app/.venv/bin:$PATH \
    MODEL_DIR=/models \
    DATA_DIR=/data \
    GRPC_HOST=0.0.0.0 \
    REST_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/cache
WORKDIR /app
USER app
VOLUME ["/models", "/data"]
EXPOSE 50051 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "samsvc.healthcheck"]
CMD ["samsvc", "serve", "--no-gateway"]
