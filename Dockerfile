# syntax=docker/dockerfile:1
# The selector image: `rollout serve` (granian; ROLLOUT_SERVER=gunicorn switches) by default;
# the same image runs the guard (`rollout guard run FLAG`) and the schema migrations
# (`rollout events migrate`).
#
#   docker build -t model-rollout:$(git rev-parse --short HEAD) .
#   docker run --rm -p 8000:8000 -e UNLEASH_URL=... -e UNLEASH_API_TOKEN_FILE=/run/secrets/unleash \
#       -e ROLLOUT_DATABASE_URL=postgresql+psycopg://... model-rollout:<tag>
#
# Two stages: the first installs the package into a virtualenv (pip, wheels only: no compiler
# is needed, and none reaches the final stage); the second copies that virtualenv and the
# flag/bento declarations the selector reads, and runs as an unprivileged user. No secret is
# baked in: tokens and the database URL come from the environment or mounted files at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:
WORKDIR /src
RUN python -m venv /opt/rollout
ENV PATH=/opt/rollout/bin:$PATH
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir . \
    && python -m ipykernel install --sys-prefix --name model-rollout \
        --display-name "model-rollout (Python 3)"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="model-rollout selector" \
      org.opencontainers.image.description="Feature-flag-driven model selection: the selector, the guard, the event-store migrations" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rollout \
    && useradd --system --uid 10001 --gid rollout --no-create-home --home-dir /app rollout \
    && mkdir -p /var/lib/rollout \
    && chown rollout:rollout /var/lib/rollout
COPY --from=build /opt/rollout /opt/rollout
WORKDIR /app
COPY flags ./flags
COPY bentos ./bentos
COPY notebooks ./notebooks
ENV PATH=/opt/rollout/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROLLOUT_FLAGS_DIR=/app/flags \
    ROLLOUT_BENTOS_DIR=/app/bentos \
    ROLLOUT_NOTEBOOKS_DIR=/app/notebooks \
    ROLLOUT_DATA_DIR=/var/lib/rollout \
    ROLLOUT_REPORTS_DIR=/var/lib/rollout/reports \
    BENTOML_DO_NOT_TRACK=true
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["rollout"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--threads", "8"]
