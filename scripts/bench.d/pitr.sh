#!/usr/bin/env bash
# pitr: point-in-time recovery, lifeboat vs pgBackRest, on a real PostgreSQL 15 cluster (called by
# scripts/bench --only pitr).
#
#   1. Builds lifeboat in release (`cargo build --release`, the usual target directory).
#   2. In a temporary directory: a PostgreSQL cluster (initdb -k, as the `postgres` OS user; Unix
#      socket in the temporary directory, listen_addresses = '', a free port, wal_level = replica,
#      archive_mode = on, shared_buffers = 512MB, max_wal_size = 4GB), `pgbench -i -s SCALE`
#      (default 100, about 1.5 GB), CHECKPOINT. Both tools archive the same WAL:
#      archive_command = '<lifeboat> wal-push %p && pgbackrest archive-push %p'.
#   3. One full backup with each tool (lifeboat: zstd 3, aes-256-gcm, workers = 2; pgBackRest:
#      zst 3, aes-256-cbc, process-max = 2), then `pgbench -c 4 -j 2` in 5 s slices until
#      BENCH_WAL_MB (default 700) MB of WAL were written after the backups, then the target time T
#      (now()), 5 s more of pgbench and a WAL switch, so that recovery must stop in the middle of the
#      archive and not at its end. The archiver is waited for.
#   4. RUNS (default 3) restores with each tool, alternating, `sync` before each outside the time, each
#      timed from the command to a promoted server (pg_is_in_recovery() = false):
#      lifeboat: `restore --pgdata D --target-time T --target-action promote --archive-mode off
#      --start --port P` (one command; it returns once the server left recovery; its restore_command
#      is `lifeboat wal-fetch %f %p` with the default prefetch).
#      pgBackRest: `restore --pg1-path=D --type=time --target=T --target-action=promote
#      --archive-mode=off` with archive-async=y and process-max=2 for archive-get (its prefetching
#      mode, the faster of its two), then `pg_ctl start -w`, then polling pg_is_in_recovery() every
#      20 ms until false, in one measured shell script.
#      Each restored server is then checked (it holds the marker row committed just before T and not
#      the one just after), stopped
#      (-m immediate) and its directory removed. The table splits each run into the restore (files
#      written) and the recovery after it (start, replay to T, promotion) and prints PostgreSQL's own
#      "redo done ... elapsed" and the end-of-recovery checkpoint it waited for, from the server log.
#
# Needs root (initdb/pg_ctl run as postgres), PostgreSQL 15 server packages and pgbench, python3.
# Environment: BENCH_RUNS (3), BENCH_SCALE (100), BENCH_WAL_MB (700), BENCH_NO_INSTALL=1;
# LIFEBOAT_BIN=/path/to/lifeboat measures that binary instead of building one.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
here="$(pwd)"
measure="$here/scripts/bench.d/measure.py"
RUNS="${BENCH_RUNS:-3}"
SCALE="${BENCH_SCALE:-100}"
WAL_MB="${BENCH_WAL_MB:-700}"

if [ "$(id -u)" -ne 0 ]; then
    echo "error: the pitr benchmark runs as root (initdb and pg_ctl run as the postgres user)" >&2
    exit 1
fi
if ! getent passwd postgres >/dev/null; then
    echo "error: no postgres OS user; install PostgreSQL's server packages" >&2
    exit 1
fi
bindir="$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || true)"
if [ -z "$bindir" ]; then
    bindir="$(pg_config --bindir)"
fi
for program in initdb pg_ctl pgbench psql; do
    if [ ! -x "$bindir/$program" ]; then
        echo "error: $bindir/$program not found; install PostgreSQL's server packages" >&2
        exit 1
    fi
