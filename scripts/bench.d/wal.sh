#!/usr/bin/env bash
# wal: lifeboat's WAL archiving vs pgBackRest's, on a real PostgreSQL 15 cluster (called by scripts/bench).
#
#   1. Builds lifeboat in release; in a temporary directory, a PostgreSQL cluster (initdb -k, as the
#      `postgres` OS user; Unix socket in the temporary directory, listen_addresses = '', a free port,
#      wal_level = replica, archive_mode = on, max_wal_size = 4GB) whose archive_command is empty,
#      so that the archiver leaves the `.ready` files alone until a command is set.
#   2. Repositories on the same disk: lifeboat (aes-256-gcm, key file; WAL at its default
#      [wal] compression_level = 1) and pgBackRest (posix, compress-type=zst compress-level=3 as in
#      the other sections, repo1-cipher-type=aes-256-cbc).
#   3. Latency: SEGMENTS segments of WAL (INSERT ... repeat(md5(...)) + pg_switch_wal()), copied
#      aside; then per segment one timed `lifeboat wal-push`, one `pgbackrest archive-push` at its
#      level 3 and one at level 1 (lifeboat's WAL level), in turn, as the archiver calls them (OS user postgres, cwd = data directory, setuid in the
#      timing helper so no su process is measured). Median, min, max per call and the ratio.
#   4. Drain: RUNS rounds; in each, four variants one after the other: BACKLOG segments are written
#      while archive_command is empty (one INSERT, then pg_switch_wal()), then archive_command is set
#      to the variant's and the configuration reloaded, and the time runs until archive_status holds
#      no `.ready` file (polled every 5 ms). Variants:
#        - lifeboat with `lifeboat daemon` running (wal-push hands segments to it; it pushes ahead
#          in parallel, [wal] push_ahead = 4), started before and stopped after its drain;
#        - pgBackRest archive-async=y process-max=2 (its spool on the same disk);
#        - lifeboat alone (no daemon), and pgBackRest synchronous.
#      The backlog is written outside the timed part; the table is dropped between drains.
# Prints medians, the segments per second and the ratios lifeboat / pgBackRest.
#
# Needs root (initdb/pg_ctl run as postgres), PostgreSQL 15 server packages, pgbench, python3 and
# pgBackRest (installed with apt-get when missing, unless BENCH_NO_INSTALL=1; without it, only
# lifeboat is measured). Environment: BENCH_RUNS (default 3), BENCH_SEGMENTS (default 24),
# BENCH_BACKLOG (default 64), BENCH_LIFEBOAT (a lifeboat binary to measure instead of building
# one). The cluster and the daemon are stopped and the temporary directory removed on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
RUNS="${BENCH_RUNS:-3}"
SEGMENTS="${BENCH_SEGMENTS:-24}"
BACKLOG="${BENCH_BACKLOG:-64}"

require_root WAL
find_pg_bindir initdb pg_ctl psql
echo "load average at start: $(loadavg)  ($(nproc) cores)"
find_pgbackrest
build_lifeboat "${BENCH_LIFEBOAT:-}"

make_work_dir wal
data="$work/data"
socket_dir="$work"
# The archiver (user postgres) runs it.
copy_lifeboat_for_postgres

port="$(free_port)"
echo "creating a PostgreSQL cluster in $work (port $port)..."
init_cluster "$data" "$work" "$port" "archive_command = ''" "max_wal_size = 4GB" "checkpoint_timeout = 15min"
start_cluster "$data" "$work/server.log"

# lifeboat: one repository for everything, a key file slot.
lbdir="$work/lifeboat-repo"
pg mkdir -p "$lbdir"
lbconf="$lbdir/lifeboat.toml"
write_lifeboat_config "$lbconf" "$lbdir/repo" "[wal]" "push_ahead = 4" "" \
    "[daemon]" "listen = false" "state_dir = \"$lbdir/state\"" "" "[audit]" "path = \"$lbdir/audit.jsonl\""
pg "$lifeboat" --config "$lbconf" init >/dev/null

# pgBackRest: a synchronous and an asynchronous configuration of one stanza.
pbdir="$work/pgbackrest"
pbsync="$pbdir/sync.conf"
pbasync="$pbdir/async.conf"
if [ "$have_pgbackrest" = 1 ]; then
    pg mkdir -p "$pbdir/log" "$pbdir/lock" "$pbdir/spool"
    pass="$(head -c 32 /dev/urandom | base64 | tr -d '/+=')"
    for conf in "$pbsync" "$pbasync"; do
        cat <<EOF | pg tee "$conf" >/dev/null
[global]
repo1-path=$pbdir/repo
repo1-retention-full=999
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$pass
compress-type=zst
compress-level=3
log-path=$pbdir/log
lock-path=$pbdir/lock
spool-path=$pbdir/spool
log-level-console=warn
log-level-file=info
EOF
        if [ "$conf" = "$pbasync" ]; then
            printf 'archive-async=y\nprocess-max=2\n' | pg tee -a "$conf" >/dev/null
        fi
        printf '\n[bench]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' "$data" "$port" "$work" |
            pg tee -a "$conf" >/dev/null
        pg chmod 600 "$conf"
    done
    pg "$pgbackrest_bin" --config="$pbsync" --stanza=bench stanza-create >/dev/null
