#!/usr/bin/env bash
# backup: lifeboat vs pgBackRest, on a real PostgreSQL 15 cluster (called by scripts/bench).
#
#   1. Builds lifeboat in release (`cargo build --release`, the usual target directory).
#   2. In a temporary directory: a PostgreSQL cluster (initdb -k, as the `postgres` OS user when run
#      as root; Unix socket in the temporary directory, listen_addresses = '', a free port,
#      wal_level = replica, archive_mode = on, shared_buffers = 512MB, max_wal_size = 4GB,
#      archive_command = 'true' while loading), `pgbench -i -s 100` (about 1.5 GB), CHECKPOINT.
#   3. lifeboat: a local-directory repository, zstd level 3, aes-256-gcm with a key file,
#      [backup] workers = 2, archive_command = '<bin> --config <cfg> wal-push %p'; RUNS full backups.
#   4. pgBackRest (if installed): a stanza with a posix repository on the same disk, compress-type=zst
#      compress-level=3 start-fast=y repo1-cipher-type=aes-256-cbc process-max=2,
#      archive_command = 'pgbackrest --config=<conf> --stanza=bench archive-push %p'; RUNS full backups.
#      The runs of 3 and 4 alternate (lifeboat, pgBackRest, lifeboat, ...), archive_command being
#      switched to the tool before each, so that the shared machine's changing load hits both alike.
#   5. restore: each tool's newest backup into a new directory, to a server accepting connections
#      with recovery finished, RUNS times each, alternating (`sync` before each, outside the time).
#      lifeboat: `restore --pgdata D --archive-mode off --start --port P` (one command; it starts
#      PostgreSQL and returns once recovery has ended). pgBackRest: `restore --pg1-path=D
#      --type=default --archive-mode=off`, `pg_ctl start -w -o "-p P"`, then pg_isready-like polling
#      of pg_is_in_recovery() until false, in one measured shell script. Each restored server is then
#      stopped (-m immediate) and its directory deleted. MB/s = restored bytes (without pg_wal) / wall.
#   6. verify, RUNS times each, alternating (`sync` before each, outside the time):
#      `lifeboat verify <newest lifeboat backup id> --integrity-only --json` (workers = 2) against
#      `pgbackrest --stanza=bench verify --output=text --verbose` (process-max = 2). This is NOT a
#      like-for-like comparison, and the table says so:
#      - scope: pgBackRest verify checks every backup in its repository (the RUNS full backups of
#        step 4) and its whole WAL archive; lifeboat checks one backup and the WAL from its start
#        to its stop segment.
#      - depth: lifeboat decrypts and authenticates every object (AES-GCM), decompresses it and
#        hashes every file's plaintext against the manifest (BLAKE3), WAL alike. pgBackRest (2.45,
#        the Debian package measured here) checks a backup file by the SHA-1 of its bytes as stored
#        (encrypted and compressed; the manifest's repo checksum: no decryption, no decompression,
#        so the plaintext is not checked), and a WAL file by decrypting, decompressing and hashing
#        it (the SHA-1 in its name).
#      So the table prints, per tool, the backups and WAL segments checked, the stored bytes read
#      (lifeboat: stored_bytes of the backup + its WAL objects; pgBackRest: `du -sb` of
#      backup/bench and archive/bench) and the plaintext bytes hashed after decryption and
#      decompression (lifeboat: integrity.bytes of its report; pgBackRest: 16 MiB per archived WAL
#      segment), each with MB/s = bytes / wall.
#      Then, RUNS times, lifeboat's restore test: `lifeboat verify <id> --amcheck indexes
#      --scratch-dir <work>/verify-scratch --json` (restores into a scratch directory, starts
#      PostgreSQL, recovers to consistency, runs pg_amcheck on the indexes, stops the server and
#      removes the directory): wall, RSS and the report's recovery.total_seconds (restore +
#      recovery; restore_seconds and recovery_seconds beside it) and amcheck.seconds. pgBackRest
#      has no restore test (its verify restores nothing); the closest figure is its restore + start
#      of step 5, printed beside it. The RSS tree of the restore test counts lifeboat and the
#      pg_ctl / pg_amcheck it runs, not the scratch server (pg_ctl --no-wait leaves it reparented).
#   7. wal-push latency: ~SEGMENTS segments of WAL (INSERT ... repeat(md5(...)) + pg_switch_wal()),
#      copied to a scratch directory, then one timed `lifeboat wal-push` and one timed
#      `pgbackrest archive-push` per segment, sequentially, as the archiver calls them (OS user
#      postgres, from the data directory, absolute paths), each into a fresh repository / stanza.
#
# Every command under test runs as the postgres user (setuid in scripts/bench.d/measure.py, so no
# su/runuser process is measured). Wall time, peak RSS of the process tree (summed over all of its
# processes, sampled from /proc every 100 ms: pgBackRest forks local worker processes, lifeboat is
# one process; both are measured the same way) and the largest single process (ru_maxrss, what
# GNU `time -v` prints). MB/s = bytes of the data directory without pg_wal / wall time (MB = 10^6).
# Repository bytes = growth of `du -sb` of the backups' part of the repository (WAL excluded).
#
# Needs root (initdb/pg_ctl run as postgres), PostgreSQL 15 server packages and pgbench, python3.
# pgBackRest: when it is missing and the script runs as root, it runs `apt-get update` once and
# `apt-get install -y pgbackrest`; if that fails, only the lifeboat half runs.
# Environment: BENCH_RUNS (default 3), BENCH_SCALE (default 100), BENCH_SEGMENTS (default 20),
# BENCH_NO_INSTALL=1 (never run apt-get); LIFEBOAT_BIN=/path/to/lifeboat measures that binary
# instead of building one.
# The cluster (and a restored or verify scratch server left running) is stopped and the temporary
# directory, with the verify scratch directory inside it, removed on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
RUNS="${BENCH_RUNS:-3}"
SCALE="${BENCH_SCALE:-100}"
SEGMENTS="${BENCH_SEGMENTS:-20}"

