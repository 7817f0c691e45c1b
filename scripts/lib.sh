# Helpers shared by the load scripts (sourced, not run). Everything stays on
# loopback; every load is bounded by --total or --duration.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGG=$ROOT/target/release/udp-aggregator
SIM=$ROOT/target/release/udp-vmsim
TCK=$(getconf CLK_TCK)

build_release() {
    (cd "$ROOT" && cargo build --release --quiet --bins)
}

# start_aggregator LOG DATA_DIR [FLAGS...]: starts it on a free loopback
# port, sets AGG_PID and AGG_PORT.
start_aggregator() {
    local log=$1 data=$2
    shift 2
    "$AGG" --listen 127.0.0.1:0 --data-dir "$data" "$@" >"$log.out" 2>"$log" &
    AGG_PID=$!
    for _ in $(seq 200); do
        grep -q 'listening on' "$log" 2>/dev/null && break
        kill -0 "$AGG_PID" 2>/dev/null || { cat "$log" >&2; return 1; }
        sleep 0.02
    done
    AGG_PORT=$(head -n 1 "$log" | sed -E 's/.*listening on [^ ]*:([0-9]+) .*/\1/')
}

# stop_pid PID: SIGTERM and wait for the exit.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# cpu_ticks PID: user + system clock ticks used so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# rss_kib PID
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# rows_in DIR: data rows in all VM files (lines less one header each).
rows_in() {
    find "$1" -name '*.csv' -print0 2>/dev/null |
        xargs -0 -r awk 'FNR > 1 { n++ } END { print n + 0 }'
}

# summary_value LOG KEY: a key=value figure from the aggregator's summary.
summary_value() {
    grep '^summary:' "$1" | grep -oE "(^| )$2=[0-9]+" | head -n 1 | cut -d= -f2
}

# sim_sent OUTPUT: datagrams a udp-vmsim run says it sent.
sim_sent() {
    grep -oE 'sent=[0-9]+' <<<"$1" | cut -d= -f2
}

# sim_rate OUTPUT: the rate it achieved.
sim_rate() {
    grep -oE 'rate=[0-9]+' <<<"$1" | cut -d= -f2
}

# median N...
median() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}
