#!/usr/bin/env bash
# Make sure PostgreSQL server binaries exist; the tests start their own throwaway cluster with them
# (as the `postgres` user when run as root). Installs the Debian package when they are absent.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
echo "PostgreSQL server not found: installing the Debian package" >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