require_root backup
find_pg_bindir initdb pg_ctl pgbench psql
echo "load average at start: $(loadavg)  ($(nproc) cores)"
find_pgbackrest
build_lifeboat --or-existing "${LIFEBOAT_BIN:-}"

# Nothing runs in the background: the only processes left to stop on exit are the cluster this
# script started, a restored server if a restore run was interrupted, and a verify scratch server if
# lifeboat verify was killed before its own cleanup (it removes its scratch server itself when it
# ends, also on SIGINT / SIGTERM).
make_work_dir backup
data="$work/data"
socket_dir="$work"
# The archiver runs it.
copy_lifeboat_for_postgres
echo "lifeboat: $lifeboat"

port="$(free_port)"

echo "creating a PostgreSQL cluster in $work (port $port) and running pgbench -i -s $SCALE..."
init_cluster "$data" "$work" "$port" "${bulk_load_settings[@]}"
start_cluster "$data" "$work/server.log"
load_start="$(date +%s.%N)"
pgbench_init "$SCALE" "$work/pgbench-init.log"
psql_ -c CHECKPOINT
echo "pgbench -i -s $SCALE + CHECKPOINT: $(python3 -c "import time; print(f'{time.time() - $load_start:.1f}')") s; data directory without pg_wal: $(data_bytes) bytes"

results="$work/results"
mkdir -p "$results"
chmod 777 "$results"

# ---- lifeboat ----
lbdir="$work/lifeboat"
pg mkdir -p "$lbdir"
lbconf="$lbdir/lifeboat.toml"
write_lifeboat_config "$lbconf" "$lbdir/repo" "[backup]" "workers = 2"
pg "$lifeboat" --config "$lbconf" init >/dev/null

# Prints one result line per run and keeps the JSON: tool, run, command...
run_backup() {
    local tool="$1" run="$2" repo_part="$3"
    shift 3
    local out="$results/$tool-$run.json" bytes
    bytes="$(data_bytes)"
    measure_repository_growth "$out" "$tool backup $run" "$repo_part" "$@"
    python3 - "$out" "$bytes" <<'EOF'
import json, sys
path, data = sys.argv[1], int(sys.argv[2])
r = json.load(open(path))
r.update(data_bytes=data)
json.dump(r, open(path, "w"))
repo, load = r["repo_bytes"], r["load"]
print(f"  {path.rsplit('/', 1)[1][:-5]:<14} {r['wall_s']:6.2f} s  {data / r['wall_s'] / 1e6:6.0f} MB/s  "
      f"repo {repo:>12,} B  RSS tree {r['tree_peak_kib'] / 1024:6.1f} MiB, 1 proc {r['proc_max_kib'] / 1024:6.1f} MiB  "
      f"(load {load})")
EOF
}

