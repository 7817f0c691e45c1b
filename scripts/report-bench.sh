#!/usr/bin/env bash
# The report at scale, against DuckDB on the same files and cores: writes
# VMS x ROWS rows of contract files over 14 days (udp-vmsim --write-dir),
# then times `udp-aggregator report` (14-day and 1-day windows, each
# without and then with its summary cache) and DuckDB computing the same
# per-VM figures (2 threads). Prints key=value lines.
#
#   scripts/report-bench.sh                 # 10,000 VMs x 1,440 rows
#   VMS=1000 ROWS=1440 scripts/report-bench.sh
#   COLD=1 scripts/report-bench.sh          # also from disk (root: drops the page cache)
#   VS=/other/udp-aggregator scripts/report-bench.sh
#                                           # the same runs with another build, then
#                                           # this build's wall time over its, per run
#
# DuckDB comes from PyPI (pip install duckdb) when missing; without it the
# comparison is skipped with a message. The data stays in $WORK (removed at
# the end unless KEEP=1).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VMS=${VMS:-10000}
ROWS=${ROWS:-1440}
DATA=$WORK/data
build_release
cleanup() { remove_work; }
trap cleanup EXIT

interval=$((14 * 86400 / ROWS))
"$SIM" --write-dir "$DATA" --count "$VMS" --interval "${interval}s" --days 14
echo "data_bytes=$(du -sb "$DATA" | cut -f1) vms=$VMS rows_per_vm=$ROWS"

# timed NAME CMD...: wall time and peak RSS of one run, as key=value.
timed() {
    local name=$1
    shift
    /usr/bin/time -f "run=$name wall_s=%e cpu_s=%U+%S max_rss_kib=%M" "$@" >/dev/null
}

# The first read warms the page cache for everyone.
cat "$DATA"/*.csv >/dev/null
# Each window first without the summary cache (which that run writes),
# then three times over the unchanged files, with it; one --as-of for all,
# so the reports can be compared byte for byte.
AS_OF=$(date +%s%3N)
# With VS, the other build reads a hard-linked copy of the files (the same
# bytes, its own cache dir), and the two take turns run by run, so a drift
# of the machine's speed charges both.
builds=("vmstats $AGG $DATA")
if [ -n "${VS:-}" ]; then
    mkdir "$WORK/data-vs"
    ln "$DATA"/*.csv "$WORK/data-vs/"
    builds+=("vs $VS $WORK/data-vs")
fi
# report BUILD RUN WINDOW FILE: one timed report by that build.
report() {
    local prefix agg dir
    read -r prefix agg dir <<<"$1"
    timed "$prefix-$3-$2" "$agg" report --data-dir "$dir" --window "$3" --as-of "$AS_OF" --report-file "$WORK/$prefix-$4.txt"
}
for window in 14d 1d; do
    for b in "${builds[@]}"; do
        dir=${b##* }
        # Moved aside, not deleted: ext4 skips freshly freed inodes when it
        # makes files, which would charge the next run for this deletion.
        [ ! -d "$dir/.vmstats" ] || mv "$dir/.vmstats" "$(mktemp -d -p "$WORK" cache.XXXX)"
        report "$b" first $window r1
    done
    for run in cached cached-again cached-third; do
        for b in "${builds[@]}"; do report "$b" $run $window r2; done
    done
    for b in "${builds[@]}"; do
        read -r prefix _ dir <<<"$b"
        cmp -s "$WORK/$prefix-r1.txt" "$WORK/$prefix-r2.txt" && same=yes || same=no
        echo "run=$prefix-$window cache_bytes=$(du -sb "$dir/.vmstats" | cut -f1) cached_report_identical=$same"
    done
done 2>&1 | tee "$WORK/runs.txt"
if [ -n "${VS:-}" ]; then
    # This build's wall time over the other's: the first run, and the
    # median of the three cached runs.
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           if (v["wall_s"] != "") { split(v["run"], p, "-"); key = p[2] "-" (p[3] == "first" ? "first" : "cached")
               t[p[1], key, ++n[p[1], key]] = v["wall_s"]; keys[key] = 1 }
           delete v }
         function median(who, key,   a, i, j, m, x) {
             m = n[who, key]; for (i = 1; i <= m; i++) a[i] = t[who, key, i]
             for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
             return a[int((m + 1) / 2)] }
         END { for (k in keys) printf "ratio run=%s this_s=%s vs_s=%s this_over_vs=%.2f\n", k, median("vmstats", k), median("vs", k), median("vmstats", k) / median("vs", k) }' \
        "$WORK/runs.txt" | sort
fi
# COLD=1 (root): the 14-day report from disk, page cache dropped before
# each run, first without the cache and then with it.
if [ "${COLD:-0}" = 1 ]; then
    mv "$DATA/.vmstats" "$WORK/cache-before-cold"
    for run in first cached; do
        sync && echo 3 >/proc/sys/vm/drop_caches
        timed "vmstats-14d-cold-$run" "$AGG" report --data-dir "$DATA" --window 14d --as-of "$AS_OF" --report-file "$WORK/r1.txt"
    done
fi

if ! python3 -c 'import duckdb' 2>/dev/null; then
    pip install -q duckdb 2>/dev/null || { echo "duckdb=skipped (pip install duckdb failed)"; exit 0; }
fi
cat >"$WORK/duck.py" <<PY
import duckdb
con = duckdb.connect()
con.execute("SET threads = 2")
rows = con.execute("""
  SELECT filename, count(*),
         quantile_disc(cpu_pct, 0.5), quantile_disc(cpu_pct, 0.95),
         quantile_disc(cpu_pct, 0.99), max(cpu_pct),
         quantile_disc(mem_pct, 0.95), max(mem_pct),
         quantile_disc((net_rx_bytes + net_tx_bytes) / interval_s, 0.95),
         quantile_disc((disk_read_bytes + disk_write_bytes) / interval_s, 0.95)
  FROM read_csv('$DATA/*.csv', filename = true)
  GROUP BY filename""").fetchall()
print(len(rows))
PY
cat "$DATA"/*.csv >/dev/null
timed duckdb-14d python3 "$WORK/duck.py"
if [ "${COLD:-0}" = 1 ]; then
    sync && echo 3 >/proc/sys/vm/drop_caches
    timed duckdb-14d-cold python3 "$WORK/duck.py"
fi
