#!/usr/bin/env bash
# realdata: full backups, lifeboat vs pgBackRest, on data that compresses like real data (called by
# scripts/bench --only realdata).
#
#   1. Builds lifeboat in release (`cargo build --release`, the usual target directory).
#   2. In a temporary directory: a PostgreSQL 15 cluster (initdb -k, as the `postgres` OS user; Unix
#      socket in the temporary directory, listen_addresses = '', a free port, wal_level = replica,
#      archive_mode = on, shared_buffers = 512MB, max_wal_size = 4GB), loaded by
#      scripts/bench.d/realdata.sql with BENCH_ROWS rows (default 1,350,000: about 1.5 GB; text of
#      words, jsonb documents, numerics, timestamps, 48 incompressible bytes per row, five indexes;
#      deterministic), CHECKPOINT. It prints the data directory's size and what `zstd -3` makes of it
#      (the ratio, about 2.5-3x, where pgbench's data compresses about 14x).
#   3. RUNS (default 3) full backups with each tool, alternating (lifeboat, pgBackRest, ...), `sync`
#      before each outside the time, archive_command switched to the tool before each:
#      lifeboat: zstd 3, aes-256-gcm with a key file, [backup] workers = 2, a local directory;
#      pgBackRest: compress-type=zst compress-level=3 repo1-cipher-type=aes-256-cbc process-max=2
#      start-fast=y, a posix repository on the same disk.
#      Wall time, MB/s (data directory without pg_wal / wall), repository bytes and peak RSS of the
#      process tree per run; the table prints the medians and the ratio lifeboat / pgBackRest.
#
# Needs root (initdb/pg_ctl run as postgres), PostgreSQL 15 server packages, zstd, python3.
# Environment: BENCH_RUNS (3), BENCH_ROWS (1350000), BENCH_NO_INSTALL=1;
# LIFEBOAT_BIN=/path/to/lifeboat measures that binary instead of building one.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
here="$(pwd)"
measure="$here/scripts/bench.d/measure.py"
RUNS="${BENCH_RUNS:-3}"
ROWS="${BENCH_ROWS:-1350000}"

if [ "$(id -u)" -ne 0 ]; then
    echo "error: the realdata benchmark runs as root (initdb and pg_ctl run as the postgres user)" >&2
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
for program in initdb pg_ctl psql; do
    if [ ! -x "$bindir/$program" ]; then
        echo "error: $bindir/$program not found; install PostgreSQL's server packages" >&2
        exit 1
    fi
