#!/usr/bin/env bash
# incremental: block-level incremental backups, lifeboat vs pgBackRest, on real PostgreSQL 15
# clusters (called by scripts/bench --only incremental).
#
#   1. Builds lifeboat in release (`cargo build --release`, the usual target directory).
#   2. In a temporary directory: a PostgreSQL cluster (initdb -k, as the `postgres` OS user; Unix
#      socket in the temporary directory, listen_addresses = '', a free port, wal_level = replica,
#      archive_mode = on, shared_buffers = 512MB, max_wal_size = 4GB), `pgbench -i -s SCALE`
#      (default 100, about 1.5 GB), CHECKPOINT. Both tools archive the same WAL:
#      archive_command = '<lifeboat> wal-push %p && pgbackrest archive-push %p'. One full backup
#      with each tool (lifeboat: zstd 3, aes-256-gcm, workers = 2; pgBackRest: zst 3, aes-256-cbc,
#      process-max = 2, a posix repository on the same disk).
#   3. An update round touches about 1% of pgbench_accounts' blocks, scattered over every one of its
#      1 GiB files: `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % N = R`, N
#      chosen from the table's size so that one row in each of ~0.5% of its blocks changes (each
#      updated row also moves to another block, where space was freed by the previous round, and
#      adds an index entry: ~1% of the table's blocks change), R = round * 997 % N so that each
#      round changes rows in other blocks,
#      then CHECKPOINT. The blocks that really changed are counted by reading every relation file's
#      page LSNs (those newer than the start of lifeboat's previous backup), and exactly those
#      8 KiB blocks are compressed with `zstd -3` in one stream: the "changed blocks compressed".
#   4. RUNS (default 3) rounds, each: fresh updates, then `lifeboat backup --incremental` and
#      pgBackRest `--type=incr`, alternating which goes first, then pgBackRest `--type=diff` (its
#      differential against the full backup grows with the rounds). `sync` and an idle archiver
#      before each, outside the time. Wall time, repository bytes added (the backups' part of each
#      repository, not the WAL archive), peak RSS of the process tree; medians and the ratios
#      lifeboat / pgBackRest; lifeboat's stored bytes beside the changed blocks compressed.
#   5. Restore: more update rounds and lifeboat incrementals until the chain holds CHAIN (7)
#      incrementals, then a full lifeboat backup of the same data; RUNS restores of each,
#      alternating, `restore --backup ID --pgdata D --target immediate` without --start (the files
#      written and checked, recovery configured; the server is not started), `sync` before each
#      outside the time and the directory removed after. Wall time and peak RSS, ratio chain/full.
#   6. Scale check (BENCH_SKIP_LARGE=1 skips it): a second cluster with `pgbench -i -s SCALE_LARGE`
#      (default 300, about 4.5 GB) set up the same way beside the first, a full lifeboat backup, then
#      RUNS rounds alternating between the clusters, each an update of the same number of rows
#      (so about the same number of changed blocks) and `lifeboat backup --incremental`; on the
#      first cluster these build on the full backup of step 5, so both chains are as long at each
#      round: median wall time and peak RSS at each scale and their ratio.
#
# Needs root (initdb/pg_ctl run as postgres), PostgreSQL 15 server packages and pgbench, zstd,
# python3, about 15 GB free in /tmp with the scale check (both clusters at once).
# Environment: BENCH_RUNS (3), BENCH_SCALE (100), BENCH_SCALE_LARGE (300), BENCH_SKIP_LARGE=1,
# BENCH_CHAIN (7), BENCH_NO_INSTALL=1, BENCH_KEEP=1 (leave the temporary directory, the clusters
# stopped); LIFEBOAT_BIN=/path/to/lifeboat measures that binary instead of building one.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
RUNS="${BENCH_RUNS:-3}"
SCALE="${BENCH_SCALE:-100}"
SCALE_LARGE="${BENCH_SCALE_LARGE:-300}"
CHAIN="${BENCH_CHAIN:-7}"

require_root incremental
if [ "$CHAIN" -lt "$RUNS" ]; then
    echo "error: BENCH_CHAIN ($CHAIN) must be at least BENCH_RUNS ($RUNS): the measured incrementals start the chain" >&2
    exit 1
