#!/usr/bin/env bash
# The demo: build, start the aggregator, let simulated VMs report to it
# beside one real agent (this machine, as 127.0.0.1), stop it, show its
# counters and the reclamation table.
#
#   scripts/demo.sh                    # 5 VMs, every 1s, for 30s
#   COUNT=50 DURATION=1m scripts/demo.sh
#
# Everything stays on loopback; VM i sends from 127.1.0.(i+1). Every
# datagram is authenticated (version 2): a fleet key is made on the fly,
# the simulator derives each VM's key from it, the agent gets the key of
# 127.0.0.1, and the aggregator takes nothing else (--require-auth).
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-5}
INTERVAL=${INTERVAL:-1s}
DURATION=${DURATION:-30s}
WORK=$(mktemp -d -t vmstats-demo.XXXXXX)
DATA=${DATA_DIR:-$WORK/data}

echo "== building (release)"
cargo build --release --quiet --bins

agg_pid= agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null
    [ -n "$agg_pid" ] && kill "$agg_pid" 2>/dev/null
    wait 2>/dev/null
    # The logs and (without DATA_DIR) the data are scratch; KEEP=1 keeps them.
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
    true
}
trap cleanup EXIT

echo "== keys: a fleet key for the aggregator, the VM key of 127.0.0.1 for the agent"
(umask 077 && target/release/udp-aggregator keys new --key-id 1 >"$WORK/fleet.keys")
(umask 077 && target/release/udp-aggregator keys derive --auth-keys "$WORK/fleet.keys" \
    --key-id 1 --ip 127.0.0.1 >"$WORK/vm.key")

# Sizes and prices from the example catalog; sizes not in it are priced
# per vCPU and GiB (about what the catalog's general-purpose sizes cost).
target/release/udp-aggregator --listen 127.0.0.1:0 --data-dir "$DATA" \
    --auth-keys "$WORK/fleet.keys" --require-auth \
    --catalog packaging/catalog-example.csv --price-vcpu-month 17.52 --price-gib-month 4.38 \
    --stats-interval 5s >"$WORK/report.txt" 2>"$WORK/aggregator.log" &
agg_pid=$!
# The first stderr line names the bound port.
for _ in $(seq 100); do
    grep -q 'listening on' "$WORK/aggregator.log" 2>/dev/null && break
    kill -0 "$agg_pid" 2>/dev/null || { cat "$WORK/aggregator.log"; exit 1; }
    sleep 0.05
done
head -n 1 "$WORK/aggregator.log"
port=$(head -n 1 "$WORK/aggregator.log" | sed -E 's/.*listening on [^ ]*:([0-9]+) .*/\1/')

echo "== this machine's real agent, every $INTERVAL (reports as 127.0.0.1)"
target/release/udp-vmagent --server "127.0.0.1:$port" --interval "$INTERVAL" \
    --no-jitter --key-file "$WORK/vm.key" 2>"$WORK/agent.log" &
agent_pid=$!

echo "== $COUNT simulated VMs, one datagram each per $INTERVAL, for $DURATION"
target/release/udp-vmsim --server "127.0.0.1:$port" --count "$COUNT" \
    --interval "$INTERVAL" --duration "$DURATION" --fleet-key "$WORK/fleet.keys"

echo "== stopping the agent (SIGTERM: it sends its last part interval, final flag set)"
kill -TERM "$agent_pid"
wait "$agent_pid"
agent_pid=
cat "$WORK/agent.log"

echo "== stopping the aggregator (SIGTERM)"
kill -TERM "$agg_pid"
wait "$agg_pid"
agg_pid=
tail -n +2 "$WORK/aggregator.log"

echo "== files in $DATA"
ls "$DATA" | head -n 10
echo "== reclamation report"
cat "$WORK/report.txt"
