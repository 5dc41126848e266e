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
# A Lua interpreter for the Argo CD health checks.
command -v lua5.4 >/dev/null || need_apt+=(lua5.4)

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
echo "setup: ready"
