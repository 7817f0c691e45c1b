#!/usr/bin/env bash
# A real Prometheus scraping the aggregator during a udp-vmsim run, asked
# for rate(vmstats_datagrams_received_total[30s]) through its HTTP API and
# compared with the rate the simulator says it sent.
#
#   scripts/prometheus-demo.sh               # 1,000 VMs at 50,000/s for 60 s
#   RATE=200000 DURATION=90s scripts/prometheus-demo.sh
#
# Debian's prometheus package is installed when missing; this script runs
# its own prometheus process (own config, own data dir, a loopback port),
# never the packaged service. Everything is removed at the end.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VMS=${VMS:-1000}
RATE=${RATE:-50000}
DURATION=${DURATION:-60s}
PROM_PORT=${PROM_PORT:-19090}

if ! command -v prometheus >/dev/null; then
    echo "== installing prometheus (Debian package)"
    # A fresh machine's package lists may be empty or stale.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
build_release

PROM_PID=
cleanup() {
    [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null
    [ -n "${AGG_PID:-}" ] && kill "$AGG_PID" 2>/dev/null
    wait 2>/dev/null || true
    remove_work
}
trap cleanup EXIT

start_aggregator "$WORK/agg.log" "$WORK/data" --metrics-listen 127.0.0.1:0 --stats-interval 60s
for _ in $(seq 100); do
    METRICS=$(grep -oE 'metrics on http://[0-9.]+:[0-9]+' "$WORK/agg.log" | sed 's|.*http://||' || true)
    [ -n "$METRICS" ] && break
    sleep 0.05
done
echo "== aggregator on udp/$AGG_PORT, metrics on http://$METRICS/metrics"

cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 2s
scrape_configs:
  - job_name: vmstats
    static_configs:
      - targets: ['$METRICS']
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null && break
    sleep 0.1
done
echo "== prometheus $(prometheus --version 2>&1 | head -n 1 | awk '{print $3}') on 127.0.0.1:$PROM_PORT, scraping every 2s"

echo "== udp-vmsim: $VMS VMs, $RATE/s for $DURATION"
"$SIM" --server "127.0.0.1:$AGG_PORT" --count "$VMS" --rate "$RATE" --duration "$DURATION" \
    --no-final >"$WORK/sim.out" &
SIM_PID=$!
sleep 40
QUERY='rate(vmstats_datagrams_received_total[30s])'
ANSWER=$(curl -sf --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$QUERY")
echo "== GET /api/v1/query?query=$QUERY"
echo "   $ANSWER"
wait "$SIM_PID"
cat "$WORK/sim.out"
SENT_RATE=$(sim_rate "$(cat "$WORK/sim.out")")
SEEN=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1])["data"]["result"]; print(round(float(r[0]["value"][1])) if r else 0)' "$ANSWER")
UP=$(curl -sf --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode 'query=up{job="vmstats"}' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
VERDICT=$(python3 -c "print('PASS' if $UP == 1 and abs($SEEN - $SENT_RATE) <= 0.1 * $SENT_RATE else 'FAIL')")
echo "prometheus: verdict=$VERDICT up=$UP rate_seen=$SEEN/s rate_sent=$SENT_RATE/s"
[ "$VERDICT" = PASS ]