fi
find_pg_bindir initdb pg_ctl pgbench psql
require_zstd incremental
require_pgbackrest incremental
echo "load average at start: $(loadavg)  ($(nproc) cores); pgBackRest: $("$pgbackrest_bin" version)"
build_lifeboat "${LIFEBOAT_BIN:-}"

make_work_dir incremental
copy_lifeboat_for_postgres
results="$work/results"
mkdir -p "$results"
chmod 777 "$results"

# Writes the blocks of every relation file whose page LSN is at or after SINCE to OUT and prints
# what it found as JSON: all blocks, those of pgbench_accounts and of its primary key, and how
# many of pgbench_accounts' 1 GiB files hold at least one of them.
changed_blocks_py="$work/changed-blocks.py"
cat >"$changed_blocks_py" <<'PY'
import json, os, re, struct, sys
data, since_text, out, table, index = sys.argv[1:6]
hi, lo = since_text.split("/")
since = int(hi, 16) << 32 | int(lo, 16)
relation_file = re.compile(r"^\d+(_(fsm|vm|init))?(\.\d+)?$")
found = dict(blocks=0, accounts=0, pkey=0, other=0, accounts_files=0, accounts_files_touched=0)
with open(out, "wb") as sink:
    for top in ("global", "base", "pg_tblspc"):
        for directory, _, names in os.walk(os.path.join(data, top), followlinks=True):
            for name in names:
                if not relation_file.match(name):
                    continue
                path = os.path.join(directory, name)
                relation = os.path.relpath(path, data).split(".")[0]
                kind = {table: "accounts", index: "pkey"}.get(relation, "other")
                blocks = 0
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        for at in range(0, len(chunk) - 8191, 8192):
                            high, low = struct.unpack_from("<II", chunk, at)
                            if (high << 32 | low) >= since:
                                sink.write(chunk[at:at + 8192])
                                blocks += 1
                found["blocks"] += blocks
                found[kind] += blocks
                if kind == "accounts":
                    found["accounts_files"] += 1
                    found["accounts_files_touched"] += blocks > 0
print(json.dumps(found))
PY

# Sets up cluster NAME at SCALE (globals: cdir, data, socket_dir, port, lbconf, lbdir, pbconf, pbdir,
# table, index, table_blocks), archiving to both tools.
setup_cluster() {
    local name="$1" scale="$2"
    cdir="$work/cluster-$name"
    data="$cdir/data"
    socket_dir="$cdir"
    port="$(free_port)"
    pg mkdir -p "$cdir"
    echo "creating a PostgreSQL cluster in $cdir (port $port) and running pgbench -i -s $scale..."
    init_cluster "$data" "$cdir" "$port" "${bulk_load_settings[@]}"
    start_cluster "$data" "$cdir/server.log"
    local began
    began="$(date +%s)"
    pgbench_init "$scale" "$cdir/pgbench-init.log"
    psql_ -c CHECKPOINT
    table="$(sql "SELECT pg_relation_filepath('pgbench_accounts')")"
    index="$(sql "SELECT pg_relation_filepath('pgbench_accounts_pkey')")"
    table_blocks="$(sql "SELECT pg_relation_size('pgbench_accounts') / 8192")"
    echo "  pgbench -i took $(($(date +%s) - began)) s; pgbench_accounts: $table_blocks blocks" \
        "($(((table_blocks + 131071) / 131072)) files of up to 1 GiB)"

    setup_lifeboat_repository "$cdir/lifeboat-repo"
    setup_pgbackrest_repository "$cdir/pgbackrest"
    set_archive_command "$lifeboat --config $lbconf wal-push %p && $pgbackrest_bin --config=$pbconf --stanza=bench archive-push %p"
    create_stanza "$pbconf"
}

