# kms-host: a simulated Microsoft KMS host for labs and CI.
#
#   docker build -t kms-host .
#   docker run -d --name kms-host -p 1688:1688 -v kms-host-data:/data kms-host
#
# Configuration is KMS_HOST_<SECTION>_<KEY> environment variables (or a TOML file named by
# KMS_HOST_CONFIG). tests/test_container.py repeats the install and start steps below in a
# fresh virtual environment, so keep them plain; tests/container/ builds and runs the image.

# The base of both stages. CI builds against a Debian image it makes itself (python3.11 with
# its headers, venv and `python`: .ci/container.sh), so that it needs no registry.
ARG BASE=python:3.11-slim

# --- build: install the package and its dependencies into a self-contained venv -----------
# With uvloop (a prebuilt wheel), which `serve` runs when installed, and the cipher's compiled
# engine: KMS_HOST_MYPYC=1 has mypyc turn protocol/kms/cipher/compiled.py into C, which needs a
# C compiler and libc headers here (python:3.11-slim has Python's headers), not at run time.
FROM ${BASE} AS build
# Debian's current gcc of the image's release: pinning its version would break the build
# whenever the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md setup.py ./
COPY _build/ _build/
COPY protocol/ protocol/
COPY kms_host/ kms_host/
RUN python -m venv /opt/kms-host \
    && KMS_HOST_MYPYC=1 /opt/kms-host/bin/pip install --no-cache-dir '.[uvloop]'

# --- runtime: the venv only, no compiler, run by an unprivileged user ----------------------
FROM ${BASE}
RUN groupadd --system --gid 10001 kms-host \
    && useradd --system --no-log-init --uid 10001 --gid kms-host --home-dir /data kms-host \
    && mkdir /data \
    && chown kms-host:kms-host /data
COPY --from=build /opt/kms-host /opt/kms-host
ENV PATH=/opt/kms-host/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KMS_HOST_LOG_FORMAT=json \
    KMS_HOST_STORAGE_DATA_DIR=/data
# The client table (SQLite) and the host identity (ePIDs, HwId) must outlive the container.
VOLUME ["/data"]
# KMS over TCP; add 53/udp and 53/tcp here (and [dns] in a config file) for SRV discovery.
EXPOSE 1688/tcp
# Numeric, so that runtimes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
# Healthy only after one real, verified activation (its reserved CMID is never counted), on
# the default port 1688, for the first product the host's scope (KMS_HOST_HOST_SCOPE) serves.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["kms-host", "probe", "--timeout", "5", "127.0.0.1"]
# Exec form: kms-host is PID 1 and receives SIGTERM itself, then drains and exits 0.
ENTRYPOINT ["kms-host"]
CMD ["serve"]
