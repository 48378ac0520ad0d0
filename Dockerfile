# One image for every Python part of the stack: producers, stream workers, batch jobs.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY models ./models
COPY producers ./producers
COPY stream ./stream
COPY batch ./batch
COPY dashboards ./dashboards
RUN pip install .
RUN useradd --create-home --uid 10001 fraud && mkdir -p /data && chown fraud /data
USER fraud
