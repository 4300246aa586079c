# One image for every Python service of docker-compose.yml: scheduler, estimator,
# worker, Flower. The command picks the role (see the compose file).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GREENCTL_STATE_DIR=/var/lib/greenctl/state \
    GREENCTL_CACHE_DIR=/var/lib/greenctl/cache

WORKDIR /src
COPY . .
RUN pip install . \
 && useradd --create-home --uid 10001 greenctl \
 && mkdir -p /var/lib/greenctl/state /var/lib/greenctl/cache \
 && chown -R greenctl:greenctl /var/lib/greenctl

# Not root. Energy is then CodeCarbon's estimate unless the host lets the
# container read RAPL (docs/operations.md, "Energy in containers").
USER greenctl
WORKDIR /var/lib/greenctl
CMD ["greenctl", "--help"]
