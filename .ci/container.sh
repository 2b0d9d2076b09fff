#!/usr/bin/env bash
# The real container image: build the project's Dockerfile and run it (tests/container/).
#
# No registry is needed: the base of both stages is a Debian image made here with debootstrap
# from this machine's Debian mirror (python3.11 with its headers, venv and `python`, as
# python:3.11-slim has them) and passed as --build-arg BASE. Where the Docker daemon cannot
# run (no privileges for it, no cgroups), this step prints "SKIPPED: <reason>" and exits 0:
# the suite's tests/test_container.py has already repeated the image's steps in a venv.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
export DEBIAN_FRONTEND=noninteractive
DOCKERD_WAIT_S=30
BASE_IMAGE=kms-host-ci-base:bookworm
IMAGE=kms-host:ci
work=$(mktemp -d)
dockerd_pid=

skip() {
    echo "SKIPPED: $*"
    exit 0
}

cleanup() {
    rm -rf "$work"
    if [[ -n $dockerd_pid ]]; then
        kill "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    echo "container step: $((SECONDS - started)) s"
}
trap cleanup EXIT

# The Debian mirror this machine's apt uses (one-line or deb822 sources), not the security one.
mirror() {
    local url
    url=$(grep -hoE '^(deb|URIs:)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -oE 'https?://[^[:space:]]+' | grep -E '/debian/?$' | head -n 1) || true
    echo "${url:-http://deb.debian.org/debian}"
}

apt-get install -y -q --no-install-recommends docker.io debootstrap >"$work/apt.log" 2>&1 \
    || { tail -n 20 "$work/apt.log"; skip "apt-get could not install docker.io and debootstrap"; }

if ! docker info >/dev/null 2>&1; then
    dockerd >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq "$DOCKERD_WAIT_S"); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        tail -n 20 "$work/dockerd.log"
        skip "the Docker daemon did not start within ${DOCKERD_WAIT_S} s (its log is above)"
    fi
fi
echo "docker daemon $(docker version --format '{{.Server.Version}}') after $((SECONDS - started)) s"

# The Dockerfile's build stage adds gcc itself with apt-get, as on python:3.11-slim.
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python3-dev,python-is-python3 \
    bookworm "$work/rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log"; exit 1; }
# This machine's trust store, so that the build's pip reaches PyPI as the machine's pip does
# (through a TLS proxy whose CA only the machine knows, where there is one).
cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/rootfs/etc/pip.conf"
rm -f "$work/rootfs"/var/cache/apt/archives/*.deb
tar -C "$work/rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
rm -rf "$work/rootfs"
echo "base image $BASE_IMAGE after $((SECONDS - started)) s"

docker build -q --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" . >/dev/null
echo "image $IMAGE after $((SECONDS - started)) s"

KMS_HOST_TEST_IMAGE=$IMAGE .venv/bin/python -m pytest -q tests/container
docker image rm "$IMAGE" "$BASE_IMAGE" >/dev/null
