#!/usr/bin/env bash
# Install Kannel (bearerbox + smsbox) from Debian's `kannel` package, for the Kannel adapter's
# real-gateway tests (pytest -m kannel). Idempotent: does nothing when bearerbox is installed.
# The package's init script is not used; the tests start and kill the boxes themselves.
set -euo pipefail

if command -v bearerbox >/dev/null 2>&1 || [ -x /usr/sbin/bearerbox ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends kannel
