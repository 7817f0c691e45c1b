#!/usr/bin/env bash
# Highest zero-loss rate of the bare receive loop (udp-aggregator --discard)
# and of the aggregator writing every row, side by side in one run, for each
# VM count given, with CPU per datagram, memory and latency at that rate.
#
#   scripts/loadtest.sh                 # 1000 and 100000 VMs
#   scripts/loadtest.sh 1000 10000
#   RUNS=3 TRIAL=4 GSO=64 OUT=benches/runs/2026-11-26 scripts/loadtest.sh
#   GSO=1 AGG_FLAGS="--max-flush-delay 5s" NAME=loadtest-gso1-mfd5s scripts/loadtest.sh
#   VARIANT_FLAGS="--metrics-listen 127.0.0.1:0" NAME=loadtest-metrics scripts/loadtest.sh 10000
#   VARIANT_AGG=/tmp/before/target/release/udp-aggregator NAME=loadtest-vs-before \
#       scripts/loadtest.sh 1000          # the variant: another build
#   AUTH=1 scripts/loadtest.sh          # the variant: version 2 (a fleet key
#                                       # made here; the sender signs)
#
# Each search tries the sender's ceiling, then bisects the target rate
# between half the ceiling and the ceiling; RUNS searches are made and the
# one with the median achieved rate is reported. Columns: RATE, the rate the
# sender achieved at the highest zero-loss target (the ratios compare it);
# CPU_US, the collector's CPU time per datagram; B_PER_VM, its RSS growth
# per VM; P99_MS, the aggregator's receive-to-disk latency p99; RATIO, over
# the bare loop at the same VM count.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VMS_LIST=("$@")
[ $# -eq 0 ] && VMS_LIST=(1000 100000)
RUNS=${RUNS:-3}
OUT=${OUT:-$ROOT/benches/runs/$(date -u +%F)}
mkdir -p "$OUT"
build_release
# Whatever is still running, then the scratch dir (a kill with no job fails:
# under set -e that ended the trap before remove_work, and the script with 2).
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; remove_work' EXIT

if [ "${AUTH:-0}" = 1 ]; then
    (umask 077 && "$AGG" keys new --key-id 1 >"$WORK/fleet.keys")
    VARIANT_FLAGS="--auth-keys $WORK/fleet.keys ${VARIANT_FLAGS:-}"
    VARIANT_SIM_FLAGS="--fleet-key $WORK/fleet.keys"
    read -r -a VARIANT_EXTRA <<<"$VARIANT_FLAGS"
    read -r -a VARIANT_SIM_EXTRA <<<"$VARIANT_SIM_FLAGS"
fi
sender_ceiling
{
    echo "# $(date -u +%FT%TZ) $(nproc) cores; sender: udp-vmsim --gso $GSO, ceiling $CEILING datagrams/s; aggregator flags: ${AGG_FLAGS:-none}; variant flags: ${VARIANT_FLAGS:-none}; variant build: ${VARIANT_AGG:-this one}"
    echo "$TABLE_HEAD"
    for vms in "${VMS_LIST[@]}"; do
        bare=$(measure bare "$vms" "$RUNS")
        table_row "$vms" bare "$bare" "$(rate_of "$bare")"
        agg=$(measure aggregator "$vms" "$RUNS")
        table_row "$vms" aggregator "$agg" "$(rate_of "$bare")"
        if [ -n "${VARIANT_FLAGS:-}${VARIANT_AGG}" ]; then
            # The aggregator again after the variant: the disk and page
            # cache change as a run writes gigabytes, so the variant is
            # compared with the mean of the runs before and after it.
            variant=$(measure variant "$vms" "$RUNS")
            table_row "$vms" variant "$variant" "$(rate_of "$bare")"
            again=$(measure aggregator "$vms" "$RUNS")
            table_row "$vms" aggregator "$again" "$(rate_of "$bare")"
            awk -v v="$variant" -v a="$agg" -v b="$again" -v flags="${VARIANT_FLAGS:-}${VARIANT_AGG:+ build $VARIANT_AGG}" 'BEGIN {
                split(v, V, " "); split(a, A, " "); split(b, B, " ")
                printf "# variant (%s) over the aggregator (mean of the runs before and after): rate %.3f, CPU per datagram %.3f\n",
                    flags, V[7] / ((A[7] + B[7]) / 2), V[3] / ((A[3] + B[3]) / 2)
            }'
        fi
    done
} | tee "$OUT/${NAME:-loadtest}.txt"
