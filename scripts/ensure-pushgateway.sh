#!/usr/bin/env bash
# Make sure a Prometheus Pushgateway binary exists for the metrics tests (Debian package).
set -euo pipefail
if command -v prometheus-pushgateway >/dev/null 2>&1 || command -v pushgateway >/dev/null 2>&1; then
  exit 0
fi
echo "prometheus-pushgateway not found: installing the Debian package" >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus-pushgateway >/dev/null
command -v prometheus-pushgateway >/dev/null
