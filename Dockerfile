# One image for every Python service of docker-compose.yml: scheduler, estimator,
# worker, Flower. The command picks the role (see the compose file).
# BASE_IMAGE: any Debian-based image with Python >= 3.11 whose `python` and `pip`
# are on PATH (`make compose-check` passes one built from Debian packages).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GREENCTL_STATE_DIR=/var/lib/greenctl/state \
    GREENCTL_CACHE_DIR=/var/lib/greenctl/cache

# libgomp1: xllamacpp's llama.cpp is built with OpenMP; the slim image lacks it
# (the embedded engine then fails with "libgomp.so.1: cannot open shared object file").
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Dependencies first, from pyproject.toml alone: a change to the code rebuilds
# only the last layers, not the minutes of downloads.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY . .
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 greenctl \
 && mkdir -p /var/lib/greenctl/state /var/lib/greenctl/cache \
 && chown -R greenctl:greenctl /var/lib/greenctl

# Not root. Energy is then CodeCarbon's estimate unless the host lets the
# container read RAPL (docs/operations.md, "Energy in containers").
USER greenctl
WORKDIR /var/lib/greenctl
CMD ["greenctl", "--help"]
