# Helpers shared by the load scripts (sourced, not run). Everything stays on
# loopback; every load is bounded by --total or --duration.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGG=$ROOT/target/release/udp-aggregator
SIM=$ROOT/target/release/udp-vmsim
TCK=$(getconf CLK_TCK)
TRIAL=${TRIAL:-4} # seconds of load per trial
STEPS=${STEPS:-5} # bisection steps per search
GSO=${GSO:-64}    # datagrams of one VM per send: a cheap sender
# Scratch dir for logs and data. One made here is removed at exit by
# remove_work (KEEP=1 keeps it); a WORK you give is yours and stays.
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d -t vmstats-load.XXXXXX)
    WORK_MADE=1
fi
remove_work() {
    if [ -n "${WORK_MADE:-}" ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
    true
}
# Extra udp-aggregator flags for the aggregator trials, e.g.
# AGG_FLAGS="--max-flush-delay 5s".
read -r -a AGG_EXTRA <<<"${AGG_FLAGS:-}"
# The `variant` kind is the aggregator with these flags added, measured in
# the same run (e.g. VARIANT_FLAGS="--receivers 2"). With --metrics-listen
# among them, /metrics is scraped every SCRAPE_EVERY seconds meanwhile.
read -r -a VARIANT_EXTRA <<<"${VARIANT_FLAGS:-}"
# Or another build of the aggregator as the variant, e.g.
# VARIANT_AGG=/tmp/before/target/release/udp-aggregator: what a change
# costs, in one run.
VARIANT_AGG=${VARIANT_AGG:-}
# And the sender's flags for the variant, e.g. VARIANT_FLAGS="--auth-keys K"
# VARIANT_SIM_FLAGS="--fleet-key K": version 2 against version 1.
read -r -a VARIANT_SIM_EXTRA <<<"${VARIANT_SIM_FLAGS:-}"
SCRAPE_EVERY=${SCRAPE_EVERY:-1}

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
    AGG_PORT=
    for _ in $(seq 1500); do
        # The port is taken only from a whole first line.
        AGG_PORT=$(head -n 1 "$log" 2>/dev/null | grep -oE 'listening on [^ ]*:[0-9]+ \(' |
            sed -E 's/.*:([0-9]+) \(/\1/' || true)
        [ -n "$AGG_PORT" ] && return 0
        kill -0 "$AGG_PID" 2>/dev/null || break
        sleep 0.02
    done
    echo "udp-aggregator did not start:" >&2
    cat "$log" >&2
    return 1
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

# rows_in DIR [SUFFIX]: data rows in the VM files (lines less one header
# each); with SUFFIX .log, plain lines (rsyslog's files have no header).
rows_in() {
    local files=0 lines
    [ "${2:-.csv}" = .csv ] && files=$(find "$1" -name '*.csv' 2>/dev/null | wc -l)
    lines=$(find "$1" -name "*${2:-.csv}" -print0 2>/dev/null | xargs -0 -r cat | wc -l)
    echo $((lines - files))
}

# summary_value LOG KEY: a key=value figure from the aggregator's summary.
summary_value() {
    grep '^summary:' "$1" | grep -oE "(^| )$2=[0-9]+" | head -n 1 | cut -d= -f2
}

# sim_sent OUTPUT / sim_rate OUTPUT: what a udp-vmsim run says it did.
sim_sent() {
    grep -oE 'sent=[0-9]+' <<<"$1" | cut -d= -f2
}
sim_rate() {
    grep -oE 'rate=[0-9]+' <<<"$1" | cut -d= -f2
}

# median N...
median() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# free_port: a UDP port nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_rsyslog DIR VMS: our own rsyslogd (own config, pid file, work dir,
# loopback port; never the system service), configured as an operator
# would for "UDP in, one file per source IP": imudp with recvmmsg batches,
# omfile dynaFile per %fromhost-ip% with 64 KiB buffers and the largest
# file cache rsyslog allows (10,000), 2 queue workers. Sets RS_PID, RS_PORT.
start_rsyslog() {
    local dir=$1 vms=$2
    mkdir -p "$dir/work" "$dir/out"
    RS_PORT=$(free_port)
    local cache=$((vms < 10000 ? vms : 10000))
    cat >"$dir/rsyslog.conf" <<CONF
global(workDirectory="$dir/work" net.enableDNS="off" maxMessageSize="4k")
module(load="imudp" batchSize="64" threads="1")
input(type="imudp" address="127.0.0.1" port="$RS_PORT" rcvbufSize="32m")
main_queue(queue.type="LinkedList" queue.size="100000" queue.workerThreads="2"
           queue.dequeueBatchSize="1024")
template(name="perip" type="string" string="$dir/out/%fromhost-ip%.log")
template(name="raw" type="string" string="%rawmsg%\n")
action(type="omfile" dynaFile="perip" template="raw" ioBufferSize="64k"
       dynaFileCacheSize="$cache" flushOnTXEnd="off" asyncWriting="on"
       flushInterval="1")
CONF
    rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" 2>"$dir/rsyslogd.err" &
    RS_PID=$!
    for _ in $(seq 200); do
        ss -Huln "sport = :$RS_PORT" | grep -q . && return 0
        kill -0 "$RS_PID" 2>/dev/null || { cat "$dir/rsyslogd.err" >&2; return 1; }
        sleep 0.05
    done
    echo "rsyslogd did not open port $RS_PORT" >&2
    return 1
}

# wait_settled DIR SUFFIX: until the line count stops growing (a queue
# draining to disk), 30 s at most.
wait_settled() {
    local last=-1 now
    for _ in $(seq 30); do
        now=$(rows_in "$1" "$2")
        [ "$now" = "$last" ] && return
        last=$now
        sleep 1
    done
}

# trial KIND VMS RATE -> "loss cpu_us rss_kib bytes_per_vm p99_ms achieved"
# KIND is bare (udp-aggregator --discard), aggregator, variant (the
# aggregator with VARIANT_FLAGS), or rsyslog. A warm-up
# pass first sends every VM one datagram, so per-VM state and open files
# exist and the measured pass is steady state. "Zero loss" is rows on disk
# = datagrams sent, counted from the files (for bare: received = sent).
trial() {
    local kind=$1 vms=$2 rate=$3 data=$WORK/$1-$2 log=$WORK/$1-$2-$3.log pid rows0=0 port
    case $kind in
    bare)
        start_aggregator "$log" "$data" --discard --stats-interval 1h
        pid=$AGG_PID port=$AGG_PORT
        ;;
    aggregator)
        rows0=$(rows_in "$data")
        start_aggregator "$log" "$data" --stats-interval 1h "${AGG_EXTRA[@]}"
        pid=$AGG_PID port=$AGG_PORT
        ;;
    variant)
        rows0=$(rows_in "$data")
        AGG=${VARIANT_AGG:-$AGG} start_aggregator "$log" "$data" --stats-interval 1h "${AGG_EXTRA[@]}" "${VARIANT_EXTRA[@]}"
        pid=$AGG_PID port=$AGG_PORT
        start_scraper "$log"
        ;;
    rsyslog)
        rows0=$(rows_in "$data/out" .log)
        start_rsyslog "$data" "$vms"
        pid=$RS_PID port=$RS_PORT
        ;;
    esac
    local rss0 t0 t1 rss1 out sent got sim_extra=()
    [ "$kind" = variant ] && sim_extra=("${VARIANT_SIM_EXTRA[@]}")
    rss0=$(rss_kib "$pid")
    "$SIM" --server "127.0.0.1:$port" --count "$vms" --rate 100000 --total "$vms" --no-final \
        "${sim_extra[@]}" >/dev/null
    sleep 1.5
    [ "$kind" = rsyslog ] && wait_settled "$data/out" .log
    t0=$(cpu_ticks "$pid")
    out=$("$SIM" --server "127.0.0.1:$port" --count "$vms" --rate "$rate" \
        --duration "${TRIAL}s" --gso "$GSO" --no-final "${sim_extra[@]}")
    sent=$(sim_sent "$out")
    sleep 1.2
    [ "$kind" = rsyslog ] && wait_settled "$data/out" .log
    t1=$(cpu_ticks "$pid")
    rss1=$(rss_kib "$pid")
    stop_pid "$pid"
    [ -n "${SCRAPER_PID:-}" ] && kill "$SCRAPER_PID" 2>/dev/null && SCRAPER_PID=
    case $kind in
    bare) got=$(($(summary_value "$log" received) - vms)) ;;
    aggregator | variant) got=$(($(rows_in "$data") - rows0 - vms)) ;;
    rsyslog) got=$(($(rows_in "$data/out" .log) - rows0 - vms)) ;;
    esac
    local p99=-
    [ "$kind" = aggregator ] || [ "$kind" = variant ] && p99=$(summary_value "$log" p99)
    awk -v loss="$((sent - got))" -v t="$((t1 - t0))" -v tck="$TCK" -v n="$got" \
        -v rss="$rss1" -v rss0="$rss0" -v vms="$vms" -v p99="$p99" -v ach="$(sim_rate "$out")" \
        'BEGIN { printf "%d %.3f %d %.0f %s %s\n", loss, (n > 0 ? t / tck * 1e6 / n : 0), rss, (rss - rss0) * 1024 / vms, p99, ach }'
}

