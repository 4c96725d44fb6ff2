#!/usr/bin/env bash
# The daemon's own cost (scripts/bench --only daemon):
#   1. idle: `lifeboat daemon` (release build) with its HTTP side listening, the archiver watch every
#      `watch_interval` (default 1 minute, as in production) and a backup schedule that does not fire,
#      for BENCH_IDLE_MINUTES (default 10): CPU seconds and resident memory;
#   2. a scheduled backup of a `pgbench -i -s BENCH_SCALE` cluster (default 20, about 300 MB): the
#      schedule is changed to fire within seconds and the daemon reloaded (SIGHUP); peak resident
#      memory of the daemon and of its process tree until the backup is listed;
#   3. SIGTERM: the daemon must exit 0.
# Needs root (initdb/pg_ctl run as postgres), PostgreSQL 15 server packages and pgbench, python3.
# Everything lives in a temporary directory, removed on exit with the cluster stopped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
here="$(pwd)"
SCALE="${BENCH_SCALE:-20}"
IDLE_MINUTES="${BENCH_IDLE_MINUTES:-10}"

if [ "$(id -u)" -ne 0 ]; then
    echo "error: the daemon benchmark runs as root (initdb and pg_ctl run as the postgres user)" >&2
    exit 1
fi
bindir="$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
for program in initdb pg_ctl pgbench psql; do
    [ -x "$bindir/$program" ] || { echo "error: $bindir/$program not found; install PostgreSQL's server packages" >&2; exit 1; }
done

echo "building lifeboat (cargo build --release)..."
cargo build --release --quiet --bin lifeboat
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

work="$(mktemp -d /tmp/lifeboat-bench-daemon-XXXXXX)"
chmod 755 "$work"
chown postgres: "$work"
as_pg=(runuser -u postgres --)
data="$work/data"
cleanup() {
    if [ -f "$data/postmaster.pid" ]; then
        "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$data" -m fast -t 60 --silent >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lifeboat="$work/lifeboat"
install -m 755 "$target_dir/release/lifeboat" "$lifeboat"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
http_port="$(free_port)"
config="$work/lifeboat.toml"

"${as_pg[@]}" "$bindir/initdb" -D "$data" -U postgres -A trust -k --no-sync >/dev/null
cat <<EOF | "${as_pg[@]}" tee -a "$data/postgresql.conf" >/dev/null
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
wal_level = replica
archive_mode = on
archive_command = '$lifeboat --config $config wal-push %p'
EOF
cat <<EOF | "${as_pg[@]}" tee "$config" >/dev/null
[cluster]
name = "bench"
pgdata = "$data"
connection = "postgresql://postgres@/postgres?host=$work&port=$port"
bin_dir = "$bindir"

[repository]
url = "file://$work/repo"
key_file = "$work/repo.key"

[backup]
workers = 2
schedule = { full = "0 3 1 1 *" }

[audit]
path = "$work/audit.jsonl"

[daemon]
listen = "127.0.0.1:$http_port"
state_dir = "$work/state"
EOF
"${as_pg[@]}" mkdir -p "$work/state"
"${as_pg[@]}" "$lifeboat" --config "$config" init >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" start -D "$data" -l "$work/server.log" -w -t 120 --silent
echo "pgbench -i -s $SCALE..."
"$bindir/pgbench" -i -s "$SCALE" -q -h "$work" -p "$port" -U postgres postgres >"$work/pgbench.log" 2>&1 ||
    { cat "$work/pgbench.log" >&2; exit 1; }
echo 'schedule = { full = "*/10 * * * * *" }' >"$work/schedule"
echo "lifeboat daemon: idle for $IDLE_MINUTES min, then one scheduled backup"
python3 "$here/scripts/bench.d/daemon.py" --user postgres --config "$config" --lifeboat "$lifeboat" \
    --idle "$((IDLE_MINUTES * 60))" --schedule-file "$work/schedule"