# ---- pgBackRest ----
if [ "$have_pgbackrest" = 1 ]; then
    setup_pgbackrest_repository "$work/pgbackrest"
    switch_archive_command "$pgbackrest_bin --config=$pbconf --stanza=bench archive-push %p"
    create_stanza "$pbconf"
fi

# The runs alternate (lifeboat, pgBackRest, lifeboat, ...) so that a change in the machine's load
# (it is shared) hits both tools alike; archive_command is switched to the tool before each run.
echo
echo "full backups, alternating: lifeboat (workers = 2, zstd 3, aes-256-gcm, key file)"
[ "$have_pgbackrest" = 1 ] && echo "  and pgBackRest (process-max = 2, zst 3, aes-256-cbc), $RUNS each:"
for run in $(seq 1 "$RUNS"); do
    archiver_idle
    switch_archive_command "$lifeboat --config $lbconf wal-push %p"
    run_backup lifeboat "$run" "$lbdir/repo/clusters/bench/backups" "$lifeboat" --config "$lbconf" backup --json
    if [ "$have_pgbackrest" = 1 ]; then
        archiver_idle
        switch_archive_command "$pgbackrest_bin --config=$pbconf --stanza=bench archive-push %p"
        run_backup pgbackrest "$run" "$pbdir/repo/backup/bench" \
            "$pgbackrest_bin" --config="$pbconf" --stanza=bench --type=full backup
    fi
done

# ---- restore ----
# Command to a server accepting connections with recovery finished, from each tool's newest backup
# of the runs above (same cluster, same data), alternating like the backups. lifeboat: one command,
# `restore --archive-mode off --start --port P`, which starts PostgreSQL and returns when recovery
# has ended. pgBackRest: `restore --type=default --archive-mode=off`, then `pg_ctl start -w -o -p P`,
# then polling pg_is_in_recovery() until false, all in one measured shell script. Both restored
# servers are PostgreSQL children of the measured command while it runs, so the RSS tree includes
# the starting server. Restored bytes = the restored directory without pg_wal.
restore_port="$(free_port)"
restores="$work/restore"
pg mkdir -p "$restores"
restore_ready_script="$work/pgbackrest-restore.sh"
cat >"$restore_ready_script" <<EOF
#!/bin/sh
# pgBackRest restore, then start and wait for the end of recovery: \$1 = the data directory.
set -e
"${pgbackrest_bin:-pgbackrest}" --config="${pbconf:-}" --stanza=bench restore --pg1-path="\$1" --type=default --archive-mode=off
"$bindir/pg_ctl" start -D "\$1" -l "\$1.log" -w -t 3600 -o "-p $restore_port" --silent
until [ "\$("$bindir/psql" -X -Atc 'SELECT pg_is_in_recovery()' -h "$work" -p $restore_port -U postgres -d postgres 2>/dev/null)" = f ]; do
    sleep 0.05