# start_scraper LOG: when the aggregator logging to LOG serves metrics,
# scrapes them every SCRAPE_EVERY seconds in the background (SCRAPER_PID).
start_scraper() {
    local url=
    for _ in $(seq 50); do
        url=$(grep -oE 'http://[0-9.]+:[0-9]+/metrics' "$1" || true)
        [ -n "$url" ] && break
        grep -q -- '--metrics-listen' <<<"${VARIANT_FLAGS:-}" || return 0
        sleep 0.02
    done
    [ -n "$url" ] || return 0
    while curl -sf -o /dev/null "$url"; do sleep "$SCRAPE_EVERY"; done &
    SCRAPER_PID=$!
}

# prepare KIND VMS: one untimed pass creates every VM's file, so searches
# measure steady state, not the filesystem's first creation of the files.
prepare() {
    [ "$1" = bare ] && return 0
    trial "$1" "$2" 1000 >/dev/null
}

# search KIND VMS CEILING -> "target loss cpu_us rss_kib bytes_per_vm p99 achieved"
# at the highest zero-loss target found: the ceiling if it passes, else a
# bisection between half the ceiling and the ceiling.
search() {
    local kind=$1 vms=$2 hi=$3 lo=$(($3 / 2)) best_line="" line
    line=$(trial "$kind" "$vms" "$hi")
    if [ "${line%% *}" -eq 0 ]; then
        echo "$hi $line"
        return
    fi
    for _ in $(seq "$STEPS"); do
        local mid=$(((lo + hi) / 2))
        line=$(trial "$kind" "$vms" "$mid")
        if [ "${line%% *}" -eq 0 ]; then
            lo=$mid best_line="$mid $line"
        else
            hi=$mid
        fi
    done
    # Nothing passed: go down by halves until something does.
    while [ -z "$best_line" ] && [ "$lo" -ge 1000 ]; do
        line=$(trial "$kind" "$vms" "$lo")
        [ "${line%% *}" -eq 0 ] && best_line="$lo $line" || lo=$((lo / 2))
    done
    echo "${best_line:-0 -1 0 0 0 - 0}"
}