done
if ! command -v pgbackrest >/dev/null && [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    echo "pgbackrest is not installed: apt-get update && apt-get install -y pgbackrest ..."
    apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null 2>&1 || true
fi
if ! command -v pgbackrest >/dev/null; then
    echo "error: the pitr benchmark compares with pgBackRest, which is not installed (apt-get install pgbackrest)" >&2
    exit 1
fi
pgbackrest_bin="$(command -v pgbackrest)"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load average at start: $(loadavg)  ($(nproc) cores); pgBackRest: $("$pgbackrest_bin" version)"

if [ -n "${LIFEBOAT_BIN:-}" ]; then
    lifeboat="$LIFEBOAT_BIN"
else
    echo "building lifeboat (cargo build --release)..."
    target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    lifeboat="$target_dir/release/lifeboat"
    cargo build --release --quiet --bin lifeboat
fi

work="$(mktemp -d /tmp/lifeboat-bench-pitr-XXXXXX)"
chmod 755 "$work"
chown postgres: "$work"
as_pg=(runuser -u postgres --)
pg() { "${as_pg[@]}" "$@"; }
data="$work/data"
restores="$work/restore"
cleanup() {
    local dir
    for dir in "$restores"/*/; do
        if [ -f "$dir/postmaster.pid" ]; then
            pg "$bindir/pg_ctl" stop -D "$dir" -m immediate --silent >/dev/null 2>&1 || true
        fi
    done
    if [ -f "$data/postmaster.pid" ]; then
        pg "$bindir/pg_ctl" stop -D "$data" -m fast -t 60 --silent >/dev/null 2>&1 ||
            pg "$bindir/pg_ctl" stop -D "$data" -m immediate --silent >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binary must be executable by postgres (the archiver and restore_command run it).
cp "$lifeboat" "$work/lifeboat"
chmod 755 "$work/lifeboat"
lifeboat="$work/lifeboat"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
restore_port="$(free_port)"
psql_() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres "$@"; }
sql() { psql_ -Atc "$1"; }

echo "creating a PostgreSQL cluster in $work (port $port) and running pgbench -i -s $SCALE..."
pg "$bindir/initdb" -D "$data" -U postgres -A trust -k --no-sync >/dev/null
cat <<EOF | pg tee -a "$data/postgresql.conf" >/dev/null
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
wal_level = replica
archive_mode = on
archive_command = 'true'
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 15min
EOF
pg "$bindir/pg_ctl" start -D "$data" -l "$work/server.log" -w -t 120 --silent
"$bindir/pgbench" -i -s "$SCALE" -q -h "$work" -p "$port" -U postgres postgres >"$work/pgbench-init.log" 2>&1 ||
    { cat "$work/pgbench-init.log" >&2; exit 1; }
psql_ -c CHECKPOINT

# ---- both repositories, one archive_command feeding both ----
lbdir="$work/lifeboat-repo"
pg mkdir -p "$lbdir"
lbconf="$lbdir/lifeboat.toml"
cat <<EOF | pg tee "$lbconf" >/dev/null
[cluster]
name = "bench"
pgdata = "$data"
connection = "postgresql://postgres@/postgres?host=$work&port=$port"
bin_dir = "$bindir"
os_user = "postgres"

[repository]
url = "file://$lbdir/repo"
key_file = "$lbdir/repo.key"
cipher = "aes-256-gcm"
compression = { algorithm = "zstd", level = 3 }

[backup]
workers = 2

[audit]
path = "$lbdir/audit.jsonl"
EOF
pg chmod 600 "$lbconf"
pg "$lifeboat" --config "$lbconf" init >/dev/null

pbdir="$work/pgbackrest"
pg mkdir -p "$pbdir/log" "$pbdir/lock" "$pbdir/spool"
pbconf="$pbdir/pgbackrest.conf"
cat <<EOF | pg tee "$pbconf" >/dev/null
[global]
repo1-path=$pbdir/repo
repo1-retention-full=999
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
compress-type=zst
compress-level=3
start-fast=y
process-max=2
log-path=$pbdir/log
lock-path=$pbdir/lock
spool-path=$pbdir/spool
log-level-console=warn
log-level-file=info

[global:archive-get]
archive-async=y
process-max=2

[bench]
pg1-path=$data
pg1-port=$port
pg1-socket-path=$work
EOF
pg chmod 600 "$pbconf"

psql_ -c "ALTER SYSTEM SET archive_command = '$lifeboat --config $lbconf wal-push %p && $pgbackrest_bin --config=$pbconf --stanza=bench archive-push %p'" \
    -c "SELECT pg_reload_conf()" >/dev/null
pg "$pgbackrest_bin" --config="$pbconf" --stanza=bench stanza-create >/dev/null
pg "$pgbackrest_bin" --config="$pbconf" --stanza=bench check >/dev/null

archiver_idle() {
    for _ in $(seq 1 1200); do
        if ! compgen -G "$data/pg_wal/archive_status/*.ready" >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "error: the archiver still has .ready files after 120 s" >&2
    exit 1
}

echo "base backups (lifeboat, then pgBackRest)..."
(cd "$data" && pg "$lifeboat" --config "$lbconf" backup >/dev/null)
(cd "$data" && pg "$pgbackrest_bin" --config="$pbconf" --stanza=bench --type=full backup)
archiver_idle

echo "writing $WAL_MB MB of WAL with pgbench -c 4 -j 2 ..."
start_lsn="$(sql "SELECT pg_current_wal_lsn()")"
while [ "$(sql "SELECT (pg_current_wal_lsn() - '$start_lsn'::pg_lsn) >= $WAL_MB * 1000000")" = f ]; do
    "$bindir/pgbench" -n -T 5 -c 4 -j 2 -h "$work" -p "$port" -U postgres postgres >/dev/null 2>&1
done
psql_ -c "CREATE TABLE IF NOT EXISTS pitr_marker (side text)" -c "INSERT INTO pitr_marker VALUES ('before')"
sleep 0.2
target="$(sql "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")"
target_lsn="$(sql "SELECT pg_current_wal_lsn()")"
sleep 0.2
psql_ -c "INSERT INTO pitr_marker VALUES ('after')"
"$bindir/pgbench" -n -T 5 -c 4 -j 2 -h "$work" -p "$port" -U postgres postgres >/dev/null 2>&1
sql "SELECT pg_switch_wal()" >/dev/null
archiver_idle
wal_bytes="$(sql "SELECT '$target_lsn'::pg_lsn - '$start_lsn'::pg_lsn")"
echo "target time $target: $wal_bytes bytes of WAL from the end of the backups to the target"

# ---- restores ----
pg mkdir -p "$restores"
results="$work/results"
mkdir -p "$results"
chmod 777 "$results"
pb_script="$work/pgbackrest-pitr.sh"
cat >"$pb_script" <<EOF
#!/bin/sh
# pgBackRest restore to the target time, start, wait for promotion: \$1 = the data directory.
set -e
began=\$(date +%s.%N)
"$pgbackrest_bin" --config="$pbconf" --stanza=bench restore --pg1-path="\$1" --type=time --target="$target" \
    --target-action=promote --archive-mode=off
echo "restore_seconds \$(echo "\$(date +%s.%N) - \$began" | bc)"
"$bindir/pg_ctl" start -D "\$1" -l "\$1/server.log" -w -t 3600 -o "-p $restore_port" --silent
until [ "\$("$bindir/psql" -X -Atc 'SELECT pg_is_in_recovery()' -h "$work" -p $restore_port -U postgres -d postgres 2>/dev/null)" = f ]; do
    sleep 0.02
done
EOF
chmod 755 "$pb_script"
command -v bc >/dev/null || { echo "error: the pitr benchmark needs bc (apt-get install bc)" >&2; exit 1; }

run_pitr() { # tool, run, data directory, server log, command...
    local tool="$1" run="$2" dir="$3" log="$4"
    shift 4
    local out="$results/$tool-$run.json" load state rows
    sync
    load="$(loadavg)"
    if ! python3 "$measure" run --user postgres --cwd "$restores" --out "$out" -- "$@"; then
        echo "error: $tool restore $run failed:" >&2
        cat "$out.stderr" >&2
        tail -n 20 "$out.stdout" >&2
        [ -f "$log" ] && tail -n 20 "$log" >&2
        exit 1
    fi
    state="$("$bindir/psql" -X -Atc 'SELECT pg_is_in_recovery()' -h "$work" -p "$restore_port" -U postgres -d postgres 2>&1)"
    rows="$("$bindir/psql" -X -Atc "SELECT string_agg(side, ',') FROM pitr_marker" -h "$work" -p "$restore_port" -U postgres -d postgres 2>&1)"
    if [ "$state" != f ] || [ "$rows" != before ]; then
        echo "error: $tool restore $run: pg_is_in_recovery() = $state, markers $rows (want f, before)" >&2
        exit 1
    fi
    local redo checkpoint
    redo="$(grep -o 'redo done at .*elapsed: [0-9.]* s' "$log" | tail -n 1 | sed 's/.*elapsed: \([0-9.]*\) s/\1/')"
    # The end-of-recovery checkpoint the server waits for before it accepts writes, if any.
    checkpoint="$(awk '/checkpoint starting: end-of-recovery/ { waiting = 1 }
        waiting && /checkpoint complete/ { sub(/.*total=/, ""); sub(/ s.*/, ""); print; exit }' "$log")"
    pg "$bindir/pg_ctl" stop -D "$dir" -m immediate --silent >/dev/null 2>&1 || echo "warning: could not stop $dir" >&2
    rm -rf "$dir"
    python3 - "$out" "$tool" "${redo:-0}" "$load" "$tool-$run" "${checkpoint:-0}" <<'PY'