done
EOF
chmod 755 "$restore_ready_script"
in_recovery() { "$bindir/psql" -X -Atc 'SELECT pg_is_in_recovery()' -h "$work" -p "$restore_port" -U postgres -d postgres 2>&1; }
run_restore() { # tool, run, data directory, command...
    local tool="$1" run="$2" dir="$3"
    shift 3
    local out="$results/restore-$tool-$run.json" load state bytes
    sync # the previous run's dirty pages are written back outside the measured time
    load="$(loadavg)"
    measure_run "$restores" "$out" "$tool restore $run" "$dir.log" "$@"
    state="$(in_recovery)"
    if [ "$state" != f ]; then
        echo "warning: $tool restore $run returned but pg_is_in_recovery() gives: $state" >&2
    fi
    bytes=$(($(du_bytes "$dir") - $(du_bytes "$dir/pg_wal")))
    pg "$bindir/pg_ctl" stop -D "$dir" -m immediate --silent >/dev/null 2>&1 || echo "warning: could not stop $dir" >&2
    rm -rf "$dir" "$dir.log"
    python3 - "$out" "$bytes" "$load" "restore-$tool-$run" <<'PY'
import json, sys
path, data, load, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
r = json.load(open(path))
r.update(data_bytes=data, load=load)
json.dump(r, open(path, "w"))
print(f"  {name:<22} {r['wall_s']:6.2f} s  {data / r['wall_s'] / 1e6:6.0f} MB/s  "
      f"restored {data:>12,} B  RSS tree {r['tree_peak_kib'] / 1024:6.1f} MiB, 1 proc {r['proc_max_kib'] / 1024:6.1f} MiB  "
      f"(load {load})")
PY
}
archiver_idle
echo
echo "restores of the newest backup to a server accepting connections (port $restore_port), alternating:"
echo "  lifeboat restore --archive-mode off --start (workers = 2)"
[ "$have_pgbackrest" = 1 ] && echo "  and pgbackrest restore --archive-mode=off (process-max = 2) + pg_ctl start -w + poll pg_is_in_recovery(), $RUNS each:"
for run in $(seq 1 "$RUNS"); do
    run_restore lifeboat "$run" "$restores/lifeboat-$run" \
        "$lifeboat" --config "$lbconf" restore --pgdata "$restores/lifeboat-$run" --archive-mode off --start --port "$restore_port"
    if [ "$have_pgbackrest" = 1 ]; then
        pg install -d -m 700 "$restores/pgbackrest-$run"
        run_restore pgbackrest "$run" "$restores/pgbackrest-$run" "$restore_ready_script" "$restores/pgbackrest-$run"
    fi
done

# ---- verify ----
# Integrity checks, alternating like the restores: lifeboat verifies its newest backup (one backup
# and its WAL, every object decrypted, decompressed and hashed), pgBackRest verifies its whole
# repository (every backup, by the checksum of the stored bytes, and the whole WAL archive,
# decrypted and decompressed): the amounts each one reads and hashes are recorded beside the times.
# Then lifeboat's restore test, which pgBackRest has no counterpart of.
lb_id="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$results/lifeboat-$RUNS.json.stdout")"
# What lifeboat's integrity check reads from the repository: the backup's stored objects and the
# stored WAL segments from its start to its stop segment.
python3 - "$results/lifeboat-$RUNS.json.stdout" "$lbdir/repo/clusters/bench/wal" >"$results/verify-lifeboat-amount.json" <<'PY'
import json, os, sys
backup, wal_dir = json.load(open(sys.argv[1])), sys.argv[2]
start, stop = backup["start_wal"], backup["stop_wal"]
wal_stored, segments = 0, 0
for root, _, names in os.walk(wal_dir):
    for name in names:
        if len(name) == 24 and start[:8] == name[:8] and start <= name <= stop:
            wal_stored += os.path.getsize(os.path.join(root, name))
            segments += 1
json.dump(dict(id=backup["id"], stored_bytes=backup["stored_size"] + wal_stored, wal_segments=segments), sys.stdout)
PY
if [ "$have_pgbackrest" = 1 ]; then
    # What pgBackRest's verify reads: every backup of the stanza (hashed as stored, by the repo
    # checksum of its manifest) and every file of its WAL archive (decrypted, decompressed).
    python3 - "$(du_bytes "$pbdir/repo/backup/bench")" "$(du_bytes "$pbdir/repo/archive/bench")" \
        >"$results/verify-pgbackrest-amount.json" <<'PY'