fi

# Writes at least $1 segments of WAL while nothing archives (rows of 8 * 32 bytes of md5 text, about
# 52000 per 16 MiB), then switches to a new segment so the last one is complete too.
write_backlog() {
    psql_ -c "DROP TABLE IF EXISTS walgen" -c "CREATE TABLE walgen (id bigint, payload text)" \
        -c "INSERT INTO walgen SELECT g, repeat(md5(g::text || random()::text), 8) FROM generate_series(1, $((55000 * $1))) g" \
        -c "SELECT pg_switch_wal()" >/dev/null
}

helper="$work/timing.py"
cat >"$helper" <<'EOF'
"""Timing helper of scripts/bench.d/wal.sh (runs as root, commands run as postgres via setuid).

  timing.py latency CWD SEGMENTS_FILE -- NAME CMD... [-- NAME CMD...]...
      per segment, one call of each command ({} = the segment), in turn; prints "NAME ms" lines.
  timing.py drain STATUS_DIR PSQL...
      runs PSQL (which sets archive_command and reloads), then polls STATUS_DIR every 5 ms until
      no .ready file is left; prints the seconds from before PSQL to then, and the count drained.
"""
import os, pwd, subprocess, sys, time

def as_postgres(cwd):
    user = pwd.getpwnam("postgres")
    env = dict(os.environ, HOME=user.pw_dir, USER="postgres", LOGNAME="postgres")
    return dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd=cwd, env=env)

def ready(status_dir):
    return sum(1 for name in os.listdir(status_dir) if name.endswith(".ready"))

mode = sys.argv[1]
if mode == "latency":
    cwd, listing, tools = sys.argv[2], sys.argv[3], []
    for arg in sys.argv[4:]:
        if arg == "--":
            tools.append([])
        else:
            tools[-1].append(arg)
    tools = [(group[0], group[1:]) for group in tools if group]
    kwargs = as_postgres(cwd)
    for segment in open(listing).read().split():
        for name, template in tools:
            cmd = [segment if part == "{}" else part for part in template]
            start = time.monotonic_ns()
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)
            elapsed = time.monotonic_ns() - start
            if done.returncode != 0:
                sys.exit(f"error: {' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
            print(name, f"{elapsed / 1e6:.3f}", flush=True)
elif mode == "drain":
    status_dir, command = sys.argv[2], sys.argv[3:]
    backlog = ready(status_dir)
    start = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    while ready(status_dir) > 0:
        if time.monotonic() - start > 600:
            sys.exit("error: the backlog did not drain within 600 s")
        time.sleep(0.005)
    print(f"{time.monotonic() - start:.3f} {backlog}")
EOF

results="$work/results"
mkdir -p "$results"

# ---- latency per call ----
echo "making $SEGMENTS WAL segments for the latency test..."
write_backlog "$SEGMENTS"
mapfile -t segments < <(find "$data/pg_wal/archive_status" -name '*.ready' -printf '%f\n' | sed 's/\.ready$//' | sort)
pg mkdir -p "$work/walsave"
for segment in "${segments[@]}"; do pg cp "$data/pg_wal/$segment" "$work/walsave/$segment"; done
printf '%s\n' "${segments[@]/#/$work/walsave/}" >"$work/segments.txt"
wal_bytes="$(cat "$work"/walsave/* | wc -c)"
echo "input: ${#segments[@]} segments, $wal_bytes bytes"
# A separate stanza for the latency test, so the drain's archive starts empty of these names.
latency_lifeboat=("$lifeboat" --config "$lbdir/latency.toml" wal-push {})
sed -e "s|url = \"file://$lbdir/repo\"|url = \"file://$lbdir/latency-repo\"|" -e "s|$lbdir/state|$lbdir/latency-state|" \
    -e "s|$lbdir/repo.key|$lbdir/latency.key|" "$lbconf" | pg tee "$lbdir/latency.toml" >/dev/null
pg "$lifeboat" --config "$lbdir/latency.toml" init >/dev/null
latency_pgbackrest=()
if [ "$have_pgbackrest" = 1 ]; then
    # Its configured level 3 (as in every other section), and level 1, lifeboat's default for WAL.
    for level in 3 1; do
        sed -e "s|repo1-path=$pbdir/repo|repo1-path=$pbdir/latency-repo-$level|" \
            -e "s|compress-level=3|compress-level=$level|" "$pbsync" | pg tee "$pbdir/latency-$level.conf" >/dev/null
        pg "$pgbackrest_bin" --config="$pbdir/latency-$level.conf" --stanza=bench stanza-create >/dev/null
        latency_pgbackrest+=(-- "pgbackrest-level-$level" "$pgbackrest_bin" --config="$pbdir/latency-$level.conf"
            --stanza=bench archive-push {})
    done
fi
python3 "$helper" latency "$data" "$work/segments.txt" -- lifeboat "${latency_lifeboat[@]}" "${latency_pgbackrest[@]}" \
    >"$results/latency.txt"
# The backlog of the latency test goes the ordinary way before the drains start.
set_archive_command "true"
require_archiver_idle

# ---- drain ----
start_daemon() {
    pg rm -f "$lbdir/state/wal-push.sock"
    # setpriv execs the daemon itself, so $! is its pid (runuser would stay in between).
    setpriv --reuid=postgres --regid=postgres --init-groups "$lifeboat" --config "$lbconf" daemon \
        >>"$work/daemon.log" 2>&1 &
    background_pid=$!
    for _ in $(seq 1 600); do
        [ -S "$lbdir/state/wal-push.sock" ] && return 0
        sleep 0.05
    done
    echo "error: the daemon did not open its socket; see $work/daemon.log" >&2
    exit 1
}
stop_daemon() {
    kill -TERM "$background_pid"
    if ! wait "$background_pid"; then
        echo "error: the daemon did not exit 0; its log:" >&2
        tail -n 20 "$work/daemon.log" >&2
        exit 1
    fi
    background_pid=""
}
variants=(lifeboat-daemon lifeboat-alone)
[ "$have_pgbackrest" = 1 ] && variants=(lifeboat-daemon pgbackrest-async lifeboat-alone pgbackrest-sync)
for run in $(seq 1 "$RUNS"); do
    for variant in "${variants[@]}"; do
        set_archive_command ""
        write_backlog "$BACKLOG"
        case "$variant" in
        lifeboat-*) command="$lifeboat --config $lbconf wal-push %p" ;;
        pgbackrest-async) command="$pgbackrest_bin --config=$pbasync --stanza=bench archive-push %p" ;;
        pgbackrest-sync) command="$pgbackrest_bin --config=$pbsync --stanza=bench archive-push %p" ;;
        esac
        if [ "$variant" = lifeboat-daemon ]; then start_daemon; fi
        sync
        load="$(loadavg)"
        result="$(python3 "$helper" drain "$data/pg_wal/archive_status" "$bindir/psql" -X -q -v ON_ERROR_STOP=1 \
            -h "$work" -p "$port" -U postgres -d postgres \
            -c "ALTER SYSTEM SET archive_command = '$command'" -c "SELECT pg_reload_conf()")"
        echo "$variant $result" >>"$results/drain.txt"
        printf '  drain run %s %-17s %s s for %s segments  (load %s)\n' "$run" "$variant" ${result} "$load"
        if [ "$variant" = lifeboat-daemon ]; then stop_daemon; fi
    done
