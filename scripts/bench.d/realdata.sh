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
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
RUNS="${BENCH_RUNS:-3}"
ROWS="${BENCH_ROWS:-1350000}"

require_root realdata
find_pg_bindir initdb pg_ctl psql
require_zstd realdata
require_pgbackrest realdata
echo "load average at start: $(loadavg)  ($(nproc) cores); pgBackRest: $("$pgbackrest_bin" version)"
build_lifeboat "${LIFEBOAT_BIN:-}"

make_work_dir realdata
data="$work/data"
socket_dir="$work"
copy_lifeboat_for_postgres
port="$(free_port)"

echo "creating a PostgreSQL cluster in $work (port $port) and loading $ROWS rows (scripts/bench.d/realdata.sql)..."
init_cluster "$data" "$work" "$port" "${bulk_load_settings[@]}"
start_cluster "$data" "$work/server.log"
load_start="$(date +%s)"
psql_ -v rows="$ROWS" -f "$here/scripts/bench.d/realdata.sql" >/dev/null 2>"$work/load.log" || { cat "$work/load.log" >&2; exit 1; }
psql_ -c CHECKPOINT
bytes="$(data_bytes)"
# The server runs: a file it removes or changes meanwhile is not an error here (GNU tar exits 1).
compressed="$(cd "$data" && { tar --warning=no-file-changed --warning=no-file-removed -cf - --exclude=./pg_wal/* . ||
    [ $? -eq 1 ]; } | zstd -3 -T1 -q -c | wc -c)"
echo "loaded in $(($(date +%s) - load_start)) s: data directory without pg_wal $bytes bytes; tar | zstd -3: $compressed bytes" \
    "(ratio $(python3 -c "print(f'{$bytes / $compressed:.2f}')"))"

results="$work/results"
mkdir -p "$results"
chmod 777 "$results"

setup_lifeboat_repository "$work/lifeboat-repo"
setup_pgbackrest_repository "$work/pgbackrest"
lb_archive="$lifeboat --config $lbconf wal-push %p"
pb_archive="$pgbackrest_bin --config=$pbconf --stanza=bench archive-push %p"
switch_archive_command "$pb_archive"
create_stanza "$pbconf"

run_backup() { # tool, run, repository part, command...
    local tool="$1" run="$2" repo_part="$3"
    shift 3
    local out="$results/$tool-$run.json"
    sync
    measure_repository_growth "$out" "$tool backup $run" "$repo_part" "$@"
    python3 - "$out" "$bytes" <<'EOF'
import json, sys
path, data = sys.argv[1], int(sys.argv[2])
r = json.load(open(path))
r.update(data_bytes=data)
json.dump(r, open(path, "w"))
repo, load = r["repo_bytes"], r["load"]
print(f"  {path.rsplit('/', 1)[1][:-5]:<14} {r['wall_s']:6.2f} s  {data / r['wall_s'] / 1e6:6.0f} MB/s  "
      f"repo {repo:>13,} B  RSS tree {r['tree_peak_kib'] / 1024:6.1f} MiB  (load {load})")
EOF
}

echo
echo "full backups, alternating, $RUNS each: lifeboat (workers = 2, zstd 3, aes-256-gcm) and pgBackRest (process-max = 2, zst 3, aes-256-cbc):"
for run in $(seq 1 "$RUNS"); do
    archiver_idle
    switch_archive_command "$lb_archive"
    run_backup lifeboat "$run" "$lbdir/repo/clusters/bench/backups" "$lifeboat" --config "$lbconf" backup --json
    archiver_idle
    switch_archive_command "$pb_archive"
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