import json, sys
json.dump(dict(stored_bytes=int(sys.argv[1]) + int(sys.argv[2])), sys.stdout)
PY
fi
verify_scratch="$work/verify-scratch"
pg mkdir -p "$verify_scratch"
run_verify() { # kind (integrity|restoretest), tool, run, command...
    local kind="$1" tool="$2" run="$3"
    shift 3
    local out="$results/verify-$kind-$tool-$run.json" load
    sync # the previous run's writes (restores, reports) go out outside the measured time
    load="$(loadavg)"
    measure_run "$work" "$out" "$tool verify ($kind) $run" "" "$@"
    python3 - "$out" "$load" "$tool" "verify-$kind-$tool-$run" <<'PY'
import json, re, sys
path, load, tool, name = sys.argv[1:5]
r = json.load(open(path))
r.update(load=load)
text = open(path + ".stdout").read()
extra = ""
if tool == "lifeboat":
    (report,) = json.loads(text)["reports"]
    if not report["passed"]:
        sys.exit(f"error: {name}: the verification did not pass: {report['failure']}")
    r["report"] = report
    i = report["integrity"]
    extra = f"read {i['bytes']:>13,} B, {i['files']} files, {i['wal_segments']} WAL segments"
    if report.get("recovery"):
        rec = report["recovery"]
        extra += (f"; restore + recovery {rec['total_seconds']:.2f} s ({rec['restore_seconds']:.2f} + "
                  f"{rec['recovery_seconds']:.2f}), amcheck {(report.get('amcheck') or {}).get('seconds', 0):.2f} s")
else:
    # pgbackrest verify --output=text --verbose: "status: ok", one "backup: LABEL, status: valid, total
    # files checked: N, ..." line per backup and "total WAL checked: N" per archive id.
    status = re.findall(r"^\s*status: (\S+)", text, re.M)
    backups = re.findall(r"backup: (\S+), status: (\S+), total files checked: (\d+)", text)
    wal = sum(int(n) for n in re.findall(r"total WAL checked: (\d+)", text))
    if status[:1] != ["ok"] or any(state != "valid" for _, state, _ in backups):
        print(f"warning: {name}: pgbackrest verify did not report everything valid:\n{text}", file=sys.stderr)
    r.update(status=status[:1], backups=len(backups), files=sum(int(n) for _, _, n in backups), wal_segments=wal)
    extra = f"{len(backups)} backups, {r['files']} files, {wal} WAL segments (status {''.join(status[:1]) or '?'})"
json.dump(r, open(path, "w"))
print(f"  {name:<32} {r['wall_s']:6.2f} s  RSS tree {r['tree_peak_kib'] / 1024:6.1f} MiB, "
      f"1 proc {r['proc_max_kib'] / 1024:6.1f} MiB  {extra}  (load {load})")
PY
}
echo
echo "verify, integrity only, alternating, $RUNS each: lifeboat verify $lb_id --integrity-only (one backup and its WAL)"
[ "$have_pgbackrest" = 1 ] && echo "  and pgbackrest verify (every backup in the repository and the whole WAL archive):"
for run in $(seq 1 "$RUNS"); do
    run_verify integrity lifeboat "$run" "$lifeboat" --config "$lbconf" verify "$lb_id" --integrity-only --json
    if [ "$have_pgbackrest" = 1 ]; then
        run_verify integrity pgbackrest "$run" \
            "$pgbackrest_bin" --config="$pbconf" --stanza=bench verify --output=text --verbose
    fi
done
echo
echo "verify with a restore test, $RUNS times: lifeboat verify $lb_id --amcheck indexes --scratch-dir $verify_scratch"
echo "  (pgBackRest has no restore test):"
for run in $(seq 1 "$RUNS"); do
    run_verify restoretest lifeboat "$run" \
        "$lifeboat" --config "$lbconf" verify "$lb_id" --amcheck indexes --scratch-dir "$verify_scratch" --json
    if [ -n "$(ls -A "$verify_scratch")" ]; then
        echo "warning: lifeboat verify left files in $verify_scratch: $(ls -A "$verify_scratch" | tr '\n' ' ')" >&2
    fi
done

# ---- wal-push latency ----
echo
echo "making $SEGMENTS WAL segments (INSERT ... repeat(md5(...)) + pg_switch_wal())..."
walsave="$work/walsave"
pg mkdir -p "$walsave"
switch_archive_command "cp %p $walsave/%f"
psql_ -c "CREATE TABLE walgen (id bigint, payload text)" >/dev/null
segments_archived() { find "$walsave" -name '????????????????????????' | wc -l; }
want=$((SEGMENTS + 1))
for _ in $(seq 1 200); do
    [ "$(segments_archived)" -ge "$want" ] && break
    # About 16 MiB of WAL per statement (rows of 8 * 32 bytes of md5 text), then a switch.
    psql_ -c "INSERT INTO walgen SELECT g, repeat(md5(g::text || random()::text), 8) FROM generate_series(1, 45000) g" \
        -c "SELECT pg_switch_wal()" >/dev/null