import json, re, sys
path, tool, redo, load, name = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
checkpoint = float(sys.argv[6])
r = json.load(open(path))
text = open(path + ".stdout").read()
if tool == "lifeboat":
    restore = json.loads(text)["restore_seconds"]
else:
    restore = float(re.search(r"restore_seconds (\S+)", text).group(1))
r.update(restore_s=restore, redo_s=redo, checkpoint_s=checkpoint, load=load)
json.dump(r, open(path, "w"))
print(f"  {name:<14} {r['wall_s']:6.2f} s  (restore {restore:5.2f} s, recovery {r['wall_s'] - restore:5.2f} s, "
      f"PostgreSQL redo {redo:5.2f} s, end-of-recovery checkpoint waited for {checkpoint:5.2f} s)  RSS tree {r['tree_peak_kib'] / 1024:6.1f} MiB  (load {load})")
PY
}

echo
echo "PITR to $target, alternating, $RUNS each: command to promoted server (port $restore_port)"
for run in $(seq 1 "$RUNS"); do
    dir="$restores/lifeboat-$run"
    run_pitr lifeboat "$run" "$dir" "$dir/lifeboat-restore.log" \
        "$lifeboat" --config "$lbconf" restore --pgdata "$dir" --target-time "$target" --target-action promote \
        --archive-mode off --start --port "$restore_port" --json
    dir="$restores/pgbackrest-$run"
    pg install -d -m 700 "$dir"
    run_pitr pgbackrest "$run" "$dir" "$dir/server.log" "$pb_script" "$dir"
