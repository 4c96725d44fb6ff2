# Shared by the PostgreSQL benchmarks of scripts/bench.d (backup-vs-pgbackrest, realdata, pitr,
# incremental, wal, daemon), sourced right after `set -euo pipefail`. It owns what they all do alike:
# the checks for root, the postgres OS user, PostgreSQL's programs and pgBackRest (installed with
# apt-get unless BENCH_NO_INSTALL=1); the release build of lifeboat; the temporary work directory
# and its cleanup on exit (a background process and every PostgreSQL server in it stopped, the
# directory removed unless BENCH_KEEP=1); a throwaway cluster as the postgres user on a free port
# with its Unix socket in a temporary directory; the lifeboat and pgBackRest configurations the
# sections measure; the archiver's archive_command and its backlog; measure.py's runs.
# It changes to the repository's root and sets here (that root) and measure (measure.py).
# Globals its functions read, set by the calling script: data (the cluster's data directory),
# socket_dir and port (where it listens). Globals they set for the script: bindir, lifeboat,
# pgbackrest_bin, have_pgbackrest, work, lbdir, lbconf, pbdir, pbconf.
# shellcheck shell=bash disable=SC2034,SC2154

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
here="$(pwd)"
measure="$here/scripts/bench.d/measure.py"
# A process the script started in the background (wal.sh: the daemon), stopped on exit.
background_pid=""

# The 1, 5 and 15 minute load averages.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Exits unless run as root with a postgres OS user; NAME says which benchmark.
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: the $1 benchmark runs as root (initdb and pg_ctl run as the postgres user)" >&2
        exit 1
    fi
    if ! getent passwd postgres >/dev/null; then
        echo "error: no postgres OS user; install PostgreSQL's server packages" >&2
        exit 1
    fi
}

# Sets bindir to PostgreSQL 15's programs (else pg_config's, else the newest installed) and exits
# unless each PROGRAM is there.
find_pg_bindir() {
    bindir="$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || true)"
    if [ -z "$bindir" ]; then
        bindir="$(pg_config --bindir 2>/dev/null || true)"
    fi
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
        bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    fi
    local program
    for program in "$@"; do
        if [ ! -x "$bindir/$program" ]; then
            echo "error: $bindir/$program not found; install PostgreSQL's server packages" >&2
            exit 1
        fi
    done
}

# Exits unless zstd is installed; NAME says which benchmark needs it.
require_zstd() {
    command -v zstd >/dev/null || { echo "error: the $1 benchmark needs zstd (apt-get install zstd)" >&2; exit 1; }
}

# Succeeds when pgbackrest is installed, after `apt-get install pgbackrest` if it was missing
# (not with BENCH_NO_INSTALL=1).
install_pgbackrest() {
    command -v pgbackrest >/dev/null && return 0
    [ "${BENCH_NO_INSTALL:-0}" != 1 ] || return 1
    echo "pgbackrest is not installed: apt-get update && apt-get install -y pgbackrest ..."
    apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null 2>&1 &&
        command -v pgbackrest >/dev/null
}

# Sets pgbackrest_bin, installing pgBackRest if needed; exits without it (NAME: which benchmark).
require_pgbackrest() {
    if ! install_pgbackrest; then
        echo "error: the $1 benchmark compares with pgBackRest, which is not installed (apt-get install pgbackrest)" >&2
        exit 1
    fi
    pgbackrest_bin="$(command -v pgbackrest)"
}

