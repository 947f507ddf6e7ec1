# The tracker image: the `tracker` CLI with its workers (CUDA-capable torch from PyPI plus
# dask-cuda), the MLflow server and the Dask scheduler. docker-compose.yml runs every
# service except PostgreSQL from it.
#
#   docker build -t tracker .
#   docker run --rm tracker --help
FROM python:3.11-slim

# NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA container runtime mounts into a container that
# reserves a GPU: CUDA (compute) and NVML (utility; `tracker work --cuda` counts GPUs with it).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Graphviz's `dot` draws CMGDB's Morse graphs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user. /shared is created here, owned by that user, so that a named volume
# mounted there starts out writable for it (Docker copies the ownership into a new volume).
RUN groupadd --gid 1000 tracker \
    && useradd --uid 1000 --gid tracker --create-home --shell /bin/bash tracker \
    && mkdir -p /shared \
    && chown tracker:tracker /shared

WORKDIR /opt/tracker

# The dependencies (torch alone is several GB) in their own layer, rebuilt only when
# pyproject.toml changes: install the project from empty stand-in packages, then drop it.
COPY pyproject.toml ./
RUN mkdir -p tracker compute migrations dashboard \
    && touch README.md tracker/__init__.py compute/__init__.py migrations/__init__.py \
        dashboard/__init__.py \
    && pip install ".[cuda]" \
    && pip uninstall -y tracker \
    && rm -rf README.md tracker compute migrations dashboard build ./*.egg-info

# The project itself.
COPY README.md ./
COPY tracker/ tracker/
COPY compute/ compute/
COPY migrations/ migrations/
COPY dashboard/ dashboard/
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && tracker --help > /dev/null

USER tracker
WORKDIR /home/tracker
# With nothing else configured the embedded defaults live here; docker-compose.yml sets
# TRACKER_DB_URL, TRACKER_STORE and MLFLOW_TRACKING_URI instead.
ENV TRACKER_HOME=/home/tracker/.tracker

ENTRYPOINT ["tracker"]
CMD ["--help"]