done

echo
echo "==== pitr: lifeboat vs pgBackRest (archive-get async, process-max 2), $wal_bytes bytes of WAL to replay, $RUNS runs each ===="
python3 - "$results" "$RUNS" <<'EOF'
import json, statistics, sys
results, runs = sys.argv[1], int(sys.argv[2])
med = statistics.median
summary = {}
print(f"{'tool':<11} {'wall s median [min-max]':<24} {'restore s':>9} {'recovery s':>10} {'PG redo s':>9} "
      f"{'checkpoint s':>12} {'RSS tree MiB':>12}")
for tool in ("lifeboat", "pgbackrest"):
    rs = [json.load(open(f"{results}/{tool}-{i}.json")) for i in range(1, runs + 1)]
    walls = [r["wall_s"] for r in rs]
    summary[tool] = med(walls)
    name = "pgBackRest" if tool == "pgbackrest" else tool
    print(f"{name:<11} {f'{med(walls):.2f} [{min(walls):.2f}-{max(walls):.2f}]':<24} "
          f"{med([r['restore_s'] for r in rs]):9.2f} {med([r['wall_s'] - r['restore_s'] for r in rs]):10.2f} "
          f"{med([r['redo_s'] for r in rs]):9.2f} {med([r['checkpoint_s'] for r in rs]):12.2f} "
          f"{max(r['tree_peak_kib'] for r in rs) / 1024:12.1f}")
print(f"ratio lifeboat/pgBackRest (median wall): {summary['lifeboat'] / summary['pgbackrest']:.2f}")
print("(wall = restore command to pg_is_in_recovery() = false; restore = files written; recovery = the rest: "
      "server start, WAL fetched and replayed to the target, promotion; PG redo = 'redo done ... elapsed' in the "
      "server log; checkpoint = the end-of-recovery checkpoint the server waited for before accepting writes (0: none, "
      "it ran in the background after a requested promotion); RSS tree: pgBackRest's includes the restored server, lifeboat's does not (pg_ctl detaches it))")
EOF
echo "load average at end: $(loadavg)"
