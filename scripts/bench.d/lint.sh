#!/usr/bin/env bash
# The linter's cost (scripts/bench --only lint): `lifeboat migrate lint --offline --json` (release
# build) over BENCH_LINT_FILES generated migrations (default 800: table creations with an index,
# column additions with a bounded backfill, concurrent index builds in no-transaction files,
# CHECK constraints added NOT VALID), BENCH_RUNS times (default 3): wall time, best and median,
# and the time per file. No database: the files are read, split and linted.
# Everything lives in a temporary directory, removed on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
files="${BENCH_LINT_FILES:-800}"
runs="${BENCH_RUNS:-3}"

echo "building lifeboat (cargo build --release)..."
cargo build --release --quiet --bin lifeboat
lifeboat="$(pwd)/target/release/lifeboat"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/migrations"
printf '[cluster]\nname = "bench"\n\n[audit]\npath = "%s/audit.jsonl"\n\n[migrate]\ndir = "%s/migrations"\n' \
    "$work" "$work" >"$work/lifeboat.toml"
for n in $(seq 1 "$files"); do
    name="$(printf '%05d_step.up.sql' "$n")"
    case $((n % 4)) in
    0) printf 'CREATE TABLE t%d (id bigint PRIMARY KEY, a text, b timestamptz);\nCREATE INDEX t%d_a ON t%d (a);\n' \
        "$n" "$n" "$n" ;;
    1) printf 'ALTER TABLE t%d ADD COLUMN c%d text;\nUPDATE t%d SET c%d = a WHERE id < 100;\n' \
        "$((n - 1))" "$n" "$((n - 1))" "$n" ;;
    2) printf -- '-- lifeboat:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i%d ON t%d (b);\n' \
        "$n" "$((n - 2))" ;;
    *) printf 'ALTER TABLE t%d ADD CONSTRAINT k%d CHECK (id > 0) NOT VALID;\n' "$((n - 3))" "$n" ;;
    esac >"$work/migrations/$name"
done

python3 - "$lifeboat" "$work" "$files" "$runs" <<'PY'
import json, statistics, subprocess, sys, time
lifeboat, work, files, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
times = []
for run in range(runs):
    began = time.perf_counter()
    out = subprocess.run([lifeboat, "--config", f"{work}/lifeboat.toml", "migrate", "lint", "--offline", "--json"],
                         capture_output=True)
    times.append(time.perf_counter() - began)
    linted = len(json.loads(out.stdout)["files"])
    if linted != files:
        sys.exit(f"error: run {run + 1} linted {linted} files, expected {files}")
median = statistics.median(times)
print(f"lint --offline of {files} migrations: best {min(times):.3f} s, median {median:.3f} s "
      f"({median * 1000 / files:.2f} ms per file), {runs} runs")
PY
