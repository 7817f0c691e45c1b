#!/usr/bin/env bash
# Soak: the aggregator and the simulator with many VMs at a fixed rate for a
# long time, RSS and counters sampled every few seconds, ending with a
# verdict line (loss, RSS at start and end).
#
#   scripts/soak.sh 10m 300000              # 10,000 VMs
#   scripts/soak.sh 60s 2000000 100000 60s 500000
#
# With a second DURATION RATE pair the run has two phases, e.g. overload
# then recovery: the verdict then judges the second phase (its loss, and
# that RSS stays flat through it); rss_max covers the whole run. Rates are targets; the simulator reports what it
# achieved. The data dir is a temp dir, removed at the end (KEEP=1 keeps it).
# AGG_FLAGS adds aggregator flags.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || { sed -n '2,12p' "$0"; exit 2; }
DUR1=$1 RATE1=$2 VMS=${3:-10000} DUR2=${4:-} RATE2=${5:-}
SAMPLE=${SAMPLE:-5}
DATA=$WORK/data
build_release
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null
    [ "${KEEP:-0}" = 1 ] || rm -rf "$DATA"
    remove_work
}
trap cleanup EXIT

start_aggregator "$WORK/agg.log" "$DATA" --stats-interval "${SAMPLE}s" ${AGG_FLAGS:-}
# Every VM's file exists before the clock starts (creating thousands of
# files takes the filesystem seconds).
"$SIM" --server "127.0.0.1:$AGG_PORT" --count "$VMS" --rate 20000 --total "$VMS" --no-final >/dev/null
for _ in $(seq 120); do
    [ "$(rows_in "$DATA")" -ge "$VMS" ] && break
    sleep 1
done
RSS_START= # the first sample under load
RSS_MAX=0
START=$(date +%s)

# phase DURATION RATE: load, sampled; sets PHASE_SENT and PHASE_ROWS.
phase() {
    local rows0
    rows0=$(rows_in "$DATA")
    RSS_START= # flatness is judged within the last phase
    "$SIM" --server "127.0.0.1:$AGG_PORT" --count "$VMS" --rate "$2" --duration "$1" \
        --gso "$GSO" --no-final >"$WORK/sim.out" &
    local sim=$!
    while kill -0 "$sim" 2>/dev/null; do
        sleep "$SAMPLE"
        local rss status
        rss=$(rss_kib "$AGG_PID")
        RSS_START=${RSS_START:-$rss}
        RSS_MAX=$((rss > RSS_MAX ? rss : RSS_MAX))
        status=$(grep '^status:' "$WORK/agg.log" | tail -n 1 |
            grep -oE '(rate|accepted|dropped_overload|kernel_drops|written|queue)=[0-9/s]+' | tr '\n' ' ')
        printf 't=%ss rss=%dMiB %s\n' "$(($(date +%s) - START))" "$((rss / 1024))" "$status"
    done
    wait "$sim"
    cat "$WORK/sim.out"
    sleep 3 # one flush interval and the queues
    PHASE_SENT=$(sim_sent "$(cat "$WORK/sim.out")")
    PHASE_ROWS=$(($(rows_in "$DATA") - rows0))
    echo "phase: target ${2}/s for $1: sent=$PHASE_SENT rows=$PHASE_ROWS loss=$((PHASE_SENT - PHASE_ROWS))"
}

phase "$DUR1" "$RATE1"
if [ -n "$DUR2" ]; then
    phase "$DUR2" "$RATE2"
fi
RSS_END=$(rss_kib "$AGG_PID")
# From SIGTERM to exit: drain, flush, sync and the exit report (which reads
# the summary cache, kept current by the aggregator, and the rows since).
EXIT_T0=$(date +%s%N)
stop_pid "$AGG_PID"
EXIT_MS=$((($(date +%s%N) - EXIT_T0) / 1000000))
grep '^summary:' "$WORK/agg.log"
echo "exit: sigterm_to_exit_ms=$EXIT_MS report_vms=$(grep -cE '^127\.' "$WORK/agg.log.out" || true)"

LOSS=$((PHASE_SENT - PHASE_ROWS))
# Flat: the end within 10 % (and 16 MiB) of the first sample under load.
FLAT=$(awk -v s="$RSS_START" -v e="$RSS_END" 'BEGIN { print (e <= s * 1.1 + 16384) ? "yes" : "no" }')
VERDICT=FAIL
[ "$LOSS" -eq 0 ] && [ "$FLAT" = yes ] && VERDICT=PASS
echo "soak: verdict=$VERDICT vms=$VMS loss=$LOSS (last phase) rss_start=$((RSS_START / 1024))MiB rss_end=$((RSS_END / 1024))MiB rss_max=$((RSS_MAX / 1024))MiB flat=$FLAT"