done
set_archive_command ""
failed="$(psql_ -At -c "SELECT failed_count FROM pg_stat_archiver")"

echo
echo "==== wal: lifeboat vs pgBackRest ($(nproc) cores; archiver failures during the run: $failed) ===="
python3 - "$results" "$wal_bytes" <<'EOF'
import statistics, sys
results, wal_bytes = sys.argv[1], int(sys.argv[2])
latency = {}
for line in open(f"{results}/latency.txt"):
    tool, ms = line.split()
    latency.setdefault(tool, []).append(float(ms))
print(f"latency per call, 16 MiB segments ({wal_bytes} bytes in all), the tools in turn:")
names = {"lifeboat": "lifeboat wal-push (zstd 1)", "pgbackrest-level-3": "pgbackrest archive-push (zst 3)",
         "pgbackrest-level-1": "pgbackrest archive-push (zst 1)"}
for tool, values in latency.items():
    print(f"  {names[tool]:<32} median {statistics.median(values):7.1f} ms  [{min(values):.1f}-{max(values):.1f}]  n={len(values)}")
for theirs in ("pgbackrest-level-3", "pgbackrest-level-1"):
    if theirs in latency:
        ratio = statistics.median(latency["lifeboat"]) / statistics.median(latency[theirs])
        print(f"  ratio lifeboat / {names[theirs]}: {ratio:.2f} (lower is better)")
drains = {}
for line in open(f"{results}/drain.txt"):
    variant, seconds, count = line.split()
    drains.setdefault(variant, []).append((float(seconds), int(count)))
print("archiver drain of a backlog (seconds until no .ready file; median of the runs):")
rates = {}
for variant, runs in drains.items():
    seconds = statistics.median(s for s, _ in runs)
    count = statistics.median(c for _, c in runs)
    rates[variant] = count / seconds
    each = ", ".join(f"{s:.2f}" for s, _ in runs)
    print(f"  {variant:<17} {seconds:6.2f} s for {count:.0f} segments = {rates[variant]:5.1f} seg/s  (runs: {each})")
for ours, theirs in (("lifeboat-daemon", "pgbackrest-async"), ("lifeboat-alone", "pgbackrest-sync"),
                     ("lifeboat-daemon", "pgbackrest-sync")):
    if ours in rates and theirs in rates:
        print(f"  drain rate {ours} / {theirs}: {rates[ours] / rates[theirs]:.2f}x (higher is better)")
EOF