done
for _ in $(seq 1 600); do
    [ "$(segments_archived)" -ge "$want" ] && break
    sleep 0.1
done
mapfile -t segments < <(find "$walsave" -name '????????????????????????' | sort | head -n "$SEGMENTS")
if [ "${#segments[@]}" -lt "$SEGMENTS" ]; then
    echo "error: only ${#segments[@]} segments were archived" >&2
    exit 1
fi
switch_archive_command "true"
wal_bytes="$(cat "${segments[@]}" | wc -c)"
echo "input: ${#segments[@]} segments, $wal_bytes bytes"

# Fresh repositories / stanzas just for this.
lbwal="$work/lifeboat-wal"
pg mkdir -p "$lbwal"
write_lifeboat_config "$lbwal/lifeboat.toml" "$lbwal/repo" "[backup]" "workers = 2"
pg "$lifeboat" --config "$lbwal/lifeboat.toml" init >/dev/null
python3 "$measure" seq --user postgres --cwd "$data" -- \
    "$lifeboat" --config "$lbwal/lifeboat.toml" wal-push {} -- "${segments[@]}" >"$results/walpush-lifeboat.txt"
if [ "$have_pgbackrest" = 1 ]; then
    pbwal="$work/pgbackrest-wal"
    pg mkdir -p "$pbwal"
    write_pgbackrest_config "$pbwal/pgbackrest.conf" "$pbwal/repo"
    pg "$pgbackrest_bin" --config="$pbwal/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
    python3 "$measure" seq --user postgres --cwd "$data" -- \
        "$pgbackrest_bin" --config="$pbwal/pgbackrest.conf" --stanza=bench archive-push {} -- "${segments[@]}" \
        >"$results/walpush-pgbackrest.txt"
fi

# ---- table ----
echo
echo "==== backup: lifeboat vs pgBackRest ($RUNS full backups each; $(nproc) cores) ===="
python3 - "$results" "$RUNS" "$wal_bytes" "${#segments[@]}" <<'EOF'
import json, os, statistics, sys
results, runs, wal_bytes, nseg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
med = statistics.median


def load_runs(prefix):
    """The JSON of each tool's runs PREFIX{tool}-1 .. -RUNS that exist, by tool."""
    found = {}
    for tool in ("lifeboat", "pgbackrest"):
        rs = [json.load(open(f"{results}/{prefix}{tool}-{i}.json")) for i in range(1, runs + 1)
              if os.path.exists(f"{results}/{prefix}{tool}-{i}.json")]
        if rs:
            found[tool] = rs
    return found


def bytes_table(rows, label, key, width, key_ratio=None):
    """Prints one row per tool (median wall [min-max], MB/s of data_bytes, median KEY under LABEL
    in WIDTH columns, peak RSS), then with both tools their ratios (KEY's too, named KEY_RATIO, when
    given); returns (wall, MB/s, KEY, tree MiB, 1 proc MiB) by tool."""
    print(f"{'tool':<11} {'workers':>7}  {'wall s median [min-max]':<24} {'MB/s':>6}  {label:>{width}}  "
          f"{'peak RSS tree MiB':>17}  {'1 proc MiB':>10}")
    summary = {}
    for tool, rs in rows.items():
        walls = [r["wall_s"] for r in rs]
        wall = med(walls)
        mbs = med([r["data_bytes"] / r["wall_s"] / 1e6 for r in rs])
        amount = med([r[key] for r in rs])
        tree = max(r["tree_peak_kib"] for r in rs) / 1024
        proc = max(r["proc_max_kib"] for r in rs) / 1024
        summary[tool] = (wall, mbs, amount, tree, proc)
        name = "pgBackRest" if tool == "pgbackrest" else tool
        print(f"{name:<11} {2:>7}  {f'{wall:.2f} [{min(walls):.2f}-{max(walls):.2f}]':<24} {mbs:6.0f}  "
              f"{amount:>{width},.0f}  {tree:17.1f}  {proc:10.1f}")
    if len(summary) == 2:
        l, p = summary["lifeboat"], summary["pgbackrest"]
        of_key = f"{key_ratio} {l[2] / p[2]:.3f}, " if key_ratio else ""
        print(f"{'ratio lifeboat/pgBackRest':<44} wall {l[0] / p[0]:.2f}, MB/s {l[1] / p[1]:.2f}, "
              f"{of_key}RSS tree {l[3] / p[3]:.2f}, 1 proc {l[4] / p[4]:.2f}")
    return summary