# Sets have_pgbackrest (1 or 0) and pgbackrest_bin ("" without it), installing pgBackRest if needed,
# and prints its version; without it only lifeboat is measured.
find_pgbackrest() {
    have_pgbackrest=0
    pgbackrest_bin=""
    if install_pgbackrest; then
        have_pgbackrest=1
        pgbackrest_bin="$(command -v pgbackrest)"
        echo "pgBackRest: $("$pgbackrest_bin" version)"
    elif [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
        echo "warning: could not install pgbackrest; only lifeboat is measured" >&2
    fi
}

# Sets lifeboat to BINARY when given, else to a fresh release build (with --or-existing, to the
# existing release build when the build fails: a tree being edited may not compile for a moment).
build_lifeboat() {
    local or_existing=0
    if [ "${1:-}" = --or-existing ]; then
        or_existing=1
        shift
    fi
    if [ -n "${1:-}" ]; then
        lifeboat="$1"
        return
    fi
    echo "building lifeboat (cargo build --release)..."
    local target_dir
    target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    lifeboat="$target_dir/release/lifeboat"
    if ! cargo build --release --quiet --bin lifeboat; then
        if [ "$or_existing" = 1 ] && [ -x "$lifeboat" ]; then
            echo "warning: the build failed; measuring the existing $lifeboat of $(date -r "$lifeboat" '+%F %T')" >&2
        else
            exit 1
        fi
    fi
}

# Runs a command as the postgres OS user.
pg() { runuser -u postgres -- "$@"; }

# Creates the work directory /tmp/lifeboat-bench-NAME-XXXXXX (work), owned by postgres, and
# arranges for cleanup_work to run on exit, also on SIGINT / SIGTERM.
make_work_dir() {
    work="$(mktemp -d "/tmp/lifeboat-bench-$1-XXXXXX")"
    chmod 755 "$work"
    chown postgres: "$work"
    trap cleanup_work EXIT
    trap 'exit 130' INT TERM
}

# Stops the PostgreSQL server of data directory DIR if it runs: fast shutdown, else immediate.
stop_cluster() {
    if [ -f "$1/postmaster.pid" ]; then
        pg "$bindir/pg_ctl" stop -D "$1" -m fast -t 60 --silent >/dev/null 2>&1 ||
            pg "$bindir/pg_ctl" stop -D "$1" -m immediate --silent >/dev/null 2>&1 || true
    fi
}

# Stops background_pid and every PostgreSQL server still running in the work directory (the
# clusters, a restored server or a verify scratch server left by an interrupted run), then removes
# the directory, or keeps it with BENCH_KEEP=1.
cleanup_work() {
    if [ -n "$background_pid" ]; then
        kill -TERM "$background_pid" 2>/dev/null || true
        wait "$background_pid" 2>/dev/null || true
    fi
    local pid_file
    while IFS= read -r pid_file; do
        stop_cluster "$(dirname "$pid_file")"
    done < <(find "$work" -maxdepth 4 -name postmaster.pid 2>/dev/null)
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "kept $work (BENCH_KEEP=1): clusters stopped, repositories and results left in place"
    else
        rm -rf "$work"
    fi
}

# Copies lifeboat into the work directory, where the postgres user (the archiver, restore_command)
# can run it, and points lifeboat at the copy.
copy_lifeboat_for_postgres() {
    install -d -m 755 "$work/bin"
    install -m 755 "$lifeboat" "$work/bin/lifeboat"
    lifeboat="$work/bin/lifeboat"
}

# Prints a free TCP port of 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The settings of a cluster that a backup benchmark loads: nothing archived while loading, large
# enough buffers and WAL for a bulk load without forced checkpoints.
bulk_load_settings=("archive_command = 'true'" "shared_buffers = 512MB" "max_wal_size = 4GB" "checkpoint_timeout = 15min")

# Runs initdb (as postgres, checksums on) for data directory DATA, listening only on its Unix
# socket in SOCKET_DIR at PORT, with WAL archiving on, then the SETTING lines.
init_cluster() {
    local dir="$1" sockets="$2" listen_port="$3"
    shift 3
    pg "$bindir/initdb" -D "$dir" -U postgres -A trust -k --no-sync >/dev/null
    {
        printf "listen_addresses = ''\nunix_socket_directories = '%s'\nport = %s\n" "$sockets" "$listen_port"
        printf 'wal_level = replica\narchive_mode = on\n'
        printf '%s\n' "$@"
    } | pg tee -a "$dir/postgresql.conf" >/dev/null
}

# Starts the cluster of data directory DATA, its log in LOG, and waits until it accepts connections.
start_cluster() { pg "$bindir/pg_ctl" start -D "$1" -l "$2" -w -t 120 --silent; }

# psql as postgres to the cluster at socket_dir and port, stopping at the first error.
psql_() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$socket_dir" -p "$port" -U postgres -d postgres "$@"; }

# Prints the unaligned result of one SQL statement.
sql() { psql_ -Atc "$1"; }

# Runs `pgbench -i -s SCALE` on the cluster, its output in LOG (printed if it fails).
pgbench_init() {
    "$bindir/pgbench" -i -s "$1" -q -h "$socket_dir" -p "$port" -U postgres postgres >"$2" 2>&1 ||
        { cat "$2" >&2; exit 1; }
}

# Bytes under PATH (du -sb), 0 when it does not exist.
du_bytes() { if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }

# Bytes of the data directory without pg_wal (what a base backup copies).
data_bytes() { echo $(($(du_bytes "$data") - $(du_bytes "$data/pg_wal"))); }

# Sets archive_command to COMMAND and reloads the configuration.
set_archive_command() {
    psql_ -c "ALTER SYSTEM SET archive_command = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
}

# Sets archive_command to COMMAND, then gives the archiver half a second to take it up.
switch_archive_command() {
    set_archive_command "$1"
    sleep 0.5
}

# Succeeds once pg_wal/archive_status holds no .ready file; fails after SECONDS.
archiver_drained() {
    local _
    for _ in $(seq 1 $(($1 * 10))); do
        if ! compgen -G "$data/pg_wal/archive_status/*.ready" >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Waits (up to 60 s) until the archiver has nothing left to archive, so that the next tool's
# archive_command does not inherit the previous one's backlog; warns if it still has.
archiver_idle() {
    archiver_drained 60 || echo "warning: the archiver still has .ready files" >&2
}

# Waits (up to 120 s) until the archiver has nothing left to archive; exits if it still has.
require_archiver_idle() {
    archiver_drained 120 || { echo "error: the archiver still has .ready files after 120 s" >&2; exit 1; }
}

# Writes lifeboat's configuration PATH for the cluster (as postgres, mode 600): repository
# REPOSITORY with the key file repo.key beside PATH, aes-256-gcm, zstd level 3; then, after a
# blank line, the LINEs (further sections).
write_lifeboat_config() {
    local path="$1" repository="$2"
    shift 2
    {
        cat <<EOF
[cluster]
name = "bench"
pgdata = "$data"
connection = "postgresql://postgres@/postgres?host=$socket_dir&port=$port"
bin_dir = "$bindir"
os_user = "postgres"

[repository]
url = "file://$repository"
key_file = "$(dirname "$path")/repo.key"
cipher = "aes-256-gcm"
compression = { algorithm = "zstd", level = 3 }
EOF
        if [ "$#" -gt 0 ]; then
            printf '\n%s\n' "$1"
            shift
            printf '%s\n' "$@"
        fi
    } | pg tee "$path" >/dev/null
    pg chmod 600 "$path"
}

# Sets lbdir to DIR and lbconf to its lifeboat.toml: a repository DIR/repo, [backup] workers = 2,
# an audit log in DIR; initialised.
setup_lifeboat_repository() {
    lbdir="$1"
    lbconf="$lbdir/lifeboat.toml"
    pg mkdir -p "$lbdir"
    write_lifeboat_config "$lbconf" "$lbdir/repo" "[backup]" "workers = 2" "" "[audit]" "path = \"$lbdir/audit.jsonl\""
    pg "$lifeboat" --config "$lbconf" init >/dev/null
}

# Writes pgBackRest's configuration PATH (as postgres, mode 600) for stanza bench of the cluster: a
# posix repository REPOSITORY, aes-256-cbc with a random passphrase, zst level 3, start-fast,
# process-max 2, its log, lock and spool directories beside PATH; the LINEs (further sections)
# before [bench].
write_pgbackrest_config() {
    local path="$1" repository="$2" dir
    shift 2
    dir="$(dirname "$path")"
    pg mkdir -p "$dir/log" "$dir/lock" "$dir/spool"
    {
        cat <<EOF
[global]
repo1-path=$repository
repo1-retention-full=999
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
compress-type=zst
compress-level=3
start-fast=y
process-max=2
log-path=$dir/log
lock-path=$dir/lock
spool-path=$dir/spool
log-level-console=warn
log-level-file=info

EOF
        if [ "$#" -gt 0 ]; then
            printf '%s\n' "$@" ""
        fi
        printf '[bench]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' "$data" "$port" "$socket_dir"
    } | pg tee "$path" >/dev/null
    pg chmod 600 "$path"
}

# Sets pbdir to DIR and pbconf to its pgbackrest.conf: a repository DIR/repo, then the LINEs of
# write_pgbackrest_config.
setup_pgbackrest_repository() {
    pbdir="$1"
    shift
    pbconf="$pbdir/pgbackrest.conf"
    write_pgbackrest_config "$pbconf" "$pbdir/repo" "$@"
}

# Creates stanza bench of pgBackRest configuration CONF and checks that WAL reaches it (the
# archive_command must already push to it).
create_stanza() {
    pg "$pgbackrest_bin" --config="$1" --stanza=bench stanza-create >/dev/null
    pg "$pgbackrest_bin" --config="$1" --stanza=bench check >/dev/null
}

# Runs COMMAND as postgres in CWD under measure.py, which writes wall time and peak RSS to OUT (its
# output to OUT.stdout and OUT.stderr); if it fails, prints that WHAT failed, its stderr, the end
# of its stdout and of LOG (when there is one) and exits.
measure_run() { # cwd, out, what, log ("" for none), command...
    local cwd="$1" out="$2" what="$3" log="$4"
    shift 4
    if ! python3 "$measure" run --user postgres --cwd "$cwd" --out "$out" -- "$@"; then
        echo "error: $what failed:" >&2
        cat "$out.stderr" >&2
        tail -n 40 "$out.stdout" >&2
        if [ -n "$log" ] && [ -f "$log" ]; then tail -n 20 "$log" >&2; fi
        exit 1
    fi
}

# Runs COMMAND as measure_run does, as postgres in the data directory, and adds to OUT's JSON
# repo_bytes, how much REPO_PART grew meanwhile, and load, the load averages before it.
measure_repository_growth() { # out, what, repository part, command...
    local out="$1" what="$2" repo_part="$3" before after load
    shift 3
    before="$(du_bytes "$repo_part")"
    load="$(loadavg)"
    measure_run "$data" "$out" "$what" "" "$@"
    after="$(du_bytes "$repo_part")"
    python3 - "$out" $((after - before)) "$load" <<'PY'
import json, sys
path, repo, load = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = json.load(open(path))
r.update(repo_bytes=repo, load=load)
json.dump(r, open(path, "w"))
PY
}
