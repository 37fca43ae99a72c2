#!/usr/bin/env bash
# Start a local Docker engine and make the python:3.11-slim base image, without any registry.
# Reuses a running engine and an existing image; builds only what is missing.
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || { apt-get update -q && apt-get install -y -q docker.io; }
    mkdir -p /var/log
    nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd.log; exit 1; }
fi

if ! docker image inspect python:3.11-slim >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | grep -E '^(URIs:|deb )' \
        | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -1 || true)
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/tmp/debootstrap.log 2>&1 \
        || { tail -20 /tmp/debootstrap.log; exit 1; }
    ln -sf python3 "$rootfs/usr/bin/python"
    ln -sf pip3 "$rootfs/usr/bin/pip"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' - python:3.11-slim >/dev/null
    rm -rf "$rootfs"
fi
echo "docker engine ready; base image python:3.11-slim present"