rows = load_runs("")
bytes_table(rows, "repo bytes", "repo_bytes", 13, key_ratio="repo")
print("(median of the runs; peak RSS = the largest over the runs, tree = summed over the process tree sampled "
      "every 100 ms, 1 proc = ru_maxrss; data = data directory without pg_wal)")
print()
rrows = load_runs("restore-")
if rrows:
    print(f"restore to a server accepting connections, recovery finished ({runs} each):")
    bytes_table(rrows, "restored bytes", "data_bytes", 14)
    print("(wall = command to pg_is_in_recovery() = false; RSS tree: pgBackRest's includes the starting PostgreSQL "
          "server (pg_ctl -w, a child of the measured script), lifeboat's does not (its pg_ctl --no-wait leaves the "
          "server detached), so that ratio flatters lifeboat; 1 proc = ru_maxrss of the finished processes, so not "
          "the server; restored = data directory without pg_wal)")
    print()
vrows = load_runs("verify-integrity-")
if vrows:
    print(f"verify, integrity only ({runs} each, alternating). NOT like for like: lifeboat checks one backup and its "
          f"WAL, decrypting, decompressing and hashing all of it; pgBackRest every backup in its repository by the "
          f"checksum of its stored (encrypted, compressed) bytes, and its whole WAL archive decrypted and decompressed:")
    print(f"{'tool':<11} {'workers':>7}  {'wall s median [min-max]':<24} {'backups':>7} {'WAL segs':>8}  "
          f"{'stored bytes read':>17} {'MB/s':>6}  {'plaintext hashed':>16} {'MB/s':>6}  "
          f"{'peak RSS tree MiB':>17}  {'1 proc MiB':>10}")
    vsum = {}
    for tool, rs in vrows.items():
        amount = json.load(open(f"{results}/verify-{tool}-amount.json"))
        walls = [r["wall_s"] for r in rs]
        wall = med(walls)
        stored = amount["stored_bytes"]
        if tool == "lifeboat":
            # What its report says it read and hashed: the backup's files and its WAL segments.
            plain = med([r["report"]["integrity"]["bytes"] for r in rs])
            backups, segs = 1, med([r["report"]["integrity"]["wal_segments"] for r in rs])
        else:
            # Backup files are hashed as stored; only the WAL (16 MiB segments) is decrypted,
            # decompressed and hashed.
            backups = med([r["backups"] for r in rs])
            segs = med([r["wal_segments"] for r in rs])
            plain = segs * 16 * 1024 * 1024
        stored_mbs = med([stored / r["wall_s"] / 1e6 for r in rs])
        plain_mbs = med([plain / r["wall_s"] / 1e6 for r in rs])
        tree = max(r["tree_peak_kib"] for r in rs) / 1024
        proc = max(r["proc_max_kib"] for r in rs) / 1024
        vsum[tool] = (wall, tree, proc)
        name = "pgBackRest" if tool == "pgbackrest" else tool
        print(f"{name:<11} {2:>7}  {f'{wall:.2f} [{min(walls):.2f}-{max(walls):.2f}]':<24} {backups:>7.0f} {segs:>8.0f}  "
              f"{stored:>17,.0f} {stored_mbs:6.0f}  {plain:>16,.0f} {plain_mbs:6.0f}  {tree:17.1f}  {proc:10.1f}")
    if len(vsum) == 2:
        l, p = vsum["lifeboat"], vsum["pgbackrest"]
        print(f"{'ratio lifeboat/pgBackRest':<44} wall {l[0] / p[0]:.2f} (for different work, see above), "
              f"RSS tree {l[1] / p[1]:.2f}, 1 proc {l[2] / p[2]:.2f}")
    print("(lifeboat verify ID --integrity-only: every object of the backup and its WAL start..stop read, decrypted and "
          "authenticated (AES-GCM), decompressed, every file's BLAKE3 compared with the manifest; plaintext = "
          "integrity.bytes of its report. pgbackrest verify: each backup file's SHA-1 of its stored bytes against the "
          "manifest's repo checksum (no decryption, no decompression: the plaintext is not checked), each archived "
          "WAL file decrypted, decompressed and its SHA-1 checked; plaintext = 16 MiB per archived segment. "
          "stored = repository bytes behind what was checked; MB/s = bytes / wall)")
    print()
