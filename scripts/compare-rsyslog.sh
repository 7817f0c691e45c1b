#!/usr/bin/env bash
# The aggregator against rsyslog, the collector an operator would otherwise
# use for "UDP in, one file per source IP": the same sender, the same load,
# the highest zero-loss rate of each, side by side in one run.
#
#   scripts/compare-rsyslog.sh          # 1000 and 10000 VMs
#   scripts/compare-rsyslog.sh 1000
#
# rsyslog is installed from the distribution if missing and runs as our own
# instance (own config, pid file and dirs under a temp dir, a loopback port);
# the system service is never started or touched. Its lines are counted from
# its files, like the aggregator's rows.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VMS_LIST=("$@")
[ $# -eq 0 ] && VMS_LIST=(1000 10000)
RUNS=${RUNS:-1}
# Where rsyslog's searches start: well above the 150 k/s it reaches at best
# here, so its searches spend no time far above it.
RS_CEILING=${RS_CEILING:-400000}
OUT=${OUT:-$ROOT/benches/runs/$(date -u +%F)}
mkdir -p "$OUT"

if ! command -v rsyslogd >/dev/null; then
    # policy-rc.d keeps the package's scripts from starting the service.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi
build_release
# Whatever is still running, then the scratch dir (a kill with no job fails:
# under set -e that ended the trap before remove_work, and the script with 2).
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; remove_work' EXIT

sender_ceiling
{
    echo "# $(date -u +%FT%TZ) $(nproc) cores; $(rsyslogd -v | head -n 1); sender: udp-vmsim --gso $GSO, ceiling $CEILING datagrams/s"
    echo "$TABLE_HEAD"
    for vms in "${VMS_LIST[@]}"; do
        rs=$(CEILING=$RS_CEILING measure rsyslog "$vms" "$RUNS")
        table_row "$vms" rsyslog "$rs" "$(rate_of "$rs")"
        agg=$(measure aggregator "$vms" "$RUNS")
        table_row "$vms" aggregator "$agg" "$(rate_of "$rs")"
    done
} | tee "$OUT/compare-rsyslog.txt"
