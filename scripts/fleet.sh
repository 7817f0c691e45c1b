#!/usr/bin/env bash
# The README's promises at fleet size, as a user meets them: the collector
# with default flags, a sender in which every VM sends once per round
# (fully interleaved, GSO=1) or bursts of 64 datagrams per VM (GSO=64),
# then a SIGTERM. Prints, per run: datagrams sent, accepted, rows on disk
# and lost, receive-to-disk p50/p99/max, and the time from SIGTERM to exit.
# CRASH=1 instead kills the collector with SIGKILL as the sender ends and
# counts what the files hold against what /metrics said was accepted.
#
#   scripts/fleet.sh VMS RATE SECONDS             # e.g. 100000 100000 20
#   GSO=64 scripts/fleet.sh 100000 100000 20
#   CRASH=1 scripts/fleet.sh 100000 100000 20
#   AUTH=1 scripts/fleet.sh 100000 100000 20    # version 2, --require-auth
#   REPORT=1 scripts/fleet.sh 1000000 100000 300  # then the report, cold and cached
#   PREFILL=1 scripts/fleet.sh 1000000 100000 300 # on a data dir that has the files
#
# PREFILL=1 first runs the collector over one round of the fleet and stops
# it, so the measured run meets what a collector restarted on its fleet's
# data dir meets: every VM file there already. (Creating a million files is
# a one-time cost, and on ext4 without a journal, minutes after a million
# others were deleted, a slow one: each new inode skips the recently freed.)
# Rows and losses then count the measured run only.
#
# CRASH=1 then restarts the collector on the same data dir, which replays
# the journal, and counts rows on disk against what /metrics said was
# durable when it was killed, and rows that appear twice.
# Each run prints the aggregator's CPU per datagram and its peak RSS.
# Every load is bounded by --total (RATE x SECONDS datagrams).
set -euo pipefail
# Interleaved unless asked otherwise (lib.sh would default to bursts).
GSO=${GSO:-1}
source "$(dirname "$0")/lib.sh"

VMS=${1:?VMS}
RATE=${2:?RATE}
SECONDS_=${3:?SECONDS}
TOTAL=$((RATE * SECONDS_))
build_release
# Whatever is still running, then the scratch dir (a kill with no job fails:
# under set -e that ended the trap before remove_work, and the script with 2).
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; remove_work' EXIT

data=$WORK/data
flags=(--stats-interval 1h)
prefilled=0
if [ "${PREFILL:-0}" = 1 ] && [ "${CRASH:-0}" = 1 ]; then
    # The sender numbers each VM's datagrams from 0 again: the crash run's
    # duplicate count would find the prefill's rows.
    echo "fleet.sh: PREFILL=1 and CRASH=1 do not go together" >&2
    exit 2
fi
if [ "${PREFILL:-0}" = 1 ]; then
    t0=$(date +%s%N)
    start_aggregator "$WORK/prefill.log" "$data" --stats-interval 1h --cache-refresh 0
    "$SIM" --server "127.0.0.1:$AGG_PORT" --count "$VMS" --rate "$RATE" --total "$VMS" \
        --no-final --gso "$GSO" --src-base 127.2.0.1 >/dev/null
    stop_pid "$AGG_PID"
    t1=$(date +%s%N)
    prefilled=$(rows_in "$data")
    echo "prefill: vm_files=$(find "$data" -maxdepth 1 -name '*.csv' | wc -l) rows=$prefilled ms=$(((t1 - t0) / 1000000))"
fi
sim_flags=()
[ "${CRASH:-0}" = 1 ] && flags+=(--metrics-listen 127.0.0.1:0)
if [ "${AUTH:-0}" = 1 ]; then
    (umask 077 && "$AGG" keys new --key-id 1 >"$WORK/fleet.keys")
    flags+=(--auth-keys "$WORK/fleet.keys" --require-auth)
    sim_flags+=(--fleet-key "$WORK/fleet.keys")
fi
start_aggregator "$WORK/agg.log" "$data" "${flags[@]}"
out=$("$SIM" --server "127.0.0.1:$AGG_PORT" --count "$VMS" --rate "$RATE" \
    --total "$TOTAL" --no-final --gso "$GSO" --src-base 127.2.0.1 "${sim_flags[@]}")
sent=$(sim_sent "$out")
echo "fleet: vms=$VMS rate=$RATE total=$TOTAL gso=$GSO auth=${AUTH:-0} sent=$sent achieved=$(sim_rate "$out")/s"