# sender_ceiling: the sender's rate flat out into the bare loop, in CEILING.
sender_ceiling() {
    start_aggregator "$WORK/ceiling.log" "$WORK/none" --discard --stats-interval 1h
    local out
    out=$("$SIM" --count 1000 --rate max --total 3000000 --gso "$GSO" --no-final \
        --server "127.0.0.1:$AGG_PORT")
    stop_pid "$AGG_PID"
    CEILING=$(sim_rate "$out")
}

# rate_of "search line": the achieved rate in it.
rate_of() {
    awk '{ print $7 }' <<<"$1"
}

# measure KIND VMS RUNS: RUNS searches; prints the one with the median rate.
measure() {
    local kind=$1 vms=$2 runs=$3 lines=() rates=() l
    prepare "$kind" "$vms"
    for _ in $(seq "$runs"); do
        l=$(search "$kind" "$vms" "$CEILING")
        lines+=("$l")
        rates+=("$(rate_of "$l")")
    done
    echo "# $vms $kind achieved rates at zero loss: ${rates[*]}" >&2
    local med
    med=$(median "${rates[@]}")
    for l in "${lines[@]}"; do
        [ "$(rate_of "$l")" = "$med" ] && echo "$l" && return
    done
}

TABLE_HEAD='VMS     KIND           TARGET       RATE   LOSS   CPU_US  RSS_MIB  B_PER_VM  P99_MS  RATIO'

# table_row VMS KIND "search line" BASE_RATE: one row; RATIO is RATE over
# BASE_RATE. RATE is what the sender achieved at the highest zero-loss
# target (it shares the cores), so it is the figure ratios compare.
table_row() {
    local target loss cpu rss bpv p99 rate
    read -r target loss cpu rss bpv p99 rate <<<"$3"
    awk -v vms="$1" -v kind="$2" -v target="$target" -v rate="$rate" -v loss="$loss" \
        -v cpu="$cpu" -v rss="$rss" -v bpv="$bpv" -v p99="$p99" -v base="$4" \
        'BEGIN { printf "%-7s %-10s %10s %10s %6s %8s %8.1f %9s %7s %6.2f\n", vms, kind, target, rate, loss, cpu, rss / 1024, bpv, p99, (base > 0 ? rate / base : 0) }'
}

