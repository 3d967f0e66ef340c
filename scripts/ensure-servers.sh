#!/usr/bin/env bash
# Make sure the servers the tests start for themselves are installed: PostgreSQL, MariaDB and a
# Prometheus Pushgateway. The tests run throwaway instances in temp dirs on loopback (PostgreSQL
# as the `postgres` user and MariaDB as `mysql` when run as root); the packaged services are not
# used. Missing Debian packages are installed with one apt-get call.
set -euo pipefail
PATH="$PATH:/usr/sbin:/usr/local/sbin"

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
{ command -v mariadbd && command -v mariadb-install-db; } >/dev/null 2>&1 \
  || { command -v mysqld && command -v mysql_install_db; } >/dev/null 2>&1 \
  || missing+=(mariadb-server)
command -v prometheus-pushgateway >/dev/null 2>&1 || command -v pushgateway >/dev/null 2>&1 \
  || missing+=(prometheus-pushgateway)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing the Debian packages: ${missing[*]}" >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 \
  "${missing[@]}" >/dev/null