# lifeboat's newest backup's start LSN (what the next incremental compares against).
last_start_lsn=""
round=0
# One update round: rows with aid % MODULUS = the round's offset, CHECKPOINT, then the changed
# blocks counted and compressed; prints a line and leaves their JSON in $results/changes-LABEL.json.
update_round() {
    local label="$1" modulus="$2" rows blocks_file="$work/changed-blocks"
    round=$((round + 1))
    # 997 apart, so that each round's rows lie in other blocks than the previous rounds' (61 rows
    # a block): the same kind of change every round, not HOT updates into space freed before.
    rows="$(sql "WITH u AS (UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % $modulus = $((round * 997 % modulus)) RETURNING 1) SELECT count(*) FROM u")"
    psql_ -c CHECKPOINT
    python3 "$changed_blocks_py" "$data" "$last_start_lsn" "$blocks_file" "$table" "$index" >"$results/changes-$label.json"
    python3 - "$results/changes-$label.json" "$rows" "$(zstd -3 -T1 -q -c "$blocks_file" | wc -c)" "$table_blocks" <<'PY'
import json, sys
path, rows, compressed, table_blocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = json.load(open(path))
c.update(rows=rows, compressed=compressed)
json.dump(c, open(path, "w"))
print(f"  updated {rows} rows; changed blocks since the previous backup's start: {c['blocks']} "
      f"(pgbench_accounts {c['accounts']} = {100 * c['accounts'] / table_blocks:.2f}% of its blocks, in "
      f"{c['accounts_files_touched']} of its {c['accounts_files']} files; primary key {c['pkey']}; other {c['other']}), "
      f"{c['blocks'] * 8192:,} B, zstd -3: {compressed:,} B")
PY
    rm -f "$blocks_file"
}

# Runs and measures one command as postgres in the data directory: NAME, repository part, command...
# Leaves $results/NAME.json (wall_s, peak_kib, repo_bytes, load) and prints a line.
measured() {
    local name="$1" repo_part="$2"
    shift 2
    local out="$results/$name.json"
    sync
    measure_repository_growth "$out" "$name" "$repo_part" "$@"
    python3 - "$out" "$name" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
r = json.load(open(path))
repo, load = r["repo_bytes"], r["load"]
# The tree is sampled every 100 ms, which can miss the peak of a run of half a second; the
# largest single process's own peak (ru_maxrss) cannot be missed.
r.update(peak_kib=max(r["tree_peak_kib"], r["proc_max_kib"]))
extra = ""
try:
    view = json.loads(open(path + ".stdout").read())
except ValueError:
    view = None
if isinstance(view, dict) and "id" in view:
    r.update(id=view["id"], start_lsn=view["start_lsn"], stored_size=view["stored_size"], incremental=view["incremental"])
    inc = view["incremental"]
    if inc:
        extra = (f"  [{inc['changes_from']}: {inc['changed_blocks']} blocks, {inc['whole_files']} whole files, "
                 f"{inc['stored_plaintext_bytes']:,} B plaintext, {view['stored_size']:,} B stored]")
json.dump(r, open(path, "w"))
print(f"  {name:<24} {r['wall_s']:6.2f} s  repo +{repo:>13,} B  peak RSS {r['peak_kib'] / 1024:6.1f} MiB  (load {load}){extra}")
PY
}
lb_backups() { echo "$lbdir/repo/clusters/bench/backups"; }
pb_backups() { echo "$pbdir/repo/backup/bench"; }
lifeboat_backup() { # name, extra arguments
    local name="$1"
    shift
    require_archiver_idle
    measured "$name" "$(lb_backups)" "$lifeboat" --config "$lbconf" backup --json "$@"
    last_start_lsn="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["start_lsn"])' "$results/$name.json")"
}
pgbackrest_backup() { # name, type
    require_archiver_idle
    measured "$1" "$(pb_backups)" "$pgbackrest_bin" --config="$pbconf" --stanza=bench --type="$2" backup
}

# ---- scale SCALE: incrementals beside pgBackRest's, then the chain restore ----
setup_cluster base "$SCALE"
# ~1% of the table's blocks changed: each updated row changes two (the one it leaves, the one its
# new version goes to, except in the first round, which appends them at the end of the table), so
# one row in each of 0.5% of the blocks. The table holds SCALE * 100000 rows.
modulus=$((SCALE * 100000 / (table_blocks / 200)))
echo "full backups (lifeboat, then pgBackRest):"
lifeboat_backup full-lifeboat
pgbackrest_backup full-pgbackrest full

echo
echo "incremental rounds, $RUNS, alternating (updates: aid % $modulus = round * 997 % $modulus):"
for run in $(seq 1 "$RUNS"); do
    update_round "incr-$run" "$modulus"
    if [ $((run % 2)) = 1 ]; then
        lifeboat_backup "incr-lifeboat-$run" --incremental
        pgbackrest_backup "incr-pgbackrest-$run" incr
    else
        pgbackrest_backup "incr-pgbackrest-$run" incr
        lifeboat_backup "incr-lifeboat-$run" --incremental
    fi
    pgbackrest_backup "diff-pgbackrest-$run" diff
