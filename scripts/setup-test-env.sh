#!/usr/bin/env bash
# Installs what Lethe's tests need on a fresh Debian machine. Idempotent and
# quick when everything is already there. Servers are not started here: each
# test starts its own on loopback in a temporary directory.
set -euo pipefail

need_apt=()
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
# PostgreSQL server binaries (tests start their own servers on loopback).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
id postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# MariaDB server and client (tests start their own servers on loopback).
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v mariadb >/dev/null || need_apt+=(mariadb-client)
# Redis server (tests start their own on loopback).
command -v redis-server >/dev/null || need_apt+=(redis-server)
# A Lua interpreter for the Argo CD health checks.
command -v lua5.4 >/dev/null || need_apt+=(lua5.4)
# promtool checks and unit-tests the chart's alerting rules and dashboard queries.
command -v promtool >/dev/null || need_apt+=(prometheus)
# Headless Chromium renders the privacy report's HTML page in a test.
command -v chromium >/dev/null || need_apt+=(chromium)
# pkill and setsid stop test servers left running by a test process that ended.
command -v pkill >/dev/null || need_apt+=(procps)
command -v setsid >/dev/null || need_apt+=(util-linux)

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Helm's SDK (lint and render the chart) in a venv of its own; no helm
# binary installs from the registries. Tests find it at this path.
venv="${LETHE_VENV:-/var/tmp/lethe-venv}"
if ! "$venv/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
  echo "setup: installing helm-python-sdk into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'helm-python-sdk==0.2.2'
fi

# An S3-compatible server for the object-store tests: moto's server, which
# implements versioning and Object Lock; scripts/s3-server.py runs it.
if ! "$venv/bin/python" -c 'import moto.server, flask_cors' >/dev/null 2>&1; then
  echo "setup: installing moto[server] into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
echo "setup: ready"
