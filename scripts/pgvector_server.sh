#!/usr/bin/env bash
# A throw-away PostgreSQL + pgvector server on 127.0.0.1 for attune's server vector store.
#
#   scripts/pgvector_server.sh start   # prints the connection URL on the last line of stdout
#   scripts/pgvector_server.sh stop
#
# Binaries: a system PostgreSQL that has the pgvector extension installed (Debian's
# postgresql-NN-pgvector), else the PostgreSQL + pgvector build inside the `pgserver` wheel
# (installed with pip into the current Python when missing). It listens on 127.0.0.1 only
# (port $PGVECTOR_PORT, default 54329), data in $PGVECTOR_DIR (default /tmp/attune-pgvector),
# trust authentication for local connections. PostgreSQL refuses to run as root, so under
# root the server runs as a system user `attune-pg` (created if missing).
# Exit code 3 = no PostgreSQL with pgvector could be installed here (the reason is on stderr);
# 1 = it is installed but did not start (a real failure).
set -euo pipefail

ACTION="${1:-start}"
PORT="${PGVECTOR_PORT:-54329}"
DIR="${PGVECTOR_DIR:-/tmp/attune-pgvector}"
PYTHON="${PYTHON:-python3}"
URL="postgresql://postgres@127.0.0.1:${PORT}/attune"

fail() { echo "pgvector_server: $*" >&2; exit 1; }
cannot_install() { echo "pgvector_server: $*" >&2; exit 3; }

find_bindir() {
  # 1. a system PostgreSQL with pgvector
  for cfg in /usr/lib/postgresql/*/bin/pg_config; do
    [ -x "$cfg" ] || continue
    if [ -f "$("$cfg" --sharedir)/extension/vector.control" ]; then dirname "$cfg"; return 0; fi
  done
  # 2. the pgserver wheel (PostgreSQL 16 + pgvector), installed on demand
  local pkg
  pkg="$("$PYTHON" - <<'EOF' 2>/dev/null || true
import importlib.util
spec = importlib.util.find_spec("pgserver")
print(list(spec.submodule_search_locations)[0] if spec else "")
EOF
)"
  if [ -z "$pkg" ]; then
    echo "pgvector_server: installing pgserver (PostgreSQL + pgvector in a wheel) ..." >&2
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "pgserver>=0.1.4" >&2 || return 1
    pkg="$("$PYTHON" -c 'import importlib.util; print(list(importlib.util.find_spec("pgserver").submodule_search_locations)[0])')" || return 1
  fi
  [ -x "$pkg/pginstall/bin/postgres" ] || return 1
  echo "$pkg/pginstall/bin"
}

as_owner() {
  if [ "$(id -u)" = "0" ]; then runuser -u attune-pg -- "$@"; else "$@"; fi
}

start() {
  local bindir
  bindir="$(find_bindir)" || cannot_install "no PostgreSQL with pgvector: no system postgresql-NN-pgvector and 'pip install pgserver' failed"
  if [ "$(id -u)" = "0" ]; then
    id attune-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin attune-pg \
      || cannot_install "running as root and cannot create the user attune-pg for PostgreSQL"
  fi
  mkdir -p "$DIR"
  [ "$(id -u)" = "0" ] && chown attune-pg "$DIR"
  as_owner test -w "$DIR" || fail "$DIR is not writable by $(as_owner id -un) (is a parent folder private?); set PGVECTOR_DIR"
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    rm -rf "$DIR/data"
    as_owner "$bindir/initdb" -D "$DIR/data" -U postgres --auth=trust --encoding=UTF8 >"$DIR/initdb.log" 2>&1 \
      || fail "initdb failed: $(tail -3 "$DIR/initdb.log")"
  fi
  if ! as_owner "$bindir/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    as_owner "$bindir/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DIR" start >/dev/null \
      || fail "server did not start: $(tail -5 "$DIR/server.log")"
  fi
  local psql=("$bindir/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
  if [ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname='attune'")" != "1" ]; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE attune" >/dev/null
  fi
  "${psql[@]}" -d attune -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null || fail "the vector extension does not load"
  echo "$URL"
}

stop() {
  local bindir
  bindir="$(find_bindir)" || exit 0
  [ -f "$DIR/data/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
