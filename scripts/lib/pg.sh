# Starts a throw-away PostgreSQL cluster from Debian's packages (installing them if missing)
# on 127.0.0.1:$PGPORT and stops it when the calling script exits. Sourced by test.sh and
# bench-api.sh. Sets PGBIN, PGTMP, PGPORT and RAINBOW_TEST_POSTGRES_URL. Logical decoding is on
# (wal_level=logical, the wal2json plugin) for the speed layer's change data capture.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(pg_bindir)" ] || [ ! -x "$(pg_bindir)/pg_ctl" ]; then
  echo "==> installing PostgreSQL (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
PGBIN="$(pg_bindir)"
# The speed layer's change data capture decodes the WAL with the wal2json plugin.
PG_MAJOR="$(basename "$(dirname "$PGBIN")")"
if [ ! -f "/usr/lib/postgresql/$PG_MAJOR/lib/wal2json.so" ]; then
  echo "==> installing postgresql-$PG_MAJOR-wal2json (Debian package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_MAJOR-wal2json" >/dev/null
fi

PGTMP="$(mktemp -d /tmp/rainbow-pg.XXXXXX)"
PGPORT="${PGPORT:-${RAINBOW_TEST_PGPORT:-55432}}"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then
  # initdb refuses to run as root: the cluster belongs to the postgres user.
  chown postgres:postgres "$PGTMP"
  RUN_AS=(runuser -u postgres --)
fi
stop_pg() {
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGTMP"
}
# Every service sourced adds its stop function here; one EXIT trap runs them all.
RAINBOW_CLEANUPS="${RAINBOW_CLEANUPS:-} stop_pg"
trap 'for f in $RAINBOW_CLEANUPS; do "$f"; done' EXIT

echo "==> starting PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"
(cd "$PGTMP" && "${RUN_AS[@]}" "$PGBIN/initdb" -D "$PGTMP/data" -U postgres -A trust >/dev/null)
(cd "$PGTMP" && "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w \
  -o "-p $PGPORT -k $PGTMP -c listen_addresses=127.0.0.1 ${PG_EXTRA_OPTS:--c fsync=off} -c max_connections=300 -c wal_level=logical -c max_replication_slots=50 -c max_wal_senders=10" start >/dev/null)
export RAINBOW_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"
