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
#
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
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; remove_work' EXIT

data=$WORK/data
flags=(--stats-interval 1h)
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

if [ "${CRASH:-0}" = 1 ]; then
    addr=$(grep -oE 'metrics on http://[^/]+' "$WORK/agg.log" | sed 's|.*http://||')
    accepted=$(curl -s "http://$addr/metrics" | awk '/^vmstats_datagrams_accepted_total /{print $2}')
    written=$(curl -s "http://$addr/metrics" | awk '/^vmstats_rows_written_total /{print $2}')
    kill -KILL "$AGG_PID"
    wait "$AGG_PID" 2>/dev/null || true
    rows=$(rows_in "$data")
    echo "crash: accepted_before_kill=$accepted written_before_kill=$written rows_on_disk=$rows lost=$((${accepted%.*} - rows))"
    exit 0
fi

t0=$(date +%s%N)
stop_pid "$AGG_PID"
t1=$(date +%s%N)
rows=$(rows_in "$data")
accepted=$(summary_value "$WORK/agg.log" accepted)
echo "stop: sigterm_to_exit_ms=$(((t1 - t0) / 1000000)) accepted=$accepted rows_on_disk=$rows lost=$((accepted - rows)) not_accepted=$((sent - accepted))"
grep -E '^summary: (received|rows_written|receive_to_disk)' "$WORK/agg.log"
