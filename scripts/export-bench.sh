#!/usr/bin/env bash
# The Parquet export at scale, against DuckDB's own COPY ... TO PARQUET
# from the same CSV files on the same cores. Writes VMS x DAYS days of
# contract files at INTERVAL (default 10,000 VMs x 14 days at 60 s: 201.6 M
# rows, about 20 GB; udp-vmsim --write-dir), then prints key=value lines:
#
#  - bytes per VM-day as CSV, as gzip (-6, logrotate's, on a sample of
#    SAMPLE files) and as the export's Parquet (rows, and vm_days);
#  - `udp-aggregator export`: the first (no summary store yet), a second
#    over the unchanged files, and one after a late row changed one day;
#  - DuckDB (2 threads) copying the same rows to zstd Parquet partitioned
#    by day: an easier job than the export's (no datagram taken once, no
#    vm_days), said here so the ratio is read as what it is.
#
#   scripts/export-bench.sh
#   VMS=1000 DAYS=2 scripts/export-bench.sh
#
# The data stays in $WORK (removed at the end unless KEEP=1).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VMS=${VMS:-10000}
DAYS=${DAYS:-14}
INTERVAL=${INTERVAL:-60s}
SAMPLE=${SAMPLE:-100}
DATA=$WORK/data
build_release
trap remove_work EXIT

"$SIM" --write-dir "$DATA" --count "$VMS" --interval "$INTERVAL" --days "$DAYS"
vm_days=$((VMS * DAYS))
csv=$(find "$DATA" -maxdepth 1 -name '*.csv' -print0 | du -cb --files0-from=- | tail -1 | cut -f1)
sample=$(find "$DATA" -maxdepth 1 -name "*.csv" | sort | sed -n "1,${SAMPLE}p")
sample_bytes=$(cat $sample | wc -c)
sample_gzip=$(for f in $sample; do gzip -6 -c "$f"; done | wc -c)
echo "data: vms=$VMS days=$DAYS interval=$INTERVAL csv_bytes=$csv"
echo "bytes_per_vm_day: csv=$((csv / vm_days)) gzip=$((csv / vm_days * sample_gzip / sample_bytes))"

# timed NAME CMD...: wall time, CPU and peak RSS of one run.
timed() {
    local name=$1
    shift
    /usr/bin/time -f "run=$name wall_s=%e cpu_s=%U+%S max_rss_kib=%M" "$@"
}

AS_OF=$(date +%s%3N)
OUT=$WORK/out
export_run() {
    timed "$1" "$AGG" export --data-dir "$DATA" --out "$OUT" --as-of "$AS_OF"
}
# The page cache warmed for both: what a daily export on a live collector
# finds (the files it reads were written the day before).
cat "$DATA"/*.csv >/dev/null
export_run export-first
export_run export-unchanged
# A late row on the last day of one VM: that day only.
last=$(tail -n 1 "$DATA/127.1.0.1.csv")
IFS=, read -r recv ts boot seq rest <<<"$last"
echo "$((recv + 1)),$ts,$boot,$((seq + 1)),$rest" >>"$DATA/127.1.0.1.csv"
export_run export-one-day-changed
rows=$(du -sb "$OUT/rows" | cut -f1)
days=$(du -sb "$OUT/vm_days" | cut -f1)
echo "bytes_per_vm_day: parquet_rows=$((rows / vm_days)) parquet_vm_days=$((days / vm_days))"
echo "summary_store_bytes=$(du -cb "$DATA"/.vmstats/summaries.* | tail -1 | cut -f1) (both copies)"

if ! python3 -c 'import duckdb' 2>/dev/null; then
    pip install -q duckdb 2>/dev/null || { echo "duckdb=skipped (pip install duckdb failed)"; exit 0; }
fi
cat >"$WORK/duck.py" <<PY
import duckdb
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("""
  COPY (SELECT regexp_extract(filename, '([^/]+)\\.csv', 1) AS vm,
               * EXCLUDE (filename),
               CAST(to_timestamp(recv_ms / 1000) AS DATE) AS date
        FROM read_csv('$DATA/*.csv', filename = true))
  TO '$WORK/duck' (FORMAT PARQUET, COMPRESSION zstd, PARTITION_BY (date))""")
PY
cat "$DATA"/*.csv >/dev/null
timed duckdb-copy python3 "$WORK/duck.py"
echo "bytes_per_vm_day: duckdb_parquet=$(($(du -sb "$WORK/duck" | cut -f1) / vm_days))"