cpu=$(cpu_ticks "$AGG_PID")
hwm=$(awk '/^VmHWM/{print $2}' "/proc/$AGG_PID/status")
echo "load: aggregator_cpu_us_per_datagram=$(awk -v t="$cpu" -v n="$sent" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", t * 1e6 / hz / n}') peak_rss_mib=$((hwm / 1024))"

if [ "${CRASH:-0}" = 1 ]; then
    addr=$(grep -oE 'metrics on http://[^/]+' "$WORK/agg.log" | sed 's|.*http://||')
    scrape=$(curl -s "http://$addr/metrics")
    accepted=$(awk '/^vmstats_datagrams_accepted_total /{print $2}' <<<"$scrape")
    durable=$(awk '/^vmstats_receive_to_disk_seconds_count /{print $2}' <<<"$scrape")
    written=$(awk '/^vmstats_rows_written_total /{print $2}' <<<"$scrape")
    kill -KILL "$AGG_PID"
    wait "$AGG_PID" 2>/dev/null || true
    rows=$(rows_in "$data")
    echo "crash: accepted_before_kill=$accepted durable_before_kill=$durable written_before_kill=$written rows_in_files_after_kill=$rows journal_bytes=$(du -sb "$data/.vmstats/journal" | cut -f1)"
    # The restart: the journal's rows go to the files before anything is
    # received; a clean stop right after.
    t0=$(date +%s%N)
    "$AGG" --listen 127.0.0.1:0 --data-dir "$data" --duration 1s --cache-refresh 0 \
        --report-format csv --report-file "$WORK/report.csv" >"$WORK/restart.out" 2>"$WORK/restart.log"
    t1=$(date +%s%N)
    grep -E 'replayed the journal' "$WORK/restart.log" || true
    rows=$(rows_in "$data")
    dups=$(find "$data" -maxdepth 1 -name '*.csv' -print0 | xargs -0 awk -F, 'FNR > 1 { print FILENAME "," $3 "," $4 }' | sort | uniq -d | wc -l)
    echo "restart: restart_to_exit_ms=$(((t1 - t0) / 1000000)) rows_on_disk=$rows duplicates=$dups durable_missing=$(( ${durable%.*} > rows ? ${durable%.*} - rows : 0 )) beyond_accepted=$(( rows > ${accepted%.*} ? rows - ${accepted%.*} : 0 )) journal_left=$(find "$data/.vmstats/journal" -type f | wc -l)"
    exit 0
fi

t0=$(date +%s%N)
stop_pid "$AGG_PID"
t1=$(date +%s%N)
rows=$(($(rows_in "$data") - prefilled))
accepted=$(summary_value "$WORK/agg.log" accepted)
echo "stop: sigterm_to_exit_ms=$(((t1 - t0) / 1000000)) accepted=$accepted rows_on_disk=$rows lost=$((accepted - rows)) not_accepted=$((sent - accepted)) journal_left=$(find "$data/.vmstats/journal" -type f | wc -l)"
# The collector's own account of its stop, from the end of receiving:
# files written, report written, files synced, journal empty.
grep -E '^stop:' "$WORK/agg.log" | sed 's/^stop:/stop: collector/'
grep -E '^summary: (received|rows_written|receive_to_disk)' "$WORK/agg.log"
csv=$(find "$data" -maxdepth 1 -name '*.csv' -print0 | du -cb --files0-from=- | tail -1 | cut -f1)
# The summary store's two copies (each rewritten in place in turn) and the
# larger of them, the one a report reads.
store_sizes() {
    local sizes
    sizes=$(find "$data/.vmstats" -maxdepth 1 -name 'summaries.*' -printf '%s\n')
    echo "summary_store_bytes=$(awk '{ t += $1 } END { print t + 0 }' <<<"$sizes") one_copy_bytes=$(sort -n <<<"$sizes" | tail -n 1)"
}
echo "data: vm_files=$(find "$data" -maxdepth 1 -name '*.csv' | wc -l) csv_bytes=$csv $(store_sizes)"
if [ "${REPORT:-0}" = 1 ]; then
    for run in cold cached; do
        [ "$run" = cold ] && rm -rf "$data/.vmstats"
        t0=$(date +%s%N)
        /usr/bin/time -f "%M" -o "$WORK/report.rss" "$AGG" report --data-dir "$data" --report-format csv --report-file "$WORK/report.csv"
        t1=$(date +%s%N)
        echo "report: $run ms=$(((t1 - t0) / 1000000)) peak_rss_mib=$(($(cat "$WORK/report.rss") / 1024))"
    done
    echo "report: $(store_sizes) of csv_bytes=$csv"
fi
