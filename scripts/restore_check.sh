#!/usr/bin/env bash
# Restore a backup into a fresh database and prove it usable: the dump's checksum, pg_restore,
# `manage.py migrate` (a backup of an older release is brought up to this code), then the
# platform's health checks against it (manage.py platform_status; beat, broker and binds are
# properties of the running machines, not of the data, so they are skipped here).
#   scripts/restore_check.sh DUMP_FILE TARGET_DATABASE_URL
# The target database must not exist (it is created); it is left in place for the operator to
# point the platform at, or drop.
set -euo pipefail
cd "$(dirname "$0")/.."
dump=${1:?dump file}
target=${2:?target database URL (a new database name)}
PY=${PY:-.venv/bin/python}
if [ -f "$dump.sha256" ]; then
  sha256sum --check --status "$dump.sha256" || { echo "checksum mismatch for $dump" >&2; exit 2; }
fi
db=$(basename "${target%%\?*}")
server=${target%/*}
createdb --maintenance-db="$server/postgres" "$db"
pg_restore --no-owner --no-privileges --exit-on-error --dbname="$target" "$dump"
export DATABASE_URL=$target DJANGO_DEBUG=${DJANGO_DEBUG:-1}
"$PY" manage.py migrate --noinput -v0
"$PY" manage.py platform_status --skip beat,broker,gateway_binds
echo "restore checked: $db"
