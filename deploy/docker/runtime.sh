#!/bin/sh
# Runtime-stage step shared by every services/*/Dockerfile: the unprivileged
# user, optional Debian packages (APT_PACKAGES) and the CUDA libraries from PyPI
# on the loader path when the image was built with the cuda extra.
set -eu
groupadd --system --gid 10001 facepipe
useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
  --shell /usr/sbin/nologin facepipe

if [ -n "${APT_PACKAGES:-}" ]; then
  apt-get update
  # shellcheck disable=SC2086 # a space-separated package list
  apt-get install -y --no-install-recommends $APT_PACKAGES
  rm -rf /var/lib/apt/lists/*
fi

find /opt/facepipe/venv -type d -path '*/site-packages/nvidia/*/lib' >/etc/ld.so.conf.d/facepipe-nvidia.conf
ldconfig