done

echo
echo "chain of $CHAIN lifeboat incrementals (the $RUNS above and $((CHAIN - RUNS)) more), then a full backup of the same data:"
for link in $(seq $((RUNS + 1)) "$CHAIN"); do
    update_round "chain-$link" "$modulus"
    lifeboat_backup "incr-lifeboat-$link" --incremental
done
lifeboat_backup full-lifeboat-last
chain_id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$results/incr-lifeboat-$CHAIN.json")"
full_id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$results/full-lifeboat-last.json")"
chain_length="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["incremental"]["chain"]))' "$results/incr-lifeboat-$CHAIN.json")"
if [ "$chain_length" != "$CHAIN" ]; then
    echo "error: backup $chain_id has a chain of $chain_length backups, not a full and $((CHAIN - 1)) incrementals" >&2
    exit 1
fi

echo
echo "restores (--target immediate, not started), alternating, $RUNS each: $chain_id (chain of $CHAIN incrementals) and $full_id (full):"
restores="$work/restore"
pg mkdir -p "$restores"
for run in $(seq 1 "$RUNS"); do
    for kind in chain full; do
        if [ "$kind" = chain ]; then id="$chain_id"; else id="$full_id"; fi
        measured "restore-$kind-$run" "$restores/$kind" \
            "$lifeboat" --config "$lbconf" restore --backup "$id" --pgdata "$restores/$kind" --target immediate --json
        rm -rf "${restores:?}/$kind"
    done
done

echo
echo "==== incremental: lifeboat vs pgBackRest, pgbench scale $SCALE, $RUNS rounds (load average now $(loadavg)) ===="
python3 - "$results" "$RUNS" "$CHAIN" <<'PY'
import json, statistics, sys
results, runs, chain_length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
med = statistics.median
load = lambda name: json.load(open(f"{results}/{name}.json"))
def row(label, rs):
    walls = [r["wall_s"] for r in rs]
    print(f"{label:<26} {f'{med(walls):.2f} [{min(walls):.2f}-{max(walls):.2f}]':<22} {med([r['repo_bytes'] for r in rs]):>14,.0f} "
          f"{max(r['peak_kib'] for r in rs) / 1024:14.1f}")
    return med(walls), med([r["repo_bytes"] for r in rs]), max(r["peak_kib"] for r in rs) / 1024
print(f"{'backup':<26} {'wall s median [min-max]':<22} {'repo bytes +':>14} {'peak RSS MiB':>14}")
row("lifeboat full", [load("full-lifeboat")])
row("pgBackRest full", [load("full-pgbackrest")])
lb = row("lifeboat --incremental", [load(f"incr-lifeboat-{i}") for i in range(1, runs + 1)])
pi = row("pgBackRest --type=incr", [load(f"incr-pgbackrest-{i}") for i in range(1, runs + 1)])
pd = row("pgBackRest --type=diff", [load(f"diff-pgbackrest-{i}") for i in range(1, runs + 1)])
print(f"ratio lifeboat incremental / pgBackRest incr: wall {lb[0] / pi[0]:.2f} (target <= 0.3), "
      f"repository bytes {lb[1] / pi[1]:.3f}; / pgBackRest diff: wall {lb[0] / pd[0]:.2f}")
print("lifeboat's stored bytes vs the changed blocks compressed (zstd -3 of exactly the blocks whose page LSN is newer "
      "than the previous backup's start):")
ratios = []
for i in range(1, runs + 1):
    r, c = load(f"incr-lifeboat-{i}"), load(f"changes-incr-{i}")
    inc = r["incremental"]
    ratios.append(r["stored_size"] / c["compressed"])
    print(f"  round {i}: lifeboat {inc['changed_blocks']} blocks + {inc['whole_files']} whole files "
          f"({inc['changes_from']}), stored {r['stored_size']:,} B (repo +{r['repo_bytes']:,} B); changed blocks {c['blocks']}, "
          f"compressed {c['compressed']:,} B: ratio {ratios[-1]:.2f}")
