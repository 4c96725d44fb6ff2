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
#   4. The source cluster is stopped (its checkpoint and autovacuum would otherwise run under the
#      first restores). One warm-up restore with each tool (run 0, printed, not counted: the first
#      restore after the setup, lifeboat's, ran 2-3 s slower than every later one in three runs of
#      this section, its file writes twice as long), then RUNS (default 3)
#      restores with each tool, alternating, `sync` before each outside the time, each
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
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
RUNS="${BENCH_RUNS:-3}"
SCALE="${BENCH_SCALE:-100}"
WAL_MB="${BENCH_WAL_MB:-700}"

require_root pitr
find_pg_bindir initdb pg_ctl pgbench psql
require_pgbackrest pitr
echo "load average at start: $(loadavg)  ($(nproc) cores); pgBackRest: $("$pgbackrest_bin" version)"
build_lifeboat "${LIFEBOAT_BIN:-}"

make_work_dir pitr
data="$work/data"
socket_dir="$work"
restores="$work/restore"
# The archiver and restore_command run it.
copy_lifeboat_for_postgres

port="$(free_port)"
restore_port="$(free_port)"

echo "creating a PostgreSQL cluster in $work (port $port) and running pgbench -i -s $SCALE..."
init_cluster "$data" "$work" "$port" "${bulk_load_settings[@]}"
start_cluster "$data" "$work/server.log"
pgbench_init "$SCALE" "$work/pgbench-init.log"
psql_ -c CHECKPOINT

# ---- both repositories, one archive_command feeding both ----
setup_lifeboat_repository "$work/lifeboat-repo"
setup_pgbackrest_repository "$work/pgbackrest" "[global:archive-get]" "archive-async=y" "process-max=2"
set_archive_command "$lifeboat --config $lbconf wal-push %p && $pgbackrest_bin --config=$pbconf --stanza=bench archive-push %p"
create_stanza "$pbconf"

echo "base backups (lifeboat, then pgBackRest)..."
(cd "$data" && pg "$lifeboat" --config "$lbconf" backup >/dev/null)
(cd "$data" && pg "$pgbackrest_bin" --config="$pbconf" --stanza=bench --type=full backup)
require_archiver_idle

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
require_archiver_idle
wal_bytes="$(sql "SELECT '$target_lsn'::pg_lsn - '$start_lsn'::pg_lsn")"
echo "target time $target: $wal_bytes bytes of WAL from the end of the backups to the target"
# The restores need only the repositories. Left running, the source cluster would checkpoint the
# pgbench writes (spread over minutes) and autovacuum the tables under whichever restores run first.
stop_cluster "$data"
sync

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
    measure_run "$restores" "$out" "$tool restore $run" "$log" "$@"
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
echo "PITR to $target, alternating, $RUNS each after one warm-up each (run 0, not counted): command to promoted server (port $restore_port)"
for run in $(seq 0 "$RUNS"); do
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