done
command -v zstd >/dev/null || { echo "error: the realdata benchmark needs zstd (apt-get install zstd)" >&2; exit 1; }
if ! command -v pgbackrest >/dev/null && [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    echo "pgbackrest is not installed: apt-get update && apt-get install -y pgbackrest ..."
    apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null 2>&1 || true
fi
if ! command -v pgbackrest >/dev/null; then
    echo "error: the realdata benchmark compares with pgBackRest, which is not installed (apt-get install pgbackrest)" >&2
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

work="$(mktemp -d /tmp/lifeboat-bench-realdata-XXXXXX)"
chmod 755 "$work"
chown postgres: "$work"
as_pg=(runuser -u postgres --)
pg() { "${as_pg[@]}" "$@"; }
data="$work/data"
cleanup() {
    if [ -f "$data/postmaster.pid" ]; then
        pg "$bindir/pg_ctl" stop -D "$data" -m fast -t 60 --silent >/dev/null 2>&1 ||
            pg "$bindir/pg_ctl" stop -D "$data" -m immediate --silent >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binary must be executable by postgres (the archiver runs it).
cp "$lifeboat" "$work/lifeboat"
chmod 755 "$work/lifeboat"
lifeboat="$work/lifeboat"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
psql_() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres "$@"; }
data_bytes() { echo $(($(du -sb "$data" | cut -f1) - $(du -sb "$data/pg_wal" | cut -f1))); }
du_bytes() { if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }

echo "creating a PostgreSQL cluster in $work (port $port) and loading $ROWS rows (scripts/bench.d/realdata.sql)..."
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
load_start="$(date +%s)"
psql_ -v rows="$ROWS" -f "$here/scripts/bench.d/realdata.sql" >/dev/null 2>"$work/load.log" || { cat "$work/load.log" >&2; exit 1; }
psql_ -c CHECKPOINT
bytes="$(data_bytes)"
compressed="$(cd "$data" && tar -cf - --exclude=./pg_wal/* . | zstd -3 -T1 -q -c | wc -c)"
echo "loaded in $(($(date +%s) - load_start)) s: data directory without pg_wal $bytes bytes; tar | zstd -3: $compressed bytes" \
    "(ratio $(python3 -c "print(f'{$bytes / $compressed:.2f}')"))"

results="$work/results"
mkdir -p "$results"
chmod 777 "$results"

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

[bench]
pg1-path=$data
pg1-port=$port
pg1-socket-path=$work
EOF
pg chmod 600 "$pbconf"

set_archive_command() {
    psql_ -c "ALTER SYSTEM SET archive_command = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
}
archiver_idle() {
    for _ in $(seq 1 600); do
        if ! compgen -G "$data/pg_wal/archive_status/*.ready" >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "warning: the archiver still has .ready files" >&2
}
lb_archive="$lifeboat --config $lbconf wal-push %p"
pb_archive="$pgbackrest_bin --config=$pbconf --stanza=bench archive-push %p"
set_archive_command "$pb_archive"
pg "$pgbackrest_bin" --config="$pbconf" --stanza=bench stanza-create >/dev/null
pg "$pgbackrest_bin" --config="$pbconf" --stanza=bench check >/dev/null

run_backup() { # tool, run, repository part, command...
    local tool="$1" run="$2" repo_part="$3"
    shift 3
    local out="$results/$tool-$run.json" before after load
    before="$(du_bytes "$repo_part")"
    sync
    load="$(loadavg)"
    python3 "$measure" run --user postgres --cwd "$data" --out "$out" -- "$@" ||
        { echo "error: $tool backup $run failed:" >&2; cat "$out.stderr" >&2; tail -n 20 "$out.stdout" >&2; exit 1; }
    after="$(du_bytes "$repo_part")"
    python3 - "$out" "$bytes" $((after - before)) "$load" <<'EOF'
import json, sys
path, data, repo, load = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
r.update(data_bytes=data, repo_bytes=repo, load=load)
json.dump(r, open(path, "w"))
print(f"  {path.rsplit('/', 1)[1][:-5]:<14} {r['wall_s']:6.2f} s  {data / r['wall_s'] / 1e6:6.0f} MB/s  "
      f"repo {repo:>13,} B  RSS tree {r['tree_peak_kib'] / 1024:6.1f} MiB  (load {load})")
EOF
}

echo
echo "full backups, alternating, $RUNS each: lifeboat (workers = 2, zstd 3, aes-256-gcm) and pgBackRest (process-max = 2, zst 3, aes-256-cbc):"
for run in $(seq 1 "$RUNS"); do
    archiver_idle
    set_archive_command "$lb_archive"
    run_backup lifeboat "$run" "$lbdir/repo/clusters/bench/backups" "$lifeboat" --config "$lbconf" backup --json
    archiver_idle
    set_archive_command "$pb_archive"
    run_backup pgbackrest "$run" "$pbdir/repo/backup/bench" "$pgbackrest_bin" --config="$pbconf" --stanza=bench --type=full backup
done

echo
echo "==== realdata: full backup, lifeboat vs pgBackRest ($bytes bytes, zstd -3 ratio $(python3 -c "print(f'{$bytes / $compressed:.2f}')"), $RUNS runs each) ===="
python3 - "$results" "$RUNS" <<'EOF'
import json, statistics, sys
results, runs = sys.argv[1], int(sys.argv[2])
med = statistics.median
summary = {}
print(f"{'tool':<11} {'wall s median [min-max]':<24} {'MB/s':>6}  {'repo bytes':>13}  {'ratio':>5}  {'peak RSS tree MiB':>17}")
for tool in ("lifeboat", "pgbackrest"):
    rs = [json.load(open(f"{results}/{tool}-{i}.json")) for i in range(1, runs + 1)]
    walls = [r["wall_s"] for r in rs]
    wall, repo = med(walls), med([r["repo_bytes"] for r in rs])
    summary[tool] = (wall, repo)
    name = "pgBackRest" if tool == "pgbackrest" else tool
    print(f"{name:<11} {f'{wall:.2f} [{min(walls):.2f}-{max(walls):.2f}]':<24} {rs[0]['data_bytes'] / wall / 1e6:6.0f}  "
          f"{repo:>13,.0f}  {rs[0]['data_bytes'] / repo:5.2f}  {max(r['tree_peak_kib'] for r in rs) / 1024:17.1f}")
l, p = summary["lifeboat"], summary["pgbackrest"]
print(f"ratio lifeboat/pgBackRest: wall {l[0] / p[0]:.2f}, repository bytes {l[1] / p[1]:.3f}")
print("(median of the runs; MB/s = data directory without pg_wal / wall; repo bytes = growth of the backups' part "
      "of the repository; ratio = data / repo bytes)")
EOF
echo "load average at end: $(loadavg)"
