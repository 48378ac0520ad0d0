# One image for every Python part of the stack: producers, stream workers, the lake sink,
# the nightly scheduler and the dashboards provisioner (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY producers ./producers
COPY stream ./stream
COPY batch ./batch
COPY dashboards ./dashboards
RUN pip install . && python -c "import models, producers, stream, batch, dashboards"

# Run as an unprivileged user. /data holds what the services write: the lake and retrain
# reports (named volumes, which take this ownership when first created) and each worker's
# Faust data directory (container-local).
RUN useradd --create-home --uid 10001 --user-group fraud \
    && mkdir -p /data/lake /data/runs /data/worker \
    && chown -R fraud:fraud /data
ENV FRAUD_LAKE_DIR=/data/lake \
    FRAUD_RUNS_DIR=/data/runs
USER fraud

# The worker's web port (/metrics), when the command is a stream worker.
EXPOSE 6066
CMD ["python", "-m", "stream", "--help"]