print(f"  median ratio stored / changed blocks compressed: {med(ratios):.2f} (target <= 2)")
chain = row(f"restore, chain", [load(f"restore-chain-{i}") for i in range(1, runs + 1)])
full = row(f"restore, full", [load(f"restore-full-{i}") for i in range(1, runs + 1)])
links = [load(f"incr-lifeboat-{i}")["peak_kib"] / 1024 for i in range(1, chain_length + 1)]
print(f"ratio restore chain / full: wall {chain[0] / full[0]:.2f} (target <= 1.2); peak RSS chain {chain[2]:.1f} MiB, "
      f"full {full[2]:.1f} MiB (target < 100)")
print(f"peak RSS of lifeboat's incrementals along the chain, MiB: {' '.join(f'{m:.1f}' for m in links)} (target < 100)")
print("(repo bytes + = growth of the backups' part of the repository, WAL archive excluded; restore: "
      "`restore --target immediate` without --start, its repo bytes column is the restored directory's size; "
      "peak RSS = the larger of the process tree's summed RSS sampled every 100 ms and the largest process's ru_maxrss)")
PY

if [ "${BENCH_SKIP_LARGE:-0}" = 1 ]; then
    echo "scale check skipped (BENCH_SKIP_LARGE=1)"
    echo "load average at end: $(loadavg)"
    exit 0
fi

# ---- scale SCALE_LARGE beside SCALE: the same number of changed rows, alternating ----
# The globals setup_cluster and update_round use, saved and restored per cluster.
cluster_vars=(cdir data socket_dir port lbconf lbdir pbconf pbdir table index table_blocks last_start_lsn round)
save_cluster() { local var; for var in "${cluster_vars[@]}"; do printf -v "saved_${1}_$var" '%s' "${!var}"; done; }
load_cluster() { local var saved; for var in "${cluster_vars[@]}"; do saved="saved_${1}_$var"; printf -v "$var" '%s' "${!saved}"; done; }
rows_per_round="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows"])' "$results/changes-incr-1.json")"
save_cluster base
echo
setup_cluster large "$SCALE_LARGE"
modulus_large=$((modulus * SCALE_LARGE / SCALE))
last_start_lsn=""
round=0
lifeboat_backup large-full-lifeboat
save_cluster large
echo "incremental rounds alternating scale $SCALE (aid % $modulus) and scale $SCALE_LARGE (aid % $modulus_large), $RUNS each, about $rows_per_round rows a round:"
for run in $(seq 1 "$RUNS"); do
    load_cluster base
    update_round "base-$run" "$modulus"
    lifeboat_backup "base-incr-lifeboat-$run" --incremental
    save_cluster base
    load_cluster large
    update_round "large-$run" "$modulus_large"
    lifeboat_backup "large-incr-lifeboat-$run" --incremental
    save_cluster large
done

echo
echo "==== incremental: scale $SCALE_LARGE vs scale $SCALE, the same number of changed rows (load average now $(loadavg)) ===="
python3 - "$results" "$RUNS" "$SCALE" "$SCALE_LARGE" <<'PY'
import json, statistics, sys
results, runs, small, large = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
med = statistics.median
load = lambda name: json.load(open(f"{results}/{name}.json"))
figures = {}
for scale, prefix, changes in ((small, "base-incr-lifeboat", "changes-base"), (large, "large-incr-lifeboat", "changes-large")):
    rs = [load(f"{prefix}-{i}") for i in range(1, runs + 1)]
    cs = [load(f"{changes}-{i}") for i in range(1, runs + 1)]
    walls = [r["wall_s"] for r in rs]
    figures[scale] = (med(walls), max(r["peak_kib"] for r in rs) / 1024)
    print(f"scale {scale:>4}: lifeboat --incremental {med(walls):.2f} s [{min(walls):.2f}-{max(walls):.2f}], "
          f"peak RSS {figures[scale][1]:.1f} MiB, changed blocks (median) {med([c['blocks'] for c in cs]):.0f}, "
          f"stored {med([r['stored_size'] for r in rs]):,.0f} B")
print(f"ratio scale {large} / scale {small}: wall {figures[large][0] / figures[small][0]:.2f} (target <= 1.3), "
      f"peak RSS {figures[large][1] / figures[small][1]:.2f} (target: not growing)")
PY
echo "load average at end: $(loadavg)"
