# OMS services image: one image, the command picks the service (oms worker | sink | gateway |
# positions run | notify run | paper-exchange). Build: docker build -t oms:local .
# Pinned base: an exact CPython patch release on Debian bookworm (3.11 as in development); add
# the @sha256 digest your registry reports to make the pin immutable.
FROM python:3.11.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first so code edits do not re-install them (layer cache).
COPY pyproject.toml README.md ./
COPY oms ./oms
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade "pip==24.3.1" \
    && /opt/venv/bin/pip install .

FROM python:3.11.11-slim-bookworm

LABEL org.opencontainers.image.title="oms" \
      org.opencontainers.image.description="Order management system for Deribit on Kafka/Faust"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMS_DATA_DIR=/data \
    OMS_LOG_JSON=true

# Non-root: the services need no privileges; /data is theirs (RocksDB/chDB, locks).
RUN groupadd --system --gid 10001 oms \
    && useradd --system --uid 10001 --gid oms --home-dir /data --shell /usr/sbin/nologin oms \
    && mkdir -p /data && chown oms:oms /data

COPY --from=build /opt/venv /opt/venv

USER oms
WORKDIR /data
VOLUME ["/data"]
# 6066 worker web (health, ready, live, metrics), 6067 position keeper, 6068 notifier,
# 8124 sink query endpoint, 8765 paper exchange.
EXPOSE 6066 6067 6068 8124 8765

# Detects the service from PID 1's command line (see oms/healthcheck.py).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "oms.healthcheck", "auto"]

ENTRYPOINT ["oms"]
CMD ["worker"]
