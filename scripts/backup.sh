#!/usr/bin/env bash
# Back up the platform's PostgreSQL database to one file (pg_dump's custom format: compressed,
# restorable table by table, taken from one consistent snapshot while the platform runs).
#   scripts/backup.sh [DATABASE_URL] [OUT_FILE]
# DATABASE_URL defaults to the environment's; OUT_FILE to var/backups/<db>-<UTC time>.dump.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:-${DATABASE_URL:?set DATABASE_URL or pass it}}
db=$(basename "${url%%\?*}")
out=${2:-var/backups/${db}-$(date -u +%Y%m%dT%H%M%SZ).dump}
mkdir -p "$(dirname "$out")"
pg_dump --format=custom --no-owner --no-privileges --file="$out" "$url"
# A dump that cannot be listed is no backup: read its table of contents back now.
pg_restore --list "$out" >/dev/null
sha256sum "$out" | tee "$out.sha256"
echo "backup written: $out ($(du -h "$out" | cut -f1))"
