#!/usr/bin/env bash
# The daemon's own cost (scripts/bench --only daemon):
#   1. idle: `lifeboat daemon` (release build) with its HTTP side listening, the archiver watch every
#      `watch_interval` (default 1 minute, as in production) and a backup schedule that does not fire,
#      for BENCH_IDLE_MINUTES (default 10): CPU seconds and resident memory;
#   2. a scheduled backup of a `pgbench -i -s BENCH_SCALE` cluster (default 20, about 300 MB): the
#      schedule is changed to fire within seconds and the daemon reloaded (SIGHUP); peak resident
#      memory of the daemon and of its process tree until the backup is listed;
#   3. SIGTERM: the daemon must exit 0.
# The daemon runs as postgres with postgres's HOME (its backups keep their block values under the
# state directory there). A refused reload, a failed backup run, a schedule that does not fire or
# a daemon that exits stops the benchmark with the end of <work>/daemon.log instead of waiting.
# Needs root (initdb/pg_ctl run as postgres), PostgreSQL 15 server packages and pgbench, python3.
# Everything lives in a temporary directory, removed on exit with the cluster stopped.
# LIFEBOAT_BIN=/path/to/lifeboat measures that binary instead of building one.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SCALE="${BENCH_SCALE:-20}"
IDLE_MINUTES="${BENCH_IDLE_MINUTES:-10}"

require_root daemon
find_pg_bindir initdb pg_ctl pgbench psql
build_lifeboat "${LIFEBOAT_BIN:-}"

make_work_dir daemon
data="$work/data"
socket_dir="$work"
copy_lifeboat_for_postgres
port="$(free_port)"
http_port="$(free_port)"
config="$work/lifeboat.toml"

init_cluster "$data" "$work" "$port" "archive_command = '$lifeboat --config $config wal-push %p'"
cat <<EOF | pg tee "$config" >/dev/null
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
pg mkdir -p "$work/state"
pg "$lifeboat" --config "$config" init >/dev/null
start_cluster "$data" "$work/server.log"
echo "pgbench -i -s $SCALE..."
pgbench_init "$SCALE" "$work/pgbench.log"
echo 'schedule = { full = "*/10 * * * * *" }' >"$work/schedule"
echo "lifeboat daemon: idle for $IDLE_MINUTES min, then one scheduled backup"
python3 "$here/scripts/bench.d/daemon.py" --user postgres --config "$config" --lifeboat "$lifeboat" \
    --idle "$((IDLE_MINUTES * 60))" --schedule-file "$work/schedule" --status-url "http://127.0.0.1:$http_port/status"