trows = [json.load(open(f"{results}/verify-restoretest-lifeboat-{i}.json")) for i in range(1, runs + 1)
         if os.path.exists(f"{results}/verify-restoretest-lifeboat-{i}.json")]
if trows:
    print(f"verify with a restore test, lifeboat only ({runs} runs; pgBackRest has no restore test, its verify "
          f"restores nothing):")
    print(f"{'tool':<11} {'workers':>7}  {'wall s median [min-max]':<24} {'restore+recovery s [min-max]':<29} "
          f"{'restore s':>9} {'recovery s':>10} {'amcheck s':>9}  {'peak RSS tree MiB':>17}  {'1 proc MiB':>10}")
    walls = [r["wall_s"] for r in trows]
    recs = [r["report"]["recovery"] for r in trows]
    totals = [x["total_seconds"] for x in recs]
    amcheck = med([(r["report"].get("amcheck") or {}).get("seconds", 0.0) for r in trows])
    tree = max(r["tree_peak_kib"] for r in trows) / 1024
    proc = max(r["proc_max_kib"] for r in trows) / 1024
    print(f"{'lifeboat':<11} {2:>7}  {f'{med(walls):.2f} [{min(walls):.2f}-{max(walls):.2f}]':<24} "
          f"{f'{med(totals):.2f} [{min(totals):.2f}-{max(totals):.2f}]':<29} "
          f"{med([x['restore_seconds'] for x in recs]):9.2f} {med([x['recovery_seconds'] for x in recs]):10.2f} "
          f"{amcheck:9.2f}  {tree:17.1f}  {proc:10.1f}")
    if rrows:
        near = ", ".join(f"{'pgBackRest' if t == 'pgbackrest' else t} {med([r['wall_s'] for r in rs]):.2f} s"
                         for t, rs in rrows.items())
        print(f"  for comparison, restore to a server out of recovery above (median wall): {near}")
    print("(lifeboat verify ID --amcheck indexes --scratch-dir DIR: the integrity checks, the backup restored into a "
          "scratch directory, PostgreSQL started and recovered to consistency, pg_amcheck on the indexes, server "
          "stopped and directory removed; restore+recovery = recovery.total_seconds of the report; RSS tree = lifeboat "
          "and its pg_ctl / pg_amcheck children, not the scratch server, which pg_ctl leaves reparented)")
    print()
lat = {}
for tool in ("lifeboat", "pgbackrest"):
    path = f"{results}/walpush-{tool}.txt"
    if not os.path.exists(path):
        continue
    ms = [float(x) for x in open(path) if x.strip()]
    lat[tool] = ms
    name = "lifeboat wal-push" if tool == "lifeboat" else "pgbackrest archive-push"
    print(f"{name:<24} per 16 MiB segment: mean {statistics.mean(ms):6.1f} ms, median {med(ms):6.1f} ms "
          f"[{min(ms):.1f}-{max(ms):.1f}] (n = {len(ms)}, {wal_bytes:,} bytes)")
if len(lat) == 2:
    print(f"{'ratio lifeboat/pgBackRest':<24} mean {statistics.mean(lat['lifeboat']) / statistics.mean(lat['pgbackrest']):.2f}, "
          f"median {med(lat['lifeboat']) / med(lat['pgbackrest']):.2f}")
print()
for tool, rs in rows.items():
    print(f"load average (1/5/15 min) at the start of each {tool} run: " + "; ".join(r["load"] for r in rs))
for tool, rs in rrows.items():
    print(f"load average (1/5/15 min) at the start of each {tool} restore: " + "; ".join(r["load"] for r in rs))
for tool, rs in vrows.items():
    print(f"load average (1/5/15 min) at the start of each {tool} integrity verify: " + "; ".join(r["load"] for r in rs))
if trows:
    print("load average (1/5/15 min) at the start of each lifeboat restore-test verify: "
          + "; ".join(r["load"] for r in trows))
EOF
echo "load average at end: $(loadavg)"
