#!/usr/bin/env bash
# Highest zero-loss rate of the bare receive loop (udp-aggregator --discard)
# and of the aggregator writing every row, side by side in one run, for each
# VM count given, with CPU per datagram, memory and latency at that rate.
#
#   scripts/loadtest.sh                 # 1000 and 100000 VMs
#   scripts/loadtest.sh 1000 10000
#   RUNS=3 TRIAL=4 GSO=64 OUT=benches/runs/2026-11-26 scripts/loadtest.sh
#
# "Zero loss" for the aggregator is rows on disk = datagrams sent, counted
# from the files; for the bare loop, received = sent. Each search bisects
# the target rate between half the sender's ceiling and the ceiling; RUNS
# searches are made and the median is reported. RATE is the rate the sender
# achieved at that target (the sender shares the 2 cores), which is what the
# ratios compare; CPU_US is the aggregator's CPU time per datagram written,
# B_PER_VM its RSS growth per VM, P99_MS its receive-to-disk latency p99.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VMS_LIST=("${@:-1000}")
[ $# -eq 0 ] && VMS_LIST=(1000 100000)
RUNS=${RUNS:-3}
TRIAL=${TRIAL:-4}        # seconds of load per trial
STEPS=${STEPS:-5}        # bisection steps per search
GSO=${GSO:-64}           # datagrams of one VM per send: a cheap sender
OUT=${OUT:-$ROOT/benches/runs/$(date -u +%F)}
WORK=$(mktemp -d -t vmstats-load.XXXXXX)
mkdir -p "$OUT"
build_release
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# trial MODE VMS RATE -> "loss cpu_us rss_kib rss_per_vm_b p99_ms achieved"
# MODE is bare or aggregator. A warm-up pass first sends every VM one
# datagram, so VM state and files exist and the measured pass is steady
# state (the first creation of 100,000 files is the filesystem's cost, once).
trial() {
    local mode=$1 vms=$2 rate=$3 data=$WORK/data-$2 log=$WORK/agg.log flags=()
    [ "$mode" = bare ] && flags=(--discard)
    local rows0=0
    [ "$mode" = aggregator ] && rows0=$(rows_in "$data")
    start_aggregator "$log" "$data" "${flags[@]}" --stats-interval 1h
    local rss0
    rss0=$(rss_kib "$AGG_PID")
    "$SIM" --server "127.0.0.1:$AGG_PORT" --count "$vms" --rate 100000 --total "$vms" \
        --no-final >/dev/null
    sleep 1.5 # warm-up rows flushed
    local t0 out sent t1 rss1
    t0=$(cpu_ticks "$AGG_PID")
    out=$("$SIM" --server "127.0.0.1:$AGG_PORT" --count "$vms" --rate "$rate" \
        --duration "${TRIAL}s" --gso "$GSO" --no-final)
    sent=$(sim_sent "$out")
    sleep 1.2 # one flush interval and a little
    t1=$(cpu_ticks "$AGG_PID")
    rss1=$(rss_kib "$AGG_PID")
    stop_pid "$AGG_PID"
    local got
    if [ "$mode" = bare ]; then
        got=$(($(summary_value "$log" received) - vms))
    else
        got=$(($(rows_in "$data") - rows0 - vms))
    fi
    local loss=$((sent - got))
    awk -v loss="$loss" -v t="$((t1 - t0))" -v tck="$TCK" -v n="$got" \
        -v rss="$rss1" -v rss0="$rss0" -v vms="$vms" \
        -v p99="$(summary_value "$log" p99)" -v ach="$(sim_rate "$out")" \
        'BEGIN { printf "%d %.3f %d %.0f %s %s\n", loss, (n > 0 ? t / tck * 1e6 / n : 0), rss, (rss - rss0) * 1024 / vms, (p99 == "" ? "-" : p99), ach }'
}

# search MODE VMS CEILING -> highest zero-loss rate found, and its trial line
search() {
    local mode=$1 vms=$2 hi=$3 lo=$(($3 / 2)) best=0 best_line="" line
    line=$(trial "$mode" "$vms" "$hi")
    if [ "${line%% *}" -eq 0 ]; then
        echo "$hi $line"
        return
    fi
    for _ in $(seq "$STEPS"); do
        local mid=$(((lo + hi) / 2))
        line=$(trial "$mode" "$vms" "$mid")
        if [ "${line%% *}" -eq 0 ]; then
            lo=$mid best=$mid best_line=$line
        else
            hi=$mid
        fi
    done
    if [ -z "$best_line" ]; then
        best_line=$(trial "$mode" "$vms" "$lo")
        best=$lo
    fi
    echo "$best $best_line"
}

# prepare VMS: one untimed pass creates every VM's file, so the searches
# measure steady state, not the filesystem's first creation of the files.
prepare() {
    start_aggregator "$WORK/prep.log" "$WORK/data-$1" --stats-interval 1h
    "$SIM" --server "127.0.0.1:$AGG_PORT" --count "$1" --rate 20000 --total "$1" --no-final >/dev/null
    stop_pid "$AGG_PID"
}

# The sender's ceiling: flat out into the bare loop.
start_aggregator "$WORK/ceiling.log" "$WORK/none" --discard --stats-interval 1h
ceiling_out=$("$SIM" --count 1000 --rate max --total 3000000 --gso "$GSO" --no-final \
    --server "127.0.0.1:$AGG_PORT")
stop_pid "$AGG_PID"
CEILING=$(sim_rate "$ceiling_out")
echo "sender ceiling (GSO $GSO, flat out): $CEILING datagrams/s" | tee "$OUT/loadtest.txt"

{
    printf '%-7s %-10s %10s %10s %6s %8s %8s %9s %7s %6s\n' \
        VMS MODE TARGET RATE LOSS CPU_US RSS_MIB B_PER_VM P99_MS RATIO
    declare -A BARE
    for vms in "${VMS_LIST[@]}"; do
        prepare "$vms"
        for mode in bare aggregator; do
            rates=() lines=()
            for _ in $(seq "$RUNS"); do
                r=$(search "$mode" "$vms" "$CEILING")
                rates+=("${r%% *}")
                lines+=("$r")
            done
            med=$(median "${rates[@]}")
            for l in "${lines[@]}"; do [ "${l%% *}" = "$med" ] && pick=$l && break; done
            # RATE is what the sender achieved at the highest zero-loss
            # target: the figure the ratios compare.
            read -r target loss cpu rss bpv p99 rate <<<"$pick"
            [ "$mode" = bare ] && BARE[$vms]=$rate
            ratio=$(awk -v a="$rate" -v b="${BARE[$vms]}" 'BEGIN { printf "%.2f", a / b }')
            printf '%-7s %-10s %10s %10s %6s %8s %8.1f %9s %7s %6s\n' \
                "$vms" "$mode" "$target" "$rate" "$loss" "$cpu" \
                "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$bpv" "$p99" "$ratio"
            echo "# $vms $mode searches: ${rates[*]}" >&2
        done
    done
} | tee -a "$OUT/loadtest.txt"
