#!/usr/bin/env bash
# Sharding with the kernel's own load balancer: 10,000 VMs send to one
# address; nftables on a balancer spreads them over 3 aggregators by a
# hash of the source address (`dnat to jhash ip saddr mod 3 map {...}`),
# which keeps the source address, so every VM keeps its file name, has one
# file in one data dir, and `report --data-dir A --data-dir B --data-dir C`
# is the fleet's report.
#
#   scripts/scaleout-demo.sh            # 10,000 VMs, 6 datagrams each
#   VMS=1000 ROUNDS=5 scripts/scaleout-demo.sh
#
# Everything lives in network namespaces the script makes (vmstats-vms,
# vmstats-lb, vmstats-agg1..3) and removes on exit, whatever happens.
# Needs root, iproute2 and nftables (installed with apt when missing).
#
#   vmstats-vms 10.100.0.0/16 (the VMs, AnyIP)  -- 10.200.0.2
#        |
#   vmstats-lb  10.200.0.1 = the VIP, nft dnat jhash --> 10.201.N.2
#        |  |  |
#   vmstats-agg1..3  10.201.N.2:9999, each with its own data dir
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VMS=${VMS:-10000}
ROUNDS=${ROUNDS:-6}
SHARDS=3
VIP=10.200.0.1
PORT=9999
NS=(vmstats-vms vmstats-lb vmstats-agg1 vmstats-agg2 vmstats-agg3)

[ "$(id -u)" = 0 ] || { echo "scaleout-demo: needs root (network namespaces)"; exit 2; }
if ! command -v nft >/dev/null; then
    echo "== installing nftables"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
fi
build_release

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    remove_work
}
trap cleanup EXIT
for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done

in_ns() { ip netns exec "$@"; }
for n in "${NS[@]}"; do
    ip netns add "$n"
    in_ns "$n" ip link set lo up
done

# VMs <-> balancer.
ip link add vms0 netns vmstats-vms type veth peer name lb0 netns vmstats-lb
in_ns vmstats-vms ip addr add 10.200.0.2/24 dev vms0
in_ns vmstats-vms ip link set vms0 up
# Every address of 10.100/16 is local to the VMs' namespace (AnyIP), so
# udp-vmsim can send from 10,000 of them; the VIP is through the balancer.
in_ns vmstats-vms ip route add local 10.100.0.0/16 dev lo
in_ns vmstats-vms ip route add default via $VIP
in_ns vmstats-lb ip addr add $VIP/24 dev lb0
in_ns vmstats-lb ip link set lb0 up
in_ns vmstats-lb ip route add 10.100.0.0/16 via 10.200.0.2
in_ns vmstats-lb sysctl -qw net.ipv4.ip_forward=1

# Balancer <-> each aggregator.
MAP=
for i in $(seq 1 $SHARDS); do
    ip link add "lb$i" netns vmstats-lb type veth peer name agg0 netns "vmstats-agg$i"
    in_ns vmstats-lb ip addr add "10.201.$i.1/24" dev "lb$i"
    in_ns vmstats-lb ip link set "lb$i" up
    in_ns "vmstats-agg$i" ip addr add "10.201.$i.2/24" dev agg0
    in_ns "vmstats-agg$i" ip link set agg0 up
    in_ns "vmstats-agg$i" ip route add default via "10.201.$i.1"
    MAP="$MAP${MAP:+, }$((i - 1)) : 10.201.$i.2"
done
in_ns vmstats-lb nft -f - <<NFT
table ip vmstats {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $VIP udp dport $PORT dnat to jhash ip saddr mod $SHARDS map { $MAP }
    }
}
NFT
echo "== balancer rule (vmstats-lb):"
in_ns vmstats-lb nft list chain ip vmstats prerouting | grep dnat | sed 's/^[[:space:]]*/   /'

for i in $(seq 1 $SHARDS); do
    mkdir -p "$WORK/agg$i"
    # `ip netns exec` forks: the shell records the PID the aggregator will
    # have (exec keeps it), so the stop below reaches the aggregator.
    in_ns "vmstats-agg$i" sh -c 'echo $$ >"$0"; exec "$@"' "$WORK/agg$i/pid" \
        "$AGG" --listen "10.201.$i.2:$PORT" --data-dir "$WORK/agg$i/data" \
        --stats-interval 60s --cache-refresh 0 >"$WORK/agg$i/report.txt" 2>"$WORK/agg$i/log" &
done
for i in $(seq 1 $SHARDS); do
    for _ in $(seq 100); do
        grep -q 'listening on' "$WORK/agg$i/log" 2>/dev/null && break
        sleep 0.05
    done
    PIDS+=("$(cat "$WORK/agg$i/pid")")
done

TOTAL=$((VMS * ROUNDS))
echo "== $VMS VMs (10.100.0.1 on) send $ROUNDS datagrams each to $VIP:$PORT"
in_ns vmstats-vms "$SIM" --server "$VIP:$PORT" --src-base 10.100.0.1 --count "$VMS" \
    --rate 20000 --total "$TOTAL" --no-final
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
# Each writes what it holds, syncs, prints its report and exits.
for p in "${PIDS[@]}"; do
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
done
PIDS=()
wait

echo "== per aggregator: VM files, rows, and its own counters"
for i in $(seq 1 $SHARDS); do
    files=$(find "$WORK/agg$i/data" -name '*.csv' | wc -l)
    echo "   agg$i: files=$files rows=$(rows_in "$WORK/agg$i/data")" \
        "received=$(summary_value "$WORK/agg$i/log" received)" \
        "kernel_drops=$(summary_value "$WORK/agg$i/log" kernel_drops)"
done
names=$(find "$WORK"/agg*/data -name '*.csv' -printf '%f\n')
all=$(wc -l <<<"$names")
distinct=$(sort -u <<<"$names" | wc -l)
rows=$(rows_in "$WORK")
echo "== files=$all distinct_vms=$distinct (of $VMS) rows=$rows (of $TOTAL)"
VERDICT=PASS
[ "$all" = "$VMS" ] && [ "$distinct" = "$VMS" ] && [ "$rows" = "$TOTAL" ] || VERDICT=FAIL

echo "== the fleet's report over the three data dirs (first lines and the total)"
"$AGG" report --data-dir "$WORK/agg1/data" --data-dir "$WORK/agg2/data" \
    --data-dir "$WORK/agg3/data" --window all >"$WORK/fleet.txt"
head -n 4 "$WORK/fleet.txt"
echo "   ..."
grep -E "^[0-9]+ VMs:|^datagrams:" "$WORK/fleet.txt"
grep -q "^$VMS VMs:" "$WORK/fleet.txt" || VERDICT=FAIL
echo "scaleout: verdict=$VERDICT vms=$VMS files=$all distinct=$distinct rows=$rows sent=$TOTAL"
[ "$VERDICT" = PASS ]
